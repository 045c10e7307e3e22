"""Training checkpoints in transformers' layout, without pickle.

    output_dir/checkpoint-<step>/
        model.safetensors, config.json, ...   model.save_pretrained (a PEFT model writes its adapter files)
        optimizer.safetensors                 AdamW moments, keyed "exp_avg.<param>" / "exp_avg_sq.<param>",
                                              whole tensors whatever the mesh (ZeRO parts and tensor-parallel
                                              slices gathered), so any mesh resumes them
        optimizer.json                        step count and parameter-group hyperparameters
        scheduler.json                        the LambdaLR state (transformers: scheduler.pt)
        scaler.json                           fp16 loss-scale state, when training in fp16
        rng_state.json                        python / numpy / MindSpore RNG states (transformers: rng_state.pth)
        trainer_state.json                    transformers' TrainerState, same format
        training_args.json                    the arguments (transformers: training_args.bin, a pickle)

A checkpoint is written into a hidden `.tmp-checkpoint-<step>` folder and renamed into place when complete,
so a run killed mid-save never leaves a half-written `checkpoint-<step>` for `resume_from_checkpoint=True`.
"""
import contextlib
import dataclasses
import json
import os
import random
import shutil

import numpy as np

from ..safetensors_io import SafetensorsFile, atomic_write_text, write_safetensors

OPTIMIZER_NAME = "optimizer.safetensors"
OPTIMIZER_META_NAME = "optimizer.json"
SCHEDULER_NAME = "scheduler.json"
SCALER_NAME = "scaler.json"
RNG_STATE_NAME = "rng_state.json"
TRAINER_STATE_NAME = "trainer_state.json"
TRAINING_ARGS_NAME = "training_args.json"


@contextlib.contextmanager
def atomic_folder(final_path):
    """Yield a temporary folder beside `final_path`; on success it replaces `final_path` in one rename."""
    parent, name = os.path.split(os.path.abspath(final_path))
    tmp = os.path.join(parent, f".tmp-{name}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.isdir(final_path):  # re-saving the same step: drop the old one only once the new one is whole
        old = os.path.join(parent, f".old-{name}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final_path, old)
        os.rename(tmp, final_path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final_path)


def write_json(path, data):
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_trainer_state(state, path):
    """TrainerState.save_to_json's exact format, written atomically."""
    atomic_write_text(path, json.dumps(dataclasses.asdict(state), indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------- optimizer
def optimizer_arrays(optimizer, tp_layout=None):
    """{"<kind>.<param>": whole state tensor} in the unsharded layout, whatever the mesh: ZeRO's parts gathered
    over the data-parallel ranks, tensor-parallel slices over the tensor-parallel ones. A collective when either
    is in use: every rank calls it, before only rank 0 writes."""
    if hasattr(optimizer, "full_state_arrays"):
        arrays = optimizer.full_state_arrays()
    else:
        arrays = {name: t.asnumpy() for name, t in optimizer.state_tensors().items()}
    if tp_layout is not None:
        arrays = {key: tp_layout.gather(key.split(".", 1)[1], value) for key, value in arrays.items()}
    return arrays


def save_optimizer(optimizer, folder, arrays=None):
    """optimizer.safetensors (whole tensors: `arrays` from optimizer_arrays, else the optimizer's own state)."""
    if arrays is None:
        arrays = optimizer_arrays(optimizer)
    entries = [(name, (tuple(a.shape), "F32", (lambda a=a: np.ascontiguousarray(a, np.float32))))
               for name, a in arrays.items()]
    write_safetensors(os.path.join(folder, OPTIMIZER_NAME), entries, {"format": "mindformers_hf"})
    write_json(os.path.join(folder, OPTIMIZER_META_NAME), optimizer.state_meta())


def load_optimizer(optimizer, folder, tp_layout=None):
    """Whole state tensors from `folder` into `optimizer` (this rank's tensor-parallel slices of them when
    `tp_layout` is given; a ZeRO optimizer keeps its own part)."""
    path = os.path.join(folder, OPTIMIZER_NAME)
    reader = SafetensorsFile(path)
    try:
        arrays = {key: reader.get(key) for key in reader.keys()}
    finally:
        reader.close()
    if tp_layout is not None:
        arrays = {key: tp_layout.local_of(key.split(".", 1)[1], value) for key, value in arrays.items()}
    optimizer.load_state(read_json(os.path.join(folder, OPTIMIZER_META_NAME)), arrays)


# ---------------------------------------------------------------------- RNG
def rng_state():
    import mindspore as ms

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "mindspore": ms.get_rng_state().asnumpy().tolist(),
    }


def set_rng_state(state):
    import mindspore as ms

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    ms.set_rng_state(ms.Tensor(np.array(state["mindspore"], dtype=np.uint8)))
