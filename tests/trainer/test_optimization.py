"""AdamW, learning-rate schedules and loss scaling against torch / transformers on identical inputs."""
import numpy as np
import pytest
import mindspore as ms

from mindformers_hf.trainer.optimization import AdamW, GradScaler
from mindformers_hf.trainer.schedules import SCHEDULER_NAMES, get_scheduler


def test_adamw_matches_torch_elementwise():
    import torch

    rng = np.random.default_rng(0)
    shapes = [(7, 5), (5,), (3, 4)]
    init = [rng.normal(0, 0.5, s).astype(np.float32) for s in shapes]
    ours = [ms.Parameter(ms.Tensor(a.copy()), name=f"p{i}") for i, a in enumerate(init)]
    theirs = [torch.nn.Parameter(torch.tensor(a.copy())) for a in init]
    hyper = dict(lr=2e-2, betas=(0.8, 0.95), eps=1e-6)
    opt = AdamW([{"params": ours[:2], "weight_decay": 0.1}, {"params": ours[2:], "weight_decay": 0.0}], **hyper)
    ref = torch.optim.AdamW([{"params": theirs[:2], "weight_decay": 0.1}, {"params": theirs[2:],
                                                                             "weight_decay": 0.0}], **hyper)
    for step in range(6):
        grads = [rng.normal(0, 10.0 ** -(step % 3), s).astype(np.float32) for s in shapes]
        for group in opt.param_groups + ref.param_groups:
            group["lr"] = 2e-2 * (1.0 - step / 10)  # a schedule changes lr between steps
        opt.step([ms.Tensor(g) for g in grads])
        for p, g in zip(theirs, grads):
            p.grad = torch.tensor(g)
        ref.step()
        for p, q in zip(ours, theirs):
            want = q.detach().numpy()
            np.testing.assert_allclose(p.asnumpy(), want, rtol=2e-6, atol=1e-7)


def _torch_lrs(name, steps, warmup, kwargs):
    import torch
    from transformers import get_scheduler as hf_get_scheduler

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    sched = hf_get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=steps,
                             scheduler_specific_kwargs=kwargs)
    lrs = []
    for _ in range(steps + 3):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return lrs


_KWARGS = {"cosine_with_min_lr": {"min_lr_rate": 0.1}, "cosine_warmup_with_min_lr": {"min_lr": 1e-5},
           "warmup_stable_decay": {"num_decay_steps": 6}, "cosine_with_restarts": {"num_cycles": 3},
           "polynomial": {"power": 2.0, "lr_end": 1e-6}}


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_scheduler_learning_rates_match_transformers(name):
    steps, warmup = 20, 4
    kwargs = _KWARGS.get(name, {})
    want = _torch_lrs(name, steps, warmup, dict(kwargs))
    opt = AdamW([ms.Parameter(ms.Tensor(np.zeros(1, np.float32)), name="w")], lr=3e-4)
    sched = get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=steps,
                          scheduler_specific_kwargs=dict(kwargs))
    got = []
    for _ in range(steps + 3):
        got.append(sched.get_last_lr()[0])
        sched.step()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_scheduler_state_round_trip():
    opt = AdamW([ms.Parameter(ms.Tensor(np.zeros(1, np.float32)), name="w")], lr=1e-3)
    sched = get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=10)
    for _ in range(5):
        sched.step()
    fresh_opt = AdamW([ms.Parameter(ms.Tensor(np.zeros(1, np.float32)), name="w")], lr=1e-3)
    fresh = get_scheduler("cosine", fresh_opt, num_warmup_steps=2, num_training_steps=10)
    fresh.load_state_dict(sched.state_dict())
    assert fresh.get_last_lr() == sched.get_last_lr() and fresh_opt.param_groups[0]["lr"] == sched.get_last_lr()[0]


def test_unsupported_scheduler_raises():
    opt = AdamW([ms.Parameter(ms.Tensor(np.zeros(1, np.float32)), name="w")], lr=1e-3)
    with pytest.raises(NotImplementedError, match="reduce_lr_on_plateau"):
        get_scheduler("reduce_lr_on_plateau", opt)


