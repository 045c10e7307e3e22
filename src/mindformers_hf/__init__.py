"""mindformers_hf: transformers' API on native MindSpore models.

`from mindformers_hf import AutoModelForCausalLM, AutoTokenizer` behaves like transformers. Names are
resolved lazily, so `import mindformers_hf` is fast and never imports torch (nor MindSpore, until a
model or tensor is touched).
"""
import importlib

__version__ = "0.1.0"

# public name -> module that defines it ("transformers" for tensor-free re-exports)
_LAZY = {
    "AutoModel": "mindformers_hf.models.auto",
    "AutoModelForCausalLM": "mindformers_hf.models.auto",
    "AutoTokenizer": "mindformers_hf.tokenization",
    "PreTrainedModel": "mindformers_hf.modeling_utils",
    "LlamaModel": "mindformers_hf.models.llama",
    "LlamaForCausalLM": "mindformers_hf.models.llama",
    "LlamaPreTrainedModel": "mindformers_hf.models.llama",
    "Qwen2Model": "mindformers_hf.models.qwen2",
    "Qwen2ForCausalLM": "mindformers_hf.models.qwen2",
    "Qwen2PreTrainedModel": "mindformers_hf.models.qwen2",
    "Qwen3Model": "mindformers_hf.models.qwen3",
    "Qwen3ForCausalLM": "mindformers_hf.models.qwen3",
    "Qwen3PreTrainedModel": "mindformers_hf.models.qwen3",
    "MistralModel": "mindformers_hf.models.mistral",
    "MistralForCausalLM": "mindformers_hf.models.mistral",
    "MistralPreTrainedModel": "mindformers_hf.models.mistral",
    "Phi3Model": "mindformers_hf.models.phi3",
    "Phi3ForCausalLM": "mindformers_hf.models.phi3",
    "Phi3PreTrainedModel": "mindformers_hf.models.phi3",
    "GlmModel": "mindformers_hf.models.glm",
    "GlmForCausalLM": "mindformers_hf.models.glm",
    "GlmPreTrainedModel": "mindformers_hf.models.glm",
    "Glm4Model": "mindformers_hf.models.glm4",
    "Glm4ForCausalLM": "mindformers_hf.models.glm4",
    "Glm4PreTrainedModel": "mindformers_hf.models.glm4",
    "GPT2Model": "mindformers_hf.models.gpt2",
    "GPT2LMHeadModel": "mindformers_hf.models.gpt2",
    "GPT2PreTrainedModel": "mindformers_hf.models.gpt2",
    "MixtralModel": "mindformers_hf.models.mixtral",
    "MixtralForCausalLM": "mindformers_hf.models.mixtral",
    "MixtralPreTrainedModel": "mindformers_hf.models.mixtral",
    "Qwen2MoeModel": "mindformers_hf.models.qwen2_moe",
    "Qwen2MoeForCausalLM": "mindformers_hf.models.qwen2_moe",
    "Qwen2MoePreTrainedModel": "mindformers_hf.models.qwen2_moe",
    "Qwen3MoeModel": "mindformers_hf.models.qwen2_moe",
    "Qwen3MoeForCausalLM": "mindformers_hf.models.qwen2_moe",
    "Qwen3MoePreTrainedModel": "mindformers_hf.models.qwen2_moe",
    "DeepseekV2Model": "mindformers_hf.models.deepseek_v2",
    "DeepseekV2ForCausalLM": "mindformers_hf.models.deepseek_v2",
    "DeepseekV2PreTrainedModel": "mindformers_hf.models.deepseek_v2",
    "DeepseekV3Model": "mindformers_hf.models.deepseek_v2",
    "DeepseekV3ForCausalLM": "mindformers_hf.models.deepseek_v2",
    "DeepseekV3PreTrainedModel": "mindformers_hf.models.deepseek_v2",
    "DynamicCache": "mindformers_hf.cache_utils",
    "GenerationMixin": "mindformers_hf.generation",
    "LogitsProcessor": "mindformers_hf.generation",
    "LogitsProcessorList": "mindformers_hf.generation",
    "LogitsWarper": "mindformers_hf.generation",
    "TemperatureLogitsWarper": "mindformers_hf.generation",
    "TopKLogitsWarper": "mindformers_hf.generation",
    "TopPLogitsWarper": "mindformers_hf.generation",
    "MinPLogitsWarper": "mindformers_hf.generation",
    "RepetitionPenaltyLogitsProcessor": "mindformers_hf.generation",
    "NoRepeatNGramLogitsProcessor": "mindformers_hf.generation",
    "MinLengthLogitsProcessor": "mindformers_hf.generation",
    "MinNewTokensLengthLogitsProcessor": "mindformers_hf.generation",
    "SuppressTokensLogitsProcessor": "mindformers_hf.generation",
    "ForcedBOSTokenLogitsProcessor": "mindformers_hf.generation",
    "ForcedEOSTokenLogitsProcessor": "mindformers_hf.generation",
    "InfNanRemoveLogitsProcessor": "mindformers_hf.generation",
    "LogitNormalization": "mindformers_hf.generation",
    "StoppingCriteria": "mindformers_hf.generation",
    "StoppingCriteriaList": "mindformers_hf.generation",
    "MaxLengthCriteria": "mindformers_hf.generation",
    "MaxTimeCriteria": "mindformers_hf.generation",
    "EosTokenCriteria": "mindformers_hf.generation",
    "StopStringCriteria": "mindformers_hf.generation",
    "GenerateDecoderOnlyOutput": "mindformers_hf.generation",
    "GenerateBeamDecoderOnlyOutput": "mindformers_hf.generation",
    "StaticCache": "mindformers_hf.cache_utils",
    "CheckpointError": "mindformers_hf.safetensors_io",
    "pipeline": "mindformers_hf.pipelines",
    "TextGenerationPipeline": "mindformers_hf.pipelines",
    "Trainer": "mindformers_hf.trainer",
    "TrainingArguments": "mindformers_hf.trainer",
    "TrainerCallback": "mindformers_hf.trainer",
    "TrainerState": "mindformers_hf.trainer",
    "TrainerControl": "mindformers_hf.trainer",
    "DefaultFlowCallback": "mindformers_hf.trainer",
    "ProgressCallback": "mindformers_hf.trainer",
    "PrinterCallback": "mindformers_hf.trainer",
    "EarlyStoppingCallback": "mindformers_hf.trainer",
    "EvalPrediction": "mindformers_hf.trainer",
    "IntervalStrategy": "mindformers_hf.trainer",
    "SchedulerType": "mindformers_hf.trainer",
    "get_scheduler": "mindformers_hf.trainer",
    "set_seed": "mindformers_hf.trainer",
    "DataCollatorForLanguageModeling": "mindformers_hf.data",
    "DataCollatorWithPadding": "mindformers_hf.data",
    "DefaultDataCollator": "mindformers_hf.data",
    "default_data_collator": "mindformers_hf.data",
    "AutoConfig": "mindformers_hf.models.auto",  # transformers' own, with remote code never executed
    # tensor-free names from transformers
    "PretrainedConfig": "transformers",
    "PreTrainedConfig": "transformers",
    "LlamaConfig": "transformers",
    "Qwen2Config": "transformers",
    "Qwen3Config": "transformers",
    "MistralConfig": "transformers",
    "Phi3Config": "transformers",
    "GlmConfig": "transformers",
    "Glm4Config": "transformers",
    "GPT2Config": "transformers",
    "MixtralConfig": "transformers",
    "Qwen2MoeConfig": "transformers",
    "Qwen3MoeConfig": "transformers",
    "DeepseekV2Config": "transformers",
    "DeepseekV3Config": "transformers",
    "GenerationConfig": "transformers",
    "PreTrainedTokenizerFast": "transformers",
    "PreTrainedTokenizerBase": "transformers",
    "BatchEncoding": "transformers",
    "TextStreamer": "transformers",
    "TextIteratorStreamer": "transformers",
    "logging": "transformers",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mindformers_hf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
