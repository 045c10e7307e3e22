"""Fine-tune a causal language model on a text file or a `datasets` dataset: transformers' run_clm.py recipe
(argument dataclasses, tokenize, group into blocks, Trainer), with mindformers_hf in place of transformers.

    python examples/run_clm.py --model_name_or_path <folder> --train_file notes.txt \\
        --output_dir out --per_device_train_batch_size 4 --block_size 256 --num_train_epochs 1 \\
        --do_train --do_eval

    # the bundled SmolLM2 (GGUF): --model_name_or_path default --gguf_file default
    # a hub dataset: --dataset_name wikitext --dataset_config_name wikitext-2-raw-v1
"""
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from itertools import chain
from typing import Optional

import datasets
from transformers import HfArgumentParser

from mindformers_hf import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "A model folder or hub id ('default': the bundled SmolLM2)."})
    gguf_file: Optional[str] = field(default=None, metadata={"help": "A GGUF file in that folder ('default')."})
    tokenizer_name: Optional[str] = field(default=None)
    dtype: Optional[str] = field(default="auto", metadata={"help": "auto, float32, float16 or bfloat16."})


@dataclass
class DataTrainingArguments:
    dataset_name: Optional[str] = field(default=None, metadata={"help": "A `datasets` dataset name."})
    dataset_config_name: Optional[str] = field(default=None)
    train_file: Optional[str] = field(default=None, metadata={"help": "A .txt, .csv, .json or .jsonl file."})
    validation_file: Optional[str] = field(default=None)
    text_column_name: str = field(default="text")
    validation_split_percentage: int = field(default=5)
    block_size: Optional[int] = field(default=None, metadata={"help": "Tokens per training example."})
    max_train_samples: Optional[int] = field(default=None)
    max_eval_samples: Optional[int] = field(default=None)
    preprocessing_num_workers: Optional[int] = field(default=None)


def load_raw_datasets(data_args):
    if data_args.dataset_name is not None:
        raw = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config_name)
    else:
        if data_args.train_file is None:
            raise ValueError("Pass --dataset_name or --train_file")
        files = {"train": data_args.train_file}
        if data_args.validation_file:
            files["validation"] = data_args.validation_file
        extension = data_args.train_file.rsplit(".", 1)[-1]
        builder = {"txt": "text", "jsonl": "json"}.get(extension, extension)
        raw = datasets.load_dataset(builder, data_files=files)
    if "validation" not in raw:
        split = raw["train"].train_test_split(test_size=data_args.validation_split_percentage / 100, seed=0)
        raw = datasets.DatasetDict(train=split["train"], validation=split["test"])
    return raw


def main():
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    set_seed(training_args.seed)

    folder, gguf_file = model_args.model_name_or_path, model_args.gguf_file
    if folder == "default" or gguf_file == "default":
        from mindformers_hf.gguf_io import default_gguf_model

        folder, gguf_file = default_gguf_model()
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=model_args.dtype)

    raw = load_raw_datasets(data_args)
    text_column = data_args.text_column_name

    def tokenize_function(examples):
        return tokenizer(examples[text_column])

    with training_args.main_process_first(desc="dataset map tokenization"):
        tokenized = raw.map(tokenize_function, batched=True, num_proc=data_args.preprocessing_num_workers,
                            remove_columns=raw["train"].column_names, desc="Running tokenizer on dataset")

    block_size = data_args.block_size or min(1024, tokenizer.model_max_length)

    def group_texts(examples):
        concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
        total_length = (len(concatenated[list(examples.keys())[0]]) // block_size) * block_size
        result = {k: [t[i: i + block_size] for i in range(0, total_length, block_size)]
                  for k, t in concatenated.items()}
        result["labels"] = result["input_ids"].copy()
        return result

    with training_args.main_process_first(desc="grouping texts together"):
        lm_datasets = tokenized.map(group_texts, batched=True, num_proc=data_args.preprocessing_num_workers,
                                    desc=f"Grouping texts in chunks of {block_size}")

    train_dataset = lm_datasets["train"]
    if data_args.max_train_samples is not None:
        train_dataset = train_dataset.select(range(min(len(train_dataset), data_args.max_train_samples)))
    eval_dataset = lm_datasets["validation"]
    if data_args.max_eval_samples is not None:
        eval_dataset = eval_dataset.select(range(min(len(eval_dataset), data_args.max_eval_samples)))
    if training_args.do_train and len(train_dataset) == 0:
        raise ValueError(f"No training block of {block_size} tokens: use more text or a smaller --block_size")

    trainer = Trainer(model=model, args=training_args,
                      train_dataset=train_dataset if training_args.do_train else None,
                      eval_dataset=eval_dataset if training_args.do_eval else None,
                      processing_class=tokenizer, data_collator=default_data_collator)

    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        metrics = train_result.metrics
        metrics["train_samples"] = len(train_dataset)
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()

    if training_args.do_eval:
        metrics = trainer.evaluate()
        metrics["eval_samples"] = len(eval_dataset)
        try:
            metrics["perplexity"] = math.exp(metrics["eval_loss"])
        except OverflowError:
            metrics["perplexity"] = float("inf")
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)


if __name__ == "__main__":
    main()
