"""Reading and writing the safetensors format without torch.

The format is 8 bytes of header length, a JSON header {name: {dtype, shape, data_offsets}}, then raw
little-endian data. We parse it ourselves because numpy has no bfloat16 (safetensors' numpy backend
refuses BF16 files) and because a memory map lets a loader read one tensor, or one rank's slice of
one tensor, at a time. The header is validated on open by the safetensors library's own rules (the
tensors tile the data section exactly), so a truncated or corrupt file is one CheckpointError naming
the file and the key, and a file the library accepts loads the same arrays.
"""
import json
import math
import os
import re
import struct
import tempfile

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as it is: corrupt, truncated, mismatched or incomplete."""


# safetensors dtype -> numpy storage dtype (BF16 is kept as its raw uint16 bits)
_ST_TO_NUMPY = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "C64": np.complex64,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
    "U16": np.uint16, "U32": np.uint32, "U64": np.uint64,
}
# uint16 arrays are not written as U16: here they are bfloat16 bits unless the caller says bf16
_NUMPY_TO_ST = {np.dtype(v): k for k, v in _ST_TO_NUMPY.items() if k not in ("BF16", "U16")}
_MAX_HEADER = 100_000_000  # the safetensors library's limit


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 is the top half of a float32: shifting the raw bits up is exact."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> bfloat16 bits, as torch's .to(torch.bfloat16) does."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    rounded = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded


# The header rules below are the safetensors library's (Rust crate `safetensors`, serde_json): a file it refuses
# is a CheckpointError here, and a file it accepts loads the same arrays. Python's json module is looser than
# serde_json in a few places (NaN/Infinity, overflowing numbers, lone surrogates, repeated keys, nesting
# depth), so those are checked explicitly.
_ST_BITS = {  # bits per element of every dtype the library knows; those without a numpy type fail on read
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32,
    "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}
_U64 = 2 ** 64
_MAX_EXTRA_DEPTH = 125  # serde_json nests at most 127 deep: the header object, a tensor entry, then its extra fields
_TENSOR_FIELDS = ("dtype", "shape", "data_offsets")


class _JSONObject(dict):
    """A JSON object that keeps its raw pairs when a key repeats: serde validates every repeated value."""

    __slots__ = ("pairs",)

    def __init__(self, pairs):
        super().__init__(pairs)
        self.pairs = pairs if len(self) < len(pairs) else None

    def all_pairs(self):
        return self.pairs if self.pairs is not None else list(self.items())


def _json_float(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _json_int(text):
    # serde_json reads integers outside i64/u64 (and "-0") as floats, which then fail where a count is expected
    if len(text) <= 20 and text != "-0":
        value = int(text)
        if -(2 ** 63) <= value < _U64:
            return value
    return _json_float(text)


def _json_constant(name):
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_JSONObject, parse_int=_json_int, parse_float=_json_float,
                            parse_constant=_json_constant)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_values(value):
    """Every string and container inside `value` (repeated keys included), depth first, with its depth."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        yield item, depth
        if isinstance(item, _JSONObject):
            for key, child in item.all_pairs():
                stack.append((key, depth + 1))
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def _nesting(value):
    return max(depth + isinstance(item, (list, dict)) for item, depth in _json_values(value))


