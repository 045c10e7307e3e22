"""Process-wide MindSpore settings we choose for the user, applied once when our model code is imported.

On the CPU backend PyNative dispatches ops to a background thread by default; on a 2-core machine that
thread fights the compute threads and made a decode step ~15x slower than synchronous launch. The
setting only takes effect before the first op runs, so it is applied at import of our modeling code.
Set MINDFORMERS_HF_ASYNC_LAUNCH=1 to keep MindSpore's default.
"""
import os

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


configure_runtime()
