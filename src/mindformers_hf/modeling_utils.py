"""PreTrainedModel: the HF model surface (from_pretrained, save_pretrained, dtype, device, tied weights)
on a MindSpore `nn.Cell` whose parameter names are the HF checkpoint keys.
"""
import json
import os
import re

import numpy as np
import mindspore as ms
from mindspore import nn

from . import runtime, tensor_io
from .generation.utils import GenerationMixin
from .hub import CheckpointLocation, locate
from .modeling_outputs import ModelOutput
from .resize_embeddings import check_resizable, padded_size, resize_rows
from .peft.integration import PeftAdapterMixin
from .checkpoint_files import (SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, add_variant, is_weights_file,
                               local_weight_files, shard_name)
from .safetensors_io import (
    CheckpointError,
    SafetensorsFile,
    bf16_bits_to_float32,
    atomic_write_text,
    safetensors_dtype,
    write_safetensors,
)
from .weight_loading import fill_parameters, iter_safetensors
from .utils import (UnsupportedDtypeError, canonical_dtype_name, compute_dtype_name, device_target, logger,
                    ms_dtype, warn_once)

# HF from_pretrained kwargs that have no meaning here: accepted, warned about once.
_IGNORED_LOAD_KWARGS = ("device_map", "low_cpu_mem_usage", "max_memory", "offload_folder", "offload_state_dict",
                        "use_safetensors", "quantization_config", "key_mapping",
                        "use_flash_attention_2", "_fast_init", "mirror", "weights_only")
# attn_implementation picks the attention op in mindformers_hf.ops.registry: "eager" = the reference,
# "sdpa" = the default selection, "flash_attention*" = the fused kernel of this device.
_KNOWN_ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flash_attention")


