"""`SamplingParams`: how one request decodes, with vLLM's names and defaults; `validate()` names a bad field."""
from dataclasses import dataclass, field
from typing import List, Optional, Union


@dataclass
class SamplingParams:
    n: int = 1
    max_tokens: Optional[int] = 16          # None: up to the model's context length
    temperature: float = 1.0                # 0: greedy
    top_p: float = 1.0
    top_k: int = 0                          # 0 or -1: off
    seed: Optional[int] = None
    stop: Union[None, str, List[str]] = None
    stop_token_ids: List[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: Optional[int] = None          # log-probabilities of the sampled tokens (+ this many top ones)
    prompt_logprobs: Optional[int] = None   # the same for the prompt's tokens (the first has none)
    skip_special_tokens: bool = True

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])

    @property
    def greedy(self):
        return self.temperature == 0

    def validate(self):
        """Raise ValueError naming the first invalid field (the server answers it with a 400)."""
        checks = (
            ("n", isinstance(self.n, int) and self.n >= 1, "must be an integer >= 1"),
            ("max_tokens", self.max_tokens is None or (isinstance(self.max_tokens, int) and self.max_tokens >= 1),
             "must be an integer >= 1"),
            ("temperature", _number(self.temperature) and self.temperature >= 0, "must be a number >= 0"),
            ("top_p", _number(self.top_p) and 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("top_k", isinstance(self.top_k, int) and (self.top_k >= 0 or self.top_k == -1),
             "must be -1, 0 or a positive integer"),
            ("seed", self.seed is None or isinstance(self.seed, int), "must be an integer"),
            ("stop", all(isinstance(s, str) and s for s in self.stop), "must be non-empty strings"),
            ("stop_token_ids", all(isinstance(t, int) for t in self.stop_token_ids), "must be integers"),
            ("logprobs", self.logprobs is None or (isinstance(self.logprobs, int) and 0 <= self.logprobs <= 20),
             "must be an integer in [0, 20]"),
            ("prompt_logprobs", self.prompt_logprobs is None or (isinstance(self.prompt_logprobs, int)
                                                                 and 0 <= self.prompt_logprobs <= 20),
             "must be an integer in [0, 20]"),
        )
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name} {rule}, got {getattr(self, name)!r}")
        return self


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
