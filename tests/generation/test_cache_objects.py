"""transformers 5 cache objects (DynamicCache / StaticCache) against HF on the same tiny checkpoint: the cache API,
forwards that fill and return the caller's cache, and the KV-cache documentation's examples (custom loop, prefix
caching, a cache carried across chat turns) with only the import changed."""
import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import transformers  # noqa: E402

import mindformers_hf  # noqa: E402
from tests.conftest import make_hf_checkpoint  # noqa: E402
from tests.trainer.conftest import make_char_tokenizer  # noqa: E402

CHAT_TEMPLATE = ("{% for m in messages %}{{ m.role }} says {{ m.content }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant says {% endif %}")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny LLaMA whose vocabulary covers a character tokenizer with a chat template, in one folder."""
    path = tmp_path_factory.mktemp("chat_llama")
    make_hf_checkpoint(path, vocab_size=40, max_position_embeddings=256, seed=5)
    make_char_tokenizer(path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def models(folder):
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return mindformers_hf.AutoModelForCausalLM.from_pretrained(folder), hf


def _np(x):
    if isinstance(x, torch.Tensor):
        return x.detach().numpy()
    return np.asarray(x.asnumpy() if hasattr(x, "asnumpy") else x)


def _assert_same_cache(ours, hf):
    assert ours.get_seq_length() == hf.get_seq_length()
    assert len(ours.layers) == len(hf.layers)
    for mine, theirs in zip(ours.layers, hf.layers):
        length = hf.get_seq_length()  # HF's static layers return the whole buffer: compare the filled part
        np.testing.assert_allclose(_np(mine.keys)[:, :, :length], _np(theirs.keys)[:, :, :length], atol=1e-4)
        np.testing.assert_allclose(_np(mine.values)[:, :, :length], _np(theirs.values)[:, :, :length], atol=1e-4)


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_cache_api_matches_hf(models, kind):
    """A forward writes into the cache it is given and returns it; get_seq_length, crop(-n) and a second forward,
    batch_repeat_interleave / batch_select_indices and deepcopy all leave the cache as HF's."""
    ours, hf = models
    ids = np.random.default_rng(0).integers(4, 40, size=(2, 9))
    mask = np.ones_like(ids)

    def make(lib):
        if kind == "dynamic":
            return lib.DynamicCache(config=(ours if lib is mindformers_hf else hf).config)
        return lib.StaticCache(config=(ours if lib is mindformers_hf else hf).config, max_cache_len=32)

    caches = make(mindformers_hf), make(transformers)
    ours_out = ours(input_ids=ids, attention_mask=mask, past_key_values=caches[0])
    with torch.no_grad():
        hf_out = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), past_key_values=caches[1])
    assert ours_out.past_key_values is caches[0]
    _assert_same_cache(*caches)
    assert caches[0].get_seq_length() == 9

    frozen = copy.deepcopy(caches[0])
    for cache in caches:
        cache.crop(-3)
    _assert_same_cache(*caches)
    assert frozen.get_seq_length() == 9, "the deep copy moved with the original"
    with pytest.raises(ValueError, match="negative"):
        caches[0].crop(4)

    nxt = np.array([[7, 8], [9, 10]])
    ours_logits = ours(input_ids=nxt, attention_mask=np.ones((2, 8)), past_key_values=caches[0]).logits
    with torch.no_grad():
        hf_logits = hf(input_ids=torch.tensor(nxt), attention_mask=torch.ones(2, 8, dtype=torch.long),
                       past_key_values=caches[1]).logits
    np.testing.assert_allclose(_np(ours_logits), hf_logits.numpy(), atol=1e-4)
    _assert_same_cache(*caches)

    if kind == "static":  # transformers' StaticCache has no batch_repeat_interleave / batch_select_indices
        return
    for cache in caches:
        cache.batch_repeat_interleave(2)
    _assert_same_cache(*caches)
    for cache in caches:
        cache.batch_select_indices(torch.tensor([3, 0]) if cache is caches[1] else np.array([3, 0]))
    _assert_same_cache(*caches)
    assert caches[0].layers[0].keys.shape[0] == 2


def test_plain_forward_returns_a_cache_like_hf(models):
    ours, hf = models
    ids = np.random.default_rng(1).integers(4, 40, size=(1, 6))
    out = ours(input_ids=ids)
    with torch.no_grad():
        want = hf(input_ids=torch.tensor(ids)).past_key_values
    assert isinstance(out.past_key_values, mindformers_hf.DynamicCache)
    _assert_same_cache(out.past_key_values, want)
    assert ours(input_ids=ids, use_cache=False).past_key_values is None


def _custom_loop(lib, model, tokenizer):
    """cache_explanation.md, "Cache storage implementation": a greedy loop over forward() with DynamicCache."""
    past_key_values = lib.DynamicCache(config=model.config)
    messages = [{"role": "user", "content": "hello, what's your name."}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True).to(model.device)

    generated_ids = inputs.input_ids
    cache_position = torch.arange(inputs.input_ids.shape[1], dtype=torch.int64, device=model.device)
    max_new_tokens = 10

    for _ in range(max_new_tokens):
        outputs = model(**inputs, cache_position=cache_position, past_key_values=past_key_values, use_cache=True)
        # Greedily sample one next token
        next_token_ids = outputs.logits[:, -1:].argmax(-1)
        generated_ids = torch.cat([generated_ids, next_token_ids], dim=-1)
        # Prepare inputs for the next generation step by leaving unprocessed tokens, in our case we have only one
        # new token and expanding attn mask for the new token, as explained above
        attention_mask = inputs["attention_mask"]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=-1)
        inputs = {"input_ids": next_token_ids, "attention_mask": attention_mask}
        cache_position = cache_position[-1:] + 1  # add one more position for the next token

    return tokenizer.batch_decode(generated_ids, skip_special_tokens=True)[0], past_key_values.get_seq_length()