def parse_size(size) -> int:
    """'5GB' -> 5 * 10**9, '2GiB' -> 2 * 2**30, ints unchanged (transformers' convention)."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)\s*", str(size).upper())
    if not match:
        raise ValueError(f"max_shard_size {size!r} is not a size like '5GB', '500MB' or an int of bytes")
    number, unit = float(match.group(1)), match.group(2)
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}[unit]
    return int(number * scale)


class PreTrainedModel(PeftAdapterMixin, GenerationMixin, nn.Cell):
    config_class = None
    base_model_prefix = "model"
    _input_embed_layer = "embed_tokens"  # the token embedding's attribute on the base model (transformers' name)
    # Checkpoint keys that are safe to skip (old checkpoints stored rotary buffers).
    _keys_to_ignore_on_load_unexpected = (r"rotary_emb\.inv_freq$",)
    _tied_weights_keys = ()
    # parameter-name prefixes of a task head that a checkpoint may lack (then freshly drawn): modeling_heads.py
    _new_head_prefixes = ()

    def __init__(self, config, *args, **kwargs):
        super().__init__(auto_prefix=True)
        self.config = config
        self._generation_config = None

    # ------------------------------------------------------------------ HF surface
    @property
    def dtype(self):
        for _, param in self.parameters_and_names():
            if param.dtype in (ms.float32, ms.float16, ms.bfloat16, ms.float64):
                return param.dtype
        return ms.float32

    @property
    def device(self):
        """'cpu' on the CPU backend, else e.g. 'ascend:0': MindSpore places tensors by context, not by tensor."""
        target = device_target()
        if target == "CPU":
            return "cpu"
        return f"{target.lower()}:{ms.get_context('device_id')}"

    @property
    def generation_config(self):
        if self._generation_config is None:
            from transformers import GenerationConfig

            self._generation_config = GenerationConfig.from_model_config(self.config)
        return self._generation_config

    @generation_config.setter
    def generation_config(self, value):
        self._generation_config = value

    def can_generate(self):
        return hasattr(self, "lm_head") or "CausalLM" in type(self).__name__

    def named_parameters(self):
        """(HF name, Parameter) pairs; shared (tied) parameters appear once."""
        return list(self.parameters_and_names())

    def parameters(self):
        return [p for _, p in self.parameters_and_names()]

    def state_dict(self):
        return dict(self.parameters_and_names())

    def num_parameters(self, only_trainable=False, exclude_embeddings=False):
        from .layers import Embedding

        # as in HF, "embeddings" are the embedding tables (not an untied LM head)
        embedding_ids = {id(cell.weight) for _, cell in self.cells_and_names() if isinstance(cell, Embedding)}
        total = 0
        for _, param in self.parameters_and_names():
            if only_trainable and not param.requires_grad:
                continue
            if exclude_embeddings and id(param) in embedding_ids:
                continue
            total += int(np.prod(param.shape))
        return total

    # ------------------------------------------------------------------ embeddings and head
    def get_input_embeddings(self):
        base = getattr(self, self.base_model_prefix, self)
        return getattr(base, self._input_embed_layer)

    def set_input_embeddings(self, value):
        """Replace the token embedding cell (a tied head reads its weight, so it follows)."""
        base = getattr(self, self.base_model_prefix, self)
        setattr(base, self._input_embed_layer, value)

    def get_output_embeddings(self):
        return None  # base models have no head; the causal-LM classes return theirs (the embedding when tied)

    def tie_weights(self, *args, **kwargs):
        """With `config.tie_word_embeddings` true, drop a separate head so that the embedding serves as the
        head (as transformers ties `lm_head.weight` to it). Our tied models hold no `lm_head` at all."""
        if getattr(self.config, "tie_word_embeddings", False) and getattr(self, "tied", True) is False:
            del self.lm_head
            self.tied = True

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        """transformers' resize_token_embeddings: new rows are mean-initialised (resize_embeddings.py), an untied
        head is resized alike, `config.vocab_size` follows. Returns the embedding cell."""
        embeddings = self.get_input_embeddings()
        if pad_to_multiple_of is not None:
            new_num_tokens = padded_size(embeddings.weight.shape[0] if new_num_tokens is None else new_num_tokens,
                                         pad_to_multiple_of)
        if new_num_tokens is None:
            return embeddings
        std = getattr(self.config, "initializer_range", 0.02)
        head = self.get_output_embeddings()
        cells = [embeddings] + ([head] if head is not None and head is not embeddings else [])
        for cell in cells:
            check_resizable(cell, new_num_tokens)
        for cell in cells:
            resize_rows(cell, new_num_tokens, mean_resizing, std)
        text_config = self.config.get_text_config() if hasattr(self.config, "get_text_config") else self.config
        text_config.vocab_size = new_num_tokens
        for cell in {id(c): c for c in (self, getattr(self, self.base_model_prefix, self))}.values():
            if hasattr(cell, "vocab_size"):
                cell.vocab_size = new_num_tokens
        self.tie_weights()
        return embeddings

    def enable_input_require_grads(self):
        """transformers hooks the embedding output to require grad, so that gradients reach trainable weights
        behind frozen embeddings under activation checkpointing. MindSpore differentiates with respect to the
        weights it is given whatever the inputs, so nothing needs hooking; the call is recorded only."""
        self._input_require_grads = True

    def disable_input_require_grads(self):
        self._input_require_grads = False

    # ------------------------------------------------------------------ activation checkpointing
    supports_gradient_checkpointing = True

    def _decoder_layers(self):
        """The repeated blocks: cells whose class the model names in `_no_split_modules` (as transformers)."""
        names = set(getattr(self, "_no_split_modules", None) or [])
        return [cell for _, cell in self.cells_and_names() if type(cell).__name__ in names]

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, every_n_layers=1, offload=False):
        """Recompute each decoder layer's activations in the backward pass instead of keeping them
        (`mindspore.recompute` on the layer, in training mode only; layers.call_layer)."""
        if offload:
            raise NotImplementedError("activation_checkpointing_enable(offload=True) is not supported: activations "
                                      "are recomputed, not offloaded to host memory")
        kwargs = dict(activation_checkpointing_kwargs or {})
        kwargs.pop("use_reentrant", None)  # torch.utils.checkpoint's implementation switch; ours has one
        if kwargs:
            warn_once(f"activation checkpointing kwargs {sorted(kwargs)} (torch.utils.checkpoint's) are ignored")
        layers = self._decoder_layers()
        if not layers:
            raise ValueError(f"{type(self).__name__} is not compatible with gradient checkpointing (it names no "
                             "decoder-layer class in _no_split_modules)")
        for index, layer in enumerate(layers):
            layer.gradient_checkpointing = index % every_n_layers == 0
        self.enable_input_require_grads()

    def activation_checkpointing_disable(self):
        for layer in self._decoder_layers():
            layer.gradient_checkpointing = False
        self.disable_input_require_grads()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, **kwargs):
        """transformers 5's deprecated alias of activation_checkpointing_enable (no FutureWarning here)."""
        self.activation_checkpointing_enable(activation_checkpointing_kwargs=gradient_checkpointing_kwargs, **kwargs)

    def gradient_checkpointing_disable(self):
        self.activation_checkpointing_disable()

    @property
    def is_activation_checkpointing(self):
        return any(getattr(layer, "gradient_checkpointing", False) for layer in self._decoder_layers())

    @property
    def is_gradient_checkpointing(self):
        return self.is_activation_checkpointing

    def eval(self):
        self.set_train(False)
        return self

    def train(self, mode=True):
        self.set_train(mode)
        return self

    def to(self, *args, **kwargs):
        """`model.to("cpu")` is a no-op (MindSpore places by context); `model.to(dtype)` casts parameters."""
        for value in list(args) + list(kwargs.values()):
            try:
                name = canonical_dtype_name(value)
            except ValueError:
                continue  # a device string such as "cuda" or "cpu"
            if name != "auto":
                self._cast_parameters(ms_dtype(compute_dtype_name(name)))
        return self

    def float(self):
        return self.to("float32")

    def half(self):
        return self.to("float16")

    def bfloat16(self):
        return self.to("bfloat16")

    def _cast_parameters(self, dtype):
        for _, param in self.parameters_and_names():
            if param.dtype in (ms.float32, ms.float16, ms.bfloat16) and param.dtype != dtype:
                param.set_dtype(dtype)  # (set_data(param.astype(dtype)) keeps the old dtype)

    # ------------------------------------------------------------------ call boundary
    @runtime.serialized  # any thread may call a model: calls take turns (runtime.model_lock)
    def __call__(self, *args, **kwargs):
        """Accept numpy / torch / MindSpore inputs; return outputs of the kind the caller passed in."""
        kind = tensor_io.first_kind(*args, *kwargs.values())
        args = [tensor_io.to_mindspore(a) if tensor_io.kind_of(a) or isinstance(a, list) else a for a in args]
        for key, value in kwargs.items():
            if tensor_io.kind_of(value) in (tensor_io.NUMPY, tensor_io.TORCH) or (
                isinstance(value, list) and key in ("input_ids", "attention_mask", "labels", "position_ids")
            ):
                kwargs[key] = tensor_io.to_mindspore(value)
        outputs = self.construct(*args, **kwargs)
        if kind in (tensor_io.NUMPY, tensor_io.TORCH):
            if isinstance(outputs, ModelOutput):
                for key in list(outputs.keys()):
                    if key != "past_key_values":
                        outputs[key] = tensor_io.to_kind(outputs[key], kind)
            elif isinstance(outputs, tuple):
                outputs = tuple(v if hasattr(v, "update") else tensor_io.to_kind(v, kind) for v in outputs)
        return outputs

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_config(cls, config, dtype=None, torch_dtype=None, **kwargs):
        return cls._from_config(config, dtype=dtype if dtype is not None else torch_dtype, **kwargs)

    @classmethod
    def _from_config(cls, config, dtype=None, **kwargs):
        for key in kwargs:
            warn_once(f"from_config: keyword {key!r} is accepted for compatibility and ignored")
        name = canonical_dtype_name(dtype)
        if name == "auto":
            name = "float32"
        model = cls(config, dtype=ms_dtype(compute_dtype_name(name)))
        model.eval()
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, dtype=None, torch_dtype=None,
                        gguf_file=None, cache_dir=None, revision=None, local_files_only=False, token=None,
                        trust_remote_code=False, attn_implementation=None, ignore_mismatched_sizes=False,
                        force_download=False, tp_plan=None, tp_size=None, subfolder="", variant=None, **kwargs):
        for key in list(kwargs):
            if key in _IGNORED_LOAD_KWARGS:
                warn_once(f"from_pretrained: {key}={kwargs.pop(key)!r} is accepted for compatibility and ignored "
                          "(see docs/differences.md)")
        if attn_implementation is not None and attn_implementation not in _KNOWN_ATTN_IMPLEMENTATIONS:
            warn_once(f"attn_implementation={attn_implementation!r} is not available here; using the default ('sdpa')")
            attn_implementation = None
        if ignore_mismatched_sizes:
            raise NotImplementedError("ignore_mismatched_sizes=True is not supported: shapes must match the model")
        if gguf_file and (tp_plan is not None or tp_size is not None):
            raise NotImplementedError("tensor parallelism (tp_plan/tp_size) with a GGUF checkpoint is not supported: "
                                      "convert it to safetensors with save_pretrained first")
        if tp_plan is None and tp_size is None and not gguf_file:
            from .parallel.mesh import launcher_tp_size

            tp_size = launcher_tp_size()  # `launch --parallelism_config_tp_size N`: the model's plan over N ranks
        requested = canonical_dtype_name(dtype if dtype is not None else torch_dtype)
        location = pretrained_model_name_or_path
        if not isinstance(location, CheckpointLocation):  # (the Auto classes pass one they located already)
            location = locate(pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir,
                              local_files_only=local_files_only, token=token, gguf_file=gguf_file,
                              force_download=force_download, subfolder=subfolder, variant=variant)
        folder = location.folder
        if config is None:
            from .models.auto import load_config

            config = load_config(folder, gguf_file=gguf_file, **kwargs)
            kwargs = {key: value for key, value in kwargs.items() if not hasattr(config, key)}
        elif kwargs:
            for key in list(kwargs):
                if hasattr(config, key):
                    setattr(config, key, kwargs.pop(key))
        for key in kwargs:
            warn_once(f"from_pretrained: unknown keyword {key!r} ignored")
        check_loadable_config(config, location.name)  # before any weight file is downloaded
        if requested == "auto":
            requested = _config_dtype(config)
        if attn_implementation is not None:
            config._attn_implementation = attn_implementation  # read by the attention layers (HF's field)

        files = location.weight_files()
        if requested == "auto":
            requested = "float32" if gguf_file else _file_dtype(files)  # GGUF blocks dequantize to float32
        if not gguf_file:
            cls._untie_if_checkpoint_differs(config, files)
        from .layers import no_init_weights

        with no_init_weights():
            model = cls(config, *model_args, dtype=ms_dtype(compute_dtype_name(requested)))
        if tp_plan is not None or tp_size is not None:  # each rank builds its shard and reads only its slices
            from .parallel import load_tensor_parallel

            load_tensor_parallel(model, files, tp_plan or "auto", tp_size)
        elif gguf_file:
            model.load_gguf(files[0])
        else:
            model.load_weights(iter_safetensors(files))
        gen_path = os.path.join(folder, "generation_config.json")
        if os.path.isfile(gen_path) and model.can_generate():
            from transformers import GenerationConfig

            model.generation_config = GenerationConfig.from_pretrained(folder)
        if (tp_plan is not None or tp_size is not None) and model.can_generate():
            # the compiled decode step with collectives inside crashes MindSpore 2.10 ("input is released"):
            # tensor-parallel generate runs the eager step (docs/parallelism.md)
            model.generation_config.disable_compile = True
        model.config.name_or_path = os.fspath(location.name)
        model.eval()
        return model

    @classmethod
    def _untie_if_checkpoint_differs(cls, config, files):
        """transformers 5.x: with `tie_word_embeddings` true and both the head and the embedding in the
        checkpoint with different values, the two are loaded as they are and not tied (with a warning).
        We build the untied model by setting the flag false on this config."""
        tied = getattr(cls, "_tied_weights_keys", None)
        if not tied or not isinstance(tied, dict) or not getattr(config, "tie_word_embeddings", False):
            return
        for target, source in tied.items():
            if _checkpoint_tensors_equal(files, cls.checkpoint_key_of(target), cls.checkpoint_key_of(source)) is False:
                logger.warning(f"config.json ties {target} to {source} (tie_word_embeddings=true), but the checkpoint "
                               "holds both with different values: they are loaded as they are, untied (as "
                               "transformers does); config.tie_word_embeddings is set to False.")
                config.tie_word_embeddings = False
                return

    @classmethod
    def checkpoint_key_of(cls, name):
        """Our parameter name (with-head form) -> the checkpoint key holding it (formats with other names
        override this: weights.CheckpointFormatMixin)."""
        return name

    def checkpoint_key_to_name(self, key):
        """Map a checkpoint key onto our parameter names (base model <-> with-head prefixes); None = skip."""
        prefix = self.base_model_prefix + "."
        if not hasattr(self, self.base_model_prefix):  # a base model
            if key.startswith(prefix):
                return key[len(prefix):]  # loading it from a with-head checkpoint
            if self._is_head_key(key):
                return None  # that checkpoint's head has no place in a base model
            return key
        if hasattr(self, self.base_model_prefix) and not key.startswith(prefix) and not self._is_head_key(key):
            return prefix + key  # loading a with-head model from a base-model checkpoint
        return key

    @staticmethod
    def _is_head_key(key):
        return key.startswith(("lm_head.", "score.", "classifier."))

    def _skip_key(self, name):
        if name == "lm_head.weight" and getattr(self.config, "tie_word_embeddings", False):
            return True  # tied: the embedding serves as the head
        return any(re.search(p, name) for p in self._keys_to_ignore_on_load_unexpected)

    def load_checkpoint_folder(self, folder, gguf_file=None, variant=None):
        """Fill the parameters from a local checkpoint folder (the Trainer resumes through this)."""
        files = CheckpointLocation(folder, folder, variant=variant, gguf_file=gguf_file).weight_files()
        if gguf_file:
            return self.load_gguf(files[0])
        return self.load_weights(iter_safetensors(files))

    def load_gguf(self, path):
        from .gguf_io import iter_gguf_tensors

        return self.load_weights((name, path, array, False) for name, array in iter_gguf_tensors(path, self.config))

    def load_weights(self, source):
        """Stream (key, file, tensor, is_bf16_bits) into the parameters; every parameter must be filled. The one
        loading pipeline (weight_loading.py): subclasses' overrides transform the stream (renaming tables, expert
        stacking) and call this; each parameter is filled by its cell's `weight_loader` (tensor-parallel layers
        read their slice) or copied whole. Byte counts land in `self.load_stats`.

        Returns the set of loaded parameter names.
        """
        params = dict(self.parameters_and_names())
        loaded, self.load_stats = fill_parameters(self, source)
        missing = sorted(set(params) - loaded)
        new_head = [n for n in missing if self._new_head_prefixes and n.startswith(self._new_head_prefixes)]
        if new_head:  # a task head fine-tuned from a checkpoint without it (transformers' warning)
            logger.warning(f"Some weights of {type(self).__name__} were not initialized from the model checkpoint "
                           f"and are newly initialized: {new_head}\nYou should probably TRAIN this model on a "
                           "down-stream task to be able to use it for predictions and inference.")
            std = getattr(self.config, "initializer_range", 0.02)
            for name in new_head:
                shape = tuple(params[name].shape)
                data = np.random.normal(0.0, std, shape) if name.endswith("weight") else np.zeros(shape)
                params[name].set_data(ms.Tensor(data.astype(np.float32)).astype(params[name].dtype))
            missing = [n for n in missing if n not in new_head]
        if missing:
            shown = ", ".join(f"{n} {tuple(params[n].shape)}" for n in missing[:8])
            raise CheckpointError(
                f"Missing keys: the checkpoint has no tensor for {len(missing)} parameter(s) of "
                f"{type(self).__name__}: {shown}{' ...' if len(missing) > 8 else ''}"
            )
        return loaded

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, save_directory, is_main_process=True, state_dict=None, max_shard_size="50GB",
                        safe_serialization=True, push_to_hub=False, variant=None, **kwargs):
        """transformers' save_pretrained. `variant="fp16"` writes `model.fp16.safetensors` (shards
        `model.fp16-00001-of-0000N.safetensors`, index `model.safetensors.index.fp16.json`) beside the files of
        other variants; only files of the same variant from an earlier save are replaced."""
        if not safe_serialization:
            raise NotImplementedError("safe_serialization=False (pickle .bin files) is not supported: we write safetensors")
        if self._hf_peft_config_loaded:  # transformers: a model with adapters saves its active adapter, PEFT's files
            return self._save_adapter_pretrained(save_directory, is_main_process, state_dict, push_to_hub, **kwargs)
        # transformers' save_pretrained(push_to_hub=True, repo_id=..., token=...): save, then commit the folder.
        hub_kwargs = {k: kwargs.pop(k) for k in ("repo_id", "commit_message", "commit_description", "token",
                                                 "private", "revision", "create_pr") if push_to_hub and k in kwargs}
        for key in kwargs:
            warn_once(f"save_pretrained: keyword {key!r} is accepted for compatibility and ignored")
        if getattr(getattr(self, "tp_mesh", None), "size", 1) > 1 and not getattr(state_dict, "whole_tensors", False):
            raise NotImplementedError("save_pretrained of a tensor-parallel model is not supported: each rank holds "
                                      "only its slices; save the unsharded model (loaded without tp_plan), or let the Trainer's "
                                      "save_model gather the whole tensors")
        if not is_main_process:
            return
        if os.path.isfile(save_directory):
            raise ValueError(f"save_pretrained needs a folder, {save_directory} is a file")
        os.makedirs(save_directory, exist_ok=True)
        params = state_dict if state_dict is not None else dict(self.parameters_and_names())

        self.config.architectures = [type(self).__name__]
        self.config.dtype = {ms.float16: "float16", ms.bfloat16: "bfloat16"}.get(self.dtype, "float32")
        atomic_write_text(os.path.join(save_directory, "config.json"), self.config.to_json_string())
        if self.can_generate():
            atomic_write_text(os.path.join(save_directory, "generation_config.json"),
                              self.generation_config.to_json_string())

        entries = []
        for name, param in params.items():
            is_bf16 = param.dtype == ms.bfloat16
            np_dtype = {ms.float16: np.float16, ms.float64: np.float64}.get(param.dtype, None)
            st_dtype = "BF16" if is_bf16 else safetensors_dtype(np.zeros(0, np_dtype or _np_dtype_of(param)))

            def fetch(p=param, bf16=is_bf16):
                # bf16 goes out as its raw bits: numpy has no bfloat16
                return p.view(ms.uint16).asnumpy() if bf16 else p.asnumpy()

            entries.append((name, (tuple(param.shape), st_dtype, fetch)))

        shards = _split_shards(entries, parse_size(max_shard_size))
        written = []
        if len(shards) == 1:
            written.append(add_variant(SAFE_WEIGHTS_NAME, variant))
            write_safetensors(os.path.join(save_directory, written[0]), shards[0], {"format": "pt"})
        else:
            weight_map, total = {}, 0
            for i, shard in enumerate(shards):
                file_name = shard_name(i, len(shards), variant)
                write_safetensors(os.path.join(save_directory, file_name), shard, {"format": "pt"})
                written.append(file_name)
                for name, (shape, st_dtype, _) in shard:
                    weight_map[name] = file_name
                    total += _nbytes(shape, st_dtype)
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            written.append(add_variant(SAFE_WEIGHTS_INDEX_NAME, variant))
            atomic_write_text(os.path.join(save_directory, written[-1]), json.dumps(index, indent=2))
        # Remove this variant's weights from an earlier save into this folder that the new save did not write
        # (a stale index beside a new single file, or shards of another count); other variants stay.
        for file_name in os.listdir(save_directory):
            if is_weights_file(file_name, variant) and file_name not in written:
                os.remove(os.path.join(save_directory, file_name))
        if push_to_hub:
            from .hub import push_folder_to_hub

            repo_id = hub_kwargs.pop("repo_id", os.path.basename(os.path.abspath(save_directory)))
            push_folder_to_hub(save_directory, repo_id, **{"commit_message": "Upload model", **hub_kwargs})

    def push_to_hub(self, repo_id, **kwargs):
        """transformers' push_to_hub: save_pretrained into a temporary folder (plus a model card), one commit."""
        from .hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)


