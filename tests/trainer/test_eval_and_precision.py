"""evaluate / predict / compute_metrics against transformers' Trainer, and fp16 / bf16 training."""
import os

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM, EvalPrediction, Trainer, TrainingArguments
from mindformers_hf.safetensors_io import SafetensorsFile


def _data(rows=5, length=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 128, size=(rows, length))
    return [{"input_ids": i.tolist(), "labels": i.tolist()} for i in ids]


def _argmax(logits, labels):
    return logits.argmax(-1)


def _accuracy(pred: EvalPrediction):
    preds, labels = np.asarray(pred.predictions)[:, :-1], np.asarray(pred.label_ids)[:, 1:]
    return {"accuracy": float((preds == labels).mean())}


def test_predict_and_metrics_match_transformers(tiny_llama, tmp_path):
    import torch
    import transformers

    data = _data()
    common = dict(per_device_eval_batch_size=2, report_to="none", disable_tqdm=True)
    hf = transformers.Trainer(
        model=transformers.AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32),
        args=transformers.TrainingArguments(str(tmp_path / "hf"), use_cpu=True, **common),
        compute_metrics=_accuracy, preprocess_logits_for_metrics=_argmax)
    want = hf.predict(data)
    ours = Trainer(model=AutoModelForCausalLM.from_pretrained(tiny_llama),
                   args=TrainingArguments(str(tmp_path / "ours"), **common),
                   compute_metrics=_accuracy, preprocess_logits_for_metrics=_argmax)
    got = ours.predict(data)
    np.testing.assert_array_equal(got.predictions, want.predictions.numpy()
                                  if hasattr(want.predictions, "numpy") else want.predictions)
    np.testing.assert_array_equal(got.label_ids, want.label_ids)
    assert got.metrics["test_loss"] == pytest.approx(want.metrics["test_loss"], rel=1e-5)  # 3 batches: 2, 2, 1
    assert got.metrics["test_accuracy"] == want.metrics["test_accuracy"]
    metrics = ours.evaluate(data)
    assert metrics["eval_loss"] == pytest.approx(want.metrics["test_loss"], rel=1e-5) and "eval_accuracy" in metrics


ARGS = dict(learning_rate=3e-3, per_device_train_batch_size=4, num_train_epochs=2, logging_steps=1,
            save_strategy="no", disable_tqdm=True, seed=0)


def _train(folder, out, callbacks=None, **overrides):
    model = AutoModelForCausalLM.from_pretrained(folder)
    trainer = Trainer(model=model, args=TrainingArguments(str(out), **{**ARGS, **overrides}),
                      train_dataset=_data(rows=16, seed=1), callbacks=callbacks)
    trainer.train()
    return model, trainer


def test_fp16_tracks_fp32_and_saves_float32(tiny_llama, tmp_path):
    fp32_model, fp32 = _train(tiny_llama, tmp_path / "fp32")
    model, trainer = _train(tiny_llama, tmp_path / "fp16", fp16=True)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    want = [h["loss"] for h in fp32.state.log_history if "loss" in h]
    np.testing.assert_allclose(losses, want, atol=2e-2)
    assert losses[-1] < losses[0]
    assert str(model.dtype) == "Float32"  # float32 weights are back in the model after training
    reference = dict(fp32_model.parameters_and_names())
    for name, param in model.parameters_and_names():
        diff = np.linalg.norm(param.asnumpy() - reference[name].asnumpy()) / np.linalg.norm(reference[name].asnumpy())
        assert diff < 2e-2, name
    trainer.save_model(str(tmp_path / "saved"))
    reader = SafetensorsFile(os.path.join(tmp_path / "saved", "model.safetensors"))
    assert {reader.dtype(k) for k in reader.keys()} == {"F32"}


def test_fp16_overflow_skips_the_step_and_halves_the_scale(tiny_llama, tmp_path):
    from mindformers_hf import TrainerCallback

    seen = {}

    class Overflow(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step == 2:  # a loss scale fp16 cannot hold: the gradients overflow
                holder["trainer"].scaler.scale = 2.0 ** 120
                seen["weights"] = model.lm_head.weight.asnumpy().astype(np.float32)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 3:
                seen["after"] = model.lm_head.weight.asnumpy().astype(np.float32)
                seen["scale"] = holder["trainer"].scaler.scale

    holder = {}
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    trainer = Trainer(model=model, args=TrainingArguments(str(tmp_path), fp16=True, **ARGS),
                      train_dataset=_data(rows=16, seed=1), callbacks=[Overflow()])
    holder["trainer"] = trainer
    trainer.train()
    np.testing.assert_array_equal(seen["after"], seen["weights"])
    assert seen["scale"] == 2.0 ** 119
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert not np.isfinite(logs[2]["grad_norm"]) and logs[2]["learning_rate"] == logs[3]["learning_rate"]


def test_bf16_on_cpu_trains_in_float32(tiny_llama, tmp_path):
    _, bf16 = _train(tiny_llama, tmp_path / "bf16", bf16=True, num_train_epochs=1)
    _, fp32 = _train(tiny_llama, tmp_path / "fp32", num_train_epochs=1)
    got = [h["loss"] for h in bf16.state.log_history if "loss" in h]
    assert got == pytest.approx([h["loss"] for h in fp32.state.log_history if "loss" in h], rel=1e-6)


def test_torch_compile_runs_decoder_layers_under_jit_with_the_same_result(tiny_llama, tmp_path):
    eager_model, eager = _train(tiny_llama, tmp_path / "eager", num_train_epochs=1)
    model, compiled = _train(tiny_llama, tmp_path / "jit", num_train_epochs=1, torch_compile=True)
    assert len(compiled._layer_compilation.layers) == 2
    got = [h["loss"] for h in compiled.state.log_history if "loss" in h]
    assert got == pytest.approx([h["loss"] for h in eager.state.log_history if "loss" in h], rel=1e-5)
    reference = dict(eager_model.parameters_and_names())
    for name, param in model.parameters_and_names():
        assert np.linalg.norm(param.asnumpy() - reference[name].asnumpy()) <= 1e-5 * np.linalg.norm(
            reference[name].asnumpy()), name
    assert "construct" not in vars(compiled._layer_compilation.layers[0])  # no layer's construct was replaced


def test_loss_only_evaluation_reports_perplexity_as_run_clm(tiny_llama, tmp_path):
    """run_clm.py: `perplexity = math.exp(metrics["eval_loss"])` on transformers' Trainer's evaluate()."""
    import math

    import torch
    import transformers

    data = _data()
    common = dict(per_device_eval_batch_size=2, report_to="none", disable_tqdm=True, prediction_loss_only=True)
    hf = transformers.Trainer(
        model=transformers.AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32),
        args=transformers.TrainingArguments(str(tmp_path / "hf"), use_cpu=True, **common))
    want = math.exp(hf.evaluate(data)["eval_loss"])
    ours = Trainer(model=AutoModelForCausalLM.from_pretrained(tiny_llama),
                   args=TrainingArguments(str(tmp_path / "ours"), **common))
    metrics = ours.evaluate(data)
    assert metrics["eval_perplexity"] == pytest.approx(want, rel=1e-5)
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    assert "test_perplexity" not in ours.predict(data).metrics  # predict() reports what HF reports
