"""mindformers_hf: transformers' API on native MindSpore models.

`from mindformers_hf import AutoModelForCausalLM, AutoTokenizer` behaves like transformers. Names are
resolved lazily, so `import mindformers_hf` is fast and never imports torch (nor MindSpore, until a
model or tensor is touched).
"""
import importlib
import os
from fnmatch import fnmatch

__version__ = "0.1.0"

# public name -> module that defines it ("transformers" for tensor-free re-exports). The model families' classes
# and config classes come from their declarations (models/<family>/__init__.py), read on first use: _exports().
_LAZY = {
    "AutoModel": "mindformers_hf.models.auto",
    "AutoModelForCausalLM": "mindformers_hf.models.auto",
    "AutoModelForSequenceClassification": "mindformers_hf.models.auto",
    "AutoModelForTokenClassification": "mindformers_hf.models.auto",
    "AutoModelForImageTextToText": "mindformers_hf.models.auto",
    "AutoModelForSpeechSeq2Seq": "mindformers_hf.models.auto",
    # audio preprocessing needs no tensors: transformers' own (numpy; return_tensors="np")
    "AutoProcessor": "mindformers_hf.processing",  # transformers', loading vision-language ones without torch
    "QWenVLImageProcessor": "mindformers_hf.models.qwen.processing_qwen_vl",  # Qwen-VL v1 has no HF processor
    "AutoFeatureExtractor": "transformers",
    "WhisperProcessor": "transformers",
    "WhisperFeatureExtractor": "transformers",
    "AutoTokenizer": "mindformers_hf.tokenization",
    "PreTrainedModel": "mindformers_hf.modeling_utils",
    "DynamicCache": "mindformers_hf.cache_utils",
    "GenerationMixin": "mindformers_hf.generation",
    "LogitsProcessor": "mindformers_hf.generation",
    "LogitsProcessorList": "mindformers_hf.generation",
    "LogitsWarper": "mindformers_hf.generation",
    "TemperatureLogitsWarper": "mindformers_hf.generation",
    "TopKLogitsWarper": "mindformers_hf.generation",
    "TopPLogitsWarper": "mindformers_hf.generation",
    "MinPLogitsWarper": "mindformers_hf.generation",
    "RepetitionPenaltyLogitsProcessor": "mindformers_hf.generation",
    "NoRepeatNGramLogitsProcessor": "mindformers_hf.generation",
    "MinLengthLogitsProcessor": "mindformers_hf.generation",
    "MinNewTokensLengthLogitsProcessor": "mindformers_hf.generation",
    "SuppressTokensLogitsProcessor": "mindformers_hf.generation",
    "SuppressTokensAtBeginLogitsProcessor": "mindformers_hf.generation",
    "ForcedBOSTokenLogitsProcessor": "mindformers_hf.generation",
    "ForcedEOSTokenLogitsProcessor": "mindformers_hf.generation",
    "InfNanRemoveLogitsProcessor": "mindformers_hf.generation",
    "LogitNormalization": "mindformers_hf.generation",
    "TypicalLogitsWarper": "mindformers_hf.generation",
    "EpsilonLogitsWarper": "mindformers_hf.generation",
    "EtaLogitsWarper": "mindformers_hf.generation",
    "TopHLogitsWarper": "mindformers_hf.generation",
    "SequenceBiasLogitsProcessor": "mindformers_hf.generation",
    "NoBadWordsLogitsProcessor": "mindformers_hf.generation",
    "PrefixConstrainedLogitsProcessor": "mindformers_hf.generation",
    "ExponentialDecayLengthPenalty": "mindformers_hf.generation",
    "SuppressTokensAtBeginLogitsProcessor": "mindformers_hf.generation",
    "StoppingCriteria": "mindformers_hf.generation",
    "StoppingCriteriaList": "mindformers_hf.generation",
    "MaxLengthCriteria": "mindformers_hf.generation",
    "MaxTimeCriteria": "mindformers_hf.generation",
    "EosTokenCriteria": "mindformers_hf.generation",
    "StopStringCriteria": "mindformers_hf.generation",
    "GenerateDecoderOnlyOutput": "mindformers_hf.generation",
    "GenerateBeamDecoderOnlyOutput": "mindformers_hf.generation",
    "StaticCache": "mindformers_hf.cache_utils",
    "CheckpointError": "mindformers_hf.safetensors_io",
    "pipeline": "mindformers_hf.pipelines",
    "TextGenerationPipeline": "mindformers_hf.pipelines",
    "AutomaticSpeechRecognitionPipeline": "mindformers_hf.pipelines",
    "ImageTextToTextPipeline": "mindformers_hf.pipelines",
    "TextClassificationPipeline": "mindformers_hf.pipelines",
    "FeatureExtractionPipeline": "mindformers_hf.pipelines",
    "TokenClassificationPipeline": "mindformers_hf.pipelines",
    "Trainer": "mindformers_hf.trainer",
    "Seq2SeqTrainer": "mindformers_hf.trainer",
    "Seq2SeqTrainingArguments": "mindformers_hf.trainer",
    "TrainingArguments": "mindformers_hf.trainer",
    "TrainerCallback": "mindformers_hf.trainer",
    "TrainerState": "mindformers_hf.trainer",
    "TrainerControl": "mindformers_hf.trainer",
    "DefaultFlowCallback": "mindformers_hf.trainer",
    "ProgressCallback": "mindformers_hf.trainer",
    "PrinterCallback": "mindformers_hf.trainer",
    "EarlyStoppingCallback": "mindformers_hf.trainer",
    "EvalPrediction": "mindformers_hf.trainer",
    "IntervalStrategy": "mindformers_hf.trainer",
    "SchedulerType": "mindformers_hf.trainer",
    "get_scheduler": "mindformers_hf.trainer",
    "Adafactor": "mindformers_hf.trainer",
    "get_constant_schedule": "mindformers_hf.trainer",
    "get_constant_schedule_with_warmup": "mindformers_hf.trainer",
    "get_cosine_schedule_with_warmup": "mindformers_hf.trainer",
    "get_cosine_with_hard_restarts_schedule_with_warmup": "mindformers_hf.trainer",
    "get_cosine_with_min_lr_schedule_with_warmup": "mindformers_hf.trainer",
    "get_cosine_with_min_lr_schedule_with_warmup_lr_rate": "mindformers_hf.trainer",
    "get_inverse_sqrt_schedule": "mindformers_hf.trainer",
    "get_linear_schedule_with_warmup": "mindformers_hf.trainer",
    "get_polynomial_decay_schedule_with_warmup": "mindformers_hf.trainer",
    "get_wsd_schedule": "mindformers_hf.trainer",
    "set_seed": "mindformers_hf.utils",
    "enable_full_determinism": "mindformers_hf.utils",
    "DataCollatorForLanguageModeling": "mindformers_hf.data",
    "DataCollatorWithPadding": "mindformers_hf.data",
    "DefaultDataCollator": "mindformers_hf.data",
    "default_data_collator": "mindformers_hf.data",
    "DataCollatorForSeq2Seq": "mindformers_hf.data",
    "DataCollatorForTokenClassification": "mindformers_hf.data",
    "DataCollatorForMultipleChoice": "mindformers_hf.data",
    "DataCollatorWithFlattening": "mindformers_hf.data",
    "DataCollator": "transformers",
    "AutoConfig": "mindformers_hf.models.auto",  # transformers' own, with remote code never executed
    # tensor-free names from transformers
    "PretrainedConfig": "transformers",
    "PreTrainedConfig": "transformers",
    "GenerationConfig": "transformers",
    "PreTrainedTokenizerFast": "transformers",
    "PreTrainedTokenizerBase": "transformers",
    "BatchEncoding": "transformers",
    "TextStreamer": "transformers",
    "TextIteratorStreamer": "transformers",
    "AsyncTextIteratorStreamer": "transformers",
    "HfArgumentParser": "transformers",
    "AddedToken": "transformers",
    "CharSpan": "transformers",
    "TokenSpan": "transformers",
    "PreTrainedTokenizer": "transformers",
    "PythonBackend": "transformers",
    "SentencePieceBackend": "transformers",
    "TokenizersBackend": "transformers",
    "CONFIG_MAPPING": "transformers",
    "TOKENIZER_MAPPING": "transformers",
    "get_values": "transformers",
}

