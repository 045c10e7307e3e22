"""The one table of model families, read from each models/<family>/__init__.py declaration (`FAMILY` or
`FAMILIES`, see family.py), and everything derived from it: the auto mappings, the remote-format tables,
the decoder and MoE variants, and the package's lazy exports.

Adding a family is one folder whose __init__.py declares it (docs/models.md, "Adding a family"); nothing
here names a family. Tensor-free: reading the table imports only the family packages' __init__ files.
"""
import functools
import importlib
import pkgutil

from .family import DecoderVariant

_MODELS = __name__.rpartition(".")[0]  # "mindformers_hf.models"


@functools.cache
def families():
    """{model_type: (package, Family)} over every family package in models/, in name order."""
    table = {}
    for info in sorted(pkgutil.iter_modules(importlib.import_module(_MODELS).__path__), key=lambda i: i.name):
        if not info.ispkg or info.name == "auto":
            continue
        package = importlib.import_module(f"{_MODELS}.{info.name}")
        declared = getattr(package, "FAMILIES", None) or ((package.FAMILY,) if hasattr(package, "FAMILY") else ())
        if not declared:
            raise TypeError(f"{package.__name__} declares no FAMILY (models/family.py): every package in models/ "
                            "but auto is a model family")
        for fam in declared:
            if fam.model_type in table:
                raise ValueError(f"model_type {fam.model_type!r} is declared by {table[fam.model_type][0]} and "
                                 f"{package.__name__}")
            table[fam.model_type] = (package.__name__, fam)
    return table


def auto_mapping(task):
    """{model_type: "package:Class"} for an auto class: task "Model", "ForCausalLM", "ForSpeechSeq2Seq",
    "ForImageTextToText" or a head's suffix."""
    mapping = {}
    for model_type, (package, fam) in families().items():
        name = {"Model": fam.auto_model_class, fam.lm_task: fam.for_causal_lm}.get(task) or fam.head(task)
        if name:
            mapping[model_type] = f"{package}:{name}"
    return mapping


def remote_format_configs():
    """{model_type: "package:ConfigClass"} of the formats whose Hub repos need trust_remote_code."""
    return {t: f"{package}:{fam.config_class}" for t, (package, fam) in families().items() if fam.config}


def remote_format_architectures():
    """{config.json architecture: model_type} naming those formats."""
    return {arch: t for t, (_, fam) in families().items() for arch in fam.architectures}


def exports():
    """{public name: defining module} of every family's classes and config class, for the package __init__:
    our config classes for remote formats, transformers' (tensor-free) config classes for the others."""
    names = {}
    for package, fam in families().values():
        names.update(dict.fromkeys(fam.class_names, package))
        names[fam.config_class] = package if fam.config else "transformers"
    return names


def family_of(config):
    """The Family a config (or model_type) belongs to, or None."""
    model_type = config if isinstance(config, str) else getattr(config, "model_type", None)
    entry = families().get(model_type)
    return entry[1] if entry else None


_PLAIN = DecoderVariant()


def decoder_variant(config):
    """How the config's family departs from LLaMA (plain LLaMA for llama, mistral, internlm and unknown types)."""
    fam = family_of(config)
    return fam.variant if fam else _PLAIN


def moe_variant(config):
    fam = family_of(config)
    if fam is None or fam.moe is None:
        known = sorted(t for t, (_, f) in families().items() if f.moe)
        raise NotImplementedError(f"no sparse-MoE layout is known for model_type "
                                  f"{getattr(config, 'model_type', config)!r} (known: {', '.join(known)})")
    return fam.moe


def remote_format(config_dict):
    """The model_type of our native class for a config.json only a repo's own code could read, else None."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if not isinstance(config_dict, dict) or config_dict.get("model_type") in CONFIG_MAPPING_NAMES:
        return None
    architectures = remote_format_architectures()
    for architecture in config_dict.get("architectures") or []:
        if architecture in architectures:
            return architectures[architecture]
    model_type = config_dict.get("model_type")
    return model_type if model_type in remote_format_configs() else None
