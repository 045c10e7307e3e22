"""Compiling a decode step into a MindSpore graph (`mindspore.jit(capture_mode="trace")`) safely.

Tracing runs the Python step once while recording its ops, then replays the recorded graph for every
later call with the same input shapes. That is exactly right for a decode step whose shapes are fixed by a
static cache -- provided the step's Python never reads a tensor's value on the host: a trace would bake
that one value in (a rotary table rescaled for the positions seen at trace time, MoE routing done in
numpy). So the first call of each shape runs eagerly with host reads made to raise; a step that reads,
or whose trace fails for any reason, runs eagerly from then on (with a one-time warning) instead of
giving wrong tokens. The second call traces, and later calls replay the graph.

Tracing happens in a worker thread: MindSpore's tracer walks the Python stack and fails on frames
without source (`python -c`, some REPLs); a fresh thread's stack has none of those. Calls hold the process-wide
model lock (runtime.py), which also keeps the Tensor-method patching below to one call at a time; the worker
shares its caller's hold.

Each step's traced function gets a name no other step in the process has. MindSpore keeps every traced graph in
a process-wide table keyed by the function's module, `__name__`, `id()`, source line and input shapes, and never
drops one: once a step is freed, a later step's function can be allocated at the same address, and with the same
name, line and shapes it would replay the freed step's graph -- another model's weights and cache buffers --
instead of tracing its own (issue 17: Qwen v1's generate took a freed model's tokens from its third token on).
The graphs hold their model's weights, so a freed step's graphs are released (by that name) at the next compiled
step's call: a finalizer can run in the middle of another trace, where releasing is not safe.
"""
import contextlib
import itertools
import re
import sys
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import mindspore as ms

from .. import runtime
from ..layers import no_index_checks
from ..utils import logger, warn_once

# numbers the traced functions' names: never reused in a process, unlike id()
_STEP_NUMBERS = itertools.count()
# names of freed steps whose graphs are still in MindSpore's table (appended by finalizers, drained under the lock)
_FREED_STEPS = []
_HOST_READS = ("asnumpy", "item", "tolist", "__int__", "__float__", "__bool__", "__index__", "__array__")


class HostReadDuringTrace(RuntimeError):
    pass