# Whole transformers modules (relative to `transformers`, fnmatch patterns) whose public names need no tensors
# and are re-exported as they are: constants, `is_*_available`, docstring helpers, `logging`, every family's
# config class. Family tokenizer classes come through tokenization.py, which adds `return_tensors="ms"`.
_TRANSFORMERS_MODULES = ("utils", "integrations", "models.*.configuration_*")
_TOKENIZER_MODULES = ("models.*.tokenization_*",)


def _exports():
    """_LAZY and every family's names: {public name: defining module}."""
    global _EXPORTS
    if _EXPORTS is None:
        from .models.families import exports

        _EXPORTS = {**exports(), **_LAZY}
    return _EXPORTS


_EXPORTS = None


def _transformers_module_of(name):
    """The module (relative to `transformers`) that defines a public transformers name, or None."""
    if name.startswith("_"):
        return None
    import transformers

    # transformers' lazy module keeps its name -> module table here (there is no public accessor)
    return getattr(transformers, "_class_to_module", {}).get(name)


def _source(name):
    """Where an exported name comes from: a module of ours, "transformers", "tokenizer" (a transformers
    tokenizer class with our mixin), or None when mindformers_hf does not export it. Imports nothing but
    transformers' lazy table and the families' (tensor-free) declarations."""
    if name in _exports():
        return _exports()[name]
    module = _transformers_module_of(name)
    if module is not None and any(fnmatch(module, p) for p in _TRANSFORMERS_MODULES):
        return "transformers"
    if module is not None and any(fnmatch(module, p) for p in _TOKENIZER_MODULES):
        return "tokenizer"
    return None


def _resolve(name):
    source = _source(name)
    if source is None:
        raise AttributeError(f"module 'mindformers_hf' has no attribute {name!r}")
    if source == "tokenizer":
        from .tokenization import tokenizer_class

        return tokenizer_class(getattr(importlib.import_module("transformers"), name))
    return getattr(importlib.import_module(source), name)


def _is_submodule(name):
    here = os.path.dirname(__file__)
    return os.path.isfile(os.path.join(here, name + ".py")) or os.path.isfile(os.path.join(here, name, "__init__.py"))


def __getattr__(name):
    if name == "__all__":  # computed on first use, as the family names are (`from mindformers_hf import *`)
        value = globals()["__all__"] = sorted(_exports())
        return value
    if _is_submodule(name):  # `from .. import ops` asks here first: let the import system load the module,
        raise AttributeError(name)  # without building the family table (it imports every family package)
    value = _resolve(name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_exports()))