def _np_dtype_of(param):
    return {ms.float32: np.float32, ms.int32: np.int32, ms.int64: np.int64, ms.bool_: np.bool_,
            ms.uint8: np.uint8, ms.int8: np.int8}.get(param.dtype, np.float32)


def _nbytes(shape, st_dtype):
    itemsize = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
    return int(np.prod(shape, dtype=np.int64)) * itemsize[st_dtype]


def _split_shards(entries, max_bytes):
    shards, current, size = [], [], 0
    for entry in entries:
        nbytes = _nbytes(entry[1][0], entry[1][1])
        if current and size + nbytes > max_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(entry)
        size += nbytes
    shards.append(current)
    return shards


def find_checkpoint_files(folder, variant=None):
    """The safetensors files of a local checkpoint folder (checkpoint_files.py has the rules)."""
    return local_weight_files(folder, variant)


def _checkpoint_tensors_equal(files, key_a, key_b):
    """None unless the safetensors `files` hold both tensors; else whether their values are equal (read
    through the memory map, in row blocks when the dtypes differ, so no copy of a vocab-sized matrix)."""
    readers = [SafetensorsFile(path) for path in files]
    try:
        found = {}
        for reader in readers:
            for key in (key_a, key_b):
                if key not in found and key in reader:
                    found[key] = (reader._raw(key), reader.dtype(key))
        if len(found) < 2:
            return None
        (a, dtype_a), (b, dtype_b) = found[key_a], found[key_b]
        if a.shape != b.shape:
            return False
        if dtype_a == dtype_b:
            return bool(np.array_equal(a, b))  # same storage dtype: equal bits are equal values (bf16 too)

        def as_float32(block, dtype):
            return bf16_bits_to_float32(block) if dtype == "BF16" else block.astype(np.float32)

        step = 4096
        return all(np.array_equal(as_float32(a[i:i + step], dtype_a), as_float32(b[i:i + step], dtype_b))
                   for i in range(0, max(len(a), 1), step))
    finally:
        for reader in readers:
            reader.close()


