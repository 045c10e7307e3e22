"""`GenerationMixin.generate`: transformers' decoding loop (greedy, sampling, beam search) on our models.

The model runs in MindSpore (runner.py: prefill, then one-token steps against a static KV cache through a
compiled graph); everything per token that is small -- logits processors, sampling, beam bookkeeping,
stopping criteria -- runs on the host in numpy, with transformers' formulas and order. Inputs may be
numpy, torch or MindSpore; sequences and scores come back as the kind of `input_ids`.
"""
import copy

import numpy as np

from .. import runtime, tensor_io
from ..layers import IndexDtypeError
from ..modeling_outputs import ModelOutput, _CacheAlias
from ..utils import set_seed, warn_once  # noqa: F401 (set_seed: re-exported by generation)
from . import logits_process as lp
from .assisted import assisted_decoding
from .runner import DynamicRunner, StaticRunner
from .stopping_criteria import (EosTokenCriteria, MaxLengthCriteria, MaxTimeCriteria, StoppingCriteriaList,
                                StopStringCriteria)


class GenerateDecoderOnlyOutput(_CacheAlias, ModelOutput):
    _fields = ("sequences", "scores", "logits", "attentions", "hidden_states", "past_key_values")


class GenerateBeamDecoderOnlyOutput(_CacheAlias, ModelOutput):
    _fields = ("sequences", "sequences_scores", "scores", "logits", "beam_indices", "attentions", "hidden_states",
               "past_key_values")


# transformers 4.x names for the same outputs
GreedySearchDecoderOnlyOutput = SampleDecoderOnlyOutput = GenerateDecoderOnlyOutput
BeamSearchDecoderOnlyOutput = GenerateBeamDecoderOnlyOutput


# GenerationConfig fields we do not implement: a non-default value raises, naming the feature.
_UNSUPPORTED = {
    # transformers 5 runs these four from hub repos (transformers-community/*) as remote code, which we never run
    "penalty_alpha": "contrastive search (penalty_alpha)",
    "num_beam_groups": "group beam search (num_beam_groups > 1)",
    "constraints": "constrained beam search (constraints)",
    "force_words_ids": "constrained beam search (force_words_ids)",
    "dola_layers": "DoLa decoding (dola_layers)",
    "guidance_scale": "classifier-free guidance (guidance_scale)",
    "watermarking_config": "watermarking",
    "low_memory": "low_memory beam search",
    "output_attentions": "output_attentions in generate",
}
_NEUTRAL = {"num_beam_groups": 1, "guidance_scale": 1.0,
            "low_memory": False, "output_attentions": False}


def _as_list(token_ids):
    if token_ids is None:
        return None
    if tensor_io.kind_of(token_ids):
        token_ids = tensor_io.to_numpy(token_ids).tolist()
    return [int(t) for t in (token_ids if isinstance(token_ids, (list, tuple)) else [token_ids])]


def _sample_scores(scores):
    """One token per row drawn from softmax(scores) (only over the finite columns when few are finite)."""
    cols = lp.sparse_columns(scores)
    if cols is None:
        return _sample(lp.softmax(scores))
    chosen = _sample(lp.softmax(np.take_along_axis(scores, cols, -1)))
    return np.take_along_axis(cols, chosen[:, None], -1)[:, 0].astype(np.int64)


def _sample(probs):
    """One token per row from [B, V] probabilities, by inverse CDF on numpy's global generator."""
    cdf = np.cumsum(probs, -1)
    u = np.random.random_sample(probs.shape[0]) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(-1), probs.shape[-1] - 1).astype(np.int64)


