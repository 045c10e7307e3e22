"""Reading and writing the safetensors format without torch.

The format is 8 bytes of header length, a JSON header {name: {dtype, shape, data_offsets}}, then raw
little-endian data. We parse it ourselves because numpy has no bfloat16 (safetensors' numpy backend
refuses BF16 files) and because a memory map lets a loader read one tensor, or one rank's slice of
one tensor, at a time. Every offset is checked against the file size before anything is read, so a
truncated or corrupt file is one clear error naming the file and the key.
"""
import json
import os
import struct
import tempfile

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as it is: corrupt, truncated, mismatched or incomplete."""


# safetensors dtype -> (numpy storage dtype, is bfloat16 stored as raw uint16 bits)
_ST_TO_NUMPY = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_NUMPY_TO_ST = {np.dtype(v): k for k, v in _ST_TO_NUMPY.items() if k != "BF16"}
_MAX_HEADER = 100 * 1024 * 1024


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
            try:
                header = json.loads(f.read(header_len))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise CheckpointError(f"{self.path}: corrupt safetensors header ({e})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{self.path}: corrupt safetensors header (not a JSON object)")
        self.metadata = header.pop("__metadata__", None) or {}
        self._data_start = 8 + header_len
        self._entries = {}
        for name, info in header.items():
            try:
                dtype, shape, (begin, end) = info["dtype"], list(info["shape"]), info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(f"{self.path}: corrupt header entry for {name!r}") from None
            if dtype not in _ST_TO_NUMPY:
                raise CheckpointError(f"{self.path}: tensor {name!r} has unsupported dtype {dtype}")
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(_ST_TO_NUMPY[dtype]).itemsize
            if end - begin != nbytes or begin < 0:
                raise CheckpointError(
                    f"{self.path}: corrupt entry {name!r}: {dtype}{shape} needs {nbytes} bytes, header gives {end - begin}"
                )
            if self._data_start + end > size:
                raise CheckpointError(
                    f"{self.path}: truncated file: tensor {name!r} ends at byte {self._data_start + end} "
                    f"but the file has {size} bytes"
                )
            self._entries[name] = (dtype, tuple(shape), begin)
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

    def _raw(self, name) -> np.ndarray:
        """The stored array (BF16 as uint16 bits), a view into the memory map: no read until used."""
        dtype, shape, begin = self._entries[name]
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        np_dtype = np.dtype(_ST_TO_NUMPY[dtype])
        count = int(np.prod(shape, dtype=np.int64))
        start = self._data_start + begin
        flat = self._map[start:start + count * np_dtype.itemsize].view(np_dtype)
        return flat.reshape(shape)

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
        np_dtype = np.dtype(_ST_TO_NUMPY[dtype])
        outer = int(np.prod(shape[:dim], dtype=np.int64))
        inner = int(np.prod(shape[dim + 1:], dtype=np.int64)) * np_dtype.itemsize  # bytes per index along dim
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
        part = np.frombuffer(buffer, dtype=np_dtype).reshape(out_shape)
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
