"""TrainingArguments.optim: the optimizers transformers' Trainer picks by name, against HF on torch.

Element by element on identical gradients (the update rule alone, tight tolerance), and through both
Trainers on the same checkpoint and data (`optim` / `optim_args` as a user passes them). Every step sees the
whole dataset (batch 4 x 2 accumulation), so the data order cannot change the result.
"""
import numpy as np
import pytest
import mindspore as ms

from mindformers_hf import AutoModelForCausalLM
from mindformers_hf.trainer import Trainer, TrainingArguments
from mindformers_hf.trainer.optimizers import SGD, Adafactor, Adagrad, RMSprop
from tests.conftest import make_hf_checkpoint
from tests.trainer.test_trainer_parity import _dataset

SHAPES = [(7, 5), (5,), (2, 3, 4)]


def _torch_optimizer(name, params, hyper):
    import torch
    import transformers

    if name == "Adafactor":
        return transformers.Adafactor(params, **hyper)
    return getattr(torch.optim, name)(params, **hyper)


@pytest.mark.parametrize("cls, hyper", [
    (SGD, dict(lr=0.05)),
    (SGD, dict(lr=0.05, momentum=0.9, dampening=0.1)),
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    (Adagrad, dict(lr=0.05, lr_decay=0.01, eps=1e-6)),
    (RMSprop, dict(lr=0.01, momentum=0.5, centered=True, eps=1e-6)),
    (RMSprop, dict(lr=0.01, alpha=0.9)),
    (Adafactor, dict(lr=0.01, scale_parameter=False, relative_step=False)),
    (Adafactor, dict(lr=0.01, scale_parameter=True, relative_step=False, beta1=0.9, clip_threshold=0.5)),
    (Adafactor, dict()),  # transformers' defaults: relative step, parameter scaling
    (Adafactor, dict(warmup_init=True, beta1=0.5)),
])
def test_update_rule_matches_torch_elementwise(cls, hyper):
    import torch

    rng = np.random.default_rng(0)
    init = [rng.normal(0, 0.5, s).astype(np.float32) for s in SHAPES]
    ours = [ms.Parameter(ms.Tensor(a.copy()), name=f"p{i}") for i, a in enumerate(init)]
    theirs = [torch.nn.Parameter(torch.tensor(a.copy())) for a in init]
    opt = cls([{"params": ours[:2], "weight_decay": 0.1}, {"params": ours[2:], "weight_decay": 0.0}], **hyper)
    ref = _torch_optimizer(cls.__name__, [{"params": theirs[:2], "weight_decay": 0.1},
                                          {"params": theirs[2:], "weight_decay": 0.0}], hyper)
    for step in range(5):
        grads = [rng.normal(0, 10.0 ** -(step % 3), s).astype(np.float32) for s in SHAPES]
        opt.step([ms.Tensor(g) for g in grads])
        for p, g in zip(theirs, grads):
            p.grad = torch.tensor(g)
        ref.step()
        for p, q in zip(ours, theirs):
            np.testing.assert_allclose(p.asnumpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_optimizer_state_round_trips_through_a_checkpoint(tmp_path):
    from mindformers_hf.trainer import checkpointing as ckpt

    def build():
        params = [ms.Parameter(ms.Tensor(np.ones(s, np.float32)), name=f"p{i}") for i, s in enumerate(SHAPES)]
        return params, Adafactor(params, lr=0.01, relative_step=False, beta1=0.9)

    params, opt = build()
    grads = [ms.Tensor(np.full(s, 0.3, np.float32)) for s in SHAPES]
    opt.step(grads)
    ckpt.save_optimizer(opt, str(tmp_path))
    params2, opt2 = build()
    for p, q in zip(params2, params):
        p.set_data(q.copy())
    ckpt.load_optimizer(opt2, str(tmp_path))
    opt.step(grads)
    opt2.step(grads)
    for p, q in zip(params, params2):
        np.testing.assert_array_equal(p.asnumpy(), q.asnumpy())
    assert opt2.param_groups[0]["eps"] == (1e-30, 1e-3)


ARGS = dict(learning_rate=1e-2, per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=3,
            lr_scheduler_type="linear", weight_decay=0.1, max_grad_norm=1.0, save_strategy="no", report_to="none",
            disable_tqdm=True, seed=7)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_hf_checkpoint(tmp_path_factory.mktemp("optim_ckpt"), seed=5), _dataset()


@pytest.mark.parametrize("optim, optim_args", [
    ("adamw_torch_fused", None), ("sgd", "momentum=0.9,nesterov=True"), ("adafactor", None)])
def test_trainer_optim_matches_hf_trainer(checkpoint, tmp_path, optim, optim_args):
    """Parameters after three steps equal HF's within 1e-5 relative (fp32 rounding of the gradients, which
    agree to ~1e-6; adam_epsilon=1e-6 keeps AdamW's division by |g| + eps from amplifying it)."""
    import torch
    import transformers

    folder, data = checkpoint
    kwargs = dict(ARGS, optim=optim, optim_args=optim_args, adam_epsilon=1e-6)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    hf = transformers.Trainer(model=hf_model, train_dataset=data,
                              args=transformers.TrainingArguments(str(tmp_path / "hf"), use_cpu=True, **kwargs))
    hf.train()
    assert type(hf.optimizer.optimizer if hasattr(hf.optimizer, "optimizer") else hf.optimizer).__name__ == {
        "adamw_torch_fused": "AdamW", "sgd": "SGD", "adafactor": "Adafactor"}[optim]
    model = AutoModelForCausalLM.from_pretrained(folder)
    ours = Trainer(model=model, train_dataset=data, args=TrainingArguments(str(tmp_path / "ours"), **kwargs))
    ours.train()
    assert type(ours.optimizer).__name__ == type(hf.optimizer.optimizer).__name__
    want = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    start = dict(AutoModelForCausalLM.from_pretrained(folder).parameters_and_names())
    for name, param in model.parameters_and_names():
        moved = np.linalg.norm(want[name] - start[name].asnumpy())
        assert moved > 0, f"{name} did not move"
        rel = np.linalg.norm(param.asnumpy() - want[name]) / moved
        assert rel <= 1e-4, f"{optim} {name}: differs from HF by {rel:.2e} of HF's change"


@pytest.mark.parametrize("optim", ["adamw_bnb_8bit", "galore_adamw", "lomo", "adamw_anyprecision"])
def test_unimplemented_optim_raises_naming_it(tmp_path, checkpoint, optim):
    folder, data = checkpoint
    args = TrainingArguments(str(tmp_path), optim=optim, report_to="none")
    with pytest.raises(NotImplementedError, match=f"optim='{optim}'"):
        Trainer(model=AutoModelForCausalLM.from_pretrained(folder), args=args, train_dataset=data)


def test_optim_names_transformers_removed_fail_as_in_transformers(tmp_path):
    """`adamw_hf` (transformers' own AdamW, removed in 5.x) is refused by the TrainingArguments dataclass
    itself, as in transformers: the message names the value."""
    import transformers

    for cls in (TrainingArguments, transformers.TrainingArguments):
        with pytest.raises(ValueError, match="adamw_hf"):
            cls(str(tmp_path), optim="adamw_hf")
