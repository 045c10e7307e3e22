"""lm-evaluation-harness backend `mindformers_hf`: lm_eval's `hf` model (models/huggingface.py, HFLM) on our
forward and `generate`, request for request.

Tokenization, truncation, rolling windows, stop-sequence post-processing and chat templates reuse lm_eval's own
helpers, so a task sees the same tokens as under `--model hf`; only the tensor work is ours (MindSpore, numpy in
and out). One process (world_size 1): lm_eval reaches for torch.distributed above that.
"""
import numpy as np
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (Collator, _add_special_kwargs, handle_stop_sequences, has_bos_prefix,
                                  normalize_gen_kwargs, postprocess_generated_text, resolve_max_length)
from tqdm import tqdm

from ..compiled_layers import compiled_layers, supports_compiled_layers
from ..generation.runner import layer_windows, position_ids_from_mask, prefill_length
from ..generation.stopping_criteria import StoppingCriteria
from ..utils import warn_once
from .batch_size import BatchScheduler, row_bytes
from .packing import chunk_masks, pack_requests, shares_contexts

# HFLM arguments that only steer torch/accelerate (devices, sharding, quantization): accepted, ignored.
_IGNORED_ARGS = ("backend", "subfolder", "use_fast_tokenizer", "parallelize", "max_memory_per_gpu",
                 "max_cpu_memory", "offload_folder", "softmax_dtype", "mixed_precision_dtype", "autogptq",
                 "gptqmodel", "logits_cache", "trust_remote_code")
_UNSUPPORTED_ARGS = ("peft", "delta", "tp_plan")


class _StopStrings(StoppingCriteria):
    """lm_eval's MultiTokenEOSCriteria per row: a row is done once the decoded tail of its generated tokens
    contains a stop string. (lm_eval's version stops the batch when every row is done; the text before the
    first stop string, which is all a task keeps, is the same.)"""

    def __init__(self, tokenizer, stops, prompt_len):
        self.tokenizer, self.stops, self.prompt_len = tokenizer, [s for s in stops if s], prompt_len
        self.lookback = [len(tokenizer.encode(s, add_special_tokens=False)) + 2 for s in self.stops]

    def __call__(self, input_ids, scores, **kwargs):
        generated = np.asarray(input_ids)[:, self.prompt_len:]
        done = np.zeros(generated.shape[0], bool)
        for stop, lookback in zip(self.stops, self.lookback):
            tails = self.tokenizer.batch_decode(generated[:, -lookback:].tolist())
            done |= np.array([stop in tail for tail in tails], bool)
        return done


