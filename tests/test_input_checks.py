"""Bad inputs are refused where HF transformers (torch) refuses them, with the same exception type.

Each test runs HF on the same checkpoint and input as the oracle: what HF raises (or warns, or generates)
is what we must raise (or warn, or generate).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import mindspore as ms  # noqa: E402
import transformers  # noqa: E402

from mindformers_hf import AutoModelForCausalLM, utils  # noqa: E402
from tests.conftest import make_hf_checkpoint  # noqa: E402
from tests.models.test_gpt2_parity import make_gpt2_checkpoint  # noqa: E402

GPT2_POSITIONS = 16  # a short context, so that a prompt can run past it cheaply


@pytest.fixture(scope="module")
def llama(tiny_llama):
    return (AutoModelForCausalLM.from_pretrained(tiny_llama),
            transformers.AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval())


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    folder = make_gpt2_checkpoint(tmp_path_factory.mktemp("gpt2_short"), n_positions=GPT2_POSITIONS)
    return (AutoModelForCausalLM.from_pretrained(folder),
            transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval())


@pytest.fixture(params=["llama", "gpt2"])
def family(request):
    return request.getfixturevalue(request.param)


def _as(kind, array):
    convert = {"np": np.asarray, "pt": torch.tensor, "ms": ms.Tensor, "list": lambda a: np.asarray(a).tolist()}
    return convert[kind](array)


def _raises(fn):
    """The exception `fn()` raises (None if it returns)."""
    try:
        with torch.no_grad():
            fn()
    except Exception as error:  # noqa: BLE001 -- the oracle's exception is what we compare against
        return error
    return None


def _calls(model, ids, **kwargs):
    """forward and generate of one model on the same ids."""
    return {"forward": lambda: model(input_ids=ids, **kwargs),
            "generate": lambda: model.generate(ids, max_new_tokens=2, do_sample=False, **kwargs)}


@pytest.mark.parametrize("bad_id", [-1, 128, 10**6], ids=["negative", "vocab_size", "huge"])
def test_token_id_outside_vocabulary_is_an_index_error_naming_it(family, bad_id):
    ours, hf = family
    ids = np.array([[5, 6, bad_id, 7], [8, 9, 10, 11]])
    for call, fn in _calls(hf, torch.tensor(ids)).items():
        assert isinstance(_raises(fn), IndexError), call
    for kind in ("np", "pt", "ms", "list"):
        for call, fn in _calls(ours, _as(kind, ids)).items():
            with pytest.raises(IndexError, match=f"token id {bad_id} is out of range.*128 rows"):
                fn()
    # the check is eager-only: generate's compiled decode step still compiles (no host read inside it)
    ours.generate(ids[1:], max_new_tokens=3, do_sample=False)
    graphs = [graph for graph in ours.__dict__.get("_mindformers_decode_graphs", []) if graph.key[2]]
    assert all(graph.step.compiled for graph in graphs)


def test_float_token_ids_are_refused(family):
    """torch's embedding raises RuntimeError for float indices; ours is that and a TypeError."""
    ours, hf = family
    ids = np.array([[5.0, 6.0, 7.0]], np.float32)
    for call, fn in _calls(hf, torch.tensor(ids)).items():
        assert isinstance(_raises(fn), RuntimeError), call
    for kind in ("np", "pt", "ms", "list"):
        for call, fn in _calls(ours, _as(kind, ids)).items():
            with pytest.raises(TypeError, match="must be integers") as caught:
                fn()
            assert isinstance(caught.value, RuntimeError), (kind, call)


def test_prompt_past_the_context(llama, gpt2, monkeypatch):
    """LLaMA (rotary): HF runs past max_position_embeddings and generate warns; with no length given generate
    refuses (max_length is capped at the context). GPT-2 past n_positions: an IndexError, also in generate."""
    monkeypatch.setattr(utils, "_warned", set())
    ours, hf = llama
    ids = (np.arange(70)[None, :] % 120 + 3).astype(np.int64)   # max_position_embeddings is 64
    with torch.no_grad():
        want_logits = hf(input_ids=torch.tensor(ids)).logits.numpy()
        want = hf.generate(torch.tensor(ids), max_new_tokens=3, do_sample=False).numpy()
    np.testing.assert_allclose(ours(input_ids=ids).logits, want_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(ours.generate(ids, max_new_tokens=3, do_sample=False), want)
    assert any("exceeded the model's predefined maximum length (64)" in m for m in utils._warned)
    error = _raises(lambda: hf.generate(torch.tensor(ids), do_sample=False))
    assert isinstance(error, ValueError) and "`max_length` is set to 64" in str(error)
    with pytest.raises(ValueError, match="Input length of input_ids is 70, but `max_length` is set to 64"):
        ours.generate(ids, do_sample=False)

    ours, hf = gpt2
    long, near = np.arange(20)[None, :] + 3, np.arange(GPT2_POSITIONS - 2)[None, :] + 3
    for fn in (lambda m, t: m(input_ids=t(long)), lambda m, t: m.generate(t(long), max_new_tokens=2),
               lambda m, t: m.generate(t(near), max_new_tokens=5)):   # generates past the context
        assert isinstance(_raises(lambda: fn(hf, torch.tensor)), IndexError)
        with pytest.raises(IndexError, match=rf"position id \d+ is out of range: the embedding has {GPT2_POSITIONS}"):
            fn(ours, np.asarray)


@pytest.mark.parametrize("call", ["forward", "generate"])
def test_attention_mask_of_another_shape_is_an_index_error(llama, call):
    """A (1, 12) mask for (2, 6) ids: HF raises IndexError (it indexes row 1 of the mask); we reshaped it."""
    ours, hf = llama
    ids = np.arange(12).reshape(2, 6) + 3
    mask = np.ones((1, 12), np.int64)
    mask[0, 0] = 0   # (an all-ones mask HF's sdpa path skips without looking at it)
    assert isinstance(_raises(_calls(hf, torch.tensor(ids), attention_mask=torch.tensor(mask))[call]), IndexError)
    with pytest.raises(IndexError, match=r"attention_mask has shape \(1, 12\)"):
        _calls(ours, ids, attention_mask=mask)[call]()
    for columns in (5, 7):   # HF pads a short mask with zeros and reads a long one from the left: we refuse both
        with pytest.raises(IndexError, match=rf"attention_mask has shape \(2, {columns}\)"):
            _calls(ours, ids, attention_mask=np.ones((2, columns), np.int64))[call]()


def test_prompt_longer_than_max_length_is_a_value_error(llama):
    ours, hf = llama
    ids = np.arange(8)[None, :] + 3
    error = _raises(lambda: hf.generate(torch.tensor(ids), max_length=5, do_sample=False))
    assert isinstance(error, ValueError)
    with pytest.raises(ValueError) as caught:
        ours.generate(ids, max_length=5, do_sample=False)
    assert str(caught.value) == str(error)


def test_default_length_is_twenty_new_tokens(llama):
    """No max_length / max_new_tokens: HF generates 20 new tokens after any prompt (we stopped at max_length 20,
    so a 25-token prompt gave one token)."""
    ours, hf = llama
    ids = np.arange(25)[None, :] % 100 + 3
    with torch.no_grad():
        want = hf.generate(torch.tensor(ids), do_sample=False).numpy()
    assert want.shape[1] == 45
    np.testing.assert_array_equal(ours.generate(ids, do_sample=False), want)
