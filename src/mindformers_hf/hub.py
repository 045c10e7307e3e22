"""Turning a `pretrained_model_name_or_path` into a local folder: a folder as is, a repo id via huggingface_hub."""
import os

# What from_pretrained may need from a repo; weight formats we never load (*.bin, *.pt, *.h5) are left out.
ALLOW_PATTERNS = [
    "*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.jinja", "tokenizer*", "merges.txt",
]


def resolve_folder(name_or_path, revision=None, cache_dir=None, local_files_only=False, token=None,
                   gguf_file=None, **_ignored):
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        return path
    if os.path.isfile(path):
        raise ValueError(
            f"{path} is a file; pass its folder (and for a GGUF file, gguf_file='{os.path.basename(path)}')"
        )
    from huggingface_hub import snapshot_download

    patterns = [gguf_file, "*.json", "tokenizer*"] if gguf_file else ALLOW_PATTERNS
    return snapshot_download(
        path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token,
        allow_patterns=patterns,
    )