@register_model("mindformers_hf")
class MindFormersLM(TemplateLM):
    """`lm_eval --model mindformers_hf --model_args pretrained=DIR,dtype=float32`: HFLM's model_args."""

    def __init__(self, pretrained, tokenizer=None, revision=None, dtype="auto", batch_size=1, max_batch_size=None,
                 device=None, max_length=None, max_gen_toks=256, truncation=False, add_bos_token=None,
                 prefix_token_id=None, gguf_file=None, think_end_token=None, enable_thinking=None,
                 chat_template_args=None, **kwargs):
        super().__init__()
        from .. import AutoModelForCausalLM, AutoTokenizer

        for key in list(kwargs):
            if key in _UNSUPPORTED_ARGS and kwargs[key]:
                raise NotImplementedError(f"mindformers_hf: model_args {key}= is not supported")
            if key in _IGNORED_ARGS or key in _UNSUPPORTED_ARGS:
                value = kwargs.pop(key)
                if value not in (None, False, "", "default"):
                    warn_once(f"mindformers_hf: model_args {key}={value!r} is accepted and ignored")
        if kwargs:
            raise TypeError(f"mindformers_hf: unknown model_args {sorted(kwargs)}")
        if device not in (None, "cpu") and not str(device).startswith(("npu", "ascend")):
            warn_once(f"mindformers_hf: device={device!r} is ignored; MindSpore runs on its configured device")
        self.batch_schedule, self.max_batch_size = 1.0, int(max_batch_size or 64)  # HFLM's default bound
        if str(batch_size).startswith("auto"):  # HFLM's "auto" / "auto:N" (the rule: batch_size.py)
            batch_size, _, schedule = str(batch_size).partition(":")
            self.batch_schedule = float(schedule) if schedule else 1.0
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        if isinstance(pretrained, str):
            self._model = AutoModelForCausalLM.from_pretrained(pretrained, dtype=dtype, revision=revision, **extra)
            self.pretrained = pretrained
        else:  # an already loaded model of ours, as HFLM accepts a PreTrainedModel
            self._model = pretrained
            self.pretrained = getattr(pretrained.config, "_name_or_path", "")
        if tokenizer is None or isinstance(tokenizer, str):
            source = tokenizer or self.pretrained
            tok_extra = extra if tokenizer is None else {}
            tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, **tok_extra)
        self.tokenizer = tokenizer
        if self.tokenizer.pad_token_id is None:  # lm_eval's configure_pad_token: unk, then eos
            self.tokenizer.pad_token_id = (self.tokenizer.unk_token_id if self.tokenizer.unk_token_id is not None
                                           else self.tokenizer.eos_token_id)
        self.revision = revision
        self.batch_size_per_gpu = batch_size if batch_size == "auto" else int(batch_size)
        self._max_length = int(max_length) if max_length else None
        self._max_gen_toks = int(max_gen_toks)
        self.truncation = bool(truncation)
        self.add_bos_token = add_bos_token
        self.custom_prefix_token_id = prefix_token_id
        self.think_end_token = int(think_end_token) if str(think_end_token).isdigit() else think_end_token
        self.chat_template_args = dict(chat_template_args or {})
        if enable_thinking is not None:
            self.chat_template_args["enable_thinking"] = enable_thinking

    # ------------------------------------------------------------------ HFLM's properties
    @property
    def model(self):
        return self._model

    @property
    def config(self):
        return self._model.config

    @property
    def eot_token_id(self):
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self):
        if self.custom_prefix_token_id is not None:
            return self.custom_prefix_token_id
        if self.tokenizer.bos_token_id is not None:
            return self.tokenizer.bos_token_id
        return self.tokenizer.eos_token_id

    @property
    def max_length(self):
        return self._max_length or resolve_max_length(self.config, self.tokenizer)

    @property
    def max_gen_toks(self):
        return self._max_gen_toks

    @property
    def batch_size(self):
        return self.batch_size_per_gpu

    @property
    def tokenizer_name(self):
        return self.tokenizer.name_or_path.replace("/", "__")

    def get_model_info(self):
        params = sum(int(np.prod(p.shape)) for p in self._model.get_parameters())
        return {"model_num_parameters": params, "model_dtype": str(self._model.dtype),
                "model_revision": self.revision, "model_sha": ""}

    # ------------------------------------------------------------------ tokenization (HFLM's rules)
    def tok_encode(self, string, add_special_tokens=None, left_truncate_len=None, **kwargs):
        special = _add_special_kwargs(add_special_tokens, self.add_bos_token)
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special["add_special_tokens"] = False
        encoding = self.tokenizer.encode(string, **special)
        return encoding[-left_truncate_len:] if left_truncate_len else encoding

    def tok_batch_encode(self, strings, left_truncate_len=None):
        """Left-padded numpy ids and mask, as HFLM.tok_batch_encode."""
        special = {}
        if has_bos_prefix(strings[0], getattr(self.tokenizer, "bos_token", None)):
            special = {"add_special_tokens": False}
        elif self.add_bos_token is not None:
            special = {"add_special_tokens": self.add_bos_token}
        old_side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        try:
            enc = self.tokenizer(strings, truncation=self.truncation, padding="longest", return_tensors="np",
                                 **special)
        finally:
            self.tokenizer.padding_side = old_side
        ids, mask = enc["input_ids"], enc["attention_mask"]
        if left_truncate_len and ids.shape[1] > left_truncate_len:
            warn_once(f"mindformers_hf: contexts left-truncated to {left_truncate_len} tokens")
            ids, mask = ids[:, -left_truncate_len:], mask[:, -left_truncate_len:]
        return ids, mask

    def tok_decode(self, tokens, skip_special_tokens=True):
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, chat_history, add_generation_prompt=True):
        import jinja2

        kwargs = dict(tokenize=False, add_generation_prompt=add_generation_prompt,
                      continue_final_message=not add_generation_prompt, **self.chat_template_args)
        try:
            return self.tokenizer.apply_chat_template(chat_history, **kwargs)
        except jinja2.exceptions.TemplateError:  # HFLM: retry without the system turn
            warn_once("mindformers_hf: the chat template failed; retrying without the system message")
            return self.tokenizer.apply_chat_template([m for m in chat_history if m["role"] != "system"], **kwargs)

    # ------------------------------------------------------------------ scoring
    def _width(self, rows):
        """The padded width of a batch of token rows: the longest row, rounded up to generate's prefill buckets
        when the decoder layers run compiled (one compilation per width)."""
        width = max(len(row) for row in rows)
        return prefill_length(width) if supports_compiled_layers(self._model) else width

    def _score_rows(self, rows, keep, width, masks=None, positions=None):
        """Forward `rows` (token lists, left-padded to `width` and masked: positions count from each row's first real
        token) and return the logits of the last `keep` columns, [B, keep, vocab] float32 (a MindSpore
        tensor: only the picked entries leave it). `masks` ({layer type: [B, 1, W, W]}) and `positions`
        ([B, W]) of rows packed by packing.py replace the padding mask's causal rule and positions."""
        import mindspore as ms

        ids = np.full((len(rows), width), self.tokenizer.pad_token_id, np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for i, row in enumerate(rows):
            ids[i, width - len(row):] = row
            mask[i, width - len(row):] = 1
        if masks is None:
            attention, positions = ms.Tensor(mask), position_ids_from_mask(mask)
        else:
            attention = {key: ms.Tensor(m) for key, m in masks.items()}
        # "score": the decoder layers as one compiled graph, every position (compiled_layers.py)
        with compiled_layers(self._model, "score" if supports_compiled_layers(self._model) else None):
            out = self._model(input_ids=ms.Tensor(ids), attention_mask=attention, position_ids=ms.Tensor(positions),
                              logits_to_keep=keep, use_cache=False)
        return out.logits.astype(ms.float32)

    def _loglikelihood_tokens(self, requests, disable_tqdm=False, override_bs=None):
        # One column per distinct input row (context + continuation minus its last token): the answers that
        # differ only in their last token read the same row (HFLM's logits cache); and rows that share their
        # context are packed into one row, the context once (packing.py): a multiple-choice question is one
        # row, not one per choice.
        import mindspore as ms
        from mindspore import ops

        for _, context, continuation in requests:
            if not context or not continuation:
                raise ValueError("mindformers_hf: empty context or continuation tokens")
            if len(continuation) > self.max_length:
                raise ValueError(f"mindformers_hf: a continuation of {len(continuation)} tokens exceeds the "
                                 f"model's max_length {self.max_length}")
        packed = pack_requests([(c, n) for _, c, n in requests], self.max_length, shares_contexts(self._model))
        results = [None] * len(requests)
        sizes = self._batch_sizes(lambda p: (len(p.tokens), len(p.tokens) - min(min(c) for _, c in p.reads)),
                                  override_bs)
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="Running loglikelihood requests")
        start = 0
        while start < len(packed):
            chunk = packed[start:start + sizes(start, packed)]
            start += len(chunk)
            width = self._width([p.tokens for p in chunk])
            # every request reads its columns of its packed row, right-aligned (left padding)
            reads = [(b, index, [width - len(p.tokens) + c for c in columns])
                     for b, p in enumerate(chunk) for index, columns in p.reads]
            keep = width - min(c for _, _, columns in reads for c in columns)
            masks = positions = None
            if any(p.shared for p in chunk):
                masks, positions = chunk_masks(chunk, width, layer_windows(self._model.config))
            logits = self._score_rows([p.tokens for p in chunk], keep, width, masks, positions)
            greedy = logits.argmax(-1).asnumpy()
            logprobs = ops.log_softmax(logits, -1)
            first = width - keep
            picks = np.array([(b, c - first, t) for b, index, columns in reads
                              for c, t in zip(columns, requests[index][2])], np.int32)
            values = ops.gather_nd(logprobs, ms.Tensor(picks)).asnumpy()
            offset = 0
            for b, index, columns in reads:
                key, _, continuation = requests[index]
                n = len(continuation)
                answer = (float(values[offset:offset + n].sum()),
                          bool((greedy[b, np.asarray(columns) - first] == np.asarray(continuation)).all()))
                offset += n
                results[index] = answer
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, answer)
                bar.update(1)
        bar.close()
        return results

    def _batch_sizes(self, shape, override_bs=None, cache=False):
        """The batch-size function of a call: (position, sorted items) -> size. A fixed size, or with
        batch_size=auto the largest that fits in memory for the item there (batch_size.py); `shape(item)` gives
        its (width, positions whose logits are kept)."""
        if override_bs or self.batch_size != "auto":
            size = override_bs or self.batch_size
            return lambda position, items: size
        dtype_bytes = 2 if "16" in str(self._model.dtype) else 4
        estimate = lambda item: row_bytes(self.config, *shape(item), cache=cache, dtype_bytes=dtype_bytes)  # noqa
        return BatchScheduler(self.batch_schedule, self.max_batch_size, estimate)

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        windows, owners = [], []
        for index, (string,) in enumerate(tqdm([r.args for r in requests], disable=disable_tqdm)):
            pairs = lm_utils.get_rolling_token_windows(token_list=self.tok_encode(string),
                                                       prefix_token=self.prefix_token_id,
                                                       max_seq_len=self.max_length, context_len=1)
            for pair in map(lm_utils.make_disjoint_window, pairs):
                windows.append((None,) + pair)
                owners.append(index)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=True)
        totals = [0.0] * len(requests)
        for index, (logprob, _) in zip(owners, scores):
            totals[index] += logprob
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    # ------------------------------------------------------------------ generation
    def _generation_shape(self, args):
        """(width, kept logits) of a generate_until request for batch_size=auto: its prompt and budget."""
        context, gen_kwargs = args
        budget = gen_kwargs.get("max_gen_toks", self.max_gen_toks) if isinstance(gen_kwargs, dict) else 0
        return min(self.max_length, len(self.tok_encode(context)) + int(budget or self.max_gen_toks)), 1

    def generate_until(self, requests, disable_tqdm=False):
        batches = Collator([r.args for r in requests], sort_fn=lambda r: (-len(self.tok_encode(r[0])), r[0]),
                           group_by="gen_kwargs", group_fn=lambda r: r[1])
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        results = []
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="Running generate_until requests")
        sizes = self._batch_sizes(self._generation_shape, cache=True)
        for chunk in batches.get_batched(n=0, batch_fn=sizes):
            contexts, all_kwargs = zip(*chunk)
            if not isinstance(all_kwargs[0], dict):
                raise TypeError(f"generation kwargs must be a dict, not {type(all_kwargs[0]).__name__}")
            kwargs = normalize_gen_kwargs(all_kwargs[0], self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen_toks = kwargs.pop("max_gen_toks")
            if self.max_length - max_gen_toks <= 0:
                raise ValueError(f"max_gen_toks ({max_gen_toks}) must be below the model's max_length "
                                 f"({self.max_length})")
            ids, mask = self.tok_batch_encode(list(contexts), left_truncate_len=self.max_length - max_gen_toks)
            max_length = kwargs.pop("max_length", ids.shape[1] + max_gen_toks)
            if kwargs.get("do_sample") is False and kwargs.get("temperature") == 0.0:
                kwargs.pop("temperature")  # HFLM._model_generate: greedy, without a temperature warning
            out = self._model.generate(input_ids=ids, attention_mask=mask, max_length=max_length,
                                       stopping_criteria=[_StopStrings(self.tokenizer, until, ids.shape[1])],
                                       pad_token_id=self.tokenizer.pad_token_id, **kwargs)
            for tokens, context, gen_kwargs in zip(np.asarray(out)[:, ids.shape[1]:].tolist(), contexts,
                                                   all_kwargs):
                if isinstance(self.think_end_token, int) and self.think_end_token in tokens:
                    tokens = tokens[len(tokens) - tokens[::-1].index(self.think_end_token):]
                text = self.tok_decode(tokens)
                if isinstance(self.think_end_token, int):
                    text = text.lstrip()
                text = postprocess_generated_text(text, until, self.think_end_token
                                                  if isinstance(self.think_end_token, str) else None)
                results.append(text)
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
                bar.update(1)
        bar.close()
        return batches.get_original(results)
