"""Small shared helpers: one-time warnings, dtype names, the MindSpore device."""
import logging
import re
import sys

import numpy as np



class _TransformersVerbosity(logging.Filter):
    """Our log lines obey transformers' verbosity, as the library's own lines do: `transformers.logging.
    set_verbosity_*`, `TRANSFORMERS_VERBOSITY`, and the Trainer's `log_level` / `log_level_replica` (which set
    it, as in transformers). Its default is WARNING, so info lines show after `set_verbosity_info()`."""

    def filter(self, record):
        from transformers.utils import logging as hf_logging  # (read per record: the verbosity changes at run time)

        return record.levelno >= hf_logging.get_verbosity()


logger = logging.getLogger("mindformers_hf")
if not logger.handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("[mindformers_hf] %(levelname)s: %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.DEBUG)  # the level is transformers' verbosity, checked by the filter
    logger.addFilter(_TransformersVerbosity())
    logger.propagate = False

_warned = set()


def warn_once(message: str) -> None:
    """Warn about an accepted-but-ignored option once per process, not once per call."""
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


# Every spelling a user of transformers may hand us, mapped to one canonical name.
_DTYPE_ALIASES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float64": "float64", "double": "float64",
}
FLOAT_DTYPE_NAMES = ("float32", "float16", "bfloat16")
# torch / numpy / MindSpore dtypes a model cannot be built in: integers, bool, complex, quantized, and the
# 8- and 4-bit floats (no compute kernels in MindSpore; transformers stores them only through a quantizer).
_NON_MODEL_DTYPES = re.compile(r"(u?int\d*|q?u?int\w+|bool_?|long|short|bits\w*|bit|complex\d*|c(half|float|double)"
                               r"|float8\w*|float4\w*)")


class UnsupportedDtypeError(TypeError, ValueError):
    """A dtype no model can be built in (int8, float8_e4m3fn, ...). transformers raises ValueError for the
    integer dtypes and torch a TypeError for float8: this is both."""


def canonical_dtype_name(dtype) -> str:
    """'auto' or one of float32/float16/bfloat16 from a string, a MindSpore, numpy or torch dtype.

    torch dtypes are recognised by their text ("torch.bfloat16"), so torch is never imported here.
    """
    if dtype is None:
        return "auto"
    if isinstance(dtype, str):
        text = dtype.strip().lower()
        if text == "auto":
            return "auto"
        text = text.replace("torch.", "").replace("mindspore.", "").replace("ms.", "")
        if text in _DTYPE_ALIASES:
            return _DTYPE_ALIASES[text]
        if _NON_MODEL_DTYPES.fullmatch(text):
            kind = "a float8/float4 dtype" if text.startswith(("float8", "float4")) else "not a floating-point dtype"
            raise UnsupportedDtypeError(
                f"A model cannot be loaded or built under dtype={text!r} ({kind}): parameters are float32, float16, "
                "bfloat16 or float64. Quantized checkpoints are not supported (see docs/differences.md).")
        raise ValueError(
            f"Unknown dtype {dtype!r}: use 'auto', 'float32', 'float16' or 'bfloat16' "
            "(or a MindSpore / torch dtype object)."
        )
    if isinstance(dtype, type) and issubclass(dtype, np.generic) or isinstance(dtype, np.dtype):
        return canonical_dtype_name(np.dtype(dtype).name)
    # torch.dtype prints as "torch.float16"; mindspore dtypes print as "Float16"/"BFloat16".
    return canonical_dtype_name(str(dtype))


def ms_dtype(name: str):
    import mindspore as ms

    return {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16, "float64": ms.float64}[name]


def device_target() -> str:
    import mindspore as ms

    return ms.get_context("device_target")


def compute_dtype_name(requested: str) -> str:
    """The dtype parameters are held in: the one requested. (bfloat16 on the CPU backend stays bfloat16 too: the
    weights are held in bf16 and the model computes in float32, see `activation_dtype`.)"""
    return requested


def activation_dtype(param_dtype):
    """The dtype a model computes in when its parameters are held in `param_dtype`: float32 for bfloat16 on the
    CPU backend (MindSpore's CPU kernels cannot compute in bf16; projections read the bf16 weights through the
    `bf16_linear` op, embeddings widen the rows they gather, norms scale in float32), else `param_dtype`."""
    import mindspore as ms

    if param_dtype == ms.bfloat16 and device_target() == "CPU":
        return ms.float32
    return param_dtype


def set_seed(seed, deterministic=False):
    """transformers.set_seed: seed Python's, numpy's and MindSpore's generators, and torch's only if torch is
    already imported (we never import it), so `generate(do_sample=True)` and training repeat. Sampling draws
    from numpy's global generator. deterministic=True asks MindSpore for deterministic kernels."""
    import random

    import mindspore as ms

    random.seed(seed)
    np.random.seed(seed)
    ms.set_seed(seed)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)
    if deterministic:
        ms.set_context(deterministic="ON")


def enable_full_determinism(seed, warn_only=False):
    """transformers.enable_full_determinism: seed everything and ask for deterministic kernels (MindSpore's
    `deterministic="ON"`; torch's CUDA variables and `use_deterministic_algorithms` have no role here)."""
    set_seed(seed, deterministic=True)


def __getattr__(name):
    # `mindformers_hf.utils.get_json_schema`: transformers' (tensor-free), read lazily so that importing this
    # module never imports transformers.
    if name == "get_json_schema":
        from transformers.utils import get_json_schema

        return get_json_schema
    raise AttributeError(f"module 'mindformers_hf.utils' has no attribute {name!r}")
