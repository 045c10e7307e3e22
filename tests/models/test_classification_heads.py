"""Sequence- and token-classification heads against transformers on tiny checkpoints it wrote: logits
(last-non-pad-token pooling, left and right padding), every problem_type's loss, fine-tuning from a causal
LM checkpoint, and transformers reloading our saved folder."""
import numpy as np
import pytest

import mindformers_hf
from mindformers_hf import AutoModelForSequenceClassification, AutoModelForTokenClassification
from tests.conftest import make_hf_checkpoint

# the token-classification cases (sequence classification is a cell of the family matrix, tests/models/matrix.py)
FAMILIES = {  # (config class, family prefix, config overrides)
    "llama": ("LlamaConfig", "Llama", {}),
    "qwen2": ("Qwen2Config", "Qwen2", {}),
    "gpt2": ("GPT2Config", "GPT2", dict(n_embd=64, n_layer=2, n_head=4, n_positions=64)),
    "gemma2": ("Gemma2Config", "Gemma2", dict(head_dim=16, sliding_window=4)),
}
LOGITS_ATOL = 1e-4


def _ids():
    """Row 0 right-padded, row 1 left-padded, row 2 unpadded (pad id 0)."""
    rng = np.random.default_rng(5)
    ids = rng.integers(3, 128, size=(3, 9)).astype(np.int64)
    ids[0, 6:] = 0
    ids[1, :3] = 0
    mask = (ids != 0).astype(np.int64)
    return ids, mask


def _torch(a):
    import torch

    return torch.tensor(np.asarray(a))


def _hf(folder, task):
    import torch
    import transformers

    auto = getattr(transformers, f"AutoModelFor{task}Classification")
    return auto.from_pretrained(folder, dtype=torch.float32).eval()


def _hf_out(model, ids, mask, labels=None):
    import torch

    with torch.no_grad():
        return model(input_ids=_torch(ids), attention_mask=_torch(mask),
                     labels=None if labels is None else _torch(labels))


def assert_sequence_classification(folder, save_to):
    """Our ...ForSequenceClassification on a checkpoint transformers wrote: the class, the logits (last non-pad
    token pooling with right, left and no padding), every problem_type's loss and its inference, and our
    save_pretrained output reloading in transformers with the same logits. (The family matrix's cell,
    tests/models/matrix.py.)"""
    import transformers

    ours, hf = AutoModelForSequenceClassification.from_pretrained(folder), _hf(folder, "Sequence")
    assert type(ours).__name__ == type(hf).__name__
    ids, mask = _ids()
    got, want = ours(input_ids=ids, attention_mask=mask), _hf_out(hf, ids, mask)
    assert got.logits.shape == (3, 3)
    np.testing.assert_allclose(got.logits, want.logits.numpy(), atol=LOGITS_ATOL)
    labels = {"single_label_classification": np.array([0, 2, 1]),
              "multi_label_classification": np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0]], np.float32),
              "regression": np.array([[0.5, -1.0, 2.0], [0.0, 1.0, 0.3], [1.5, 0.2, -0.7]], np.float32)}
    for problem_type, label in labels.items():
        ours.config.problem_type = hf.config.problem_type = None if problem_type != "regression" else problem_type
        got_loss = float(ours(input_ids=ids, attention_mask=mask, labels=label).loss)
        want_loss = float(_hf_out(hf, ids, mask, label).loss)
        assert got_loss == pytest.approx(want_loss, rel=1e-5), problem_type
        assert ours.config.problem_type == hf.config.problem_type == problem_type  # inferred alike
    ours.config.problem_type = None
    ours.save_pretrained(save_to)
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(save_to).eval()
    assert type(reloaded).__name__ == type(ours).__name__
    np.testing.assert_allclose(got.logits, _hf_out(reloaded, ids, mask).logits.numpy(), atol=LOGITS_ATOL)


