"""TrainingArguments: transformers' own dataclass (same fields, same CLI parsing, same JSON), made torch-free.

transformers' TrainingArguments sets up torch/accelerate devices in its properties and rejects `bf16=True`
on a machine without a bf16 GPU. Ours answers the device questions from MindSpore's context instead, and
leaves bf16 to the Trainer (which trains in float32 on the CPU backend, with a one-time warning).

It also accepts `warmup_ratio`, the transformers 4.x field that 5.x folded into `warmup_steps` (a float
below 1): HF's fine-tuning guides still pass it. Likewise `group_by_length=True`, the 4.x spelling of 5.x's
`train_sampling_strategy="group_by_length"`.

`deepspeed={"zero_optimization": {"stage": 1}}` (a dict or a JSON file, DeepSpeed's config), or `accelerate
launch --use_deepspeed --zero_stage 1`'s environment, turns on ZeRO stage 1 without DeepSpeed: AdamW's moments
are split over the data-parallel ranks (trainer/zero.py). Stages 2 and 3 are refused; the config's other keys
are ignored with a warning.
"""
import contextlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Optional

import transformers
from transformers.training_args import ParallelMode


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    warmup_ratio: Optional[float] = field(
        default=None,
        metadata={"help": "transformers 4.x: ratio of total training steps used for a linear warmup "
                          "(used when warmup_steps is 0)."},
    )

    group_by_length: bool = field(
        default=False,
        metadata={"help": "transformers 4.x: group examples of similar length into batches (5.x: "
                          "train_sampling_strategy='group_by_length')."},
    )

    def __post_init__(self):
        if self.group_by_length:
            if self.train_sampling_strategy not in ("random", "group_by_length"):
                raise ValueError(f"group_by_length=True conflicts with train_sampling_strategy="
                                 f"{self.train_sampling_strategy!r}")
            self.train_sampling_strategy = "group_by_length"
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError(f"warmup_ratio must lie in [0, 1], got {self.warmup_ratio}")
        # DeepSpeed is not used: its ZeRO stage 1 (optimizer-state sharding) runs natively (trainer/zero.py).
        # transformers would build a DeepSpeed plugin from the config or from accelerate's launcher variable.
        self.zero_stage = _zero_stage(self.deepspeed)
        deepspeed, env_flag = self.deepspeed, os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
        self.deepspeed = None
        try:
            super().__post_init__()
        finally:
            self.deepspeed = deepspeed
            if env_flag is not None:
                os.environ["ACCELERATE_USE_DEEPSPEED"] = env_flag

    def _validate_args(self):
        # HF checks torch's CUDA bf16 support here; bf16 on our backends is handled by the Trainer.
        bf16, bf16_full_eval = self.bf16, self.bf16_full_eval
        self.bf16 = self.bf16_full_eval = False
        try:
            super()._validate_args()
        finally:
            self.bf16, self.bf16_full_eval = bf16, bf16_full_eval
        if self.fp16 and self.bf16:
            raise ValueError("At most one of fp16 and bf16 can be True, but not both")

    def get_warmup_steps(self, num_training_steps: int):
        if self.warmup_ratio and not self.warmup_steps:
            return math.ceil(num_training_steps * self.warmup_ratio)
        return super().get_warmup_steps(num_training_steps)

    # ------------------------------------------------------------------ devices, from MindSpore
    @property
    def _setup_devices(self):
        from ..utils import device_target

        target = device_target()
        if target == "CPU":
            return "cpu"
        import mindspore as ms

        return f"{target.lower()}:{ms.get_context('device_id')}"

    @property
    def device(self):
        """'cpu' or e.g. 'ascend:0' (a string: MindSpore places tensors by context)."""
        return self._setup_devices

    @property
    def n_gpu(self):
        return 0 if self.device == "cpu" else 1

    # The process layout comes from msrun's environment (trainer/distributed.py): `mindformers-hf launch
    # --num_processes N` makes N data-parallel ranks, as `accelerate launch` does for transformers.
    @property
    def parallel_mode(self):
        from .distributed import world_size

        return ParallelMode.DISTRIBUTED if world_size() > 1 else ParallelMode.NOT_PARALLEL

    @property
    def world_size(self):
        from .distributed import world_size

        return world_size()

    @property
    def process_index(self):
        from .distributed import rank

        return rank()

    @property
    def local_process_index(self):
        from .distributed import local_rank

        return local_rank()

    @contextlib.contextmanager
    def main_process_first(self, local=True, desc="work"):
        """transformers' context manager (run_clm wraps its dataset map in it) on our collectives: the main
        process (of this machine when `local`) runs the block first, the other ranks after it; one barrier on
        each side, as transformers' torch.distributed version. A world of one just runs the block."""
        from . import distributed as dist

        if self.world_size == 1:
            yield
            return
        is_main = (self.local_process_index if local else self.process_index) == 0
        try:
            if not is_main:
                dist.barrier()
            yield
        finally:
            if is_main:
                dist.barrier()


_DS_KEYS_USED = {"zero_optimization"}


def _zero_stage(deepspeed):
    """The ZeRO stage asked for: DeepSpeed's config (TrainingArguments.deepspeed), else accelerate's launcher
    variables (ACCELERATE_USE_DEEPSPEED=true, ACCELERATE_DEEPSPEED_ZERO_STAGE), else 0."""
    from ..utils import warn_once

    stage = 0
    if deepspeed:
        config = deepspeed
        if isinstance(config, str):
            with open(config, encoding="utf-8") as f:
                config = json.load(f)
        if not isinstance(config, dict):
            raise ValueError(f"deepspeed must be a dict or the path of a JSON file, got {type(deepspeed).__name__}")
        ignored = sorted(set(config) - _DS_KEYS_USED)
        if ignored:
            warn_once(f"TrainingArguments.deepspeed: only zero_optimization.stage is used (ZeRO stage 1 runs natively, "
                      f"without DeepSpeed); ignored: {', '.join(ignored)}")
        zero = dict(config.get("zero_optimization") or {})
        stage = zero.pop("stage", 0)
        if zero:
            warn_once(f"TrainingArguments.deepspeed: zero_optimization options ignored: {', '.join(sorted(zero))}")
    elif os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true", "yes"):
        stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "0")
    stage = int(stage)
    if stage not in (0, 1):
        raise NotImplementedError(f"ZeRO stage {stage} is not supported: stage 1 (optimizer state sharded over the "
                                  "data-parallel ranks) is; parameters and gradients stay whole on every rank")
    return stage