def _is_u64(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _U64


def _tensor_entry(path, name, info):
    """(dtype, shape, (begin, end)) from one header entry, exactly as serde reads the library's TensorInfo:
    a map {dtype, shape, data_offsets} (other keys ignored) or the list [dtype, shape, data_offsets]."""
    if isinstance(info, list) and len(info) == 3:
        dtype, shape, offsets = info
    elif isinstance(info, _JSONObject) and sorted(k for k, _ in info.all_pairs() if k in _TENSOR_FIELDS) == sorted(
            _TENSOR_FIELDS):  # each field exactly once
        extra = [value for key, value in info.all_pairs() if key not in _TENSOR_FIELDS]
        if extra and max(_nesting(value) for value in extra) > _MAX_EXTRA_DEPTH:
            raise CheckpointError(f"{path}: header entry for tensor {name!r} nests too deep")
        dtype, shape, offsets = (info[key] for key in _TENSOR_FIELDS)
    else:
        raise CheckpointError(f"{path}: corrupt header entry for tensor {name!r} (wants dtype, shape and "
                              f"data_offsets once each): {str(info)[:200]}")
    if isinstance(dtype, _JSONObject) and len(dtype.all_pairs()) == 1 and list(dtype.values()) == [None]:
        (dtype,) = dtype  # serde also reads an enum's unit variant from {"F32": null}
    if not isinstance(dtype, str) or dtype not in _ST_BITS:
        raise CheckpointError(f"{path}: tensor {name!r} has unknown dtype {str(dtype)[:40]!r}")
    if not (isinstance(shape, list) and all(_is_u64(dim) for dim in shape)):
        raise CheckpointError(f"{path}: tensor {name!r} has an invalid shape {str(shape)[:200]}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_u64(o) for o in offsets)):
        raise CheckpointError(f"{path}: tensor {name!r} has invalid data_offsets {str(offsets)[:200]}")
    return dtype, tuple(shape), tuple(offsets)


def _nbytes(path, name, dtype, shape):
    count = 1
    for dim in shape:  # in order, as the library multiplies: [2**63, 2, 0] overflows, [0, 2**63, 2] does not
        count *= dim
        if count >= _U64:
            raise CheckpointError(f"{path}: tensor {name!r}: shape {list(shape)} overflows 64 bits")
    bits = count * _ST_BITS[dtype]
    if bits >= _U64:
        raise CheckpointError(f"{path}: tensor {name!r}: shape {list(shape)} overflows 64 bits")
    if bits % 8:
        raise CheckpointError(f"{path}: tensor {name!r}: {dtype}{list(shape)} does not fill whole bytes")
    return bits // 8


def _parse_header(path, raw, data_size):
    """(metadata, {name: (dtype, shape, begin)}) from the header bytes, validated as the library does."""
    try:
        text = raw.decode("utf-8")
        header = _DECODER.decode(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header ({str(e)[:200]})") from None
    if not isinstance(header, _JSONObject):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    if _SURROGATE_ESCAPE.search(text) and any(isinstance(item, str) and _SURROGATE.search(item)
                                              for item, _ in _json_values(header)):
        raise CheckpointError(f"{path}: corrupt safetensors header (unpaired surrogate in a string)")
    metadata, entries = None, {}
    for name, info in header.all_pairs():  # a repeated tensor name: every value must be valid, the last wins
        if name != "__metadata__":
            entries[name] = _tensor_entry(path, name, info)
        elif metadata is not None:
            raise CheckpointError(f"{path}: corrupt safetensors header (__metadata__ given twice)")
        elif info is None:
            metadata = {}
        elif isinstance(info, _JSONObject) and all(isinstance(v, str) for _, v in info.all_pairs()):
            metadata = dict(info)
        else:
            bad = info  # not an object, or an object holding a non-string value
            if isinstance(info, _JSONObject):
                bad = next(v for _, v in info.all_pairs() if not isinstance(v, str))
            raise CheckpointError(f"{path}: __metadata__ must map strings to strings, got {str(bad)[:200]}")
    # The tensors must tile the data section: sorted by offsets, each begins where the previous ended, and the
    # last ends at the end of the file (no overlap, no hole, no trailing bytes).
    end_so_far = 0
    for name, (dtype, shape, (begin, end)) in sorted(entries.items(), key=lambda item: item[1][2]):
        if begin != end_so_far or end < begin:
            raise CheckpointError(
                f"{path}: tensor {name!r} has data_offsets [{begin}, {end}] but the previous tensor ends at "
                f"{end_so_far} (tensors overlap or leave a hole)"
            )
        end_so_far = end
        nbytes = _nbytes(path, name, dtype, shape)
        if end - begin != nbytes:
            raise CheckpointError(
                f"{path}: corrupt entry {name!r}: {dtype}{list(shape)} needs {nbytes} bytes, header gives {end - begin}"
            )
    if end_so_far != data_size:
        raise CheckpointError(
            f"{path}: the header's tensors cover {end_so_far} bytes of data but the file has {data_size} "
            + ("(truncated file)" if end_so_far > data_size else "(trailing bytes)")
        )
    return metadata or {}, {name: (dtype, shape, begin) for name, (dtype, shape, (begin, _)) in entries.items()}


class SafetensorsFile:
    """One .safetensors file, header validated on open, tensors read lazily through a memory map."""

    def __init__(self, path):
        self.path = os.fspath(path)
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) < 8:
                raise CheckpointError(f"{self.path}: not a safetensors file (only {size} bytes)")
            (header_len,) = struct.unpack("<Q", raw_len)
            if header_len > min(size - 8, _MAX_HEADER):
                raise CheckpointError(
                    f"{self.path}: corrupt or truncated safetensors file (header claims {header_len} bytes, "
                    f"file has {size})"
                )
            raw_header = f.read(header_len)
        self.metadata, self._entries = _parse_header(self.path, raw_header, size - 8 - header_len)
        self._data_start = 8 + header_len
        self._map = None
        self.bytes_read = 0  # tensor bytes handed out by get/get_slice (tensor-parallel loading asserts on it)

    def keys(self):
        return list(self._entries)

    def __contains__(self, name):
        return name in self._entries

    def shape(self, name):
        return self._entries[name][1]

    def dtype(self, name):
        return self._entries[name][0]

    def _numpy_dtype(self, name):
        dtype = self.dtype(name)
        if dtype not in _ST_TO_NUMPY:  # the float8/float6/float4 family: numpy has no such type
            raise CheckpointError(f"{self.path}: tensor {name!r} has dtype {dtype}, which cannot be loaded here")
        return np.dtype(_ST_TO_NUMPY[dtype])

    def _raw(self, name) -> np.ndarray:
        """The stored array (BF16 as uint16 bits), a view into the memory map: no read until used."""
        dtype, shape, begin = self._entries[name]
        np_dtype = self._numpy_dtype(name)
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        start = self._data_start + begin
        flat = self._map[start:start + math.prod(shape) * np_dtype.itemsize].view(np_dtype)
        return self._reshape(name, flat, shape)

    def _reshape(self, name, flat, shape):
        try:
            return flat.reshape(shape)
        except ValueError:  # the library allows 2**64-1 per dimension and any rank; numpy stops at 2**63-1 and 32
            raise CheckpointError(
                f"{self.path}: tensor {name!r} of shape {list(shape)} cannot be a numpy array") from None

    def get(self, name, as_float32=False) -> np.ndarray:
        """A tensor as numpy; BF16 comes back as float32 when as_float32, else as uint16 bits."""
        array = self._raw(name)
        self.bytes_read += array.nbytes
        if self.dtype(name) == "BF16" and as_float32:
            return bf16_bits_to_float32(array)
        return np.array(array)

    def get_slice(self, name, dim, start, stop, as_float32=False) -> np.ndarray:
        """Indices [start, stop) along `dim`, reading only their bytes (one pread per contiguous run, so a
        tensor-parallel rank never pages in the other ranks' columns); counted in `bytes_read`."""
        dtype, shape, begin = self._entries[name]
        if not (0 <= dim < len(shape) and 0 <= start <= stop <= shape[dim]):
            raise ValueError(f"{self.path}: slice [{start}, {stop}) on dim {dim} is outside {name!r} {list(shape)}")
        np_dtype = self._numpy_dtype(name)
        outer = math.prod(shape[:dim])
        inner = math.prod(shape[dim + 1:]) * np_dtype.itemsize  # bytes per index along dim
        run, stride = (stop - start) * inner, shape[dim] * inner
        buffer = bytearray(outer * run)
        view = memoryview(buffer)
        base = self._data_start + begin + start * inner
        with open(self.path, "rb") as f:
            fd = f.fileno()
            for i in range(outer if run else 0):
                if os.preadv(fd, [view[i * run:(i + 1) * run]], base + i * stride) != run:
                    raise CheckpointError(f"{self.path}: short read in {name!r} (file changed while loading?)")
        self.bytes_read += len(buffer)
        out_shape = list(shape)
        out_shape[dim] = stop - start
        part = self._reshape(name, np.frombuffer(buffer, dtype=np_dtype), out_shape)
        if dtype == "BF16" and as_float32:
            return bf16_bits_to_float32(part)
        return part

    def close(self):
        self._map = None


def safetensors_dtype(array: np.ndarray, bf16: bool = False) -> str:
    if bf16:
        return "BF16"
    try:
        return _NUMPY_TO_ST[array.dtype]
    except KeyError:
        raise CheckpointError(f"cannot store numpy dtype {array.dtype} in safetensors") from None


def write_safetensors(path, tensors, metadata=None):
    """Write [(name, (shape, st_dtype, fetch))] to `path` atomically: a temp file beside it, then rename.

    `fetch()` returns the array; it is called only when that tensor's bytes are written, so a caller
    streams tensors out of a model one at a time while the header (built from shapes) goes first.
    """
    path = os.fspath(path)
    header = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name, (shape, st_dtype, _fetch) in tensors:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(_ST_TO_NUMPY[st_dtype]).itemsize
        header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # the format aligns data to 8 bytes
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(header_bytes)))
            f.write(header_bytes)
            for name, (shape, st_dtype, fetch) in tensors:
                array = np.asarray(fetch())
                if not array.flags.c_contiguous:  # (np.ascontiguousarray would turn a 0-d scalar into 1-d)
                    array = array.copy(order="C")
                if tuple(array.shape) != tuple(shape):
                    raise CheckpointError(f"{name}: shape changed while saving ({shape} -> {array.shape})")
                f.write(array.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
