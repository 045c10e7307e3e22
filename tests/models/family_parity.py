"""The shared parity check every model family runs against HF transformers (torch, fp32, CPU).

One call checks, on a tiny random checkpoint HF itself wrote: logits at unpadded positions (left padding),
argmax, the loss (right padding, -100 labels), greedy decoding through our KV cache against HF's
`generate` together with the logits of every decode step, and a save round trip (our save_pretrained
output loads in HF with the same class, the same tensor names and identical logits). Expected values
always come from HF.
"""
import json
import os

import numpy as np

from mindformers_hf import AutoModelForCausalLM
from mindformers_hf.safetensors_io import SafetensorsFile
from tests.conftest import batch

LOGITS_ATOL = 1e-4
LOSS_RTOL = 1e-5


def hf_model(folder):
    import torch
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def hf_call(model, ids, mask=None, labels=None):
    import torch

    as_t = lambda a: None if a is None else torch.tensor(np.asarray(a))
    with torch.no_grad():
        return model(input_ids=as_t(ids), attention_mask=as_t(mask), labels=as_t(labels))


def hf_greedy(model, prompt, new_tokens):
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor(prompt), attention_mask=torch.ones(prompt.shape, dtype=torch.long),
                             max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return out.numpy()[:, prompt.shape[1]:]


def our_greedy(model, prompt, new_tokens):
    """Prefill, then one token at a time through the KV cache; returns (tokens [1, N], step logits [1, N, V])."""
    out = model(input_ids=prompt, use_cache=True)
    tokens, logits = [], []
    for _ in range(new_tokens):
        step = out.logits[:, -1]
        logits.append(step)
        nxt = step.argmax(-1).reshape(1, 1)
        tokens.append(nxt)
        out = model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
    return np.concatenate(tokens, 1), np.stack(logits, 1)


def tensor_names(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            return set(json.load(f)["weight_map"])
    reader = SafetensorsFile(os.path.join(folder, "model.safetensors"))
    names = set(reader.keys())
    reader.close()
    return names


def assert_family_parity(folder, save_to, architecture, vocab=128, length=11, new_tokens=4):
    """Load `folder` with our AutoModelForCausalLM and compare everything against HF; returns our model."""
    ours = AutoModelForCausalLM.from_pretrained(folder)
    theirs = hf_model(folder)
    assert_family_forward(ours, theirs, architecture, vocab, length, new_tokens)
    assert_family_load(ours, theirs, folder, save_to, architecture, vocab, length)
    return ours


def assert_family_forward(ours, theirs, architecture, vocab=128, length=11, new_tokens=4):
    """Forward parity: logits at unpadded positions (left padding), argmax, the loss (right padding, -100 labels)
    and greedy decoding through our KV cache (HF's tokens; each step's logits equal HF's uncached forward)."""
    assert type(ours).__name__ == type(theirs).__name__ == architecture
    # logits and argmax with left padding; padded query rows are implementation-defined in HF itself
    ids, mask = batch(vocab, length=length, pad_left=(0, 3))
    got = ours(input_ids=ids, attention_mask=mask).logits
    want = hf_call(theirs, ids, mask).logits.numpy()
    valid = mask.astype(bool)
    assert np.abs(got - want)[valid].max() <= LOGITS_ATOL
    assert (got.argmax(-1)[valid] == want.argmax(-1)[valid]).all()

    # loss with right padding and -100 labels, as HF's causal-LM collator produces
    ids_r, mask_r = batch(vocab, length=length, pad_left=(0, 0), seed=1)
    mask_r[1, -4:] = 0
    labels = np.where(mask_r == 1, ids_r, -100)
    got_loss = float(ours(input_ids=ids_r, attention_mask=mask_r, labels=labels).loss)
    want_loss = float(hf_call(theirs, ids_r, mask_r, labels).loss)
    assert abs(got_loss - want_loss) <= LOSS_RTOL * abs(want_loss)

    # greedy decoding through our cache: HF's tokens, and each step's logits equal HF's uncached forward
    prompt = ids[:1]
    tokens, step_logits = our_greedy(ours, prompt, new_tokens)
    want_tokens = hf_greedy(theirs, prompt, new_tokens)  # HF stops at EOS; our loop goes on (the logits check it)
    np.testing.assert_array_equal(tokens[:, :want_tokens.shape[1]], want_tokens)
    full = np.concatenate([prompt, tokens[:, :-1]], 1)
    want_steps = hf_call(theirs, full).logits.numpy()[:, prompt.shape[1] - 1:]
    assert np.abs(step_logits - want_steps).max() <= LOGITS_ATOL


def assert_family_load(ours, theirs, folder, save_to, architecture, vocab=128, length=11):
    """Load: our class is HF's, and our save_pretrained output loads in HF as the same class with the same tensor
    names, bit-identical weights and the same logits."""
    assert type(ours).__name__ == type(theirs).__name__ == architecture
    ids, mask = batch(vocab, length=length, pad_left=(0, 3))
    want = hf_call(theirs, ids, mask).logits.numpy()
    ours.save_pretrained(save_to)
    assert tensor_names(save_to) == tensor_names(folder)
    reloaded = hf_model(save_to)
    assert type(reloaded).__name__ == architecture
    # the weights HF reads back are bit-identical to the ones it wrote ...
    originals = theirs.state_dict()
    for name, tensor in reloaded.state_dict().items():
        np.testing.assert_array_equal(tensor.numpy(), originals[name].numpy(), err_msg=name)
    # ... but two HF model instances need not sum in the same order: transformers 5.25's MoE experts
    # differ by ~3e-8 between two loads of the same file, so the logits get float32 rounding room
    np.testing.assert_allclose(hf_call(reloaded, ids, mask).logits.numpy(), want, rtol=0, atol=1e-6)


def assert_generate_matches_hf(folder, ours, vocab=128, length=9, new_tokens=5, theirs=None, **our_options):
    """`model.generate()` itself (the runner: compiled prefill, cache, masks per layer type) on a left-padded batch
    of two: greedy and beam search (3 beams) tokens equal HF's `generate`. `our_options` go to ours only (e.g.
    disable_compile=True)."""
    import torch

    theirs = theirs if theirs is not None else hf_model(folder)
    ids, mask = batch(vocab, length=length, pad_left=(0, 3), seed=3)
    for options in (dict(do_sample=False), dict(do_sample=False, num_beams=3)):
        with torch.no_grad():
            want = theirs.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                   max_new_tokens=new_tokens, pad_token_id=0, eos_token_id=2, **options).numpy()
        got = ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, pad_token_id=0,
                            eos_token_id=2, **options, **our_options)
        np.testing.assert_array_equal(np.asarray(got), want, err_msg=str(options))
