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


def _cross_entropy_mean(logits, labels, ignore_index=IGNORE_INDEX):
    """torch's cross_entropy(reduction="mean", ignore_index=...) over [N, C] float32 logits and [N] labels."""
    labels = labels.reshape(-1).astype(ms.int32)
    total = fused.cross_entropy(logits.astype(ms.float32), labels, ignore_index).sum()
    return total / (labels != ignore_index).sum().astype(ms.float32)


def sequence_classification_loss(pooled_logits, labels, config):
    """transformers' ForSequenceClassificationLoss: `config.problem_type` (set from num_labels and the label
    dtype when None, as transformers does) picks MSE, cross-entropy or BCE-with-logits, each a mean."""
    num_labels = config.num_labels
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif num_labels > 1 and labels.dtype in (ms.int64, ms.int32):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    logits = pooled_logits.astype(ms.float32)
    if config.problem_type == "regression":
        labels = labels.astype(ms.float32)
        if num_labels == 1:
            return ((logits.squeeze() - labels.squeeze()) ** 2).mean()
        return ((logits - labels) ** 2).mean()
    if config.problem_type == "single_label_classification":
        return _cross_entropy_mean(logits.reshape(-1, num_labels), labels)
    if config.problem_type == "multi_label_classification":
        labels = labels.astype(ms.float32)
        # the stable form of -[y log s(x) + (1 - y) log(1 - s(x))]
        return (ops.relu(logits) - logits * labels + ops.log1p(ops.exp(-ops.abs(logits)))).mean()
    raise RuntimeError(f"Invalid problem type: {config.problem_type}")


def token_classification_loss(logits, labels, num_labels):
    """transformers' ForTokenClassification: cross-entropy over every token, -100 ignored, mean."""
    return _cross_entropy_mean(logits.reshape(-1, num_labels), labels)