def check_loadable_config(config, name):
    """Refuse, by name, what no weight file could make loadable: a quantized checkpoint (its tensors are
    packed integers or float8 that only transformers' quantizer backends unpack)."""
    quantization = getattr(config, "quantization_config", None)
    if quantization:
        method = (quantization.get("quant_method") if isinstance(quantization, dict)
                  else getattr(quantization, "quant_method", None))
        method = getattr(method, "value", method)  # transformers' QuantizationMethod enum
        raise NotImplementedError(
            f"{name} is a quantized checkpoint (config.json quantization_config, quant_method {method!r}): "
            "quantized checkpoints (AWQ, GPTQ, bitsandbytes, fp8, compressed-tensors, ...) are not supported. "
            "Load the unquantized model, or a GGUF file (gguf_file=...), which is dequantized at load.")


def _config_dtype(config):
    """dtype='auto': the config's dtype (v5 `dtype`, v4 `torch_dtype`), else 'auto'. A dtype no model
    can be built in (int8, float8_e4m3fn) is refused, as transformers does."""
    name = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if name is None:
        return "auto"
    try:
        return canonical_dtype_name(name)
    except UnsupportedDtypeError:
        raise
    except ValueError:
        return "auto"  # a spelling we do not know: the weights decide


def _file_dtype(files):
    """dtype='auto' without a config dtype: the first float tensor's (transformers' rule)."""
    for path in files[:1]:
        reader = SafetensorsFile(path)
        for key in reader.keys():
            st = reader.dtype(key)
            if st in ("F32", "F16", "BF16"):
                return {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[st]
    return "float32"
