"""An HF documentation-style fine-tuning script, run twice with only the import changed: once with
transformers on torch (the oracle), once with mindformers_hf. The script handles parameters, outputs and the
Trainer's hook arguments with torch idioms (`.detach().clone()`, `.numel()`, `.requires_grad`,
`logits.argmax(dim=-1)`, `(p - before[n]).abs().max()`, ...); both runs must get the same answers."""
import numpy as np
import pytest

import mindspore as ms
import mindformers_hf

ARGS = dict(learning_rate=1e-2, per_device_train_batch_size=8, per_device_eval_batch_size=4, max_steps=2,
            logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, seed=0, use_cpu=True)


def _data(rows=8, length=10):  # one batch of all rows: the data order (numpy vs torch shuffling) cannot matter
    ids = np.random.default_rng(5).integers(3, 128, size=(rows, length))
    return [{"input_ids": row.tolist(), "labels": row.tolist()} for row in ids]


def _output_idioms(out, torch):
    """What scripts do with a forward's outputs; identical code for torch and MindSpore outputs."""
    logits = out.logits.detach().cpu()
    return {
        "loss": out.loss.item(),
        "argmax": logits.argmax(dim=-1).tolist(),
        "size": tuple(logits.size()), "size_last": logits.size(-1), "shape": tuple(logits.shape),
        "numel": logits.numel(),
        "float": logits.float().numpy(),
        "to_dtype": logits.to(torch.float16).float().numpy(),
        "hidden_last": out.hidden_states[-1].detach().clone().cpu().numpy(),
        "requires_grad": logits.requires_grad,
    }


def run_script(transformers, folder, out_dir, batch):
    """The user's script. `transformers` is the module the script imported (HF's or ours)."""
    import torch

    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    out = model(**batch, output_hidden_states=True)
    seen = {"outputs": _output_idioms(out, torch)}

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen["numel_total"] = sum(p.numel() for p in model.parameters())
    seen["numel_trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    seen["state_dict_numel"] = sum(t.numel() for t in model.state_dict().values())
    seen["sizes"] = {n: tuple(p.size()) for n, p in model.named_parameters()}
    seen["data_numpy"] = {n: p.data.cpu().numpy().copy() for n, p in model.named_parameters()}

    def preprocess_logits_for_metrics(logits, labels):
        seen["preprocess"] = (type(logits), type(labels), tuple(logits.shape), tuple(labels.size()))
        return logits.argmax(dim=-1)

    def compute_metrics(eval_pred):
        preds, labels = eval_pred
        seen["metrics"] = (type(preds), type(labels), preds.shape, preds.dtype, labels.dtype)
        return {"accuracy": float((preds[:, :-1] == labels[:, 1:]).mean())}

    data = _data()
    trainer = transformers.Trainer(model=model, args=transformers.TrainingArguments(str(out_dir), **ARGS),
                                   train_dataset=data, eval_dataset=data,
                                   preprocess_logits_for_metrics=preprocess_logits_for_metrics,
                                   compute_metrics=compute_metrics)
    trainer.train()
    seen["eval"] = trainer.evaluate()
    seen["snapshot_kept"] = all(np.array_equal(t.numpy(), seen["data_numpy"][n]) for n, t in before.items())
    seen["changed"] = {n for n, p in model.named_parameters() if (p - before[n]).abs().max() > 0}
    seen["max_change"] = {n: float((p.detach() - before[n]).abs().max().item()) for n, p in model.named_parameters()}
    return seen


@pytest.fixture(scope="module")
def runs(tiny_llama, tmp_path_factory):
    import torch
    import transformers

    ids = np.random.default_rng(9).integers(3, 128, size=(2, 7))
    hf = run_script(transformers, tiny_llama, tmp_path_factory.mktemp("hf"),
                    {"input_ids": torch.tensor(ids), "labels": torch.tensor(ids)})
    ours = run_script(mindformers_hf, tiny_llama, tmp_path_factory.mktemp("ours"),
                      {"input_ids": ms.Tensor(ids), "labels": ms.Tensor(ids)})
    return hf, ours


def test_output_idioms_match_torch(runs):
    hf, ours = runs[0]["outputs"], runs[1]["outputs"]
    for key in ("argmax", "size", "size_last", "shape", "numel", "requires_grad"):
        assert ours[key] == hf[key], key
    assert ours["loss"] == pytest.approx(hf["loss"], rel=1e-5)
    for key in ("float", "to_dtype", "hidden_last"):
        np.testing.assert_allclose(ours[key], hf[key], rtol=1e-3, atol=1e-4, err_msg=key)
    assert ours["float"].dtype == hf["float"].dtype == np.float32


def test_parameter_idioms_match_torch(runs):
    hf, ours = runs
    assert ours["numel_total"] == hf["numel_total"] > 0
    assert ours["numel_trainable"] == hf["numel_trainable"] == hf["numel_total"]
    assert ours["state_dict_numel"] == hf["state_dict_numel"]
    assert ours["sizes"] == hf["sizes"]
    for name, array in hf["data_numpy"].items():
        np.testing.assert_array_equal(ours["data_numpy"][name], array, err_msg=name)


def test_snapshot_taken_before_training_sees_the_update(runs):
    hf, ours = runs
    assert hf["changed"] == set(hf["sizes"])  # every parameter trains in HF's run
    assert ours["changed"] == hf["changed"]
    assert hf["snapshot_kept"] and ours["snapshot_kept"]  # .detach().clone() copied; training did not touch it
    for name, change in hf["max_change"].items():  # the same step sizes (Adam's first steps: ~lr per element)
        assert ours["max_change"][name] == pytest.approx(change, rel=0.05), name


def test_hook_arguments(runs):
    import torch

    hf, ours = runs
    # preprocess_logits_for_metrics gets framework tensors: torch in HF, MindSpore here
    assert hf["preprocess"][:2] == (torch.Tensor, torch.Tensor)
    assert ours["preprocess"][:2] == (ms.Tensor, ms.Tensor)
    assert ours["preprocess"][2:] == hf["preprocess"][2:]
    # compute_metrics gets numpy arrays in EvalPrediction, of the same shape and dtype
    assert hf["metrics"][:2] == ours["metrics"][:2] == (np.ndarray, np.ndarray)
    assert ours["metrics"][2:] == hf["metrics"][2:]
    assert set(ours["eval"]) >= {"eval_loss", "eval_accuracy"}
    assert ours["eval"]["eval_loss"] == pytest.approx(hf["eval"]["eval_loss"], rel=1e-3)
