"""pipeline(task, model="org/name", revision=, token=, model_kwargs=) against the local hub on 127.0.0.1.

The hub kwargs must reach both the model's and the tokenizer's loading. The oracle is transformers' own pipeline,
pointed at the same local hub with the same arguments.
"""
import pytest

from mindformers_hf import pipeline
from tests.conftest import make_hf_checkpoint

PROMPT = "w5 w9 w17 w3"


def _with_tokenizer(folder, shift):
    """A word-level tokenizer; `shift` rotates which id each word gets, so two revisions tokenize differently."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(3, 128)]
    words = words[shift:] + words[:shift]
    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2, **{w: i for i, w in enumerate(words, start=3)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>", eos_token="</s>",
                            pad_token="[UNK]").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def revisions(tmp_path_factory):
    """main: seed 0 weights and tokenizer; v2: seed 1 weights and a rotated vocabulary."""
    return (_with_tokenizer(make_hf_checkpoint(tmp_path_factory.mktemp("main")), 0),
            _with_tokenizer(make_hf_checkpoint(tmp_path_factory.mktemp("v2"), seed=1), 40))


def _generate(pipe):
    return pipe(PROMPT, max_new_tokens=6, do_sample=False)[0]["generated_text"]


def test_pipeline_passes_revision_and_token_to_model_and_tokenizer(hub_env, revisions):
    import transformers

    main, v2 = revisions
    server = hub_env.server
    server.add_folder("org/private", main, private=True)
    server.add_folder("org/private", v2, branch="v2", private=True)
    token = "hf_test_token"
    with pytest.raises(OSError, match="pass token="):  # so the token is what opens the private repo below
        pipeline("text-generation", model="org/private")

    ours_v2 = pipeline("text-generation", model="org/private", revision="v2", token=token)
    theirs_v2 = transformers.pipeline("text-generation", model="org/private", revision="v2", token=token)
    ours_main = pipeline("text-generation", model="org/private", token=token)
    theirs_main = transformers.pipeline("text-generation", model="org/private", token=token)
    assert ours_v2.tokenizer(PROMPT)["input_ids"] == theirs_v2.tokenizer(PROMPT)["input_ids"]
    assert ours_v2.tokenizer(PROMPT)["input_ids"] != ours_main.tokenizer(PROMPT)["input_ids"]
    assert _generate(ours_v2) == _generate(theirs_v2)
    assert _generate(ours_main) == _generate(theirs_main)
    assert _generate(ours_v2) != _generate(ours_main)  # the revision changed what was loaded


def test_pipeline_model_kwargs_and_conflicts(hub_env, revisions):
    import transformers

    main, v2 = revisions
    hub_env.server.add_folder("org/tiny", main)
    hub_env.server.add_folder("org/tiny", v2, branch="v2")
    ours = pipeline("text-generation", model="org/tiny", model_kwargs={"revision": "v2"})
    theirs = transformers.pipeline("text-generation", model="org/tiny", revision="v2")
    assert _generate(ours) == _generate(theirs)
    assert ours.tokenizer(PROMPT)["input_ids"] == theirs.tokenizer(PROMPT)["input_ids"]
    with pytest.raises(ValueError, match="'revision' both as an argument and in model_kwargs"):
        pipeline("text-generation", model="org/tiny", revision="v2", model_kwargs={"revision": "main"})


def test_pipeline_of_an_adapter_repo_loads_its_base_and_the_adapter(hub_env, revisions, tmp_path):
    import peft
    import torch
    import transformers

    main, _ = revisions
    hub_env.server.add_folder("org/base", main)
    base = transformers.AutoModelForCausalLM.from_pretrained(main, dtype=torch.float32)
    config = peft.LoraConfig(r=4, lora_alpha=400, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapted = peft.get_peft_model(base, config)
    adapted.peft_config["default"].base_model_name_or_path = "org/base"
    adapted.save_pretrained(tmp_path / "adapter")
    hub_env.server.add_folder("org/adapter", tmp_path / "adapter")

    ours = pipeline("text-generation", model="org/adapter")
    theirs = transformers.pipeline("text-generation", model="org/adapter")
    plain = pipeline("text-generation", model="org/base")
    assert ours.model.active_adapters() == ["default"]
    assert _generate(ours) == _generate(theirs)
    assert _generate(ours) != _generate(plain)  # the adapter is applied


def test_pipeline_forwards_every_hub_kwarg_as_transformers_does(monkeypatch):
    """What reaches from_pretrained (transformers' pipeline: hub kwargs + model_kwargs to the model, the same minus
    dtype to the tokenizer)."""
    from types import SimpleNamespace

    from mindformers_hf.models import auto
    from mindformers_hf.tokenization import AutoTokenizer

    calls = {}

    def fake_model(name, **kwargs):
        calls["model"] = (name, kwargs)
        return SimpleNamespace(config=SimpleNamespace(name_or_path=name))

    def fake_tokenizer(name, **kwargs):
        calls["tokenizer"] = (name, kwargs)
        return SimpleNamespace()

    monkeypatch.setattr(auto.AutoModelForCausalLM, "from_pretrained", staticmethod(fake_model))
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", staticmethod(fake_tokenizer))
    pipeline("text-generation", model="org/x", revision="v1", token="t", trust_remote_code=True, dtype="bfloat16",
             model_kwargs={"cache_dir": "/c", "attn_implementation": "eager"})
    hub = {"revision": "v1", "token": "t", "trust_remote_code": True}
    assert calls["model"] == ("org/x", {**hub, "cache_dir": "/c", "attn_implementation": "eager",
                                        "dtype": "bfloat16"})
    assert calls["tokenizer"] == ("org/x", {**hub, "cache_dir": "/c", "attn_implementation": "eager"})
