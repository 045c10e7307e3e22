"""Property-based fuzzing of the checkpoint readers (hypothesis).

safetensors: on any bytes, our reader refuses (CheckpointError) exactly when the `safetensors` library refuses,
and otherwise yields the same names, dtypes, shapes, metadata and bytes. GGUF: on mutated and generated
files, our header parser raises CheckpointError (never another exception, a hang or a huge allocation), or
reads the same tensor table and bytes as the `gguf` package's reader.

MINDFORMERS_HF_FUZZ_EXAMPLES=20000 runs a long campaign with fresh random seeds; without it each property
runs a fixed, derandomized set of examples so the suite is reproducible.
"""
import itertools
import json
import math
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mindformers_hf.safetensors_io import _ST_TO_NUMPY, CheckpointError, SafetensorsFile

safetensors = pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402

_EXAMPLES = int(os.environ.get("MINDFORMERS_HF_FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=_EXAMPLES, deadline=None, database=None, derandomize="MINDFORMERS_HF_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_BYTES_PER_DTYPE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
                    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "C64": 8, "F64": 8, "I64": 8, "U64": 8}
_NUMPY_MAX_DIMS = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32
_names = itertools.count()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    written = []

    def write(blob):
        if written:  # unlinked, never truncated: an earlier reader's memory map stays valid
            written.pop().unlink()
        path = folder / f"{next(_names)}.bin"
        path.write_bytes(blob)
        written.append(path)
        return str(path)

    return write


# ------------------------------------------------------------------------------------------- safetensors
def _library(path, blob):
    """The library's verdict on a file: None if it refuses, else (metadata, {name: (dtype, shape, bytes)})."""
    try:
        with safe_open(path, framework="np") as f:
            names, metadata = sorted(f.keys()), f.metadata() or {}
    except Exception:  # SafetensorError; the exact type is the library's business
        refused_by_file = True
    else:
        refused_by_file = False
    try:
        tensors = {name: (info["dtype"], tuple(info["shape"]), bytes(info["data"]))
                   for name, info in safetensors.deserialize(blob)}
    except Exception:
        assert refused_by_file, "safe_open accepted what deserialize refused"
        return None
    assert not refused_by_file and sorted(tensors) == names
    return metadata, tensors


def _numpy_can_hold(shape, itemsize):
    """numpy's own limits: at most 32 (numpy 2: 64) dimensions, and the nonzero ones within 63 bits of bytes."""
    return len(shape) <= _NUMPY_MAX_DIMS and math.prod(d for d in shape if d) * itemsize < 2 ** 63


def check_same_as_library(path, blob):
    expected = _library(path, blob)
    if expected is None:
        with pytest.raises(CheckpointError) as info:
            SafetensorsFile(path)
        assert path in str(info.value)
        return
    metadata, tensors = expected
    reader = SafetensorsFile(path)
    try:
        assert sorted(reader.keys()) == sorted(tensors)
        assert reader.metadata == metadata
        for name, (dtype, shape, data) in tensors.items():
            assert (reader.dtype(name), reader.shape(name)) == (dtype, shape)
            if dtype not in _ST_TO_NUMPY or not _numpy_can_hold(shape, np.dtype(_ST_TO_NUMPY[dtype]).itemsize):
                # float8/6/4, or a shape numpy cannot hold: the library's numpy backend cannot load these either
                with pytest.raises(CheckpointError, match="numpy|cannot be loaded"):
                    reader.get(name)
                continue
            array = reader.get(name)
            assert array.shape == shape and array.tobytes() == data, name
            if shape and shape[0]:
                part = reader.get_slice(name, 0, shape[0] // 2, shape[0])
                assert part.tobytes() == array[shape[0] // 2:].tobytes()
    finally:
        reader.close()


def _serialize(header, data, pad=0, header_len=None):
    text = json.dumps(header, separators=(",", ":")).encode("utf-8") + b" " * pad
    return struct.pack("<Q", len(text) if header_len is None else header_len) + text + data


@st.composite
def valid_files(draw):
    """(header dict, data bytes) of a well-formed file: tensors of mixed dtypes tiling the data section."""
    names = draw(st.lists(st.text(min_size=0, max_size=6), max_size=5, unique=True))
    header, chunks, offset = {}, [], 0
    for name in names:
        dtype = draw(st.sampled_from(sorted(_BYTES_PER_DTYPE)))
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        nbytes = int(np.prod(shape, dtype=np.int64)) * _BYTES_PER_DTYPE[dtype]
        chunks.append(draw(st.binary(min_size=nbytes, max_size=nbytes)))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2))
    order = draw(st.permutations(list(header)))  # the library sorts by offsets; header order is free
    return {key: header[key] for key in order}, b"".join(chunks)


# JSON values of every kind, for replacing header fields with wrong types. No subnormal floats: our CPU kernels
# are built with -ffast-math, whose loading flushes subnormals process-wide, and hypothesis refuses to draw them then.
_json_scalars = (st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70)
                 | st.sampled_from([0, 1, 2, 4, 2 ** 64 - 1, 2 ** 64])
                 | st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False) | st.text(max_size=5)
                 | st.sampled_from(["F32", "BF16", "F8_E4M3", "F4", "f32", "__metadata__"]))
