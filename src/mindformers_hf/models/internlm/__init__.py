"""InternLM v1 (`InternLMForCausalLM`: internlm-7b, internlm-chat-7b, internlm-20b), a format the Hub runs with
trust_remote_code, read natively: LLaMA's tensor names, a bias on q/k/v/o (`bias`, read as `attention_bias`
by InternLMConfig) and as many kv heads as query heads. No code from the repo runs."""
from ..family import Family, family_package

FAMILY = Family("internlm", "InternLM", module=".modeling_internlm", heads=(), config=".configuration_internlm:InternLMConfig",
                architectures=("InternLMForCausalLM",))
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
