"""AutoTokenizer: transformers' tokenizers, plus what a MindSpore user needs from them.

The tokenizer itself is transformers' (same files, vocab, chat templates). On top:
- `return_tensors="ms"` gives MindSpore tensors ("np" and "pt" work as in transformers);
- the returned BatchEncoding's `.to(model.device)` works for numpy / MindSpore values, and without torch;
- `gguf_file=` is read by our own GGUF metadata reader (gguf_metadata.py): transformers' imports torch;
- a tokenizer whose `auto_map` names repo code of a format we read (ChatGLM3, ...) is built natively from the repo's
  vocabulary file (tokenization_remote.py).
"""
import numpy as np

_MS_NAMES = ("ms", "mindspore")


def _convert_to_ms(encoding):
    import mindspore as ms

    for key, value in list(encoding.items()):
        if isinstance(value, np.ndarray):
            encoding[key] = ms.Tensor(value)
    return encoding


def _adopt_batch_encoding(encoding):
    """Re-wrap HF's BatchEncoding as ours (same data, same encodings) so that `.to()` works for every kind."""
    from transformers import BatchEncoding as HFBatchEncoding

    if not isinstance(encoding, HFBatchEncoding) or isinstance(encoding, BatchEncoding):
        return encoding
    ours = BatchEncoding.__new__(BatchEncoding)
    ours.__dict__.update(encoding.__dict__)
    return ours


def _batch_encoding_base():
    from transformers import BatchEncoding as HFBatchEncoding

    return HFBatchEncoding


class BatchEncoding(_batch_encoding_base()):
    def to(self, device, *args, **kwargs):
        """Move torch values with torch; numpy and MindSpore values stay (MindSpore places by context)."""
        from .tensor_io import is_torch_tensor

        for key, value in list(self.items()):
            if is_torch_tensor(value):
                target = device if str(device).startswith(("cpu", "cuda", "mps")) else "cpu"
                self.data[key] = value.to(target, *args, **kwargs)
        return self


class TokenizerMixin:
    """Mixed into a loaded transformers tokenizer's class (the class name, and so the saved files, stay HF's)."""

    def __call__(self, *args, return_tensors=None, **kwargs):
        as_ms = return_tensors in _MS_NAMES
        out = super().__call__(*args, return_tensors="np" if as_ms else return_tensors, **kwargs)
        if as_ms:
            _convert_to_ms(out)
        return _adopt_batch_encoding(out)

    def pad(self, *args, return_tensors=None, **kwargs):
        as_ms = return_tensors in _MS_NAMES
        out = super().pad(*args, return_tensors="np" if as_ms else return_tensors, **kwargs)
        if as_ms:
            _convert_to_ms(out)
        return _adopt_batch_encoding(out)

    def apply_chat_template(self, *args, return_tensors=None, **kwargs):
        as_ms = return_tensors in _MS_NAMES
        out = super().apply_chat_template(*args, return_tensors="np" if as_ms else return_tensors, **kwargs)
        if as_ms:
            import mindspore as ms

            if isinstance(out, np.ndarray):
                return ms.Tensor(out)
            if hasattr(out, "items"):
                _convert_to_ms(out)
        return _adopt_batch_encoding(out) if hasattr(out, "items") else out


_TOKENIZER_CLASSES = {}


def tokenizer_class(base):
    """transformers' tokenizer class `base` with TokenizerMixin mixed in: one class per base, so a tokenizer
    loaded by AutoTokenizer is an instance of the class `mindformers_hf.<Name>` exports."""
    if issubclass(base, TokenizerMixin):
        return base
    if base not in _TOKENIZER_CLASSES:
        namespace = {"__module__": base.__module__}
        # transformers' from_pretrained reads tokenizer.json as-is when `cls is TokenizersBackend or "__init__"
        # not in cls.__dict__`, and otherwise lets the class's __init__ rebuild the backend: the mixed class
        # must answer that test as its base does.
        if "__init__" in base.__dict__ and base.__name__ != "TokenizersBackend":
            namespace["__init__"] = base.__init__
        _TOKENIZER_CLASSES[base] = type(base.__name__, (TokenizerMixin, base), namespace)
    return _TOKENIZER_CLASSES[base]


def adopt_tokenizer(tokenizer):
    if not isinstance(tokenizer, TokenizerMixin):
        tokenizer.__class__ = tokenizer_class(type(tokenizer))
    return tokenizer


class AutoTokenizer:
    def __init__(self, *args, **kwargs):
        raise EnvironmentError("AutoTokenizer is built with AutoTokenizer.from_pretrained()")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        from transformers import AutoTokenizer as HFAutoTokenizer

        from .hub import no_remote_code
        from .tokenization_remote import remote_tokenizer_class

        if kwargs.get("gguf_file"):
            return adopt_tokenizer(_gguf_tokenizer(pretrained_model_name_or_path, **kwargs))
        with no_remote_code(kwargs, pretrained_model_name_or_path, "AutoTokenizer"):
            native = remote_tokenizer_class(pretrained_model_name_or_path, kwargs)
            if native is not None:  # the repo's tokenizer is code: our class reads its vocabulary file instead
                kwargs.pop("trust_remote_code", None)
                kwargs.pop("use_fast", None)
                return adopt_tokenizer(native.from_pretrained(pretrained_model_name_or_path, *args, **kwargs))
            tokenizer = HFAutoTokenizer.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        return adopt_tokenizer(tokenizer)

    @classmethod
    def register(cls, *args, **kwargs):
        from transformers import AutoTokenizer as HFAutoTokenizer

        return HFAutoTokenizer.register(*args, **kwargs)


_HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token", "force_download")


def _gguf_tokenizer(name_or_path, gguf_file, trust_remote_code=None, **kwargs):
    """The tokenizer of a GGUF file (local folder or hub repo), built from its metadata."""
    import os

    from .gguf_metadata import gguf_tokenizer
    from .hub import resolve_folder

    hub_kwargs = {key: kwargs.pop(key) for key in _HUB_KWARGS if key in kwargs}
    folder = resolve_folder(name_or_path, gguf_file=gguf_file, **hub_kwargs)
    return gguf_tokenizer(os.path.join(folder, gguf_file), name_or_path=str(name_or_path), **kwargs)