def test_grad_scaler_follows_torch():
    import torch

    ref = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=3)
    ours = GradScaler(init_scale=2.0 ** 10, growth_interval=3)
    param = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([param], lr=0.0)
    for found_inf in [False, False, False, True, False, True, True, False, False, False, False]:
        loss = (param * (float("inf") if found_inf else 1.0)).sum()
        ref.scale(loss).backward()
        ref.step(opt)
        ref.update()
        opt.zero_grad()
        ours.update(found_inf)
        assert ours.scale == ref.get_scale()


def test_adamw_updates_parameters_backed_by_read_only_memory(tmp_path):
    """GGUF float32 tensors load zero-copy from a read-only mapping; the in-place update must not crash."""
    path = tmp_path / "weights.bin"
    np.arange(6, dtype=np.float32).tofile(path)
    mapped = np.memmap(path, dtype=np.float32, mode="r")
    param = ms.Parameter(ms.from_numpy(mapped), name="mapped")
    AdamW([param], lr=0.5, weight_decay=0.0).step([ms.Tensor(np.ones(6, np.float32))])
    np.testing.assert_allclose(param.asnumpy(), np.arange(6) - 0.5, atol=1e-5)
    np.testing.assert_array_equal(np.fromfile(path, dtype=np.float32), np.arange(6))  # the file is untouched


_FUNCTIONS = {  # transformers' schedule functions, called as its docs call them (positional warmup / total)
    "get_constant_schedule": ((), {}),
    "get_constant_schedule_with_warmup": ((4,), {}),
    "get_linear_schedule_with_warmup": ((4, 20), {}),
    "get_cosine_schedule_with_warmup": ((4, 20), {"num_cycles": 1.5}),
    "get_cosine_with_hard_restarts_schedule_with_warmup": ((4, 20), {"num_cycles": 3}),
    "get_polynomial_decay_schedule_with_warmup": ((4, 20), {"lr_end": 1e-6, "power": 2.0}),
    "get_inverse_sqrt_schedule": ((4,), {"timescale": 7}),
    "get_cosine_with_min_lr_schedule_with_warmup": ((4, 20), {"min_lr": 3e-5}),
    "get_cosine_with_min_lr_schedule_with_warmup_lr_rate": ((4, 20), {"min_lr_rate": 0.1, "warmup_lr_rate": 0.2}),
    "get_wsd_schedule": ((4, 6), {"num_stable_steps": 5, "decay_type": "1-sqrt", "min_lr_ratio": 0.1}),
}


@pytest.mark.parametrize("name", sorted(_FUNCTIONS))
def test_schedule_functions_match_transformers(name):
    import torch
    import transformers

    import mindformers_hf

    args, kwargs = _FUNCTIONS[name]
    torch_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    theirs = getattr(transformers, name)(torch_opt, *args, **kwargs)
    ours = getattr(mindformers_hf, name)(AdamW([ms.Parameter(ms.Tensor(np.zeros(1, np.float32)), name="w")],
                                               lr=3e-4), *args, **kwargs)
    got, want = [], []
    for _ in range(24):
        got.append(ours.get_last_lr()[0])
        want.append(theirs.get_last_lr()[0])
        ours.step()
        torch_opt.step()
        theirs.step()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    assert len(set(want)) > 1 or name == "get_constant_schedule"


def test_schedule_function_argument_errors_match_transformers():
    import mindformers_hf

    opt = AdamW([ms.Parameter(ms.Tensor(np.zeros(1, np.float32)), name="w")], lr=3e-4)
    with pytest.raises(ValueError, match="Only one of min_lr or min_lr_rate"):
        mindformers_hf.get_cosine_with_min_lr_schedule_with_warmup(opt, 2, 10, min_lr=1e-5, min_lr_rate=0.1)
    with pytest.raises(ValueError, match="Unknown"):
        mindformers_hf.get_wsd_schedule(opt, 2, 3, num_training_steps=10, decay_type="exp")
    with pytest.raises(TypeError):
        get_scheduler("linear", opt, 2, 10, scheduler_specific_kwargs={"num_cycles": 2})
