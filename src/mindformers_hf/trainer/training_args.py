"""TrainingArguments: transformers' own dataclass (same fields, same CLI parsing, same JSON), made torch-free.

transformers' TrainingArguments sets up torch/accelerate devices in its properties and rejects `bf16=True`
on a machine without a bf16 GPU. Ours answers the device questions from MindSpore's context instead, and
leaves bf16 to the Trainer (which trains in float32 on the CPU backend, with a one-time warning).

It also accepts `warmup_ratio`, the transformers 4.x field that 5.x folded into `warmup_steps` (a float
below 1): HF's fine-tuning guides still pass it. Likewise `group_by_length=True`, the 4.x spelling of 5.x's
`train_sampling_strategy="group_by_length"`.
"""
import contextlib
import math
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
        super().__post_init__()

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
