"""Fault injection for the launcher's restart test: run a training script (argv[3:]) with one rank SIGKILLed at
the start of a given optimizer step, in the first attempt only (torchrun's TORCHELASTIC_RESTART_COUNT, which
`mindformers-hf launch --max_restarts` exports, is 0 there).

argv: rank step script.py [script args...]
"""
import os
import runpy
import signal
import sys

from mindformers_hf import Trainer, TrainerCallback

rank, step, script = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]


class KillAtStep(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == step and args.process_index == rank:
            print(f"KILLING rank={rank} at the start of step {step + 1}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


if os.environ.get("TORCHELASTIC_RESTART_COUNT") == "0":
    _init = Trainer.__init__

    def _init_with_fault(self, *args, **kwargs):
        _init(self, *args, **kwargs)
        self.add_callback(KillAtStep())

    Trainer.__init__ = _init_with_fault
sys.argv = sys.argv[3:]
runpy.run_path(script, run_name="__main__")
