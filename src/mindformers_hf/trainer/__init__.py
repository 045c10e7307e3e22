"""Training: transformers' Trainer API on MindSpore models.

`TrainingArguments` is transformers' dataclass (torch-free device properties); callbacks, `TrainerState`
and `TrainerControl` are transformers' own; the loop, optimizer, schedules and checkpoints are ours.
"""
from transformers.trainer_utils import EvalPrediction, IntervalStrategy, SchedulerType, get_last_checkpoint

from .callbacks import (
    DefaultFlowCallback,
    EarlyStoppingCallback,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
    TrainerControl,
    TrainerState,
)
from .optimization import AdamW, GradScaler, LambdaLR, get_scheduler
from .trainer import Trainer, set_seed
from .training_args import TrainingArguments

__all__ = ["AdamW", "DefaultFlowCallback", "EarlyStoppingCallback", "EvalPrediction", "GradScaler",
           "IntervalStrategy", "LambdaLR", "PrinterCallback", "ProgressCallback", "SchedulerType", "Trainer",
           "TrainerCallback", "TrainerControl", "TrainerState", "TrainingArguments", "get_last_checkpoint",
           "get_scheduler", "set_seed"]
