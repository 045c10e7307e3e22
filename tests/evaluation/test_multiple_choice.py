"""C-Eval-style accuracy: the log-likelihood convention against lm_eval's own ceval task format (hf backend),
the first-token convention against HF transformers' logits, both on local files."""
import csv
import os

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM, AutoTokenizer
from mindformers_hf.evaluation import ceval_accuracy
from mindformers_hf.evaluation.multiple_choice import build_prompt, read_split
from tests.conftest import make_hf_checkpoint

QUESTIONS = {
    "art": [("下列哪位是唐代诗人？", "李白", "鲁迅", "巴金", "老舍", "A"),
            ("《蒙娜丽莎》的作者是谁？", "梵高", "达芬奇", "毕加索", "莫奈", "B"),
            ("京剧的主要角色行当不包括哪一项？", "生", "旦", "净", "歌", "D"),
            ("中国画中的“写意”强调什么？", "精细", "神似", "透视", "光影", "B"),
            ("敦煌莫高窟位于哪个省份？", "甘肃", "陕西", "河南", "山西", "A")],
    "math": [("1 加 1 等于多少？", "1", "2", "3", "4", "B"),
             ("3 乘以 3 等于多少？", "6", "8", "9", "12", "C"),
             ("10 除以 2 等于多少？", "5", "2", "8", "20", "A"),
             ("直角等于多少度？", "45", "60", "180", "90", "D")],
}


def write_split(folder, subject, split, rows):
    os.makedirs(os.path.join(folder, split), exist_ok=True)
    with open(os.path.join(folder, split, f"{subject}_{split}.csv"), "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "question", "A", "B", "C", "D", "answer"])
        writer.writerows([i, *row] for i, row in enumerate(rows))


@pytest.fixture(scope="module")
def ceval_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("ceval"))
    for subject, rows in QUESTIONS.items():
        write_split(folder, subject, "dev", rows[:2])
        write_split(folder, subject, "val", rows[2:] + rows[:1])
    return folder


@pytest.fixture(scope="module")
def bpe_llama(tmp_path_factory):
    """A tiny LLaMA with a byte-level BPE tokenizer trained on the questions (Chinese needs bytes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("bpe_llama")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    corpus = ["".join(map(str, row)) + "答案：ABCD 以下是中国关于考试的单项选择题，请选出其中的正确答案。"
              for rows in QUESTIONS.values() for row in rows]
    backend.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tokenizer.save_pretrained(folder)
    make_hf_checkpoint(folder, vocab_size=backend.get_vocab_size(), max_position_embeddings=512, seed=5)
    return str(folder)


def test_prompt_formats():
    doc = {"question": "问题", "A": "a", "B": "b", "C": "c", "D": "d", "answer": "B"}
    shot = {"question": "例题", "A": "1", "B": "2", "C": "3", "D": "4", "answer": "C"}
    assert build_prompt(doc, [shot], "艺术", "loglikelihood") == (
        "以下是中国关于艺术的单项选择题，请选出其中的正确答案。\n\n"
        "例题\nA. 1\nB. 2\nC. 3\nD. 4\n答案： C\n\n问题\nA. a\nB. b\nC. c\nD. d\n答案：")
    assert build_prompt(doc, [shot], "艺术", "first_token") == (
        "以下是中国关于艺术考试的单项选择题，请选出其中的正确答案。\n\n"
        "例题\nA. 1\nB. 2\nC. 3\nD. 4\n答案：C\n\n问题\nA. a\nB. b\nC. c\nD. d\n答案：")


def test_loglikelihood_convention_matches_lm_eval(bpe_llama, ceval_dir, tmp_path):
    lm_eval = pytest.importorskip("lm_eval")
    import yaml

    from .conftest import local_task_manager

    for subject in QUESTIONS:  # lm_eval's ceval task (tasks/ceval/_default_ceval_yaml) on our local files
        config = {"task": f"local_ceval_{subject}", "dataset_path": "csv", "dataset_kwargs": {"data_files": {
            split: os.path.join(ceval_dir, split, f"{subject}_{split}.csv") for split in ("dev", "val")}},
            "validation_split": "val", "fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"},
            "output_type": "multiple_choice", "description": f"以下是中国关于{subject}的单项选择题，请选出其中的正确答案。\n\n",
            "doc_to_text": "{{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\n答案：",
            "doc_to_choice": ["A", "B", "C", "D"], "doc_to_target": "{{['A', 'B', 'C', 'D'].index(answer)}}",
            "metric_list": [{"metric": "acc"}], "metadata": {"version": 2.0}}
        (tmp_path / f"{subject}.yaml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    want = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={bpe_llama},dtype=float32", device="cpu",
                                   tasks=[f"local_ceval_{s}" for s in QUESTIONS], num_fewshot=2, batch_size=4,
                                   task_manager=local_task_manager(tmp_path), log_samples=True)

    model = AutoModelForCausalLM.from_pretrained(bpe_llama, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(bpe_llama)
    got = ceval_accuracy(model, tokenizer, ceval_dir, num_fewshot=2, method="loglikelihood")
    for subject in QUESTIONS:
        samples = want["samples"][f"local_ceval_{subject}"]
        assert [s["arguments"][0][0] for s in samples] == [  # the same prompts
            build_prompt(doc, read_split(ceval_dir, subject, "dev")[:2], subject, "loglikelihood")
            for doc in read_split(ceval_dir, subject, "val")]
        hf_predictions = ["ABCD"[int(np.argmax([float(r[0]) for r in s["filtered_resps"]]))] for s in samples]
        assert got["predictions"][subject] == hf_predictions
        assert got["subjects"][subject] == pytest.approx(want["results"][f"local_ceval_{subject}"]["acc,none"])
    assert got["average"] == pytest.approx(np.mean(list(got["subjects"].values())))
    assert got["overall"] == pytest.approx(sum(got["subjects"][s] * 3 for s in QUESTIONS) / 6)


def test_first_token_convention_matches_hf_logits(bpe_llama, ceval_dir):
    import torch
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(bpe_llama, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(bpe_llama)
    letter_ids = [tokenizer.encode(letter, add_special_tokens=False)[-1] for letter in "ABCD"]
    model = AutoModelForCausalLM.from_pretrained(bpe_llama, dtype="float32")
    got = ceval_accuracy(model, tokenizer, ceval_dir, num_fewshot=1, method="first_token")
    for subject in QUESTIONS:
        shots = read_split(ceval_dir, subject, "dev")[:1]
        want = []
        for doc in read_split(ceval_dir, subject, "val"):
            ids = torch.tensor([tokenizer.encode(build_prompt(doc, shots, subject, "first_token"))])
            with torch.no_grad():
                last = hf(ids).logits[0, -1]
            want.append("ABCD"[int(last[letter_ids].argmax())])
        assert got["predictions"][subject] == want


def test_bad_files_are_named(tmp_path):
    write_split(str(tmp_path), "x", "val", [("q", "a", "b", "c", "d", "E")])
    with pytest.raises(ValueError, match="x_val.csv, line 2: answer 'E'"):
        read_split(str(tmp_path), "x", "val")
    with pytest.raises(ValueError, match="method"):
        ceval_accuracy(None, None, str(tmp_path), method="other")
