"""`mindformers-hf generate --model org/name` downloads the repo from the (local) hub, as transformers would."""
import numpy as np

from mindformers_hf.commands import cli
from tests.conftest import make_hf_checkpoint
from tests.trainer.conftest import make_char_tokenizer


def test_generate_with_a_hub_repo_id(hub_env, tmp_path, capsys):
    import torch
    import transformers

    folder = make_char_tokenizer(make_hf_checkpoint(tmp_path / "tiny", vocab_size=40, seed=1))
    hub_env.server.add_folder("org/tiny-llama", folder)
    prompt = "the quick"
    assert cli.main(["generate", "--model", "org/tiny-llama", "--max-new-tokens", "6", "--verbose", prompt]) == 0
    out = capsys.readouterr()
    assert "Loading org/tiny-llama" in out.err
    # the same greedy text HF transformers writes from the folder the server serves
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor(np.asarray(tokenizer(prompt)["input_ids"]))[None]
    expected = hf.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    reply = tokenizer.decode(expected[0, ids.shape[1]:], skip_special_tokens=True)
    assert out.out == prompt + reply + "\n"  # TextStreamer ends the stream with a newline
