"""transformers' ACT2FN names -> MindSpore ops (the activations our model files accept by HF name).

`activation(name, x)` branches on the name rather than looking a function up in a dict, so it also runs inside
`ms.jit` graphs (the compiled decoder layer), where the name is a constant."""
from mindspore import ops

_GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # gelu_fast: same formula, HF's order differs
ACTIVATIONS = _GELU_TANH + ("gelu", "quick_gelu", "relu", "silu", "swish")


def activation(name, x):
    if name in _GELU_TANH:
        return ops.gelu(x, approximate="tanh")
    if name == "gelu":
        return ops.gelu(x, approximate="none")
    if name == "quick_gelu":  # CLIP's, Qwen2-VL's vision MLP: x * sigmoid(1.702 x)
        return x * ops.sigmoid(1.702 * x)
    if name == "relu":
        return ops.relu(x)
    return ops.silu(x)  # silu, swish (get_activation rejects anything else up front)


def get_activation(name, where):
    """The function applying activation `name`, or a clear error naming `where` and what is supported."""
    if name not in ACTIVATIONS:
        raise NotImplementedError(f"{where} {name!r} is not supported (supported: {', '.join(sorted(ACTIVATIONS))})")
    return lambda x: activation(name, x)
