"""Mixed precision for the Trainer: which dtype a run computes in, float32 master weights, loss scaling.

transformers gets fp16/bf16 from torch AMP (autocast + GradScaler). Here the model's float parameters are
held in the compute dtype while training and the optimizer updates float32 masters (`MixedPrecision`);
fp16 adds torch GradScaler's dynamic loss scale (optimization.GradScaler). bf16 on the CPU backend trains
in float32: MindSpore's CPU kernels cannot compute in bfloat16.
"""
import os

import mindspore as ms
from mindspore import ops

from ..utils import device_target, warn_once
from .optimization import GradScaler


def compute_dtype(args):
    """The dtype training computes in, from TrainingArguments and `mindformers-hf launch --mixed_precision`."""
    # `mindformers-hf launch --mixed_precision fp16|bf16` sets accelerate's variable, which transformers'
    # Trainer obeys through its Accelerator even when fp16/bf16 are not set in TrainingArguments.
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if args.fp16 or (launched == "fp16" and not args.bf16):
        return ms.float16
    if args.bf16 or launched == "bf16":
        if device_target() == "CPU":
            warn_once("bf16=True on the CPU backend: MindSpore's CPU kernels cannot compute in bfloat16, so "
                      "training runs in float32 (on Ascend it runs in bfloat16 with float32 master weights).")
            return ms.float32
        return ms.bfloat16
    return ms.float32


def loss_scaler(dtype):
    """A GradScaler for fp16 (its range needs one, as torch AMP), None otherwise."""
    return GradScaler() if dtype == ms.float16 else None


def _float32_copy(tensor):
    if tensor.dtype == ms.float32:
        return ms.Tensor(tensor.asnumpy())  # a copy: astype would hand back the same storage
    return tensor.astype(ms.float32)


class MixedPrecision:
    """fp16/bf16 compute with float32 master weights (what AMP gives transformers' Trainer).

    The model's float parameters are held in the compute dtype while training; the optimizer updates the
    float32 masters and copies them back. `full_precision()` puts the float32 values back in the model
    (for saving, and when training ends). `masters` (name -> Parameter) persists across train() calls so
    that an optimizer built on them keeps its state.
    """

    def __init__(self, model, dtype, named_trainable, masters):
        self.dtype = dtype
        self.params = [p for _, p in model.parameters_and_names() if p.dtype in (ms.float32, ms.float16, ms.bfloat16)]
        self.fp32 = {}
        for name, param in model.parameters_and_names():
            if param.dtype not in (ms.float32, ms.float16, ms.bfloat16):
                continue
            if name in masters:
                masters[name].set_data(_float32_copy(param))
                self.fp32[id(param)] = masters[name]
            else:
                self.fp32[id(param)] = ms.Parameter(_float32_copy(param), name=f"master.{name}", requires_grad=False)
        for name, param in named_trainable:
            masters[name] = self.fp32[id(param)]

    def to_compute(self):
        for p in self.params:  # set_dtype casts in place (set_data would keep the parameter's old dtype)
            p.set_dtype(self.dtype)

    def full_precision(self):
        for p in self.params:
            p.set_dtype(ms.float32)
            p.set_data(_float32_copy(self.fp32[id(p)]))

    @staticmethod
    def float32_grads(grads, scaler):
        """Gradients of the compute-dtype parameters as float32, the loss scale divided out."""
        inv = 1.0 / scaler.scale if scaler is not None else 1.0
        return [g.astype(ms.float32) * inv if inv != 1.0 else g.astype(ms.float32) for g in grads]

    @staticmethod
    def copy_back(params, masters):
        for p, master in zip(params, masters):
            ops.assign(p, master.astype(p.dtype))
