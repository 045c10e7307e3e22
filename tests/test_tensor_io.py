"""torch idioms on MindSpore tensors and parameters (tensor_io): each gives what torch gives on the same values,
and what MindSpore already defined keeps its meaning."""
import numpy as np
import pytest

import mindspore as ms
from mindformers_hf import tensor_io  # noqa: F401  (installs the idioms)

VALUES = np.array([[0.5, -2.0, 1.5], [3.0, 0.25, -1.0]], dtype=np.float32)


def _ours():
    return {"tensor": ms.Tensor(VALUES), "parameter": ms.Parameter(ms.Tensor(VALUES), name="w")}


def _idioms(x, torch):
    return {
        "size()": tuple(x.size()), "size(1)": x.size(1), "size(dim=-2)": x.size(dim=-2),
        "numel": x.numel(), "requires_grad": x.detach().requires_grad,
        "to(torch.float16)": x.to(torch.float16).tolist(),
        "to(torch.int64)": x.to(torch.int64).tolist(),
        "to(cpu, dtype)": x.to(torch.device("cpu"), torch.float16).tolist(),
        "to(dtype=)": x.to(dtype=torch.float64).detach().numpy().dtype.name,
        "detach.cpu.numpy": x.detach().cpu().numpy(),
        "clone": x.detach().clone().numpy(),
        "data.clone": x.data.clone().numpy(),
        "argmax(dim=-1)": x.argmax(dim=-1).tolist(),
        "abs.max.item": (x - x.detach().clone() * 0.5).abs().max().item(),
    }


@pytest.mark.parametrize("kind", ["tensor", "parameter"])
def test_idioms_give_what_torch_gives(kind):
    import torch

    want = _idioms(torch.nn.Parameter(torch.tensor(VALUES)) if kind == "parameter" else torch.tensor(VALUES), torch)
    got = _idioms(_ours()[kind], torch)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_equal(got[key], want[key], err_msg=key)
    assert _ours()["parameter"].requires_grad and ms.Tensor(VALUES).requires_grad is False


def test_clone_and_detach_memory_follow_torch():
    param = _ours()["parameter"]
    view, snapshot = param.detach(), param.detach().clone()
    ms.ops.assign(param, param + 1)  # an in-place update, as the optimizer makes
    np.testing.assert_array_equal(view.numpy(), VALUES + 1)  # detach shares memory, as in torch
    np.testing.assert_array_equal(snapshot.numpy(), VALUES)  # clone copies
    assert type(param.detach()) is ms.Tensor


def test_mindspore_meanings_are_kept():
    tensor, param = _ours()["tensor"], _ours()["parameter"]
    assert tensor.size == 6 and isinstance(tensor.size, int) and tensor.size * 2 == 12  # the element count
    copy = param.clone()  # MindSpore's Parameter.clone: a new Parameter
    assert isinstance(copy, ms.Parameter) and copy.name == "w"
    assert tensor.to(ms.float16).dtype == ms.float16 and tensor.to("cpu").dtype == ms.float32

    @ms.jit
    def graph(x):  # compiled code resolves tensor methods itself
        return x.to(ms.float16).astype(ms.float32) * x.size

    np.testing.assert_allclose(graph(tensor).numpy(), VALUES * 6, rtol=1e-3)
