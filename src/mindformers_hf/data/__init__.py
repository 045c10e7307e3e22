"""Data collators (transformers' names) emitting numpy, MindSpore or torch batches."""
from .data_collator import (
    DataCollatorForLanguageModeling,
    DataCollatorForMultipleChoice,
    DataCollatorForSeq2Seq,
    DataCollatorForTokenClassification,
    DataCollatorWithFlattening,
    DataCollatorWithPadding,
    DefaultDataCollator,
    default_data_collator,
)

__all__ = ["DataCollatorForLanguageModeling", "DataCollatorForMultipleChoice", "DataCollatorForSeq2Seq",
           "DataCollatorForTokenClassification", "DataCollatorWithFlattening", "DataCollatorWithPadding",
           "DefaultDataCollator", "default_data_collator"]
