"""TrainingArguments(gradient_checkpointing=True) recomputes the decoder layers in the backward pass: same
losses and weights as a run without it; the shared compiled layer graph steps aside for recomputed layers."""
import numpy as np

from mindformers_hf import AutoModelForCausalLM
from mindformers_hf.trainer import Trainer, TrainingArguments
from tests.test_model_methods import layer_calls  # noqa: F401  (fixture)
from tests.trainer.test_compiled_layers import ARGS, _data


def _train(folder, out, **extra):
    model = AutoModelForCausalLM.from_pretrained(folder)
    trainer = Trainer(model=model, args=TrainingArguments(str(out), **ARGS, **extra), train_dataset=_data([12] * 4))
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return model, losses, {n: p.asnumpy() for n, p in model.parameters_and_names()}


def test_trainer_gradient_checkpointing_equals_plain_training(tiny_llama, tmp_path, layer_calls):  # noqa: F811
    _, plain_losses, plain_weights = _train(tiny_llama, tmp_path / "plain")
    assert not layer_calls  # the plain run's layers ran as the shared compiled graph
    model, losses, weights = _train(tiny_llama, tmp_path / "gc", gradient_checkpointing=True)
    assert model.is_gradient_checkpointing
    assert len(layer_calls) == 2 * 2 * model.config.num_hidden_layers  # 2 steps, forward + recompute per layer
    np.testing.assert_allclose(losses, plain_losses, rtol=1e-5)
    for name, want in plain_weights.items():
        np.testing.assert_allclose(weights[name], want, atol=1e-5, err_msg=name)


def test_gradient_checkpointing_with_torch_compile(tiny_llama, tmp_path):
    _, plain_losses, plain_weights = _train(tiny_llama, tmp_path / "plain", torch_compile=True)
    _, losses, weights = _train(tiny_llama, tmp_path / "gc", torch_compile=True, gradient_checkpointing=True)
    np.testing.assert_allclose(losses, plain_losses, rtol=1e-5)
    for name, want in plain_weights.items():
        np.testing.assert_allclose(weights[name], want, atol=1e-5, err_msg=name)
