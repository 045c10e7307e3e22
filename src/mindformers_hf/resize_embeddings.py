"""The row arithmetic of transformers' `resize_token_embeddings`, on numpy, for our Embedding / Linear cells.

New rows follow transformers' `_init_added_embeddings_weights_with_mean`: drawn from a normal distribution
with the old rows' mean and 1e-9 times their covariance when that matrix is positive definite, and the
mean itself otherwise (so new tokens start where the average token is, and the next-token distribution
barely moves); with `mean_resizing=False` they are drawn from N(0, initializer_range). Draws use numpy's
global generator (transformers: torch's).
"""
import numpy as np
import mindspore as ms

from .layers import Embedding, Linear

_COVARIANCE_SCALE = 1e-9  # transformers' epsilon


def rows_with_mean(old: np.ndarray, added: int) -> np.ndarray:
    """[added, dim] float32 rows around the mean of `old` [n, dim] (see the module docstring)."""
    weight = old.astype(np.float32)
    mean = weight.mean(axis=0)
    centered = weight - mean
    covariance = (centered.T @ centered / weight.shape[0]) * np.float32(_COVARIANCE_SCALE)
    try:  # torch's positive_definite check is a Cholesky factorisation that succeeds
        factor = np.linalg.cholesky(covariance.astype(np.float32))
    except np.linalg.LinAlgError:
        return np.repeat(mean[None, :], added, axis=0)
    draws = np.random.standard_normal((added, weight.shape[1])).astype(np.float32)
    return (mean + draws @ factor.T).astype(np.float32)


def padded_size(num_tokens, pad_to_multiple_of):
    if not isinstance(pad_to_multiple_of, int) or isinstance(pad_to_multiple_of, bool):
        raise ValueError(f"Asking to pad the embedding matrix to a multiple of `{pad_to_multiple_of}`, which is "
                         "not and integer. Please make sure to pass an integer")
    return ((num_tokens + pad_to_multiple_of - 1) // pad_to_multiple_of) * pad_to_multiple_of


def check_resizable(cell, new_num_tokens):
    """Refuse, before anything changes, a layer resize_rows cannot resize (a tensor-parallel shard, a PEFT
    wrapper), as transformers refuses module types other than nn.Embedding / nn.Linear."""
    if cell.weight.shape[0] != new_num_tokens and type(cell) not in (Embedding, Linear):
        raise TypeError(f"resize_token_embeddings: {type(cell).__name__} is not a plain Embedding or Linear layer "
                        "and cannot be resized")


def resize_rows(cell, new_num_tokens, mean_resizing, std):
    """Give `cell.weight` ([vocab, dim]: an embedding or an LM head) `new_num_tokens` rows, in place: the
    Parameter object stays (a tied head and an optimizer keep pointing at it), its first rows unchanged."""
    weight = cell.weight
    old_num_tokens, dim = weight.shape
    if new_num_tokens == old_num_tokens:
        return
    old = (weight if weight.dtype == ms.float32 else weight.astype(ms.float32)).asnumpy()
    if new_num_tokens < old_num_tokens:
        data = old[:new_num_tokens]
    else:
        added = new_num_tokens - old_num_tokens
        new_rows = rows_with_mean(old, added) if mean_resizing else \
            np.random.normal(0.0, std, size=(added, dim)).astype(np.float32)
        data = np.concatenate([old, new_rows])
    tensor = ms.Tensor(np.ascontiguousarray(data))
    weight.set_data(tensor if weight.dtype == ms.float32 else tensor.astype(weight.dtype))
    for attribute in ("num_embeddings", "out_features"):
        if hasattr(cell, attribute):
            setattr(cell, attribute, new_num_tokens)