def test_regression_with_one_label_and_ignored_labels(tmp_path):
    folder = make_hf_checkpoint(tmp_path, model_class="LlamaForSequenceClassification", num_labels=1)
    ours, hf = AutoModelForSequenceClassification.from_pretrained(folder), _hf(folder, "Sequence")
    ids, mask = _ids()
    label = np.array([0.3, -1.2, 2.0], np.float32)
    assert float(ours(input_ids=ids, attention_mask=mask, labels=label).loss) == pytest.approx(
        float(_hf_out(hf, ids, mask, label).loss), rel=1e-5)
    assert ours.config.problem_type == "regression"
    # -100 labels are left out of single-label cross-entropy, as in torch
    folder3 = make_hf_checkpoint(tmp_path / "three", model_class="LlamaForSequenceClassification", num_labels=3)
    ours, hf = AutoModelForSequenceClassification.from_pretrained(folder3), _hf(folder3, "Sequence")
    label = np.array([2, -100, 0])
    assert float(ours(input_ids=ids, attention_mask=mask, labels=label).loss) == pytest.approx(
        float(_hf_out(hf, ids, mask, label).loss), rel=1e-5)
    # no pad token: batches of one use the last position; larger batches are refused, as in transformers
    ours.config.pad_token_id = hf.config.pad_token_id = None
    np.testing.assert_allclose(ours(input_ids=ids[2:]).logits, hf(_torch(ids[2:])).logits.detach().numpy(),
                               atol=LOGITS_ATOL)
    with pytest.raises(ValueError, match="Cannot handle batch sizes > 1"):
        ours(input_ids=ids)


def test_classifier_from_a_causal_lm_checkpoint(tiny_llama, caplog):
    """Fine-tuning a classifier from a pretrained LM: the base weights load, the head is new (drawn from
    N(0, initializer_range), with transformers' warning) and the LM head is skipped."""
    import logging

    causal = mindformers_hf.AutoModelForCausalLM.from_pretrained(tiny_llama)
    with caplog.at_level(logging.WARNING, logger="mindformers_hf"):
        model = AutoModelForSequenceClassification.from_pretrained(tiny_llama, num_labels=5)
    assert model.config.num_labels == 5 and model.score.weight.shape == (5, 64)
    np.testing.assert_array_equal(model.model.embed_tokens.weight.asnumpy(),
                                  causal.model.embed_tokens.weight.asnumpy())
    score = model.score.weight.asnumpy()
    assert 0.005 < score.std() < 0.05 and not hasattr(model, "lm_head")
    ids, mask = _ids()
    assert model(input_ids=ids, attention_mask=mask).logits.shape == (3, 5)


@pytest.mark.parametrize("name", ["llama", "qwen2", "gpt2", "gemma2"])
def test_token_classification_matches_transformers(name, tmp_path):
    import transformers

    config_class, prefix, overrides = FAMILIES[name]
    folder = make_hf_checkpoint(tmp_path / "hf", config_class, f"{prefix}ForTokenClassification", num_labels=4,
                                **overrides)
    ours, hf = AutoModelForTokenClassification.from_pretrained(folder), _hf(folder, "Token")
    assert type(ours).__name__ == type(hf).__name__
    ids, mask = _ids()
    labels = np.where(mask == 1, ids % 4, -100)
    got, want = ours(input_ids=ids, attention_mask=mask, labels=labels), _hf_out(hf, ids, mask, labels)
    valid = mask == 1
    np.testing.assert_allclose(got.logits[valid], want.logits.numpy()[valid], atol=LOGITS_ATOL)
    assert float(got.loss) == pytest.approx(float(want.loss), rel=1e-5)
    ours.save_pretrained(tmp_path / "ours")
    reloaded = transformers.AutoModelForTokenClassification.from_pretrained(tmp_path / "ours").eval()
    np.testing.assert_allclose(_hf_out(reloaded, ids, mask).logits.numpy()[valid], got.logits[valid],
                               atol=LOGITS_ATOL)


def test_classification_heads_train_with_the_trainer(tiny_llama, tmp_path):
    from mindformers_hf import DataCollatorWithPadding, Trainer, TrainingArguments

    class Tokenizer:  # the collator pads with the tokenizer: a minimal one over ids
        pad_token, pad_token_id, padding_side, model_input_names = "<pad>", 0, "right", ["input_ids"]

        def pad(self, features, return_tensors=None, **kwargs):
            length = max(len(f["input_ids"]) for f in features)
            ids = np.zeros((len(features), length), np.int64)
            for i, f in enumerate(features):
                ids[i, :len(f["input_ids"])] = f["input_ids"]
            return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64),
                    "labels": np.array([f["label"] for f in features])}

    rng = np.random.default_rng(0)
    data = [{"input_ids": rng.integers(3, 128, size=int(rng.integers(4, 9))).tolist(), "label": i % 2}
            for i in range(8)]
    model = AutoModelForSequenceClassification.from_pretrained(tiny_llama, num_labels=2)
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=4, num_train_epochs=2, learning_rate=1e-2,
                             logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data,
                      data_collator=DataCollatorWithPadding(Tokenizer()))
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    # the loss over the same data before and after (one batch's logged loss against another's varied with the
    # head's random initialisation: the last batch's could come out above the first's)
    assert len(losses) == 4 and trainer.evaluate()["eval_loss"] < before
