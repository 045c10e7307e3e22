"""AutoPeftModelForCausalLM: the base model named in adapter_config.json, with the adapter on top."""
import os

from .config import PeftConfig, TaskType
from .peft_model import PeftModelForCausalLM

_HUB_KWARGS = ("cache_dir", "token", "local_files_only")


class AutoPeftModelForCausalLM:
    _target_peft_class = PeftModelForCausalLM

    def __init__(self, *args, **kwargs):
        raise EnvironmentError(f"{type(self).__name__} is built with from_pretrained()")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, adapter_name="default", is_trainable=False, config=None,
                        revision=None, **kwargs):
        """Load the base model (with our AutoModelForCausalLM and `kwargs`), then the adapter from this folder/repo."""
        from ..models.auto import AutoModelForCausalLM

        path = os.fspath(pretrained_model_name_or_path)
        hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        peft_config = config or PeftConfig.from_pretrained(path, revision=revision, **hub_kwargs)
        if peft_config.task_type not in (None, TaskType.CAUSAL_LM):
            raise ValueError(f"Expected target PEFT class: {cls._target_peft_class.__name__}, but the adapter's "
                             f"task_type is {peft_config.task_type}: load it with the matching Auto class")
        base_name = peft_config.base_model_name_or_path
        if not base_name:
            raise ValueError(f"{path}/adapter_config.json has no base_model_name_or_path: load the base model "
                             "yourself and use PeftModel.from_pretrained(base_model, adapter_path)")
        base_revision = peft_config.revision
        if revision is not None and base_revision is not None and revision != base_revision:
            raise ValueError(f"revision {revision!r} conflicts with the adapter's base model revision {base_revision!r}")
        base = AutoModelForCausalLM.from_pretrained(base_name, revision=base_revision, **kwargs)
        return cls._target_peft_class.from_pretrained(base, path, adapter_name=adapter_name, is_trainable=is_trainable,
                                                      config=peft_config, revision=revision, **hub_kwargs)
