"""`pipeline(task, model=...)` with transformers' task names and output schema."""
from .automatic_speech_recognition import AutomaticSpeechRecognitionPipeline
from .feature_extraction import FeatureExtractionPipeline
from .image_text_to_text import ImageTextToTextPipeline
from .text_classification import TextClassificationPipeline
from .text_generation import TextGenerationPipeline
from .token_classification import TokenClassificationPipeline

# task -> (pipeline class, the Auto class that loads its model)
SUPPORTED_TASKS = {"text-generation": (TextGenerationPipeline, "AutoModelForCausalLM"),
                   "text-classification": (TextClassificationPipeline, "AutoModelForSequenceClassification"),
                   "feature-extraction": (FeatureExtractionPipeline, "AutoModel"),
                   "token-classification": (TokenClassificationPipeline, "AutoModelForTokenClassification"),
                   "automatic-speech-recognition": (AutomaticSpeechRecognitionPipeline, "AutoModelForSpeechSeq2Seq"),
                   "image-text-to-text": (ImageTextToTextPipeline, "AutoModelForImageTextToText")}
# tasks whose inputs go through a processor (loaded from the model's folder unless `processor=` is given)
PROCESSOR_TASKS = ("image-text-to-text",)
TASK_ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}


def pipeline(task=None, model=None, tokenizer=None, revision=None, use_fast=True, token=None, dtype=None,
             torch_dtype=None, device=None, device_map=None, trust_remote_code=None, model_kwargs=None,
             gguf_file=None, processor=None, **kwargs):
    """Build a pipeline as transformers does; `model` is a folder, a repo id or a loaded model.

    As in transformers, `revision`, `token` and `trust_remote_code` (the hub kwargs) reach both the model's and the
    tokenizer's `from_pretrained`, and so do `model_kwargs` (the tokenizer without `dtype`).
    """
    from ..utils import warn_once

    if task is None:
        task = "text-generation"
    task = TASK_ALIASES.get(task, task)
    if task not in SUPPORTED_TASKS:
        raise ValueError(f"Task {task!r} is not supported yet; supported tasks: {', '.join(SUPPORTED_TASKS)}")
    if model is None:
        raise ValueError("pipeline() needs `model=`: a checkpoint folder, a hub repo id or a loaded model")
    for name, value in (("device", device), ("device_map", device_map)):
        if value is not None:
            warn_once(f"pipeline: {name}={value!r} is accepted and ignored (MindSpore places tensors by context)")
    hub_kwargs = {name: value for name, value in (("revision", revision), ("token", token),
                                                  ("trust_remote_code", trust_remote_code),
                                                  ("local_files_only", kwargs.pop("local_files_only", None)))
                  if value is not None}
    model_kwargs = dict(model_kwargs or {})
    for name in hub_kwargs:
        if name in model_kwargs:  # transformers passes both to from_pretrained, which fails the same way
            raise ValueError(f"pipeline() got {name!r} both as an argument and in model_kwargs; pass it once")
    if gguf_file is not None:
        model_kwargs["gguf_file"] = gguf_file
    if hasattr(model, "__fspath__"):
        model = str(model)
    if isinstance(model, str):
        from ..models import auto

        dtype = dtype if dtype is not None else torch_dtype
        if dtype is not None:
            model_kwargs.setdefault("dtype", dtype)
        name_or_path = model
        model = getattr(auto, SUPPORTED_TASKS[task][1]).from_pretrained(name_or_path, **hub_kwargs, **model_kwargs)
        if tokenizer is None:  # (an adapter repo's model is its base model, whose repo holds the tokenizer)
            tokenizer = getattr(model.config, "name_or_path", None) or name_or_path
    if task in PROCESSOR_TASKS:  # the processor holds the tokenizer
        if processor is None or isinstance(processor, str):
            from ..processing import AutoProcessor

            source = processor or (tokenizer if isinstance(tokenizer, str) else None) or \
                getattr(model.config, "name_or_path", None)
            processor = AutoProcessor.from_pretrained(source, **hub_kwargs)
        return SUPPORTED_TASKS[task][0](model=model, processor=processor,
                                        tokenizer=None if isinstance(tokenizer, str) else tokenizer, **kwargs)
    if processor is not None:
        warn_once(f"pipeline: processor= is accepted and ignored for {task!r}")
    if tokenizer is None:
        tokenizer = getattr(model.config, "name_or_path", None)
    if isinstance(tokenizer, (str, tuple)):
        from ..tokenization import AutoTokenizer

        if isinstance(tokenizer, tuple):  # transformers' (identifier, tokenizer kwargs) form
            tokenizer, tokenizer_kwargs = tokenizer[0], dict(tokenizer[1])
        else:
            tokenizer_kwargs = {k: v for k, v in model_kwargs.items() if k not in ("dtype", "torch_dtype")}
        if not use_fast:  # the default stays out of the kwargs: the GGUF tokenizer would keep it as an init kwarg
            tokenizer_kwargs.setdefault("use_fast", False)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer, **hub_kwargs, **tokenizer_kwargs)
    return SUPPORTED_TASKS[task][0](model=model, tokenizer=tokenizer, **kwargs)


__all__ = ["pipeline", "AutomaticSpeechRecognitionPipeline", "FeatureExtractionPipeline", "ImageTextToTextPipeline",
           "TextClassificationPipeline", "TextGenerationPipeline",
           "TokenClassificationPipeline", "SUPPORTED_TASKS"]
