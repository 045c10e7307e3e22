"""Fine-tuning Whisper with our Trainer equals transformers' Seq2SeqTrainer on torch: two AdamW steps over a
tiny HF-written checkpoint (batch 4 x 2 accumulation steps = the whole 8-example dataset per step).

Whisper's loss is a per-micro-batch mean that ignores num_items_in_batch (in transformers too), so how the
examples are grouped into micro-batches would matter with -100 labels; every label is kept, which makes the
step independent of the (numpy vs torch) shuffling. transformers' from_pretrained leaves the encoder's
sinusoidal positions trainable, ours keeps them frozen (docs/differences.md): the HF run freezes them too.
"""
import numpy as np
import pytest

from mindformers_hf import AutoModelForSpeechSeq2Seq
from mindformers_hf.trainer import Trainer, TrainingArguments
from tests.models.test_whisper_parity import make_whisper_checkpoint

ARGS = dict(learning_rate=3e-3, per_device_train_batch_size=4, gradient_accumulation_steps=2, num_train_epochs=2,
            weight_decay=0.1, max_grad_norm=0.5, adam_epsilon=1e-6, logging_steps=1, save_strategy="no",
            report_to="none", disable_tqdm=True, seed=7)


def _dataset():
    rng = np.random.default_rng(0)
    return [{"input_features": rng.standard_normal((8, 32)).astype(np.float32).tolist(),
             "labels": rng.integers(4, 96, size=6).tolist()} for _ in range(8)]


def test_whisper_training_steps_match_hf_seq2seq_trainer(tmp_path):
    import torch
    import transformers

    folder = make_whisper_checkpoint(tmp_path / "ckpt", seed=2)
    data = _dataset()
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    hf.model.encoder.embed_positions.requires_grad_(False)
    hf_args = transformers.Seq2SeqTrainingArguments(str(tmp_path / "hf"), use_cpu=True, **ARGS)
    hf_trainer = transformers.Seq2SeqTrainer(model=hf, args=hf_args, train_dataset=data)
    hf_trainer.train()
    want = {name: value.detach().numpy() for name, value in hf.state_dict().items()}

    model = AutoModelForSpeechSeq2Seq.from_pretrained(folder)
    trainer = Trainer(model=model, args=TrainingArguments(str(tmp_path / "ours"), **ARGS), train_dataset=data)
    trainer.train()
    for name, param in model.parameters_and_names():
        rel = np.linalg.norm(param.asnumpy() - want[name]) / np.linalg.norm(want[name])
        assert rel <= 1e-5, f"{name}: relative difference {rel:.2e}"
    steps = [h for h in trainer.state.log_history if "loss" in h]
    want_steps = [h for h in hf_trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in steps] == [h["step"] for h in want_steps] == [1, 2]
    for ours, theirs in zip(steps, want_steps):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
        assert ours["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-4)


def test_seq2seq_trainer_predict_with_generate_matches_hf(tmp_path):
    """Seq2SeqTrainer(predict_with_generate=True): evaluate's loss and compute_metrics over the generated tokens,
    and predict's padded predictions and labels, equal transformers' Seq2SeqTrainer on the same checkpoint
    (greedy and beam search decode the same tokens from logits that agree to ~1e-5)."""
    import torch
    import transformers
    from mindformers_hf import Seq2SeqTrainer, Seq2SeqTrainingArguments

    folder = make_whisper_checkpoint(tmp_path / "ckpt", seed=2, init_std=0.5)
    data = _dataset()[:5]

    def token_accuracy(pred):
        tokens, labels = pred.predictions, pred.label_ids
        width = min(tokens.shape[1], labels.shape[1])
        return {"agree": float((tokens[:, :width] == labels[:, :width]).mean()), "width": tokens.shape[1],
                "checksum": float((tokens * np.arange(1, tokens.shape[1] + 1)).sum())}

    args = dict(per_device_eval_batch_size=2, predict_with_generate=True, generation_max_length=9,
                generation_num_beams=2, report_to="none", disable_tqdm=True)
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    hf_trainer = transformers.Seq2SeqTrainer(model=hf, compute_metrics=token_accuracy,
                                             args=transformers.Seq2SeqTrainingArguments(str(tmp_path / "hf"),
                                                                                        use_cpu=True, **args))
    ours = Seq2SeqTrainer(model=AutoModelForSpeechSeq2Seq.from_pretrained(folder), compute_metrics=token_accuracy,
                          args=Seq2SeqTrainingArguments(str(tmp_path / "ours"), **args))
    want, got = hf_trainer.evaluate(data), ours.evaluate(data)
    assert got["eval_loss"] == pytest.approx(want["eval_loss"], rel=1e-5)
    for key in ("eval_agree", "eval_width", "eval_checksum"):
        assert got[key] == want[key], key
    want, got = hf_trainer.predict(data, max_new_tokens=4, num_beams=1), ours.predict(data, max_new_tokens=4,
                                                                                      num_beams=1)
    np.testing.assert_array_equal(got.predictions, want.predictions)
    np.testing.assert_array_equal(got.label_ids, want.label_ids)
    assert got.metrics["test_loss"] == pytest.approx(want.metrics["test_loss"], rel=1e-5)
