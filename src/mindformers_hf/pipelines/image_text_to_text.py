"""The "image-text-to-text" pipeline (Qwen2-VL, Qwen2.5-VL): images and text, or chats holding images, in;
transformers' records `{"input_text", "generated_text"}` out.

Follows transformers' ImageTextToTextPipeline: a chat goes through the processor's chat template (with a
generation prompt, or continuing a final assistant message), plain text with its images through the processor; the
model generates with the pipeline's default `max_new_tokens=256` (unless the call or the model's generation config
sets a length); the texts are decoded without special tokens and the prompt's decoded text removed (return_full_text
False), or the prompt string put back in front (True, the default) -- for a chat, the messages with the reply
appended as an assistant message. Each input runs on its own (as transformers' default batch_size=1). The
processor returns numpy (`return_tensors="np"`); no torch anywhere.
"""

import numpy as np

from ..utils import warn_once
from .generation_defaults import prepare_generate_kwargs

_GENERATION_DEFAULTS = {"max_new_tokens": 256}  # transformers' ImageTextToTextPipeline._default_generation_config


def _is_chat(value):
    return isinstance(value, (list, tuple)) and len(value) > 0 and isinstance(value[0], (list, tuple, dict))


class ImageTextToTextPipeline:
    task = "image-text-to-text"

    def __init__(self, model, processor, tokenizer=None, batch_size=1, **generate_defaults):
        self.model, self.processor = model, processor
        self.tokenizer = tokenizer if tokenizer is not None else processor.tokenizer
        if batch_size not in (None, 1):
            warn_once("image-text-to-text pipeline: batch_size is accepted and ignored (each input runs on its own)")
        self.generate_defaults = generate_defaults

    def __call__(self, images=None, text=None, max_new_tokens=None, generate_kwargs=None, return_full_text=None,
                 return_tensors=None, continue_final_message=None, skip_special_tokens=None,
                 clean_up_tokenization_spaces=None, processor_kwargs=None, timeout=None, **kwargs):
        if images is None and text is None:
            raise ValueError("You must at least provide either text or images.")
        generate_kwargs = {**self.generate_defaults, **dict(generate_kwargs or {})}
        if max_new_tokens is not None:
            if "max_new_tokens" in generate_kwargs:
                raise ValueError("'max_new_tokens' is defined twice, once in 'generate_kwargs' and once as a direct "
                                 "parameter, please use only one")
            generate_kwargs["max_new_tokens"] = max_new_tokens
        if return_full_text is not None and return_tensors:
            raise ValueError("`return_full_text` is mutually exclusive with `return_tensors`")
        options = dict(return_full_text=True if return_full_text is None else return_full_text,
                       return_tensors=bool(return_tensors), continue_final_message=continue_final_message,
                       skip_special_tokens=True if skip_special_tokens is None else skip_special_tokens,
                       clean_up_tokenization_spaces=clean_up_tokenization_spaces,
                       processor_kwargs=dict(processor_kwargs or kwargs), timeout=timeout)
        if _is_chat(text) or (text is None and _is_chat(images)):
            if _is_chat(text) and images is not None:
                raise ValueError("Invalid input: you passed `chat` and `images` as separate input arguments. Images "
                                 "must be placed inside the chat message's `content`.")
            chats = text if _is_chat(text) else images
            if isinstance(chats[0], dict):
                return self._run(("chat", list(chats)), generate_kwargs, options)
            return [self._run(("chat", list(chat)), generate_kwargs, options) for chat in chats]
        if images is not None and text is None:
            items = images if isinstance(images, (list, tuple)) else [images]
            if items and isinstance(items[0], dict):  # [{"image": ..., "text": ...}] and {"image", "text"}
                out = [self._run(("text", (i.get("images", i.get("image")), i["text"])), generate_kwargs, options)
                       for i in items]
                return out if isinstance(images, (list, tuple)) else out[0]
            raise ValueError("You must provide text for this pipeline.")
        return self._run(("text", (images, text)), generate_kwargs, options)

    # ------------------------------------------------------------------ steps
    def _preprocess(self, item, options):
        kind, value = item
        processor_kwargs = dict(options["processor_kwargs"])
        if kind == "chat":
            cont = options["continue_final_message"]
            cont = value[-1]["role"] == "assistant" if cont is None else cont
            inputs = self.processor.apply_chat_template(value, continue_final_message=cont, add_generation_prompt=not cont,
                                                        tokenize=True, return_dict=True, return_tensors="np",
                                                        processor_kwargs=processor_kwargs)
            return dict(inputs), value
        from transformers.image_utils import load_images

        images, text = value
        loaded = load_images(images, timeout=options["timeout"]) if images is not None else None
        if isinstance(text, (list, tuple)) and len(text) > 1:
            processor_kwargs.setdefault("padding", True)
        inputs = self.processor(images=loaded, text=text, return_tensors="np", **processor_kwargs)
        return dict(inputs), text

    def _generate_kwargs(self, kwargs):
        return prepare_generate_kwargs(self.model, kwargs, _GENERATION_DEFAULTS)

    def _decode(self, ids, options):
        kwargs = {} if options["clean_up_tokenization_spaces"] is None else \
            {"clean_up_tokenization_spaces": options["clean_up_tokenization_spaces"]}
        return self.processor.post_process_image_text_to_text(np.asarray(ids),
                                                              skip_special_tokens=options["skip_special_tokens"],
                                                              **kwargs)

    def _run(self, item, generate_kwargs, options):
        inputs, prompt = self._preprocess(item, options)
        generated = np.asarray(self.model.generate(**inputs, **self._generate_kwargs(generate_kwargs)))
        input_ids = np.asarray(inputs["input_ids"])
        prompts = [prompt] if isinstance(prompt, str) or item[0] == "chat" else list(prompt)
        per_input = len(generated) // len(prompts)
        prompts = [p for p in prompts for _ in range(per_input)]
        shown = lambda p: p if isinstance(p, str) else list(p)  # noqa: E731  (a chat's messages)
        if options["return_tensors"]:
            return [{"input_text": shown(p), "generated_token_ids": generated[i]} for i, p in enumerate(prompts)]
        texts = self._decode(generated, options)
        decoded_inputs = [t for t in self._decode(input_ids, options) for _ in range(per_input)]
        new_texts = []
        for text, decoded in zip(texts, decoded_inputs):  # transformers: drop the decoded prompt when found early
            start = text.find(decoded)
            new_texts.append(text[start + len(decoded):] if 0 <= start <= 2 else text)
        if not options["return_full_text"]:
            return [{"input_text": shown(p), "generated_text": t} for p, t in zip(prompts, new_texts)]
        records = []
        for p, text in zip(prompts, new_texts):
            if isinstance(p, str):
                full = p + text
            else:
                cont = options["continue_final_message"]
                cont = p[-1]["role"] == "assistant" if cont is None else cont
                if cont:
                    content = p[-1]["content"]
                    if isinstance(content, str):
                        content = content + text
                    else:
                        last = dict(content[-1].items())
                        last["text"] += text
                        content = list(content[:-1]) + [last]
                    full = list(p)[:-1] + [{"role": p[-1]["role"], "content": content}]
                else:
                    full = list(p) + [{"role": "assistant", "content": text}]
            records.append({"input_text": shown(p), "generated_text": full})
        return records
