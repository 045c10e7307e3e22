"""transformers' ForCausalLMLoss: predict token t+1 from position t, ignore -100, mean over kept tokens."""
import mindspore as ms
from mindspore import ops

IGNORE_INDEX = -100


def causal_lm_loss(logits, labels, num_items_in_batch=None, ignore_index=IGNORE_INDEX):
    """logits [B, S, V] (any float dtype), labels [B, S]; the loss is computed in float32."""
    vocab = logits.shape[-1]
    shift_logits = logits[:, :-1, :].astype(ms.float32).reshape(-1, vocab)
    shift_labels = labels[:, 1:].astype(ms.int32).reshape(-1)
    if num_items_in_batch is None:
        return ops.cross_entropy(shift_logits, shift_labels, ignore_index=ignore_index, reduction="mean")
    total = ops.cross_entropy(shift_logits, shift_labels, ignore_index=ignore_index, reduction="sum")
    return total / ms.Tensor(num_items_in_batch, ms.float32)
