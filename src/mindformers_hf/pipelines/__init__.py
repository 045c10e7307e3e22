"""`pipeline(task, model=...)` with transformers' task names and output schema."""
from .automatic_speech_recognition import AutomaticSpeechRecognitionPipeline
from .feature_extraction import FeatureExtractionPipeline
from .text_classification import TextClassificationPipeline
from .text_generation import TextGenerationPipeline
from .token_classification import TokenClassificationPipeline

# task -> (pipeline class, the Auto class that loads its model)
SUPPORTED_TASKS = {"text-generation": (TextGenerationPipeline, "AutoModelForCausalLM"),
                   "text-classification": (TextClassificationPipeline, "AutoModelForSequenceClassification"),
                   "feature-extraction": (FeatureExtractionPipeline, "AutoModel"),
                   "token-classification": (TokenClassificationPipeline, "AutoModelForTokenClassification"),
                   "automatic-speech-recognition": (AutomaticSpeechRecognitionPipeline, "AutoModelForSpeechSeq2Seq")}
TASK_ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}


def pipeline(task=None, model=None, tokenizer=None, dtype=None, torch_dtype=None, device=None, device_map=None,
             model_kwargs=None, trust_remote_code=None, gguf_file=None, **kwargs):
    """Build a pipeline as transformers does; `model` is a folder, a repo id or a loaded model."""
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
    model_kwargs = dict(model_kwargs or {})
    if gguf_file is not None:
        model_kwargs["gguf_file"] = gguf_file
    if isinstance(model, str):
        from ..models import auto

        dtype = dtype if dtype is not None else torch_dtype
        if dtype is not None:
            model_kwargs.setdefault("dtype", dtype)
        name_or_path = model
        model = getattr(auto, SUPPORTED_TASKS[task][1]).from_pretrained(name_or_path, **model_kwargs)
        if tokenizer is None:
            tokenizer = name_or_path
    if tokenizer is None:
        tokenizer = getattr(model.config, "name_or_path", None)
    if isinstance(tokenizer, str):
        from ..tokenization import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer, **({"gguf_file": model_kwargs["gguf_file"]}
                                                                  if "gguf_file" in model_kwargs else {}))
    return SUPPORTED_TASKS[task][0](model=model, tokenizer=tokenizer, **kwargs)


__all__ = ["pipeline", "AutomaticSpeechRecognitionPipeline", "FeatureExtractionPipeline", "TextClassificationPipeline", "TextGenerationPipeline",
           "TokenClassificationPipeline", "SUPPORTED_TASKS"]
