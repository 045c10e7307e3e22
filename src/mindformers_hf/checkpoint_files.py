"""Which files make up a safetensors checkpoint: transformers' names, variants and precedence.

One set of rules for every reader: a local folder (`from_pretrained`, tensor-parallel loading, Trainer
resume), a hub repo (hub.py decides from the repo listing what to download) and `save_pretrained`
(what to write, and which files of an earlier save it replaces).

- `variant="fp16"` names `model.fp16.safetensors`, shards `model.fp16-00001-of-00002.safetensors` and the
  index `model.safetensors.index.fp16.json` (transformers' `_add_variant`).
- The single file wins over an index: transformers leaves a stale index behind when it saves sharded,
  then unsharded, into one folder, and loads `model.safetensors` then.
- An index names its shards relative to its own folder; a name that is absolute or climbs out with
  `..` is refused (transformers' `_check_shard_filenames_stay_in_model_dir`).
"""
import json
import os
import re
from pathlib import PurePosixPath, PureWindowsPath

from .safetensors_io import CheckpointError

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"


def add_variant(name, variant=None):
    """'model.safetensors', 'fp16' -> 'model.fp16.safetensors' (the variant goes before the last suffix)."""
    if not variant:
        return name
    stem, suffix = name.rsplit(".", 1)
    return f"{stem}.{variant}.{suffix}"


def shard_name(index, count, variant=None):
    """The i-th (0-based) of `count` shards: 'model-00001-of-00003.safetensors', 'model.fp16-00001-of-...'."""
    suffix = f"-{index + 1:05d}-of-{count:05d}.safetensors"
    return add_variant(SAFE_WEIGHTS_NAME, variant).replace(".safetensors", suffix)


def is_weights_file(name, variant=None):
    """Whether `name` is one of the files a save of this variant writes (single file, shard or index)."""
    stem = re.escape(add_variant(SAFE_WEIGHTS_NAME, variant)[:-len(".safetensors")])
    return (name == add_variant(SAFE_WEIGHTS_INDEX_NAME, variant)
            or re.fullmatch(rf"{stem}(-\d{{5}}-of-\d{{5}})?\.safetensors", name) is not None)


def read_index(path, label=None):
    """{tensor name: shard file name} of a safetensors index, with every shard name checked to stay
    inside the index's folder. `label` names the index in errors (default: its path)."""
    label = label or path
    try:
        with open(path, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map is not an object of file names")
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{label}: not a valid safetensors index ({e})") from None
    for name in set(weight_map.values()):
        parts = [PurePosixPath(name), PureWindowsPath(name)]
        if any(p.anchor for p in parts) or any(".." in p.parts for p in parts):
            raise CheckpointError(f"The checkpoint index {label} has a shard file name that points outside the "
                                  f"model directory: {name!r}; it was not read.")
    return weight_map


def weight_file_names(names, folder_of_index, variant=None):
    """The weight files to load, relative to the checkpoint folder, given the file `names` it holds
    (a directory listing or a hub repo listing) and the local folder where its index can be read.
    None when the folder has neither the single file nor the index of this variant."""
    single, index = add_variant(SAFE_WEIGHTS_NAME, variant), add_variant(SAFE_WEIGHTS_INDEX_NAME, variant)
    if single in names:
        return [single]
    if index in names:
        weight_map = read_index(os.path.join(folder_of_index, index))
        return list(dict.fromkeys(weight_map.values()))  # each shard once, in the index's order
    return None


def missing_weights_message(names, where, variant=None):
    """Why a folder or repo with these file `names` has no loadable weights, with what to do instead."""
    single, index = add_variant(SAFE_WEIGHTS_NAME, variant), add_variant(SAFE_WEIGHTS_INDEX_NAME, variant)
    text = f"No {single} or {index} in {where}."
    if variant and (SAFE_WEIGHTS_NAME in names or SAFE_WEIGHTS_INDEX_NAME in names):
        return text + f" It has weights without the variant {variant!r}: pass variant=None to load them."
    return text


def local_weight_files(folder, variant=None):
    """Absolute paths of the safetensors files of a local checkpoint folder (see module doc)."""
    names = os.listdir(folder)
    files = weight_file_names(names, folder, variant)
    if files is None:
        message = missing_weights_message(names, folder, variant)
        others = sorted(f for f in names if f.endswith((".bin", ".pt", ".pth", ".ckpt", ".gguf")))
        if any(f.endswith(".gguf") for f in others):
            message += " For a GGUF checkpoint pass gguf_file='<name>.gguf'."
        elif others:
            message += (f" It has {', '.join(others[:3])}: pickled checkpoints are never unpickled here; convert "
                        "them to safetensors first.")
        raise FileNotFoundError(message)
    paths = [os.path.join(folder, name) for name in files]
    for name, path in zip(files, paths):
        if not os.path.isfile(path):
            raise CheckpointError(f"{os.path.join(folder, add_variant(SAFE_WEIGHTS_INDEX_NAME, variant))} names "
                                  f"shard {name!r}, which is not in {folder}")
    return paths
