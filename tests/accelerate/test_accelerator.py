"""accelerate's training loop under accelerate + torch and under mindformers_hf.accelerate, on the same tiny LLaMA,
data, optimizer and schedule; the loss of every micro-batch and the final weights must agree.

Tolerance: gradients agree to ~1e-6 (fp32 rounding in two frameworks); AdamW's first steps divide by |g| + eps,
which amplifies that rounding where |g| is near eps, so eps=1e-6 (as in tests/trainer/test_trainer_parity.py) and
weights are compared at 1e-5 after four steps of lr 3e-3 (measured: losses 3e-6, weights 3e-6).
"""
import os

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
                    inputs = batch["input_ids"].to(accelerator.device)
                    targets = batch["labels"].to(accelerator.device)
                    outputs = model(inputs)
                    loss = torch.nn.functional.cross_entropy(outputs.logits.reshape(-1, VOCAB), targets.reshape(-1))
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
                if custom_loss:  # the changed lines: the loss is computed inside a function, in MindSpore ops
                    inputs = batch["input_ids"].to(accelerator.device)
                    targets = batch["labels"].to(accelerator.device)
                    loss = accelerator.backward(lambda: ops.cross_entropy(
                        model(inputs).logits.reshape(-1, VOCAB), targets.reshape(-1)))
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


def test_two_processes_equal_one_process_on_the_global_batch(dp_jobs):
    """Under `mindformers-hf launch --num_processes 2` each process takes every other batch of 2, gradients are
    averaged at the step: the same weights as one process on the global batches of 4. The runs are the "accelerate"
    and "accelerate_single" scenarios of the session's data-parallel jobs (tests/trainer/dp_jobs.py), on this
    module's checkpoint (make_hf_checkpoint, seed 4)."""
    import re

    from tests.trainer.test_data_parallel import _weights

    worker, single = dp_jobs.launched("accelerate"), dp_jobs.single("accelerate_single")
    single_steps = re.findall(r"STEP loss=(\S+) gathered=\((\d+), 12\)", single)
    dp_steps = re.findall(r"STEP loss=(\S+) gathered=\((\d+), 12\)", worker[0])
    assert len(single_steps) == len(dp_steps) == 4
    assert not re.findall(r"STEP", worker[1])  # accelerator.print: the main process only
    for (loss_1, rows_1), (loss_2, rows_2) in zip(single_steps, dp_steps):
        assert rows_1 == rows_2 == "4"  # gather: both processes' rows
        assert float(loss_1) == pytest.approx(float(loss_2), abs=1e-5)
    ours, reference = _weights(dp_jobs.root / "acc_dp"), _weights(dp_jobs.root / "acc_single")
    assert ours.keys() == reference.keys()
    worst = max(float(np.abs(ours[k] - reference[k]).max()) for k in reference)
    assert worst < 1e-5, worst
    digests = {m.group(1): float(m.group(2)) for text in worker.values()
               for m in [re.search(r"WEIGHTS_DIGEST rank=(\d) world=2 value=(\S+)", text)] if m}
    assert len(digests) == 2 and digests["0"] == pytest.approx(digests["1"], rel=1e-9)


def test_save_state_and_load_state_resume_exactly(folder, tmp_path):
    """Two steps, save_state, two more; a fresh run that load_state()s the checkpoint repeats the last two."""
    from mindformers_hf import AutoModelForCausalLM, get_linear_schedule_with_warmup
    from mindformers_hf.accelerate import Accelerator
    from mindformers_hf.trainer import AdamW

    def setup():
        accelerator = Accelerator()
        model = AutoModelForCausalLM.from_pretrained(folder)
        optimizer = AdamW(model.parameters(), lr=LR, weight_decay=WD, eps=EPS)
        scheduler = get_linear_schedule_with_warmup(optimizer, 1, 4)
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        model.train()
        return accelerator, model, optimizer, scheduler

    def steps(accelerator, model, optimizer, scheduler, batches):
        losses = []
        for batch in accelerator.prepare(batches):
            outputs = model(**batch)
            accelerator.backward(outputs.loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(outputs.loss.item())
        return losses

    data = _batches()
    first = setup()
    steps(*first, data[:2])
    first[0].save_state(tmp_path / "ckpt")
    want = steps(*first, data[2:])
    want_weights = {n: p.asnumpy() for n, p in first[1].module.parameters_and_names()}
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["accelerator_state.json", "model", "optimizer",
                                                     "rng_state.json", "scheduler.json"]

    second = setup()
    second[0].load_state(tmp_path / "ckpt")
    got = steps(*second, data[2:])
    assert got == want
    for name, param in second[1].module.parameters_and_names():
        np.testing.assert_array_equal(param.asnumpy(), want_weights[name], err_msg=name)
