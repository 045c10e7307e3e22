"""`AutoProcessor`: transformers' own processors (preprocessing needs no tensors), loaded so that they run without
torch and torchvision.

transformers' AutoProcessor serves every processor as it is, except the vision-language ones it would build with
torchvision: a Qwen2-VL / Qwen2.5-VL folder gets transformers' processor class with its PIL image processor
(`Qwen2VLImageProcessorPil`: resize, rescale, normalise and patchify in numpy, the same values), the folder's
tokenizer and chat template, and transformers' video processor only when torchvision is installed (it needs it).
The processor itself -- image-pad expansion, `mm_token_type_ids`, `apply_chat_template` with images -- is
transformers' code; pass `return_tensors="np"`.
"""
import contextlib
import importlib.util

# processor_class -> the PIL image processor transformers 5 has for it
_PIL_IMAGE_PROCESSORS = {"Qwen2VLProcessor": "Qwen2VLImageProcessorPil",
                         "Qwen2_5_VLProcessor": "Qwen2VLImageProcessorPil"}
_HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token", "force_download", "subfolder")


@contextlib.contextmanager
def _tolerant_class_check():
    """transformers 5.25 cannot build a processor holding a tokenizer when torchvision is missing: its class check
    also looks the tokenizer's alternative base class (MistralCommonBackend, an optional package) up in
    VIDEO_PROCESSOR_MAPPING, which is then a placeholder without `_extra_content`. Inside this block a class that
    cannot be looked up counts as one nothing is an instance of, so the check asks what it means to: is the
    tokenizer a PreTrainedTokenizerBase."""
    from transformers import processing_utils

    original = processing_utils.ProcessorMixin.__dict__["get_possibly_dynamic_module"]

    def lookup(name):
        try:
            return original.__func__(name)
        except AttributeError:
            return type(None)

    processing_utils.ProcessorMixin.get_possibly_dynamic_module = staticmethod(lookup)
    try:
        yield
    finally:
        processing_utils.ProcessorMixin.get_possibly_dynamic_module = original


def _processor_class(name, hub_kwargs):
    """The `processor_class` a folder or repo's preprocessor_config.json names, or None."""
    from transformers import ImageProcessingMixin

    try:
        config, _ = ImageProcessingMixin.get_image_processor_dict(name, **hub_kwargs)
    except (OSError, ValueError):
        return None
    return config.get("processor_class")


def load_vision_language_processor(name, processor_class, hub_kwargs, **kwargs):
    """transformers' `processor_class` over its PIL image processor, the tokenizer and the chat template."""
    import transformers

    image_processor = getattr(transformers, _PIL_IMAGE_PROCESSORS[processor_class]).from_pretrained(
        name, **hub_kwargs, **kwargs)
    tokenizer = transformers.AutoTokenizer.from_pretrained(name, **hub_kwargs)
    video_processor = None
    if importlib.util.find_spec("torchvision") is not None:  # transformers' video processors need it
        video_processor = transformers.AutoVideoProcessor.from_pretrained(name, **hub_kwargs)
    cls = getattr(transformers, processor_class)
    chat_template = cls.get_processor_dict(name, **hub_kwargs)[0].get("chat_template")
    with _tolerant_class_check():
        return cls(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                   chat_template=chat_template)


class AutoProcessor:
    """transformers' AutoProcessor, with the vision-language processors loaded without torch (module docstring)."""

    def __init__(self, *args, **kwargs):
        raise EnvironmentError("AutoProcessor is built with AutoProcessor.from_pretrained()")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        import transformers

        kwargs.pop("trust_remote_code", None)  # code from a repo is never executed
        hub_kwargs = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}
        processor_class = _processor_class(pretrained_model_name_or_path, hub_kwargs)
        if processor_class in _PIL_IMAGE_PROCESSORS:
            return load_vision_language_processor(pretrained_model_name_or_path, processor_class, hub_kwargs,
                                                  **kwargs)
        return transformers.AutoProcessor.from_pretrained(pretrained_model_name_or_path, **hub_kwargs, **kwargs)

    @staticmethod
    def register(config_class, processor_class, exist_ok=False):
        import transformers

        return transformers.AutoProcessor.register(config_class, processor_class, exist_ok=exist_ok)
