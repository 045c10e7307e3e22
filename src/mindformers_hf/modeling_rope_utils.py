"""Rotary-embedding inverse frequencies for every `rope_type` HF LLaMA supports, in numpy float32.

Formulas follow transformers' modeling_rope_utils (default, linear, dynamic, yarn, llama3). Both config
forms are read: v5 `rope_parameters` and v4 `rope_theta` + `rope_scaling`.
"""
import math

import numpy as np

SUPPORTED_ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3", "longrope")


def rope_per_layer_type(config) -> tuple:
    """The layer types of a `rope_parameters` keyed by layer type (Gemma 3: "sliding_attention" and
    "full_attention" with their own bases), else ()."""
    params = getattr(config, "rope_parameters", None)
    layer_types = set(getattr(config, "layer_types", None) or ())
    if isinstance(params, dict) and params and set(params) <= layer_types | {"full_attention", "sliding_attention"}:
        return tuple(sorted(params))
    return ()


def rope_parameters(config, layer_type=None) -> dict:
    """The rope settings as one dict with at least `rope_type` and `rope_theta` (those of `layer_type` when
    they are keyed by layer type)."""
    params = getattr(config, "rope_parameters", None)
    if layer_type is not None:
        params = params[layer_type]
    params = dict(params) if isinstance(params, dict) else {}
    if not params:
        params = dict(getattr(config, "rope_scaling", None) or {})
        params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    params["rope_type"] = params.get("rope_type", params.get("type", "default")) or "default"
    params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    return params


def rotary_dim(config, params) -> int:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return int(head_dim * params.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0) or 1.0))


def _base_inv_freq(base, dim):
    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    return (np.float32(1.0) / (np.float32(base) ** exponent)).astype(np.float32)


def compute_inv_freq(config, seq_len=None, layer_type=None):
    """(inv_freq [dim/2] float32, attention_scaling) for the config's rope type.

    `seq_len` matters only for "dynamic" and "longrope": the current max position + 1.
    """
    params = rope_parameters(config, layer_type)
    rope_type = params["rope_type"]
    base = params["rope_theta"]
    dim = rotary_dim(config, params)
    if rope_type == "default":
        return _base_inv_freq(base, dim), 1.0
    if rope_type == "linear":
        return (_base_inv_freq(base, dim) / np.float32(params["factor"])).astype(np.float32), 1.0
    if rope_type == "dynamic":
        max_pos = config.max_position_embeddings
        seq_len = max(seq_len or max_pos, max_pos)
        factor = params["factor"]
        base = base * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2))
        return _base_inv_freq(base, dim), 1.0
    if rope_type == "llama3":
        return _llama3_inv_freq(params, base, dim), 1.0
    if rope_type == "yarn":
        return _yarn_inv_freq(config, params, base, dim)
    if rope_type == "longrope":
        return _longrope_inv_freq(config, params, base, dim, seq_len)
    raise NotImplementedError(
        f"rope_type {rope_type!r} is not supported yet (supported: {', '.join(SUPPORTED_ROPE_TYPES)})"
    )


def _llama3_inv_freq(params, base, dim):
    inv_freq = _base_inv_freq(base, dim)
    factor = params["factor"]
    low_freq_factor = params["low_freq_factor"]
    high_freq_factor = params["high_freq_factor"]
    old_context_len = params["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = np.float32(2 * math.pi) / inv_freq
    # long wavelengths are divided by factor, short ones kept, the band between smoothly interpolated
    inv_freq_llama = np.where(wavelen > low_freq_wavelen, inv_freq / np.float32(factor), inv_freq)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(is_medium, smoothed, inv_freq_llama).astype(np.float32)


def _longrope_inv_freq(config, params, base, dim, seq_len):
    """Phi-3's LongRoPE: per-frequency divisors, `long_factor` once the sequence outgrows the pretraining length."""
    original_max = getattr(config, "original_max_position_embeddings", None) or params.get(
        "original_max_position_embeddings") or config.max_position_embeddings
    factor = params.get("factor") or config.max_position_embeddings / original_max
    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original_max))
    ext = params["long_factor"] if seq_len and seq_len > original_max else params["short_factor"]
    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    inv_freq = np.float32(1.0) / (np.asarray(ext, np.float32) * np.float32(base) ** exponent)
    return inv_freq.astype(np.float32), float(attention_factor)


def _yarn_inv_freq(config, params, base, dim):
    factor = params.get("factor")
    original_max = params.get("original_max_position_embeddings") or config.max_position_embeddings
    if factor is None:
        factor = config.max_position_embeddings / original_max
    attention_factor = params.get("attention_factor")
    mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")

    def get_mscale(scale, m=1):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
        else:
            attention_factor = get_mscale(factor)
    beta_fast = params.get("beta_fast") or 32
    beta_slow = params.get("beta_slow") or 1

    def correction_dim(rotations):
        return (dim * math.log(original_max / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    pos_freqs = np.float32(base) ** (np.arange(0, dim, 2).astype(np.float32) / np.float32(dim))
    extrapolation = np.float32(1.0) / pos_freqs
    interpolation = np.float32(1.0) / (np.float32(factor) * pos_freqs)
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    extrapolation_factor = (1 - ramp).astype(np.float32)
    inv_freq = interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor
    return inv_freq.astype(np.float32), float(attention_factor)
