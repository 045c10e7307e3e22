"""Our log lines obey transformers' verbosity, as transformers' own lines do: set_verbosity_*, and the
Trainer's log_level / log_level_replica (which set it, as transformers' Trainer does)."""
import logging

import pytest

import mindformers_hf
from mindformers_hf.trainer import Trainer, TrainingArguments
from mindformers_hf.utils import logger
from tests.trainer.test_trainer_parity import _dataset


@pytest.fixture
def lines():
    """Records what our logger emits (a handler after the logger's filter), restores the verbosity."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    hf_logging.set_verbosity(before)


@pytest.mark.parametrize("verbosity", ["debug", "info", "warning", "error"])
def test_set_verbosity_governs_our_lines_as_transformers_lines(lines, verbosity):
    import transformers

    getattr(transformers.logging, f"set_verbosity_{verbosity}")()
    theirs = transformers.logging.get_logger("transformers.trainer")
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
        lines.clear()
        logger.log(level, "a line")
        assert bool(lines) == theirs.isEnabledFor(level), (verbosity, level)
    assert mindformers_hf.logging is transformers.logging  # the re-exported module is transformers' own


def _train(folder, tmp_path, **kwargs):
    args = TrainingArguments(str(tmp_path), max_steps=1, per_device_train_batch_size=4, report_to="none",
                             save_strategy="no", disable_tqdm=True, **kwargs)
    Trainer(model=mindformers_hf.AutoModelForCausalLM.from_pretrained(folder), args=args,
            train_dataset=_dataset()).train()


def test_trainer_log_level_sets_the_verbosity_as_transformers(lines, tiny_llama, tmp_path):
    import transformers

    transformers.logging.set_verbosity_warning()
    _train(tiny_llama, tmp_path)  # log_level="passive": the verbosity stays, no info line
    assert transformers.logging.get_verbosity() == logging.WARNING
    assert not [r for r in lines if r.levelno == logging.INFO]
    _train(tiny_llama, tmp_path, log_level="info")
    assert transformers.logging.get_verbosity() == logging.INFO
    assert "***** Running training *****" in [r.getMessage() for r in lines]
    lines.clear()
    _train(tiny_llama, tmp_path, log_level="error")
    assert transformers.logging.get_verbosity() == logging.ERROR and not lines


def test_log_level_replica_on_other_ranks(lines, monkeypatch, tmp_path):
    """A rank that does not log (should_log false) takes log_level_replica, through transformers' own
    TrainingArguments.get_process_log_level."""
    import transformers
    from mindformers_hf.trainer import distributed

    transformers.logging.set_verbosity_warning()
    monkeypatch.setattr(distributed, "local_rank", lambda: 1)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    args = TrainingArguments(str(tmp_path), log_level="info", log_level_replica="error", report_to="none")
    assert not args.should_log and args.get_process_log_level() == logging.ERROR
    assert TrainingArguments(str(tmp_path), log_level="info", report_to="none").get_process_log_level() == \
        logging.WARNING  # the replica default
