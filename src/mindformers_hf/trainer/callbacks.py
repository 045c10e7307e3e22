"""Callbacks: transformers' own (they touch no tensors), plus a progress bar that also shows throughput.

A `TrainerCallback` written for transformers' Trainer works unchanged: the Trainer fires the same events
with the same arguments (`model`, `processing_class`, `optimizer`, `lr_scheduler`, `train_dataloader`,
`eval_dataloader`, and `logs` / `metrics`). On training logs it also passes `tokens_per_second`.
"""
from transformers.trainer_callback import (  # noqa: F401  (re-exports)
    CallbackHandler,
    DefaultFlowCallback,
    EarlyStoppingCallback,
    ExportableState,
    PrinterCallback as _HFPrinterCallback,
    ProgressCallback as _HFProgressCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
)


def _with_throughput(logs, tokens_per_second):
    if tokens_per_second is None or logs is None or "loss" not in logs:
        return logs
    return {**logs, "tokens_per_second": round(tokens_per_second, 1)}


class ProgressCallback(_HFProgressCallback):
    """transformers' tqdm bar; training log lines and the bar also show tokens/s."""

    def on_log(self, args, state, control, logs=None, tokens_per_second=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
            postfix = {"loss": f"{logs['loss']:.4g}", "lr": f"{logs.get('learning_rate', 0.0):.3g}"}
            if logs.get("grad_norm") is not None:
                postfix["grad_norm"] = f"{logs['grad_norm']:.3g}"
            if tokens_per_second is not None:
                postfix["tok/s"] = f"{tokens_per_second:.0f}"
            self.training_bar.set_postfix(postfix, refresh=False)
        super().on_log(args, state, control, logs=_with_throughput(logs, tokens_per_second), **kwargs)


class PrinterCallback(_HFPrinterCallback):
    """transformers' plain printer (disable_tqdm=True); training log lines also show tokens/s."""

    def on_log(self, args, state, control, logs=None, tokens_per_second=None, **kwargs):
        super().on_log(args, state, control, logs=_with_throughput(logs, tokens_per_second), **kwargs)
