"""`LLM`: the engine offline, vLLM's way -- `LLM(path).generate(prompts, SamplingParams(...))`."""
import itertools

from .engine import LLMEngine
from .sampling_params import SamplingParams


class LLM:
    def __init__(self, model, tokenizer=None, gguf_file=None, dtype="auto", **engine_kwargs):
        """`model`: a checkpoint folder / hub id, or an already loaded model (then pass its `tokenizer`)."""
        if isinstance(model, str):
            self.engine = LLMEngine.from_pretrained(model, gguf_file=gguf_file, dtype=dtype, **engine_kwargs)
        else:
            if tokenizer is None:
                raise ValueError("LLM(model_object) needs tokenizer=")
            self.engine = LLMEngine(model, tokenizer, **engine_kwargs)
        self._ids = itertools.count()

    def get_tokenizer(self):
        return self.engine.tokenizer

    def generate(self, prompts, sampling_params=None):
        """Prompts (a string, token ids, or a list of either) -> one RequestOutput each, in order; all run
        together through the scheduler."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        params = sampling_params or SamplingParams()
        params_list = params if isinstance(params, list) else [params] * len(prompts)
        if len(params_list) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params_list)} SamplingParams")
        order = []
        for prompt, p in zip(prompts, params_list):
            ids = self.engine.tokenizer(prompt)["input_ids"] if isinstance(prompt, str) else list(prompt)
            request_id = str(next(self._ids))
            self.engine.add_request(request_id, ids, p)
            order.append(request_id)
        done = {}
        try:
            while self.engine.has_unfinished_requests():
                for out in self.engine.step():
                    if out.finished:
                        done[out.request_id] = out
        finally:
            for request_id in order:
                if request_id not in done:
                    self.engine.abort_request(request_id)
        return [done[request_id] for request_id in order]
