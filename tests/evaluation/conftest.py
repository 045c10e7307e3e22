"""Local lm_eval tasks (YAML + JSONL, no hub) and a tiny LLaMA whose folder holds the character tokenizer."""
import json
import os

import pytest

from tests.conftest import make_hf_checkpoint
from tests.trainer.conftest import make_char_tokenizer

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant{% endif %}")

MC_DOCS = [
    {"question": "the quick brown fox jumps over the", "choices": [" lazy dog", " cat", " moon", " dog."],
     "answer": 0},
    {"question": "a stitch in time saves", "choices": [" nine", " ten", " a stitch"], "answer": 0},
    {"question": "all that glitters is not", "choices": [" gold", " silver", " gold!"], "answer": 1},
    {"question": "the early bird catches the", "choices": [" worm", " worms", " bird"], "answer": 0},
    {"question": "is it a, b or c?", "choices": [" a", " b", " c"], "answer": 2},
]
GEN_DOCS = [
    {"prompt": "the quick brown", "target": " fox"},
    {"prompt": "a stitch in time", "target": " saves nine"},
    {"prompt": "all that glitters is", "target": " not gold"},
    {"prompt": "the early bird catches the worm and the early", "target": " bird"},
]
ROLLING_DOCS = [
    {"text": "the quick brown fox jumps over the lazy dog. " * 4},
    {"text": "a stitch in time saves nine."},
    {"text": "all that glitters is not gold, and the early bird catches the worm! " * 2},
]

TASKS = {
    "tiny_mc": ("multiple_choice", MC_DOCS, {
        "doc_to_text": "question {{question}}\nanswer", "doc_to_target": "{{answer}}",
        "doc_to_choice": "{{choices}}",
        "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]}),
    "tiny_gen": ("generate_until", GEN_DOCS, {
        "doc_to_text": "{{prompt}}", "doc_to_target": "{{target}}", "target_delimiter": "",
        "generation_kwargs": {"until": ["\n", "!"], "max_gen_toks": 12, "do_sample": False},
        "metric_list": [{"metric": "exact_match"}]}),
    "tiny_rolling": ("loglikelihood_rolling", ROLLING_DOCS, {
        "doc_to_text": "", "doc_to_target": "{{text}}",
        "metric_list": [{"metric": "word_perplexity"}, {"metric": "byte_perplexity"},
                        {"metric": "bits_per_byte"}]}),
}


def write_tasks(folder):
    """One YAML and one JSONL per task in `folder` (for --include_path); returns the folder."""
    import yaml

    os.makedirs(folder, exist_ok=True)
    for name, (output_type, docs, fields) in TASKS.items():
        data = os.path.join(folder, f"{name}.jsonl")
        with open(data, "w") as f:
            f.writelines(json.dumps(doc) + "\n" for doc in docs)
        config = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": data}},
                  "output_type": output_type, "test_split": "test", "metadata": {"version": 1.0}, **fields}
        with open(os.path.join(folder, f"{name}.yaml"), "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
    return str(folder)


def local_task_manager(folder):
    """lm_eval's TaskManager for the tasks in `folder` only: indexing lm_eval's thousands of built-in task YAMLs
    (include_defaults=True) costs 10-15 s a call on a slow machine and no test here uses them."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(folder), include_defaults=False)


@pytest.fixture(scope="session")
def task_dir(tmp_path_factory):
    return write_tasks(tmp_path_factory.mktemp("lm_eval_tasks"))


@pytest.fixture(scope="session")
def char_llama_dir(tmp_path_factory):
    """A tiny random LLaMA (64 positions, so rolling windows and left truncation happen) with the character
    tokenizer, a chat template included, in one folder."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("char_llama_eval")
    make_hf_checkpoint(folder, vocab_size=40, seed=3)
    make_char_tokenizer(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return str(folder)
