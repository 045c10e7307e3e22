"""The "text-generation" pipeline: strings, lists of strings and chats in; HF's output records out.

Follows transformers' TextGenerationPipeline: prompts are tokenized without special tokens, chats
through the tokenizer's chat template with a generation prompt (or continuing a final assistant
message); each input yields `num_return_sequences` records `{"generated_text": ...}`.
"""
import numpy as np


def _is_chat(value):
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(m, dict) and "role" in m for m in value)


class TextGenerationPipeline:
    task = "text-generation"

    def __init__(self, model, tokenizer, batch_size=1, **generate_defaults):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.generate_defaults = generate_defaults

    def __call__(self, text_inputs, batch_size=None, return_full_text=None, return_tensors=False,
                 return_text=True, prefix="", add_special_tokens=False, continue_final_message=None,
                 skip_special_tokens=True, clean_up_tokenization_spaces=None, **generate_kwargs):
        single = isinstance(text_inputs, str) or _is_chat(text_inputs)
        items = [text_inputs] if single else list(text_inputs)
        batch_size = batch_size or self.batch_size
        kwargs = {**self.generate_defaults, **generate_kwargs}
        results = []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            results.extend(self._run(chunk, kwargs, return_full_text, return_tensors, prefix, add_special_tokens,
                                     continue_final_message, skip_special_tokens, clean_up_tokenization_spaces))
        return results[0] if single else results

    def _encode(self, item, prefix, add_special_tokens, continue_final_message):
        if _is_chat(item):
            cont = continue_final_message if continue_final_message is not None else item[-1]["role"] == "assistant"
            ids = self.tokenizer.apply_chat_template(list(item), add_generation_prompt=not cont,
                                                     continue_final_message=cont, tokenize=True,
                                                     return_dict=True)["input_ids"]
            return list(ids), cont
        return self.tokenizer(prefix + item, add_special_tokens=add_special_tokens)["input_ids"], None

    def _run(self, chunk, kwargs, return_full_text, return_tensors, prefix, add_special_tokens,
             continue_final_message, skip_special_tokens, clean_up_tokenization_spaces):
        encoded = [self._encode(item, prefix, add_special_tokens, continue_final_message) for item in chunk]
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            eos = self.model.generation_config.eos_token_id
            pad_id = eos[0] if isinstance(eos, (list, tuple)) else (eos if eos is not None else 0)
        width = max(len(ids) for ids, _ in encoded)
        input_ids = np.full((len(chunk), width), pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(chunk), width), dtype=np.int64)
        for row, (ids, _) in enumerate(encoded):  # left padding, as decoder-only generation needs
            input_ids[row, width - len(ids):] = ids
            attention_mask[row, width - len(ids):] = 1
        kwargs = dict(kwargs)
        kwargs.setdefault("pad_token_id", pad_id)
        sequences = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        sequences = np.asarray(sequences.sequences if hasattr(sequences, "sequences") else sequences)
        per_input = sequences.shape[0] // len(chunk)
        results = []
        for row, item in enumerate(chunk):
            records = []
            for seq in sequences[row * per_input:(row + 1) * per_input]:
                new_tokens = seq[width:].tolist()
                if return_tensors:
                    records.append({"generated_token_ids": seq[width - len(encoded[row][0]):].tolist()})
                    continue
                text = self.tokenizer.decode(new_tokens, skip_special_tokens=skip_special_tokens,
                                             clean_up_tokenization_spaces=clean_up_tokenization_spaces)
                records.append({"generated_text": self._full_text(item, text, return_full_text, encoded[row][1])})
            results.append(records)
        return results

    @staticmethod
    def _full_text(item, text, return_full_text, continued):
        if return_full_text is False:
            return text
        if _is_chat(item):
            messages = [dict(m) for m in item]
            if continued:
                messages[-1]["content"] = messages[-1]["content"] + text
                return messages
            return messages + [{"role": "assistant", "content": text}]
        return item + text
