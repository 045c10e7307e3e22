"""Which implementation of an op runs: the plain MindSpore reference, a CPU kernel, or an Ascend built-in.

Each op module registers its implementations here; `mindformers_hf.ops.<name>()` asks `select()` at call
time. Selection depends on:
  - the mode: `MINDFORMERS_HF_KERNELS` = "auto" (default), "reference" or "all", overridden inside a
    `use_kernels(mode)` block. "auto" runs only kernels that were measured faster than the reference
    (benchmarks/ops.py), "reference" runs the reference everywhere, "all" runs every kernel available here
    (what the parity tests and benchmarks use to exercise kernels that are not on by default);
  - the MindSpore device target (CPU kernels on CPU, Ascend built-ins on Ascend) -- model files never check it;
  - for attention, the model's `attn_implementation`: "eager" always runs the reference, "sdpa" (HF's
    default) follows the mode, and "flash_attention_2" / "flash_attention" ask for the fused kernel even
    where "auto" would not pick it.
A kernel that cannot be built (no compiler) or does not fit its inputs falls back to the reference.

Under `ms.jit` the choice is made once, while the graph is traced: a compiled graph keeps the
implementations it was traced with.
"""
import contextlib
import contextvars
import functools
import os
from dataclasses import dataclass
from typing import Callable, Optional

from mindspore.graph import jit_trace

from ..utils import device_target, warn_once

REFERENCE = "reference"
MODES = ("auto", "reference", "all")
FLASH_ATTENTION = ("flash_attention_2", "flash_attention_3", "flash_attention")
ATTN_IMPLEMENTATIONS = (None, "eager", "sdpa") + FLASH_ATTENTION


@dataclass
class Implementation:
    fn: Callable
    device: Optional[str]          # "CPU", "Ascend", or None for any device (the reference)
    default: bool                  # selected in "auto" mode (measured faster than the reference)
    available: Callable[[], bool]  # e.g. "the C++ kernel builds" -- checked lazily, at first selection


_TABLE = {}        # op name -> {implementation name: Implementation}


def eager(x):
    """True for a PyNative tensor outside a jit trace: one that can be a view (swapaxes) that kernels may
    read through instead of copying. An `ms.jit` graph has no views and no `is_contiguous` (hasattr is
    False there); under a trace the recorded graph would not see the choice."""
    return hasattr(x, "is_contiguous") and not jit_trace._using_trace
# innermost use_kernels() mode last; per thread (a context variable), so one thread's block never changes the ops
# another thread runs, and blocks in two threads cannot pop each other's modes
_mode_stack = contextvars.ContextVar("mindformers_hf_kernel_modes", default=())


def register(op, name, fn, device=None, default=False, available=None):
    _TABLE.setdefault(op, {})[name] = Implementation(fn, device, default, available or (lambda: True))


def ops():
    return sorted(_TABLE)


def get(op, name):
    """One implementation of an op by name, whatever the mode (tests call each against the reference)."""
    impl = _TABLE.get(op, {}).get(name)
    if impl is None:
        raise KeyError(f"op {op!r} has no implementation {name!r}; registered: {implementations(op, False)}")
    if not impl.available():
        raise RuntimeError(f"implementation {name!r} of op {op!r} is not available here")
    return impl.fn


def implementations(op, available_only=True):
    """Names of the implementations of `op`; with available_only, those that can run on this device."""
    if op not in _TABLE:
        raise KeyError(f"unknown op {op!r}; known ops: {ops()}")
    target = device_target()
    return [name for name, impl in _TABLE[op].items()
            if not available_only or ((impl.device is None or impl.device == target) and impl.available())]


def current_mode():
    stack = _mode_stack.get()
    if stack:
        return stack[-1]
    mode = os.environ.get("MINDFORMERS_HF_KERNELS", "auto").strip().lower() or "auto"
    if mode not in MODES:
        warn_once(f"MINDFORMERS_HF_KERNELS={mode!r} is not one of {MODES}; using 'auto'")
        return "auto"
    return mode


@contextlib.contextmanager
def use_kernels(mode):
    """`with use_kernels("reference"):` runs every op's reference inside the block ("auto", "all" likewise), in
    this thread only."""
    if mode not in MODES:
        raise ValueError(f"use_kernels mode must be one of {MODES}, got {mode!r}")
    token = _mode_stack.set(_mode_stack.get() + (mode,))
    try:
        yield
    finally:
        _mode_stack.reset(token)


def implementation_name(op, attn_implementation=None):
    """The name of the implementation `select` would run for `op` now."""
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        warn_once(f"attn_implementation={attn_implementation!r} is not known here; using 'sdpa' (the default "
                  f"selection). Known: {ATTN_IMPLEMENTATIONS[1:]}")
        attn_implementation = None
    mode = current_mode()
    if mode == "reference" or attn_implementation == "eager":
        return REFERENCE
    target = device_target()
    for name, impl in _TABLE[op].items():
        if name == REFERENCE or impl.device != target:
            continue
        wanted = mode == "all" or impl.default or attn_implementation in FLASH_ATTENTION
        if wanted and impl.available():
            return name
    return REFERENCE


def _select(op, attn_implementation=None):
    return _TABLE[op][implementation_name(op, attn_implementation)].fn


# `ms.jit` compiles every plain Python function a model calls; a functools.partial object is instead run
# by the interpreter while the graph is traced (its arguments are constants), which is what lets the
# selection above read the environment, the device and build kernels. Do not turn this into a `def`.
select = functools.partial(_select)
