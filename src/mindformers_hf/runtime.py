"""Process-wide MindSpore settings we choose for the user, applied once when our model code is imported,
and the one lock that serialises MindSpore work across threads.

On the CPU backend PyNative dispatches ops to a background thread by default; on a 2-core machine that
thread fights the compute threads and made a decode step ~15x slower than synchronous launch. The
setting only takes effect before the first op runs, so it is applied at import of our modeling code.
Set MINDFORMERS_HF_ASYNC_LAUNCH=1 to keep MindSpore's default.
"""
import contextlib
import contextvars
import functools
import os
import threading

import mindspore as ms

_configured = False


def configure_runtime():
    global _configured
    if _configured:
        return
    _configured = True
    if os.environ.get("MS_ROLE") == "MS_SCHED":
        # msrun runs the user's script in its scheduler process too: serve the job now (init() does not return
        # there) instead of loading a model that process would never use
        from .trainer.distributed import ensure_initialized

        ensure_initialized()
    if os.environ.get("MINDFORMERS_HF_DEVICE"):  # `mindformers-hf launch --cpu`
        ms.set_device(os.environ["MINDFORMERS_HF_DEVICE"])
    if ms.get_context("device_target") == "CPU" and os.environ.get("MINDFORMERS_HF_ASYNC_LAUNCH") != "1":
        ms.runtime.launch_blocking()


# MindSpore's PyNative runtime is not thread-safe: two threads running ops at once -- two forwards, even on two
# separate models, or a forward beside a generate -- crash the process or fail inside MindSpore. Every entry point
# that runs MindSpore work for the caller (a model's forward, a generate's prefill/decode step, a Trainer step with
# its backward and optimizer update, evaluation) holds this lock, so such calls from many threads take turns.
# It is taken per model call, not per generate: a streamer's or a logits processor's callback runs without it, so a
# thread consuming a TextIteratorStreamer may itself call a model meanwhile.
# Re-entrant by context rather than by thread: `run_as_holder` lets a helper thread work for the holder (the
# decode-step tracer runs in a worker thread while its caller waits with the lock held).
_lock = threading.Lock()
_holding = contextvars.ContextVar("mindformers_hf_holds_model_lock", default=False)


@contextlib.contextmanager
def model_lock():
    """Hold the process-wide MindSpore lock for the block (re-entrant)."""
    if _holding.get():
        yield
        return
    with _lock:
        token = _holding.set(True)
        try:
            yield
        finally:
            _holding.reset(token)


def serialized(fn):
    """Decorator: `fn` runs under `model_lock()`."""
    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with model_lock():
            return fn(*args, **kwargs)
    return locked


def run_as_holder(submit, fn, *args):
    """`submit(fn, *args)` (e.g. an executor's submit) with `fn` running in a copy of the caller's context, so a
    helper thread the caller waits for shares the caller's hold on the lock (and its `use_kernels` mode)."""
    return submit(contextvars.copy_context().run, fn, *args)


# last: in msrun's scheduler process this serves the job through trainer.distributed, which imports this module's
# lock (above) back
configure_runtime()
