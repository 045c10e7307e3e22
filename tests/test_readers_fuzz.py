"""Property-based fuzzing of the checkpoint readers (hypothesis).

safetensors: on any bytes, our reader refuses (CheckpointError) exactly when the `safetensors` library refuses,
and otherwise yields the same names, dtypes, shapes, metadata and bytes. GGUF: on any mutation of a valid
file, our header parser either reads it or raises CheckpointError, never another exception.

MINDFORMERS_HF_FUZZ_EXAMPLES=20000 runs a long campaign with fresh random seeds; without it each property
runs a fixed, derandomized set of examples so the suite is reproducible.
"""
import itertools
import json
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mindformers_hf.safetensors_io import _ST_TO_NUMPY, CheckpointError, SafetensorsFile

safetensors = pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402

_EXAMPLES = int(os.environ.get("MINDFORMERS_HF_FUZZ_EXAMPLES", "150"))
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

    def write(blob):
        path = folder / f"{next(_names)}.bin"  # a fresh name: an earlier reader's memory map is never truncated
        path.write_bytes(blob)
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
            if dtype not in _ST_TO_NUMPY or len(shape) > _NUMPY_MAX_DIMS or any(d >= 2 ** 63 for d in shape):
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


# JSON values of every kind, for replacing header fields with wrong types.
_json_scalars = (st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.sampled_from([0, 1, 2, 4, 2 ** 64 - 1, 2 ** 64])
                 | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5)
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
            header[name] = draw(_json_values | st.just([entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")]))
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
    ('{"a":{"dtype":"U16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[4,5]}}',
     b"\1\2\3\4\5"),
    ('{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}', b""),
    ('{"a":{"dtype":"F32","shape":[' + "1," * 40 + '0],"data_offsets":[0,0]}}', b""),  # more dims than numpy has
])
def test_edge_cases_match_the_library(scratch, header, data):
    blob = struct.pack("<Q", len(header.encode())) + header.encode() + data
    check_same_as_library(scratch(blob), blob)