_json_values = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)


@st.composite
def mutated_header(draw):
    header, data = draw(valid_files())
    names = [k for k in header if k != "__metadata__"]
    for _ in range(draw(st.integers(1, 3))):
        if not names:
            break
        name = draw(st.sampled_from(names))
        entry = header[name]
        if not isinstance(entry, dict):  # already replaced by a non-object
            continue
        action = draw(st.sampled_from(["field", "drop", "extra", "offset", "shape", "whole", "metadata"]))
        if action == "field":
            entry[draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(_json_values)
        elif action == "drop":
            entry.pop(draw(st.sampled_from(["dtype", "shape", "data_offsets"])), None)
        elif action == "extra":
            entry[draw(st.text(max_size=12))] = draw(_json_values)
        elif action == "offset" and isinstance(entry.get("data_offsets"), list) and entry["data_offsets"]:
            i = draw(st.integers(0, len(entry["data_offsets"]) - 1))
            entry["data_offsets"][i] = draw(st.integers(-2, 40) | _json_scalars)
        elif action == "shape" and isinstance(entry.get("shape"), list):
            entry["shape"] = entry["shape"] + [draw(st.integers(0, 3) | _json_scalars)]
        elif action == "whole":
            as_list = [entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")]  # serde's list form
            header[name] = draw(_json_values | st.just(as_list))
        else:
            header["__metadata__"] = draw(_json_values)
    data = data + draw(st.sampled_from([b"", b"", b"\0", b"\0" * 4]))
    return _serialize(header, data, pad=draw(st.integers(0, 8)))


@st.composite
def mutated_bytes(draw):
    header, data = draw(valid_files())
    blob = bytearray(_serialize(header, data, pad=draw(st.integers(0, 8))))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "set", "truncate", "append", "length", "insert", "delete"]))
        i = draw(st.integers(0, max(len(blob) - 1, 0)))
        if action == "flip" and blob:
            blob[i] ^= 1 << draw(st.integers(0, 7))
        elif action == "set" and blob:
            blob[i] = draw(st.sampled_from(b'{}[]",:0123456789-+.eEnNtf \\u\x00\xff'))
        elif action == "truncate":
            del blob[i:]
        elif action == "append":
            blob += draw(st.binary(min_size=1, max_size=8))
        elif action == "length" and len(blob) >= 8:
            blob[:8] = struct.pack("<Q", draw(st.integers(0, 2 ** 64 - 1) | st.integers(0, len(blob))))
        elif action == "insert":
            blob[i:i] = draw(st.sampled_from([b"-0", b"1e400", b"NaN", b"\\ud800", b" ", b"\n", b",", b"1.0", b"[",
                                              b"18446744073709551616", b'"x":1,']))
        elif action == "delete":
            del blob[i:i + draw(st.integers(1, 3))]
    return bytes(blob)


# Headers built from scratch: any JSON object, entries that look like tensors, and a data section of any size.
_tensor_like = st.fixed_dictionaries(
    {"dtype": st.sampled_from(sorted(_BYTES_PER_DTYPE) + ["F4", "F6_E2M3", "x"]) | _json_scalars,
     "shape": st.lists(st.integers(0, 4), max_size=3) | _json_values,
     "data_offsets": st.lists(st.integers(0, 24), min_size=2, max_size=2) | _json_values},
    optional={"extra": _json_values})


