"""Data collators (transformers' names) emitting numpy, MindSpore or torch batches."""
from .data_collator import (
    DataCollatorForLanguageModeling,
    DataCollatorWithPadding,
    DefaultDataCollator,
    default_data_collator,
)

__all__ = ["DataCollatorForLanguageModeling", "DataCollatorWithPadding", "DefaultDataCollator",
           "default_data_collator"]
