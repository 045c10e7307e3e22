"""Train steps run plain decoder layers as one shared compiled graph (trainer/layer_compilation.py) by default:
same losses and weights as PyNative, one graph shape per batch shape, and PyNative past MAX_SHAPES shapes."""
import numpy as np

from mindformers_hf import AutoModelForCausalLM
from mindformers_hf.trainer import Trainer, TrainingArguments
from mindformers_hf.trainer import layer_compilation

ARGS = dict(learning_rate=3e-3, per_device_train_batch_size=2, num_train_epochs=1, max_grad_norm=1.0,
            logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, seed=3)


def _data(lengths, vocab=128):
    rng = np.random.default_rng(0)
    rows = []
    for length in lengths:
        ids = rng.integers(3, vocab, size=length).tolist()
        rows.append({"input_ids": ids, "labels": ids})
    return rows


def _train(folder, data, out):
    model = AutoModelForCausalLM.from_pretrained(folder)
    trainer = Trainer(model=model, args=TrainingArguments(str(out), **ARGS), train_dataset=data)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return losses, {n: p.asnumpy() for n, p in model.parameters_and_names()}


def test_compiled_steps_equal_pynative(tiny_llama, tmp_path, monkeypatch, layer_graph_shapes):
    data = _data([12] * 6)
    compiled_losses, compiled_weights = _train(tiny_llama, data, tmp_path / "compiled")
    layers = AutoModelForCausalLM.from_pretrained(tiny_llama).config.num_hidden_layers
    assert set(layer_graph_shapes) == {(2, 12, 64)} and len(layer_graph_shapes) == 3 * layers
    layer_graph_shapes.clear()
    monkeypatch.setenv("MINDFORMERS_HF_COMPILE_LAYERS", "0")
    eager_losses, eager_weights = _train(tiny_llama, data, tmp_path / "eager")
    assert not layer_graph_shapes
    np.testing.assert_allclose(compiled_losses, eager_losses, rtol=1e-5)
    for name, want in eager_weights.items():
        np.testing.assert_allclose(compiled_weights[name], want, atol=1e-5, err_msg=name)  # lr 3e-3 steps


def test_new_shapes_past_the_limit_run_in_pynative(tiny_llama, tmp_path, monkeypatch, layer_graph_shapes):
    monkeypatch.setattr(layer_compilation.SharedLayerGraph, "MAX_SHAPES", 1)
    warnings = []
    monkeypatch.setattr(layer_compilation, "warn_once", warnings.append)
    data = _data([12, 12, 9, 9])  # sequential batches of two: lengths 12, then 9 (no collator padding across)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    args = TrainingArguments(str(tmp_path), train_sampling_strategy="sequential", **ARGS)
    Trainer(model=model, args=args, train_dataset=data).train()
    assert {s[1] for s in layer_graph_shapes} == {12}
    assert any("more than 1 shapes" in w for w in warnings)