def _prefix_caching(lib, model, tokenizer, cache_class):
    """kv_cache.md, "Prefix caching": one prefilled system prompt, deep-copied for every question."""
    prompt_cache = (lib.StaticCache(config=model.config, max_cache_len=1024) if cache_class == "static"
                    else lib.DynamicCache(config=model.config))

    INITIAL_PROMPT = "you are a helpful assistant. "
    inputs_initial_prompt = tokenizer(INITIAL_PROMPT, return_tensors="pt").to(model.device)
    # This is the common prompt cached, we need to run forward without grad to be able to copy
    with torch.no_grad():
        prompt_cache = model(**inputs_initial_prompt, past_key_values=prompt_cache).past_key_values

    prompts = ["help me to write a blogpost about travelling.", "what is the capital of france?"]
    responses, lengths = [], []
    for prompt in prompts:
        new_inputs = tokenizer(INITIAL_PROMPT + prompt, return_tensors="pt").to(model.device)
        past_key_values = copy.deepcopy(prompt_cache)
        outputs = model.generate(**new_inputs, past_key_values=past_key_values, max_new_tokens=20)
        response = tokenizer.batch_decode(outputs)[0]
        responses.append(response)
        lengths.append(past_key_values.get_seq_length())
    return responses, lengths, prompt_cache.get_seq_length()


def _chat_turns(lib, model, tokenizer):
    """kv_cache.md, "Iterative generation": one DynamicCache carried across the turns of a chat."""
    user_prompts = ["hello, what's your name?", "btw, yesterday i was on a rock concert."]

    past_key_values = lib.DynamicCache(config=model.config)

    messages, lengths = [], []
    for prompt in user_prompts:
        messages.append({"role": "user", "content": prompt})
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True).to(model.device)
        input_length = inputs["input_ids"].shape[1]
        outputs = model.generate(**inputs, do_sample=False, max_new_tokens=24, past_key_values=past_key_values)
        completion = tokenizer.decode(outputs[0, input_length:], skip_special_tokens=True)
        messages.append({"role": "assistant", "content": completion})
        lengths.append(past_key_values.get_seq_length())
    return messages, lengths


def _both(folder, models, example, *args):
    ours, hf = models
    tokenizers = [lib.AutoTokenizer.from_pretrained(folder) for lib in (mindformers_hf, transformers)]
    got = example(mindformers_hf, ours, tokenizers[0], *args)
    with torch.no_grad():
        want = example(transformers, hf, tokenizers[1], *args)
    return got, want


def test_custom_generation_loop_doc_example(folder, models):
    got, want = _both(folder, models, _custom_loop)
    assert got == want
    assert got[1] > 10


@pytest.mark.parametrize("cache_class", ["static", "dynamic"])
def test_prefix_caching_doc_example(folder, models, cache_class):
    """The prefilled prefix is reused (each copy ends holding prompt + generated - 1 positions, as HF's) and the
    shared prompt cache is left as it was."""
    got, want = _both(folder, models, _prefix_caching, cache_class)
    assert got == want
    responses, lengths, prefix_length = got
    assert prefix_length == len("you are a helpful assistant. ")
    assert all(length > prefix_length + 19 for length in lengths)


def test_cache_across_chat_turns_doc_example(folder, models):
    got, want = _both(folder, models, _chat_turns)
    assert got == want
    messages, lengths = got
    assert lengths[1] > lengths[0] > 0


def test_generate_fills_a_prefilled_cache_without_recomputing_it(models, monkeypatch):
    """generate(past_key_values=cache) feeds the model only the tokens the cache does not hold yet."""
    ours, hf = models
    ids = np.random.default_rng(2).integers(4, 40, size=(1, 12))
    cache = mindformers_hf.DynamicCache()
    ours(input_ids=ids[:, :8], past_key_values=cache)
    fed = []
    construct = type(ours).construct

    def spy(self, input_ids=None, **kwargs):
        fed.append(tuple(input_ids.shape))
        return construct(self, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(type(ours), "construct", spy)
    got = ours.generate(input_ids=ids, past_key_values=cache, max_new_tokens=5, do_sample=False)
    monkeypatch.undo()
    with torch.no_grad():
        want = hf.generate(input_ids=torch.tensor(ids), max_new_tokens=5, do_sample=False).numpy()
    np.testing.assert_array_equal(got, want)
    assert fed[0] == (1, 4) and all(shape == (1, 1) for shape in fed[1:])
    assert cache.get_seq_length() == 12 + 5 - 1
    with pytest.raises(ValueError, match="already holds"):
        ours.generate(input_ids=ids, past_key_values=cache, max_new_tokens=2)
    with pytest.raises(TypeError, match="mindformers_hf's DynamicCache"):
        ours.generate(input_ids=ids, past_key_values=transformers.DynamicCache(), max_new_tokens=2)
