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
from .optimization import AdamW, GradScaler
from .optimizers import SGD, Adafactor, Adagrad, RMSprop
from .tensorboard import TensorBoardCallback
from .schedules import (
    LambdaLR,
    get_constant_schedule,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_cosine_with_hard_restarts_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
    get_inverse_sqrt_schedule,
    get_linear_schedule_with_warmup,
    get_polynomial_decay_schedule_with_warmup,
    get_scheduler,
    get_wsd_schedule,
)
from .trainer import Trainer, set_seed
from .seq2seq import Seq2SeqTrainer, Seq2SeqTrainingArguments
from .training_args import TrainingArguments

__all__ = ["Adafactor", "Adagrad", "AdamW", "RMSprop", "SGD", "TensorBoardCallback", "DefaultFlowCallback", "EarlyStoppingCallback", "EvalPrediction", "GradScaler",
           "IntervalStrategy", "LambdaLR", "PrinterCallback", "ProgressCallback", "SchedulerType", "Seq2SeqTrainer", "Seq2SeqTrainingArguments", "Trainer",
           "TrainerCallback", "TrainerControl", "TrainerState", "TrainingArguments", "get_last_checkpoint",
           "get_scheduler", "set_seed", "get_constant_schedule", "get_constant_schedule_with_warmup",
           "get_cosine_schedule_with_warmup", "get_cosine_with_hard_restarts_schedule_with_warmup",
           "get_cosine_with_min_lr_schedule_with_warmup", "get_cosine_with_min_lr_schedule_with_warmup_lr_rate",
           "get_inverse_sqrt_schedule", "get_linear_schedule_with_warmup", "get_polynomial_decay_schedule_with_warmup",
           "get_wsd_schedule"]
