"""gpt-oss: LLaMA attention with biases and a learned sink logit per head (`self_attn.sinks`, joining each row's
softmax), sliding-window layers alternating with full ones (`layer_types`), YaRN rotary, and in every layer a
sparse MLP of its own (experts.py): a router with a bias, softmax over the top-k logits, and experts whose
interleaved gate/up columns feed a clamped SwiGLU, all with biases. Checkpoints hold the experts stacked, under
the parameters' own names."""
from ..family import DecoderVariant, Family, MoeVariant, family_package

FAMILY = Family("gpt_oss", "GptOss", DecoderVariant(sinks=True, mlp="mindformers_hf.models.gpt_oss.experts:GptOssMLP"),
                parent="mixtral", moe=MoeVariant(checkpoint_experts=None, expert_size="intermediate_size"))
__all__, __getattr__, __dir__ = family_package(globals(), FAMILY)