class GenerationMixin:
    """Adds transformers' `generate()` and `compute_transition_scores()` to a causal LM."""

    # ------------------------------------------------------------------ configuration
    def _prepare_generation_config(self, generation_config, kwargs):
        from transformers import GenerationConfig

        provided = generation_config is not None
        config = copy.deepcopy(generation_config if provided else self.generation_config)
        defaults = getattr(GenerationConfig, "_get_default_generation_params", None)
        if defaults is not None:  # transformers 5: unset fields come from the model's config, then globals
            if provided:
                config.update(**self.generation_config.to_dict(), defaults_only=True, allow_custom_entries=True)
            default_max_length = config.max_length is None and kwargs.get("max_length") is None
            config.update(**defaults(), defaults_only=True)
        else:  # transformers 4: every field already holds its default
            default_max_length = kwargs.get("max_length") is None and config.max_length == GenerationConfig().max_length
        model_kwargs = config.update(**kwargs)
        for name, feature in _UNSUPPORTED.items():
            value = getattr(config, name, None)
            if value not in (None, _NEUTRAL.get(name, None), [], ()):
                raise NotImplementedError(f"generate: {feature} is not supported")
        return config, model_kwargs, default_max_length

    # ------------------------------------------------------------------ generate
    def generate(self, inputs=None, generation_config=None, logits_processor=None, stopping_criteria=None,
                 prefix_allowed_tokens_fn=None, synced_gpus=None, assistant_model=None, streamer=None,
                 negative_prompt_ids=None, negative_prompt_attention_mask=None, use_model_defaults=None,
                 custom_generate=None, **kwargs):
        if kwargs.pop("assistant_tokenizer", None) is not None:
            raise NotImplementedError("generate: assistant_tokenizer (assisted decoding across tokenizers) is not "
                                      "supported")
        for name, value in (("negative_prompt_ids", negative_prompt_ids), ("custom_generate", custom_generate)):
            if value is not None:
                raise NotImplementedError(f"generate: {name} is not supported")
        if synced_gpus:
            warn_once("generate: synced_gpus is accepted for compatibility and ignored")
        tokenizer = kwargs.pop("tokenizer", None)
        config, model_kwargs, default_max_length = self._prepare_generation_config(generation_config, kwargs)

        # -- inputs
        if isinstance(inputs, dict) or (hasattr(inputs, "keys") and "input_ids" in inputs):
            model_kwargs = {**dict(inputs), **model_kwargs}  # a tokenizer's BatchEncoding passed positionally
            inputs = None
        input_ids = inputs if inputs is not None else model_kwargs.pop("input_ids", None)
        model_kwargs.pop("input_ids", None)
        if model_kwargs.get("inputs_embeds") is not None:
            raise NotImplementedError("generate: inputs_embeds is not supported; pass input_ids")
        if input_ids is None:
            raise ValueError("generate needs input_ids (or `inputs`)")
        kind = tensor_io.kind_of(input_ids) or tensor_io.MINDSPORE
        ids = np.asarray(tensor_io.to_numpy(input_ids))
        if not np.issubdtype(ids.dtype, np.integer):  # as the embedding would (torch's raises for float ids)
            raise IndexDtypeError(f"token ids must be integers, got input_ids of dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        if ids.ndim == 1:
            ids = ids[None, :]
        attention_mask = model_kwargs.pop("attention_mask", None)
        cache = model_kwargs.pop("past_key_values", None)  # transformers 5.25 also names it `cache`
        cache = model_kwargs.pop("cache", None) if cache is None else cache
        for key in ("token_type_ids", "position_ids", "use_cache", "cache_position", "logits_to_keep", "return_dict"):
            if key not in getattr(self, "_prefill_inputs", ()):  # CogVLM2 reads the prompt's token_type_ids
                model_kwargs.pop(key, None)
        # inputs a model reads in the prompt's forward only (Qwen2-VL's images: `_prefill_inputs`)
        prefill_inputs = {key: model_kwargs.pop(key) for key in getattr(self, "_prefill_inputs", ())
                          if key in model_kwargs}
        prefill_inputs = {key: value for key, value in prefill_inputs.items() if value is not None}
        for key in model_kwargs:
            warn_once(f"generate: keyword {key!r} is accepted for compatibility and ignored")

        # -- special tokens (transformers: pad falls back to the first eos for open-ended generation)
        eos = _as_list(config.eos_token_id)
        pad = config.pad_token_id
        pad = int(_as_list(pad)[0]) if pad is not None else None
        if pad is None and eos:
            pad = eos[0]
        if attention_mask is None:
            attention_mask = self._prepare_attention_mask_for_generation(ids, pad, eos)
        else:
            attention_mask = np.asarray(tensor_io.to_numpy(attention_mask)).astype(np.int64)
            if attention_mask.ndim == 1:
                attention_mask = attention_mask[None, :]
            if attention_mask.shape != ids.shape:  # HF fails with an IndexError (the forward's mask check)
                raise IndexError(f"attention_mask has shape {attention_mask.shape}, but input_ids have shape "
                                 f"{ids.shape}: one mask entry per token")

        # transformers' `_prepare_generated_length`, then its check of the prompt against max_length
        prompt_len = ids.shape[1]
        if config.max_new_tokens is not None:
            config.max_length = config.max_new_tokens + prompt_len
        elif default_max_length:  # nobody set a length: 20 new tokens, but not past the model's context
            config.max_length += prompt_len
            context = getattr(self.config, "max_position_embeddings", None)
            if context is not None:
                config.max_length = min(config.max_length, context)
        if prompt_len >= config.max_length:
            raise ValueError(f"Input length of input_ids is {prompt_len}, but `max_length` is set to "
                             f"{config.max_length}. This can lead to unexpected behavior. You should consider "
                             "increasing `max_length` or, better yet, setting `max_new_tokens`.")
        if config.num_beams > 1 and config.do_sample:
            raise NotImplementedError("generate: beam sampling (num_beams > 1 with do_sample=True) is not supported")
        if config.num_beams > 1 and config.num_return_sequences > config.num_beams:
            raise ValueError("num_return_sequences has to be smaller or equal to num_beams")

        processors = self._logits_processors(config, prompt_len, eos, logits_processor, attention_mask,
                                             prefix_allowed_tokens_fn, kind)
        criteria = self._stopping_criteria(config, eos, tokenizer, stopping_criteria)
        if (assistant_model is not None or config.prompt_lookup_num_tokens is not None) and config.num_beams > 1:
            warn_once("generate: assisted / prompt lookup decoding works with greedy search; with num_beams > 1 the "
                      "assistant is ignored (as in transformers)")
        elif assistant_model is not None or config.prompt_lookup_num_tokens is not None:
            if prefill_inputs:
                raise NotImplementedError(f"generate: assisted / prompt lookup decoding with "
                                          f"{', '.join(sorted(prefill_inputs))} is not supported")
            if cache is not None:
                raise NotImplementedError("generate: past_key_values with assisted / prompt lookup decoding is not "
                                          "supported")
            if streamer is not None:
                streamer.put(ids.copy())
            try:
                result = assisted_decoding(self, ids, attention_mask, config, processors, criteria, eos, streamer,
                                           assistant_model, logits_processor, _sample)
            finally:
                if streamer is not None:
                    streamer.end()
            return self._finish(result, config, kind, None)
        runner = self._make_runner(config, cache)
        runner.prefill_inputs = prefill_inputs

        if streamer is not None:
            if config.num_beams > 1:
                raise ValueError("generate: streamers work with greedy search and sampling, not beam search")
            streamer.put(ids.copy())
        # Threads: the runner holds the process-wide model lock (runtime.py) for each prefill/decode step only, so
        # other threads' model calls interleave with this loop and the streamer is fed without the lock held.
        try:
            if config.num_beams > 1:
                result = self._beam_search(runner, ids, attention_mask, config, processors, criteria, pad, eos)
            else:
                result = self._sample_loop(runner, ids, attention_mask, config, processors, criteria, pad,
                                           eos, streamer)
            if config.return_dict_in_generate and isinstance(runner, StaticRunner):
                result["cache"] = runner.detached_cache()  # before close() gives the buffers back to the pool
        finally:
            runner.close()
            if streamer is not None:  # also on errors: a TextIteratorStreamer's reader would wait forever
                streamer.end()
        return self._finish(result, config, kind, runner)

    def _prepare_attention_mask_for_generation(self, ids, pad, eos):
        """The prompt's mask when none is given (transformers' hook of this name): 0 at pad tokens when the pad id
        is set, occurs in the prompt and is no eos id, else all ones. A model may override it (CogVLM2: ones)."""
        can_infer = pad is not None and (ids == pad).any() and (not eos or pad not in eos)
        return (ids != pad).astype(np.int64) if can_infer else np.ones_like(ids)

    def _make_runner(self, config, cache=None):
        implementation = getattr(config, "cache_implementation", None)
        if implementation == "quantized":  # changes the tokens: not something to ignore
            raise NotImplementedError("generate: cache_implementation='quantized' (a quantized KV cache) is not "
                                      "supported")
        if implementation is not None and implementation.startswith("offloaded"):
            warn_once(f"generate: cache_implementation={implementation!r} is accepted and the cache is not offloaded "
                      "(the tokens are the same)")
        if cache is not None and (not hasattr(cache, "get_seq_length") or
                                  type(cache).__module__.startswith("transformers.")):  # torch tensors inside
            raise TypeError(f"generate: past_key_values must be mindformers_hf's DynamicCache or StaticCache, got "
                            f"{type(cache).__module__}.{type(cache).__name__}")
        if config.output_hidden_states:  # the compiled decode step returns logits only
            return DynamicRunner(self, cache, output_hidden_states=True)
        if cache is not None or implementation == "dynamic" or not StaticRunner.supports(self):
            return DynamicRunner(self, cache)
        return StaticRunner(self, compile_step=not getattr(config, "disable_compile", False))

    def _logits_processors(self, config, prompt_len, eos, custom, attention_mask, prefix_allowed_tokens_fn=None,
                           kind=tensor_io.NUMPY):
        """transformers' `_get_logits_processor`, in its order: processors, then the caller's list, then sampling
        warpers, then renormalisation."""
        processors = lp.LogitsProcessorList()
        if config.sequence_bias is not None:
            processors.append(lp.SequenceBiasLogitsProcessor(config.sequence_bias))
        if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
            padding = (attention_mask != 0).argmax(1)  # transformers 5 leaves left padding out of the penalty
            # one length per row the processors see: transformers expands rows (beams, returned sequences) first
            padding = np.repeat(padding, config.num_beams if config.num_beams > 1 else config.num_return_sequences or 1)
            processors.append(lp.RepetitionPenaltyLogitsProcessor(float(config.repetition_penalty), padding))
        if config.no_repeat_ngram_size:
            processors.append(lp.NoRepeatNGramLogitsProcessor(config.no_repeat_ngram_size))
        if config.bad_words_ids is not None:
            processors.append(lp.NoBadWordsLogitsProcessor(config.bad_words_ids, eos))
        if eos and config.min_length:
            processors.append(lp.MinLengthLogitsProcessor(config.min_length, eos))
        if eos and config.min_new_tokens:
            processors.append(lp.MinNewTokensLengthLogitsProcessor(prompt_len, config.min_new_tokens, eos))
        if prefix_allowed_tokens_fn is not None:  # the function gets each row as the caller's kind of tensor
            processors.append(lp.PrefixConstrainedLogitsProcessor(
                prefix_allowed_tokens_fn, max(config.num_beams, config.num_return_sequences or 1),
                row_type=lambda row: _as_kind(row, kind)))
        if config.forced_bos_token_id is not None:
            processors.append(lp.ForcedBOSTokenLogitsProcessor(config.forced_bos_token_id))
        if config.forced_eos_token_id is not None:
            processors.append(lp.ForcedEOSTokenLogitsProcessor(config.max_length, config.forced_eos_token_id))
        if config.remove_invalid_values:
            processors.append(lp.InfNanRemoveLogitsProcessor())
        if config.exponential_decay_length_penalty is not None:
            processors.append(lp.ExponentialDecayLengthPenalty(config.exponential_decay_length_penalty, eos,
                                                               prompt_len))
        if config.suppress_tokens is not None:
            processors.append(lp.SuppressTokensLogitsProcessor(config.suppress_tokens))
        if config.begin_suppress_tokens is not None:
            begin = prompt_len if prompt_len > 1 or config.forced_bos_token_id is None else prompt_len + 1
            processors.append(lp.SuppressTokensAtBeginLogitsProcessor(config.begin_suppress_tokens, begin))
        processors.extend(custom or [])
        if config.do_sample:
            keep = 1
            if config.temperature is not None and config.temperature != 1.0:
                processors.append(lp.TemperatureLogitsWarper(config.temperature))
            if getattr(config, "top_h", None) is not None:
                processors.append(lp.TopHLogitsWarper(top_h=config.top_h))
            if config.top_k is not None and config.top_k != 0:
                processors.append(lp.TopKLogitsWarper(top_k=config.top_k, min_tokens_to_keep=keep))
            if config.top_p is not None and config.top_p < 1.0:
                processors.append(lp.TopPLogitsWarper(top_p=config.top_p, min_tokens_to_keep=keep))
            if config.min_p is not None:
                processors.append(lp.MinPLogitsWarper(min_p=config.min_p, min_tokens_to_keep=keep))
            if config.typical_p is not None and config.typical_p < 1.0:
                processors.append(lp.TypicalLogitsWarper(mass=config.typical_p, min_tokens_to_keep=keep))
            if config.epsilon_cutoff is not None and 0.0 < config.epsilon_cutoff < 1.0:
                processors.append(lp.EpsilonLogitsWarper(epsilon=config.epsilon_cutoff, min_tokens_to_keep=keep))
            if config.eta_cutoff is not None and 0.0 < config.eta_cutoff < 1.0:
                processors.append(lp.EtaLogitsWarper(epsilon=config.eta_cutoff, min_tokens_to_keep=keep))
        if config.renormalize_logits:
            processors.append(lp.LogitNormalization())
        return processors

    def _stopping_criteria(self, config, eos, tokenizer, custom):
        criteria = StoppingCriteriaList()
        criteria.append(MaxLengthCriteria(config.max_length, getattr(self.config, "max_position_embeddings", None)))
        if config.max_time is not None:
            criteria.append(MaxTimeCriteria(config.max_time))
        if config.stop_strings is not None:
            if tokenizer is None:
                raise ValueError("There are one or more stop strings, either in the arguments to `generate` or in the "
                                 "model's generation config, but we could not locate a tokenizer. When generating "
                                 "with stop strings, you must pass the model's tokenizer to the `tokenizer` argument "
                                 "of `generate`.")
            criteria.append(StopStringCriteria(tokenizer, config.stop_strings))
        if eos:
            criteria.append(EosTokenCriteria(eos))
        criteria.extend(custom or [])
        return criteria

    # ------------------------------------------------------------------ greedy search and sampling
    def _sample_loop(self, runner, ids, attention_mask, config, processors, criteria, pad, eos, streamer):
        repeats = config.num_return_sequences or 1
        logits = self._prefill(runner, ids, attention_mask, config)
        if repeats > 1:
            ids, attention_mask = np.repeat(ids, repeats, 0), np.repeat(attention_mask, repeats, 0)
            logits = np.repeat(logits, repeats, 0)
        runner.expand(repeats)
        scores, raw, hidden = [], [], []
        if config.output_hidden_states:
            hidden.append(tuple(np.repeat(h, repeats, 0) for h in runner.hidden_states))
        unfinished = np.ones(ids.shape[0], bool)
        while True:
            next_scores = processors(ids, logits.copy())
            if config.output_scores:
                scores.append(next_scores)
            if config.output_logits:
                raw.append(logits)
            if config.do_sample:
                tokens = _sample_scores(next_scores)
            else:
                tokens = next_scores.argmax(-1).astype(np.int64)
            if eos:
                tokens = np.where(unfinished, tokens, pad)
            ids = np.concatenate([ids, tokens[:, None]], 1)
            attention_mask = np.concatenate([attention_mask, np.ones((ids.shape[0], 1), np.int64)], 1)
            if streamer is not None:
                streamer.put(tokens.copy())
            unfinished &= ~criteria(ids, scores)
            if not unfinished.any():
                break
            logits = runner.step(tokens, attention_mask)
            if config.output_hidden_states:
                hidden.append(runner.hidden_states)
        return {"sequences": ids, "scores": scores, "logits": raw, "hidden_states": hidden}

    def _prefill(self, runner, ids, attention_mask, config):
        if isinstance(runner, StaticRunner):
            return runner.prefill(ids, attention_mask, config.max_length)
        return runner.prefill(ids, attention_mask)

    # ------------------------------------------------------------------ beam search
    def _beam_search(self, runner, ids, attention_mask, config, processors, criteria, pad, eos):
        """transformers' vectorised beam search (`_beam_search`), step for step, in numpy float32."""
        num_beams, max_length = config.num_beams, config.max_length
        early_stopping, length_penalty = config.early_stopping, config.length_penalty
        batch, cur_len = ids.shape
        prompt_len = cur_len
        beams_to_keep = max(2, 1 + len(eos or [])) * num_beams
        top_num_beam_mask = np.arange(beams_to_keep) < num_beams
        fill = (pad or eos[0]) if eos else -1  # transformers: `pad_token_id or eos_token_id[0]`

        running_sequences = np.full((batch, num_beams, max_length), fill, np.int64)
        running_sequences[:, :, :cur_len] = ids[:, None, :]
        sequences = running_sequences.copy()
        running_beam_scores = np.zeros((batch, num_beams), np.float32)
        running_beam_scores[:, 1:] = -1e9
        beam_scores = np.full((batch, num_beams), -1e9, np.float32)
        is_sent_finished = np.zeros((batch, num_beams), bool)
        heuristic_unsatisfied = np.ones((batch, 1), bool)
        hits = np.zeros((batch, num_beams), bool)
        running_beam_indices = np.full((batch, num_beams, max_length - cur_len), -1, np.int64)
        beam_indices = running_beam_indices.copy()
        scores, raw = [], []

        logits = self._prefill(runner, ids, attention_mask, config)
        hidden = []
        if config.output_hidden_states:
            hidden.append(tuple(np.repeat(h, num_beams, 0) for h in runner.hidden_states))
        logits = np.repeat(logits, num_beams, 0)
        attention_mask = np.repeat(attention_mask, num_beams, 0)
        runner.expand(num_beams)
        flat_running = np.repeat(ids, num_beams, 0)
        rows = np.arange(batch)[:, None]
        while True:
            log_probs = lp._log_softmax(logits.astype(np.float32)).astype(np.float32)
            log_probs = processors(flat_running, log_probs)
            if config.output_logits:
                raw.append(logits)
            if config.output_scores:
                scores.append(log_probs)
            vocab = log_probs.shape[-1]
            accumulated = (log_probs.reshape(batch, num_beams, vocab) + running_beam_scores[:, :, None])
            accumulated = accumulated.reshape(batch, num_beams * vocab)
            # top-k continuations, best first
            top = np.argpartition(-accumulated, beams_to_keep - 1, axis=-1)[:, :beams_to_keep]
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(accumulated, top, -1), -1, kind="stable"), -1)
            topk_log_probs = np.take_along_axis(accumulated, top, -1)
            from_beam, token = top // vocab, top % vocab
            topk_sequences = running_sequences[rows, from_beam].copy()
            topk_sequences[:, :, cur_len] = token
            topk_beam_indices = running_beam_indices[rows, from_beam].copy()
            topk_beam_indices[:, :, cur_len - prompt_len] = from_beam + rows * num_beams
            hits = criteria(topk_sequences[:, :, :cur_len + 1].reshape(batch * beams_to_keep, -1), scores)
            hits = hits.reshape(batch, beams_to_keep)
            # running beams for the next step: the best num_beams that did not just finish
            running_log_probs = topk_log_probs + hits.astype(np.float32) * np.float32(-1e9)
            keep = np.argsort(-running_log_probs, -1, kind="stable")[:, :num_beams]
            running_sequences = topk_sequences[rows, keep]
            running_beam_scores = running_log_probs[rows, keep]
            running_beam_indices = topk_beam_indices[rows, keep]
            # finished hypotheses: merge the ones that just finished with the kept ones
            just_finished = hits & top_num_beam_mask[None, :]
            finished_scores = topk_log_probs / np.float32((cur_len + 1 - prompt_len) ** length_penalty)
            full = is_sent_finished.all(-1, keepdims=True) & (early_stopping is True)
            finished_scores = finished_scores + full.astype(np.float32) * np.float32(-1e9)
            finished_scores = finished_scores + (~heuristic_unsatisfied).astype(np.float32) * np.float32(-1e9)
            finished_scores = finished_scores + (~just_finished).astype(np.float32) * np.float32(-1e9)
            merged_scores = np.concatenate((beam_scores, finished_scores.astype(np.float32)), 1)
            best = np.argsort(-merged_scores, -1, kind="stable")[:, :num_beams]
            sequences = np.concatenate((sequences, topk_sequences), 1)[rows, best]
            beam_scores = merged_scores[rows, best]
            beam_indices = np.concatenate((beam_indices, topk_beam_indices), 1)[rows, best]
            is_sent_finished = np.concatenate((is_sent_finished, just_finished), 1)[rows, best]
            cur_len += 1
            # transformers' early-stop heuristic: can a running beam still beat the worst finished one?
            if early_stopping == "never" and length_penalty > 0.0:
                best_length = max_length - prompt_len
            else:
                best_length = cur_len - prompt_len
            best_running = running_beam_scores[:, :1] / np.float32(best_length ** length_penalty)
            worst_finished = np.where(is_sent_finished, beam_scores.min(1, keepdims=True), np.float32(-1e9))
            heuristic_unsatisfied = heuristic_unsatisfied & (best_running > worst_finished).any(-1, keepdims=True)
            open_beam = not (is_sent_finished.all() and early_stopping is True)
            done = not (heuristic_unsatisfied.any() and open_beam and not hits.all())
            if not done or config.return_dict_in_generate:  # transformers' returned cache is reordered at the end too
                runner.reorder(running_beam_indices[:, :, cur_len - 1 - prompt_len].reshape(-1))
            if done:
                break
            flat_running = running_sequences[:, :, :cur_len].reshape(batch * num_beams, cur_len)
            attention_mask = np.concatenate([attention_mask, np.ones((attention_mask.shape[0], 1), np.int64)], 1)
            logits = runner.step(flat_running[:, -1], attention_mask)
            if config.output_hidden_states:
                hidden.append(runner.hidden_states)

        n = config.num_return_sequences or 1
        sequences = sequences[:, :n].reshape(batch * n, -1)
        beam_scores = beam_scores[:, :n].reshape(-1)
        beam_indices = beam_indices[:, :n].reshape(batch * n, -1)
        generated = int((beam_indices + 1).astype(bool).sum(1).max())
        return {"sequences": sequences[:, :prompt_len + generated], "sequences_scores": beam_scores,
                "beam_indices": beam_indices[:, :generated], "scores": scores, "logits": raw, "hidden_states": hidden}

    # ------------------------------------------------------------------ outputs
    @runtime.serialized
    def _finish(self, result, config, kind, runner):
        to = lambda a: _as_kind(a, kind)  # noqa: E731
        sequences = to(result["sequences"])
        if not config.return_dict_in_generate:
            return sequences
        scores = tuple(to(s) for s in result["scores"]) if config.output_scores else None
        logits = tuple(to(s) for s in result["logits"]) if config.output_logits else None
        hidden = tuple(tuple(to(h) for h in step) for step in result["hidden_states"]) \
            if config.output_hidden_states else None
        cache = result.get("cache", getattr(runner, "cache", None))
        cache = cache if cache is not None else getattr(getattr(runner, "graph", None), "cache", None)
        if "beam_indices" in result:
            return GenerateBeamDecoderOnlyOutput(
                sequences=sequences, sequences_scores=to(result["sequences_scores"]) if config.output_scores else None,
                scores=scores, logits=logits, beam_indices=to(result["beam_indices"]), hidden_states=hidden,
                past_key_values=cache)
        return GenerateDecoderOnlyOutput(sequences=sequences, scores=scores, logits=logits, hidden_states=hidden,
                                         past_key_values=cache)

    def compute_transition_scores(self, sequences, scores, beam_indices=None, normalize_logits=False):
        """transformers' compute_transition_scores: the score of each generated token, [B, generated]."""
        kind = tensor_io.kind_of(sequences) or tensor_io.MINDSPORE
        sequences = np.asarray(tensor_io.to_numpy(sequences))
        stacked = np.stack([np.asarray(tensor_io.to_numpy(s), np.float32) for s in scores])   # [T, B*, V]
        steps, rows, vocab = stacked.shape
        if beam_indices is None:
            beam_indices = np.broadcast_to(np.arange(rows)[:, None], (rows, steps))
        beam_indices = np.asarray(tensor_io.to_numpy(beam_indices)).astype(np.int64)
        if normalize_logits:
            stacked = lp._log_softmax(stacked.astype(np.float64)).astype(np.float32)
        mask = beam_indices < 0
        max_len = int((~mask).sum(-1).max())
        beam_indices, mask = beam_indices[:, :max_len].copy(), mask[:, :max_len]
        beam_indices[mask] = 0
        tokens = sequences[:, sequences.shape[-1] - max_len:]
        out = stacked[np.arange(max_len)[None, :], beam_indices, tokens]
        out[mask] = 0
        return _as_kind(out, kind)


def _as_kind(array, kind):
    """A host numpy result as the caller's kind of tensor."""
    array = np.ascontiguousarray(array)
    if kind == tensor_io.NUMPY:
        return array
    if kind == tensor_io.TORCH:
        import torch  # the caller passed torch tensors

        return torch.from_numpy(array)
    import mindspore as ms

    return ms.Tensor(array)
