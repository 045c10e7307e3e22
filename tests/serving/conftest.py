"""A tiny LLaMA with a byte-level BPE tokenizer and a chat template, served on 127.0.0.1 by the test session."""
import pytest

from ..conftest import make_hf_checkpoint

SPECIALS = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]   # ids 0, 1, 2 = TINY_LLAMA's pad, bos, eos
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TEXTS = ["The capital of France is Paris.", "Bonjour, comment ça va ? Très bien, merci.", "héllo wörld 世界 ✓",
         "def add(a, b):\n    return a + b\n", "Once upon a time there was a small model that served many users."]
API_KEY = "test-key"
MODEL_NAME = "tiny-llama"


def make_tokenizer(folder):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return fast


@pytest.fixture(scope="session")
def chat_llama(tmp_path_factory):
    """Folder with the tiny LLaMA (HF-written) and its tokenizer."""
    folder = tmp_path_factory.mktemp("chat_llama")
    tokenizer = make_tokenizer(folder)
    make_hf_checkpoint(folder, vocab_size=len(tokenizer), max_position_embeddings=256)
    return str(folder)


class Served:
    def __init__(self, folder, **engine_kwargs):
        from mindformers_hf import AutoModelForCausalLM, AutoTokenizer
        from mindformers_hf.serving import LLMEngine
        from mindformers_hf.serving.api_server import ServerThread, build_app
        from mindformers_hf.serving.async_engine import AsyncEngine

        self.folder = folder
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder)
        self.engine = LLMEngine(self.model, self.tokenizer, **engine_kwargs)
        self.async_engine = AsyncEngine(self.engine).start()
        self.server = ServerThread(build_app(self.async_engine, MODEL_NAME, api_key=API_KEY)).start()
        self.url = self.server.url
        self._hf = None

    def client(self, api_key=API_KEY, **kwargs):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=120, **kwargs)

    @property
    def hf(self):
        if self._hf is None:
            import transformers

            self._hf = transformers.AutoModelForCausalLM.from_pretrained(self.folder, dtype="float32").eval()
        return self._hf

    def hf_greedy(self, ids, max_new_tokens):
        """HF transformers' greedy continuation: (token ids up to and including eos, text)."""
        import torch

        with torch.no_grad():
            out = self.hf.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                                   attention_mask=torch.ones(1, len(ids), dtype=torch.long), pad_token_id=0)
        new = out[0, len(ids):].tolist()
        if 2 in new:
            new = new[:new.index(2) + 1]
        return new, self.tokenizer.decode(new, skip_special_tokens=True)

    def ours_greedy(self, ids, max_new_tokens):
        import numpy as np

        out = self.model.generate(np.array([ids]), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
        new = [int(t) for t in out[0, len(ids):]]
        if 2 in new:
            new = new[:new.index(2) + 1]
        return new, self.tokenizer.decode(new, skip_special_tokens=True)

    def close(self):
        self.server.stop()
        self.async_engine.shutdown()


@pytest.fixture(scope="module")
def served(chat_llama):
    # a small pool and token budget, so long prompts are prefilled in chunks and blocks run out under load
    served = Served(chat_llama, max_num_seqs=8, max_num_batched_tokens=32, block_size=4, num_blocks=48)
    yield served
    served.close()
