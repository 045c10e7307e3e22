"""accelerate's Python API on MindSpore: `from mindformers_hf.accelerate import Accelerator`.

The training loop keeps accelerate's shape; what a torch loop must change (no `loss.backward()`) is in
accelerator.py's docstring and docs/differences.md. Launching many processes is `mindformers-hf launch`.
"""
from ..utils import set_seed
from .accelerator import Accelerator

__all__ = ["Accelerator", "set_seed"]