@contextlib.contextmanager
def _patched_tensor_methods(thread_id, replacements):
    """Replace Tensor methods for calls from `thread_id` only; other threads see the originals."""
    originals = {name: ms.Tensor.__dict__[name] for name in replacements if name in ms.Tensor.__dict__}

    def dispatch(name, original):
        def method(self, *args, **kwargs):
            if threading.get_ident() == thread_id:
                return replacements[name](self, name)
            return original(self, *args, **kwargs)
        return method

    for name, original in originals.items():
        setattr(ms.Tensor, name, dispatch(name, original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(ms.Tensor, name, original)


def _raise_host_read(tensor, name):
    raise HostReadDuringTrace(f"Tensor.{name}() reads a value on the host")


def _describe(tensor, name):
    # MindSpore's tracer formats every op's (and every replay's) arguments into debug messages even when
    # debug logging is off; printing values copies tensors to text each time (~8 ms per decode step)
    return f"Tensor(shape={tuple(tensor.shape)}, dtype={tensor.dtype})"


_QUIET_PRINTING = {"__str__": _describe, "__repr__": _describe}


def _reset_tracer():
    """Close a trace that raised half-way: MindSpore's tracer keeps global state, in Python (the jit context,
    `_using_trace`) and in C++ (the graph being recorded). Resetting only the Python side left the C++ recorder
    open: every later op (pyboost ops call back into the jit context while it records) then failed with
    "AttributeError: 'NoneType' object has no attribute 'run_op'" (or 'prepare_op'), so the eager fallback -- and
    the serving engine's every later step -- failed. So after the Python reset, when an eager op shows the
    recorder still open, the graph is ended with one of its own inputs as its output (a valid graph). Some failures
    close it themselves (Baichuan-13B's ALiBi decode step fails inside the recorder): ending it again, or ending
    it with an unrelated tensor, crashed the process, hence the probe. The phase is dropped from the compile cache
    either way, so it is never replayed. A replay that failed has no open graph: only the Python flags."""
    try:
        from mindspore.graph import jit_trace
        from mindspore.graph.jit_config import _DEFAULT_JIT_CONFIG
        from mindspore.graph.jit_context import set_jit_context
    except ImportError:  # other MindSpore versions: nothing we know how to reset
        return
    context = getattr(jit_trace, "_trace_jit_context", None)
    recording = getattr(jit_trace, "_using_trace", False) and context is not None and not context.compiled \
        and context.phase
    inputs = [a for a in (context.args or ()) if isinstance(a, ms.Tensor)] if recording else []
    try:
        jit_trace._using_trace = False
        if context is not None:
            context.compiled = False
            context.phase, context.args = "", None
        set_jit_context(None)
    except AttributeError:
        return
    if not recording:
        return
    jit_trace._trace_compile_cache.discard(recording)
    if _recorder_is_closed() or not inputs:
        return   # the failure closed it already (ending it again would crash)
    try:
        # the recorder wants the caller's source lines (debug info only); MindSpore's own lookup (inspect.stack)
        # fails on frames without source, hence this file's line
        jit_trace.tr.get_instance().end_graph([__file__], [sys._getframe().f_lineno], _DEFAULT_JIT_CONFIG, inputs[0])
    except Exception as error:  # noqa: BLE001
        logger.warning("could not close MindSpore's broken trace: %s: %s", type(error).__name__, error)
    set_jit_context(None)


def _recorder_is_closed():
    """Whether an eager op runs: with the C++ recorder left open it calls back into the (reset) jit context."""
    try:
        ms.ops.add(ms.Tensor(1, ms.int32), ms.Tensor(1, ms.int32))
        return True
    except AttributeError:
        return False


def _release_freed_graphs():
    """Drop freed steps' graphs from MindSpore's trace table (and their weights from memory)."""
    if not _FREED_STEPS:
        return
    names = {f".{_FREED_STEPS.pop()}#" for _ in range(len(_FREED_STEPS))}
    try:
        from mindspore._c_expression import JitExecutor_
        from mindspore.graph import jit_trace

        phases = {phase for phase in jit_trace._trace_compile_cache if any(name in phase for name in names)}
        if phases:
            JitExecutor_.get_instance().del_net_res(None, phases)
            jit_trace._trace_compile_cache.difference_update(phases)
    except (ImportError, AttributeError):  # other MindSpore versions: the graphs stay (unique names keep them apart)
        pass


class CompiledStep:
    """`fn(*tensors)` compiled per input shapes, or run eagerly when compiling is impossible."""

    def __init__(self, fn, description="decode step"):
        def unchecked(*args):
            # embeddings' index checks read values on the host, which the first (eager) call forbids and a
            # trace would not replay. A decode step's tokens are the model's own choices.
            with no_index_checks():
                return fn(*args)

        # part of MindSpore's graph key (the module docstring): a recycled id() must not find a freed step's graph
        name = unchecked.__name__ = unchecked.__qualname__ = f"compiled_step_{next(_STEP_NUMBERS)}"
        weakref.finalize(self, _FREED_STEPS.append, name)
        self.fn = unchecked
        self.description = description
        self._traced = ms.jit(unchecked, capture_mode="trace")
        self._compiled_shapes, self._checked_shapes = set(), set()
        self.failure = None

    @property
    def compiled(self):
        return self.failure is None

    @runtime.serialized
    def __call__(self, *args):
        _release_freed_graphs()
        if self.failure is not None:
            return self.fn(*args)
        key = tuple((tuple(a.shape), str(a.dtype)) for a in args)
        if key in self._compiled_shapes:
            try:
                with _patched_tensor_methods(threading.get_ident(), _QUIET_PRINTING):
                    return self._traced(*args)
            except Exception:
                _reset_tracer()  # a replay that fails in a kernel must not leave the tracer's state behind
                raise
        if key not in self._checked_shapes:
            # First call: run eagerly with host reads forbidden. A step that reads values on the host is never
            # traced (a trace would freeze those values); the eager result is the step's result either way.
            try:
                with _patched_tensor_methods(threading.get_ident(), dict.fromkeys(_HOST_READS, _raise_host_read)):
                    out = self.fn(*args)
            except HostReadDuringTrace as error:
                return self._give_up(error, args)
            self._checked_shapes.add(key)
            return out
        with ThreadPoolExecutor(1, thread_name_prefix="mindformers_hf-trace") as pool:
            try:
                out = runtime.run_as_holder(pool.submit, self._trace, args).result()
            except Exception as error:  # noqa: BLE001 -- any tracing failure means: run eagerly
                _reset_tracer()
                return self._give_up(error, args)
        self._compiled_shapes.add(key)
        logger.debug("compiled %s for shapes %s", self.description, key)
        return out

    def _give_up(self, error, args):
        self.failure = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        warn_once(f"generate: the {self.description} cannot be compiled ({self.failure}); running it op by op "
                  "instead (slower, same results)")
        return self.fn(*args)

    def _trace(self, args):
        with _patched_tensor_methods(threading.get_ident(), _QUIET_PRINTING), _cheap_caller_lines():
            return self._traced(*args)


# MindSpore's own frames, which its tracer leaves out of an op's debug info (jit_trace._get_caller_lines' rule)
_MINDSPORE_FRAMES = re.compile(r"mindspore/common/.*\.py|mindspore/ops/.*\.py|mindspore/nn/.*\.py")


def _caller_lines():
    """What `jit_trace._get_caller_lines` returns -- (file names, line numbers) of the Python stack, innermost
    first, MindSpore's own frames left out: the debug info of each recorded op -- read from the frames
    themselves. MindSpore's version calls `inspect.stack()`, which looks up every frame's source file (a stat
    per frame, per recorded op): most of a decode step's trace time."""
    files, lines = [], []
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if _MINDSPORE_FRAMES.search(name) is None:
            files.append(name)
            lines.append(frame.f_lineno)
        frame = frame.f_back
    return files, lines


@contextlib.contextmanager
def _cheap_caller_lines():
    """Trace with `_caller_lines` as MindSpore's caller-line lookup (module state: the trace holds the model
    lock, so no other trace runs meanwhile)."""
    try:
        from mindspore.graph import jit_trace
        original = jit_trace._get_caller_lines
    except (ImportError, AttributeError):   # other MindSpore versions: trace as they do
        yield
        return
    jit_trace._get_caller_lines = _caller_lines
    try:
        yield
    finally:
        jit_trace._get_caller_lines = original
