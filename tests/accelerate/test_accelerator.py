"""accelerate's training loop under accelerate + torch and under mindformers_hf.accelerate, on the same tiny LLaMA,
data, optimizer and schedule; the loss of every micro-batch and the final weights must agree.

Tolerance: gradients agree to ~1e-6 (fp32 rounding in two frameworks); AdamW's first steps divide by |g| + eps,
which amplifies that rounding where |g| is near eps, so eps=1e-6 (as in tests/trainer/test_trainer_parity.py) and
weights are compared at 1e-5 after four steps of lr 3e-3 (measured: losses 3e-6, weights 3e-6).
"""
import numpy as np
import pytest

from tests.conftest import make_hf_checkpoint

LR, WD, EPS, ACCUM, EPOCHS = 3e-3, 0.1, 1e-6, 2, 2
VOCAB = 128


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_hf_checkpoint(tmp_path_factory.mktemp("acc_ckpt"), seed=4)


def _batches():
    rng = np.random.default_rng(5)
    ids = rng.integers(3, VOCAB, size=(8, 12)).astype(np.int64)
    labels = ids.copy()
    labels[::3, :3] = -100
    return [{"input_ids": ids[i:i + 2], "labels": labels[i:i + 2]} for i in range(0, 8, 2)]


def _run_torch(folder, custom_loss):
    import accelerate
    import torch
    import transformers

    accelerator = accelerate.Accelerator(gradient_accumulation_steps=ACCUM, cpu=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD, eps=EPS)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, 1, 4)
    data = [{k: torch.tensor(v) for k, v in b.items()} for b in _batches()]
    model, optimizer, data, scheduler = accelerator.prepare(model, optimizer, data, scheduler)
    model.train()
    losses = []
    for _ in range(EPOCHS):
        for batch in data:
            with accelerator.accumulate(model):
                if custom_loss:  # the quicktour's loop: a loss computed outside the model
                    outputs = model(batch["input_ids"])
                    loss = torch.nn.functional.cross_entropy(outputs.logits.reshape(-1, VOCAB),
                                                             batch["labels"].reshape(-1))
                    accelerator.backward(loss)
                else:
                    outputs = model(**batch)
                    loss = outputs.loss
                    accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            losses.append(loss.item())
    weights = {k: v.detach().numpy().copy() for k, v in accelerator.unwrap_model(model).state_dict().items()}
    return losses, weights


def _run_ours(folder, custom_loss, tmp_path=None):
    from mindspore import ops

    from mindformers_hf import AutoModelForCausalLM, get_linear_schedule_with_warmup
    from mindformers_hf.accelerate import Accelerator
    from mindformers_hf.trainer import AdamW

    accelerator = Accelerator(gradient_accumulation_steps=ACCUM, cpu=True)
    model = AutoModelForCausalLM.from_pretrained(folder)
    optimizer = AdamW(model.parameters(), lr=LR, weight_decay=WD, eps=EPS)
    scheduler = get_linear_schedule_with_warmup(optimizer, 1, 4)
    model, optimizer, data, scheduler = accelerator.prepare(model, optimizer, _batches(), scheduler)
    model.train()
    losses = []
    for _ in range(EPOCHS):
        for batch in data:
            with accelerator.accumulate(model):
                if custom_loss:  # the one changed line: the loss is computed inside a function
                    loss = accelerator.backward(lambda: ops.cross_entropy(
                        model(batch["input_ids"]).logits.reshape(-1, VOCAB), batch["labels"].reshape(-1)))
                else:
                    outputs = model(**batch)
                    loss = outputs.loss
                    accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            losses.append(loss.item())
    return losses, accelerator, model


@pytest.mark.parametrize("custom_loss", [False, True])
def test_training_loop_matches_accelerate_on_torch(folder, custom_loss):
    want_losses, want_weights = _run_torch(folder, custom_loss)
    losses, accelerator, model = _run_ours(folder, custom_loss)
    assert len(losses) == len(want_losses) == 8
    np.testing.assert_allclose(losses, want_losses, atol=1e-5, rtol=0)
    assert losses[-1] < losses[0] - 0.05  # it trained
    got = {name: p.asnumpy() for name, p in accelerator.unwrap_model(model).parameters_and_names()}
    assert set(got) == set(want_weights)
    worst = max(float(np.abs(got[k] - want_weights[k]).max()) for k in got)
    assert worst < 1e-5, worst


def test_process_api_save_model_and_errors(folder, tmp_path, capsys):
    import json
    import os

    from mindformers_hf import AutoModelForCausalLM
    from mindformers_hf.accelerate import Accelerator

    accelerator = Accelerator()
    assert (accelerator.num_processes, accelerator.process_index) == (1, 0)
    assert accelerator.is_main_process and accelerator.is_local_main_process
    assert accelerator.device == "cpu"
    accelerator.wait_for_everyone()
    accelerator.print("hello")
    assert capsys.readouterr().out == "hello\n"
    model = accelerator.prepare(AutoModelForCausalLM.from_pretrained(folder))
    model.train()
    batch = accelerator.prepare(_batches())
    first = next(iter(batch))
    outputs = model(**first)
    with pytest.raises(ValueError, match="must be the `outputs.loss`"):
        accelerator.backward(outputs.loss * 2)
    gathered = accelerator.gather(first["input_ids"])
    np.testing.assert_array_equal(gathered.asnumpy(), first["input_ids"].asnumpy())
    assert float(accelerator.reduce(outputs.loss, "mean")) == pytest.approx(float(outputs.loss))
    accelerator.save_model(model, tmp_path / "saved")
    with open(os.path.join(tmp_path / "saved", "config.json")) as f:
        assert json.load(f)["architectures"] == ["LlamaForCausalLM"]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    for (name, a), (_, b) in zip(reloaded.parameters_and_names(), accelerator.unwrap_model(model).parameters_and_names()):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy(), err_msg=name)
    with pytest.raises(NotImplementedError, match="mixed_precision"):
        Accelerator(mixed_precision="bf16")
