"""transformers' Pipeline._prepare_generate_kwargs, shared by the pipelines that generate with task defaults."""
import copy


def prepare_generate_kwargs(model, kwargs, defaults):
    """The task's `defaults` fill what neither the call nor the model's generation config sets (max_new_tokens not
    when max_length is set); with a `generation_config` in the call, they go into a copy of it."""
    set_params = {**model.generation_config.to_diff_dict(), **kwargs}
    if "generation_config" in kwargs:
        set_params = {**model.generation_config.to_diff_dict(), **kwargs["generation_config"].to_diff_dict(),
                      **kwargs}
    added = {k: v for k, v in defaults.items()
             if k not in set_params and not (k == "max_new_tokens" and "max_length" in set_params)}
    if "generation_config" in kwargs:
        config = copy.deepcopy(kwargs["generation_config"])
        config.update(**added)
        return {**kwargs, "generation_config": config}
    return {**kwargs, **added}
