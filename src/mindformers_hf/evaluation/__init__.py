"""Evaluation: an lm-evaluation-harness backend and the seed's metrics.

`import mindformers_hf.evaluation` registers the `mindformers_hf` model with lm_eval when lm_eval is installed
(a lazy entry: lm_eval loads harness.py on first use). The metrics need neither lm_eval nor torch; every name
here is resolved on first access.
"""
import importlib
from importlib.util import find_spec

_LAZY = {
    "MindFormersLM": "harness",
    "perplexity": "perplexity",
    "pass_at_k": "humaneval",
    "estimate_pass_at_k": "humaneval",
    "run_humaneval": "humaneval",
    "run_program": "humaneval",
    "rouge_bleu": "text_metrics",
    "ceval_accuracy": "multiple_choice",
}

__all__ = sorted(_LAZY)

if find_spec("lm_eval") is not None:
    import lm_eval.models  # noqa: F401  (lm_eval's own lazy table first: it fills the registry only when empty)
    from lm_eval.api.registry import model_registry as _models

    if "mindformers_hf" not in _models:
        _models.register("mindformers_hf", target="mindformers_hf.evaluation.harness:MindFormersLM")


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mindformers_hf.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
