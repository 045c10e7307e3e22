"""transformers' ForCausalLMLoss: predict token t+1 from position t, ignore -100, mean over kept tokens."""
import mindspore as ms
from mindspore import ops

from . import ops as fused

IGNORE_INDEX = -100


def causal_lm_loss(logits, labels, num_items_in_batch=None, ignore_index=IGNORE_INDEX):
    """logits [B, S, V] (any float dtype), labels [B, S]; the loss is computed in float32.

    As transformers does, the labels are shifted (padded with ignore_index at the end) rather than the
    logits sliced: slicing [B, S-1, V] copies the largest tensor of a training step (200 MB for a 49k
    vocabulary at 4 x 256 tokens) and its backward writes a second full-size zero-padded copy.
    The per-token losses come from `ops.cross_entropy` (a fused CPU kernel; MindSpore's composition elsewhere).
    """
    vocab = logits.shape[-1]
    if logits.dtype != ms.float32:
        logits = logits.astype(ms.float32)
    flat_logits = logits.reshape(-1, vocab)
    pad = ops.full((labels.shape[0], 1), ignore_index, dtype=ms.int32)
    shift_labels = ops.cat((labels[:, 1:].astype(ms.int32), pad), 1).reshape(-1)
    total = fused.cross_entropy(flat_logits, shift_labels, ignore_index).sum()  # ignored rows are 0
    if num_items_in_batch is None:  # mean over the kept tokens (NaN when none is kept, as in torch)
        return total / (shift_labels != ignore_index).sum().astype(ms.float32)
    return total / ms.Tensor(num_items_in_batch, ms.float32)