@st.composite
def generated_files(draw):
    header = draw(st.dictionaries(st.text(max_size=3) | st.just("__metadata__"),
                                  _tensor_like | _json_values, max_size=4))
    blob = _serialize(header, draw(st.binary(max_size=24)))
    return blob if draw(st.booleans()) else _serialize(draw(_json_values), b"")


@FUZZ
@given(blob=valid_files().map(lambda f: _serialize(*f)))
def test_valid_files_load_like_the_library(scratch, blob):
    check_same_as_library(scratch(blob), blob)


@FUZZ
@given(blob=mutated_header())
def test_mutated_headers_match_the_library(scratch, blob):
    check_same_as_library(scratch(blob), blob)


@FUZZ
@given(blob=mutated_bytes())
def test_mutated_bytes_match_the_library(scratch, blob):
    check_same_as_library(scratch(blob), blob)


@FUZZ
@given(blob=generated_files())
def test_generated_headers_match_the_library(scratch, blob):
    check_same_as_library(scratch(blob), blob)


_T = '"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'


@pytest.mark.parametrize("header, data", [
    # each of these was accepted, or failed with a raw TypeError/ValueError, before the reader followed the library
    ('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
     b"\0" * 4),                                                                     # two tensors on the same bytes
    ("{" + _T + "}", b"\0" * 5),                                                      # trailing bytes
    ('{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', b"\0" * 8),           # a hole before the tensor
    ('{"a":{"dtype":"F32","shape":[1],"data_offsets":["0",4]}}', b"\0" * 4),         # string offset
    ('{"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}', b"\0" * 4),         # float dimension
    ('{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', b"\0" * 4),          # negative dimension
    ('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}', b"\0" * 4),         # three offsets
    ('{"__metadata__":{"k":1},' + _T + "}", b"\0" * 4),                               # metadata not str -> str
    ('{"__metadata__":[],' + _T + "}", b"\0" * 4),
    ('{"__metadata__":"x",' + _T + "}", b"\0" * 4),
    ('{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4),  # repeated field
    ('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":NaN}}', b"\0" * 4),    # not JSON for serde
    ('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":"\\ud800"}}', b"\0" * 4),
    ('{"a":{"dtype":"F32","shape":[-0],"data_offsets":[0,0]}}', b""),
    ('{"a":{"dtype":"F32","shape":[9223372036854775808,2,0],"data_offsets":[0,0]}}', b""),  # overflow midway
    ('{"a":{"dtype":"F4","shape":[1],"data_offsets":[0,1]}}', b"\0"),                # half a byte
    ('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":' + "[" * 126 + "]" * 126 + "}}", b"\0" * 4),
    # ... and these the library accepts, so must we
    ('{"a":["F32",[1],[0,4]]}', b"\1" * 4),
    ('{"a":{"dtype":{"F32":null},"shape":[1],"data_offsets":[0,4],"x":' + "[" * 125 + "]" * 125 + "}}", b"\1" * 4),
    ('{"a":{"dtype":"F32","shape":[0,9223372036854775808,2],"data_offsets":[0,0]}}', b""),
    ('{"a":{"dtype":"F32","shape":[0,4611686018427387904,4],"data_offsets":[0,0]}}', b""),  # numpy: too big
    ('{"a":{"dtype":"U16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[4,5]}}',
     b"\1\2\3\4\5"),
    ('{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},'
     '"b":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}', b""),
    ('{"a":{"dtype":"F32","shape":[' + "1," * 40 + '0],"data_offsets":[0,0]}}', b""),  # more dims than numpy has
])
def test_edge_cases_match_the_library(scratch, header, data):
    blob = struct.pack("<Q", len(header.encode())) + header.encode() + data
    check_same_as_library(scratch(blob), blob)


# ------------------------------------------------------------------------------------------- GGUF
gguf = pytest.importorskip("gguf")
from gguf.constants import GGML_QUANT_SIZES  # noqa: E402
from mindformers_hf.gguf_io import _GGUFHeader, iter_gguf_tensors  # noqa: E402
from mindformers_hf.gguf_metadata import gguf_config, gguf_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def base_gguf(tmp_path_factory):
    """A small valid GGUF written by the `gguf` package: scalars of several types, arrays, F32/F16/Q8_0 tensors."""
    from gguf.quants import quantize

    path = str(tmp_path_factory.mktemp("gguf") / "base.gguf")
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_uint32("llama.block_count", 1)
    writer.add_float32("llama.rope.freq_base", 0.5)
    writer.add_bool("x.flag", True)
    writer.add_uint64("x.u64", 7)
    writer.add_int8("x.i8", -3)
    writer.add_string("general.name", "tiny")
    writer.add_array("tokenizer.ggml.tokens", ["a", "bc", ""])
    writer.add_array("x.ints", [1, 2, 3])
    writer.add_tensor("token_embd.weight", np.arange(8, dtype=np.float32).reshape(2, 4))
    writer.add_tensor("output_norm.weight", np.ones(4, np.float16))
    q8 = quantize(np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.attn_q.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with open(path, "rb") as f:
        return f.read()


def check_gguf(path):
    """Our header parser raises CheckpointError, or reads what `gguf`'s own reader reads from the same file."""
    from gguf.quants import dequantize

    try:
        header = _GGUFHeader(path)
    except CheckpointError as e:
        assert path in str(e)
        return
    reader = gguf.GGUFReader(path)  # accepted by us => well-formed for the reference reader too
    assert reader.data_offset == header.data_start
    assert [(t.name, tuple(int(d) for d in t.shape), int(t.tensor_type), t.data_offset - reader.data_offset)
            for t in reader.tensors] == header.tensors
    for (name, dims, ggml_type, offset), expected in zip(header.tensors, reader.tensors):
        data, qtype = header.tensor_data(dims, ggml_type, offset)
        assert data.tobytes() == np.asarray(expected.data).tobytes(), name
        try:
            weights = header.dequantized(name, dims, ggml_type, offset)  # (empty quantized tensors: gguf fails)
        except CheckpointError as e:
            assert "cannot dequantize" in str(e)
            with pytest.raises(NotImplementedError):
                dequantize(data, qtype)
        else:
            assert weights.shape == tuple(reversed(dims))


_GGUF_INTERESTING_U64 = st.sampled_from([0, 1, 2, 3, 4, 7, 8, 13, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 62, 2 ** 63,
                                         2 ** 64 - 1])


@st.composite
def mutated_gguf(draw, base):
    blob = bytearray(base)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["flip", "u64", "u32", "truncate", "append", "insert", "delete"]))
        # most of the bytes that matter are in the header: aim there more often than at the tensor data
        i = draw(st.integers(0, max(len(blob) - 1, 0)) | st.integers(0, min(len(blob), 512)))
        if action == "flip" and i < len(blob):
            blob[i] ^= 1 << draw(st.integers(0, 7))
        elif action == "u64":
            blob[i:i + 8] = struct.pack("<Q", draw(_GGUF_INTERESTING_U64 | st.integers(0, len(blob))))
        elif action == "u32":
            value = draw(st.integers(0, 15) | st.sampled_from([2 ** 32 - 1, 1, 2, 3, 30, 31]))
            blob[i:i + 4] = struct.pack("<I", value)
        elif action == "truncate":
            del blob[i:]
        elif action == "append":
            blob += draw(st.binary(min_size=1, max_size=40))
        elif action == "insert":
            blob[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del blob[i:i + draw(st.integers(1, 8))]
    return bytes(blob)


def _gguf_string(text):
    raw = text if isinstance(text, bytes) else text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


_GGUF_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_gguf_valid_kv = st.one_of(  # (value type, encoded value)
    st.sampled_from(sorted(_GGUF_SCALAR_SIZES)).flatmap(
        lambda t: st.tuples(st.just(t), st.binary(min_size=_GGUF_SCALAR_SIZES[t], max_size=_GGUF_SCALAR_SIZES[t]))),
    st.tuples(st.just(8), st.text(max_size=5).map(_gguf_string)),
    st.tuples(st.just(9), st.lists(st.integers(0, 255), max_size=6).map(
        lambda xs: struct.pack("<IQ", 0, len(xs)) + bytes(xs))),
    st.tuples(st.just(9), st.lists(st.text(max_size=3), max_size=4).map(
        lambda xs: struct.pack("<IQ", 8, len(xs)) + b"".join(map(_gguf_string, xs)))),
    st.tuples(st.just(9), st.just(struct.pack("<IQ", 9, 2) + struct.pack("<IQ", 4, 1) + b"\1\0\0\0"
                                  + struct.pack("<IQ", 0, 0))),  # an array of arrays
)
_gguf_kv = st.one_of(  # mostly valid, else garbage: wrong sizes, invalid UTF-8, huge counts, unknown types
    _gguf_valid_kv, _gguf_valid_kv, _gguf_valid_kv,
    st.tuples(st.sampled_from(sorted(_GGUF_SCALAR_SIZES)), st.binary(max_size=8)),
    st.tuples(st.just(8), st.binary(max_size=12)),
    st.tuples(st.just(9), st.builds(lambda etype, count, body: struct.pack("<IQ", etype, count) + body,
                                    st.integers(0, 14), st.integers(0, 6) | _GGUF_INTERESTING_U64,
                                    st.binary(max_size=24))),
    st.tuples(st.integers(13, 2 ** 32 - 1), st.binary(max_size=4)),
)


@st.composite
def generated_gguf(draw):
    kvs = draw(st.lists(st.tuples(st.sampled_from(["general.architecture", "a", "b", "c", "GGUF.kv_count"]), _gguf_kv),
                        max_size=4))
    if draw(st.booleans()):  # general.alignment: mostly a valid uint32
        alignment = struct.pack("<I", draw(st.sampled_from([1, 8, 16, 32, 64, 3, 0])))
        typed = draw(st.sampled_from([(4, alignment)] * 4 + [(5, alignment), (10, alignment * 2)]))
        kvs.append(("general.alignment", typed))
    tensors, offset = [], 0
    for name in draw(st.lists(st.sampled_from(["token_embd.weight", "output.weight", "blk.0.ffn_up.weight"]),
                              max_size=3)):
        # F32, F16, Q8_0, BF16, Q4_K; Q8_1, I8 and F64, which `gguf` cannot dequantize
        ggml_type = draw(st.sampled_from([0, 1, 8, 30, 12, 9, 24, 28]))
        block_size, type_size = GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
        dims = [block_size * draw(st.integers(0, 2))] + draw(st.lists(st.integers(1, 3), max_size=2))
        n_bytes = math.prod(dims) // block_size * type_size
        tensor = [name, dims, ggml_type, offset]
        offset += n_bytes + (-n_bytes % 32)
        if draw(st.integers(0, 3)) == 0:  # a wrong field now and then
            i = draw(st.integers(1, 3))
            tensor[i] = draw([st.lists(st.integers(0, 64) | _GGUF_INTERESTING_U64, max_size=5),
                              st.integers(0, 40) | st.sampled_from([2 ** 32 - 1]),
                              st.sampled_from([1, 16, offset]) | _GGUF_INTERESTING_U64][i - 1])
        tensors.append(tensor)
    n_kv, n_tensors = len(kvs), len(tensors)
    if draw(st.integers(0, 3)) == 0:  # a wrong count now and then
        n_kv, n_tensors = draw(st.sampled_from([(n_kv + 1, n_tensors), (n_kv, n_tensors + 1)]) | st.tuples(
            _GGUF_INTERESTING_U64, _GGUF_INTERESTING_U64))
    out = b"GGUF" + struct.pack("<IQQ", draw(st.sampled_from([3, 3, 3, 3, 2, 1, 4])), n_tensors, n_kv)
    for key, (vtype, value) in kvs:
        out += _gguf_string(key) + struct.pack("<I", vtype) + value
    for name, dims, ggml_type, tensor_offset in tensors:
        out += _gguf_string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, ggml_type, tensor_offset)
    out += b"\0" * (-len(out) % 32)
    data = (bytes(range(256)) * (offset // 256 + 1))[:offset]  # (drawing kilobytes from hypothesis is slow)
    return out + data[:len(data) - draw(st.integers(0, 3) | st.integers(0, len(data)))] + draw(st.binary(max_size=8))


@FUZZ
@given(data=st.data())
def test_mutated_gguf_is_read_or_refused_cleanly(scratch, base_gguf, data):
    check_gguf(scratch(data.draw(mutated_gguf(base_gguf))))


@FUZZ
@given(blob=generated_gguf())
def test_generated_gguf_is_read_or_refused_cleanly(scratch, blob):
    check_gguf(scratch(blob))


def test_valid_gguf_reads_like_the_gguf_package(scratch, base_gguf):
    path = scratch(base_gguf)
    check_gguf(path)
    assert [name for name, *_ in _GGUFHeader(path).tensors] == ["token_embd.weight", "output_norm.weight",
                                                                "blk.0.attn_q.weight"]


@pytest.mark.parametrize("edit, message", [
    (lambda b: b[:20], "not a GGUF file"),
    (lambda b: b"GGUX" + b[4:], "bad magic"),
    (lambda b: b[:4] + struct.pack("<I", 1) + b[8:], "version 1"),
    (lambda b: b[:16] + struct.pack("<Q", 2 ** 62) + b[24:], "cannot fit"),          # key/value count
    (lambda b: b[:24] + struct.pack("<Q", 2 ** 40) + b[32:], "runs past the end"),   # first key's length
    (lambda b: b[:len(b) - 100], "runs past the end"),                               # truncated tensor data
    (lambda b: b.replace(struct.pack("<IQQ", 2, 4, 2), struct.pack("<IQQ", 2, 2 ** 61 + 4, 0)), "invalid shape"),
    # an array claiming 2**40 bytes the file does not have: `gguf` loops 2**40 times over empty reads
    (lambda b: b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _gguf_string("a") + struct.pack("<IIQ", 9, 0, 2 ** 40),
     "runs past the end"),
])
def test_malformed_gguf_metadata_is_a_checkpoint_error(scratch, base_gguf, edit, message):
    """The config and tokenizer are read by the same validating parser: a huge count (which makes `gguf`'s
    reader loop for ever) or a short file is a CheckpointError naming what is wrong."""
    path = scratch(edit(base_gguf))
    for read in (gguf_config, gguf_tokenizer):
        with pytest.raises(CheckpointError, match=message):
            read(path)


def _gguf_metadata(key, vtype, value):
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _gguf_string(key) + struct.pack("<I", vtype) + value


@pytest.mark.parametrize("blob", [
    _gguf_metadata("general.name", 8, _gguf_string("x")),                        # no general.architecture
    _gguf_metadata("general.architecture", 0, b"\1"),                            # architecture a uint8
    _gguf_metadata("general.architecture", 9, struct.pack("<IQ", 8, 0)),         # an empty array
])
def test_gguf_metadata_that_makes_no_config_is_a_checkpoint_error(scratch, blob):
    """Well-formed files whose values make no config (transformers fails on them with IndexError/TypeError)."""
    path = scratch(blob)
    with pytest.raises(CheckpointError, match="GGUF architecture"):
        gguf_config(path)
    with pytest.raises(CheckpointError, match="no tokenizer"):
        gguf_tokenizer(path)


@FUZZ
@given(data=st.data())
def test_mutated_gguf_metadata_parses_or_is_a_checkpoint_error(scratch, base_gguf, data):
    path = scratch(data.draw(mutated_gguf(base_gguf)))
    for read in (gguf_config, gguf_tokenizer):
        try:
            read(path)
        except CheckpointError as e:
            assert path in str(e)


def test_empty_quantized_gguf_tensor_reads_as_empty(scratch):
    """Found by the long fuzz run: `gguf`'s dequantize raises ValueError on a Q8_0 tensor with no rows."""
    blob = (b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + _gguf_string("output.weight")
            + struct.pack("<IQQIQ", 2, 0, 2, 8, 0))
    blob += b"\0" * (-len(blob) % 32)
    header = _GGUFHeader(scratch(blob))
    assert header.dequantized(*header.tensors[0]).shape == (2, 0)


def test_gguf_tensor_gguf_cannot_dequantize_is_a_checkpoint_error(scratch):
    import types

    blob = (b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + _gguf_string("output_norm.weight")
            + struct.pack("<IQIQ", 1, 2, 28, 0))  # F64: `gguf` has no dequantizer (transformers fails the same way)
    blob += b"\0" * (-len(blob) % 32) + struct.pack("<2d", 1.0, 2.0)
    with pytest.raises(CheckpointError, match="'output_norm.weight' is F64, which the `gguf` package cannot"):
        list(iter_gguf_tensors(scratch(blob), types.SimpleNamespace()))
