"""Serving: a continuous-batching engine over a paged KV cache (`LLMEngine`), its offline front (`LLM`,
vLLM-style) and an OpenAI-compatible HTTP server (api_server.py, `mindformers-hf serve`, the [serve] extra)."""
from .engine import CompletionOutput, LLMEngine, RequestOutput
from .llm import LLM
from .sampling_params import SamplingParams

__all__ = ["LLM", "LLMEngine", "SamplingParams", "RequestOutput", "CompletionOutput"]
