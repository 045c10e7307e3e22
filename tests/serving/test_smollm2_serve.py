"""The server on the real model (SmolLM2-135M-Instruct GGUF): greedy chat and completions equal
`model.generate()` and HF transformers', alone and with concurrent streams."""
from concurrent.futures import ThreadPoolExecutor

import pytest

torch = pytest.importorskip("torch")
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

QUESTIONS = ["What is the capital of France?", "Name a colour of the sky.", "Write one word about the sea."]


@pytest.fixture(scope="module")
def smol_server(smollm2):
    from mindformers_hf.serving import LLMEngine
    from mindformers_hf.serving.api_server import ServerThread, build_app
    from mindformers_hf.serving.async_engine import AsyncEngine

    engine = LLMEngine(smollm2.ours, smollm2.tokenizer, max_num_seqs=4, num_blocks=64)
    async_engine = AsyncEngine(engine).start()
    server = ServerThread(build_app(async_engine, "smollm2")).start()
    yield openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300), engine
    server.stop()
    async_engine.shutdown()


def _expected(smollm2, ids, max_new_tokens):
    """(HF transformers' text, ours) from greedy generate on the same ids."""
    import numpy as np

    with torch.no_grad():
        hf = smollm2.hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=max_new_tokens, do_sample=False)[0, len(ids):]
    ours = smollm2.ours.generate(np.array([ids]), max_new_tokens=max_new_tokens, do_sample=False)[0, len(ids):]
    decode = lambda t: smollm2.tokenizer.decode(list(t), skip_special_tokens=True)  # noqa: E731
    return decode(hf.tolist()), decode(ours.tolist())


def test_greedy_chat_and_completion_equal_hf_and_generate(smollm2, smol_server):
    client, _ = smol_server
    tok = smollm2.tokenizer
    messages = [{"role": "user", "content": QUESTIONS[0]}]
    ids = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
              add_special_tokens=False)["input_ids"]
    hf_text, ours_text = _expected(smollm2, ids, 12)
    assert hf_text == ours_text and "Paris" in hf_text
    chat = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=12, temperature=0)
    assert chat.choices[0].message.content == hf_text
    prompt = "The capital of France is"
    hf_text, ours_text = _expected(smollm2, tok(prompt)["input_ids"], 10)
    completion = client.completions.create(model="smollm2", prompt=prompt, max_tokens=10, temperature=0)
    assert completion.choices[0].text == hf_text == ours_text


def test_concurrent_chat_streams_equal_one_at_a_time(smol_server):
    client, engine = smol_server

    def ask(job, stream):
        question, max_tokens = job
        kwargs = dict(model="smollm2", messages=[{"role": "user", "content": question}], max_tokens=max_tokens,
                      temperature=0)
        if not stream:
            return client.chat.completions.create(**kwargs).choices[0].message.content
        return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kwargs)
                       if c.choices)

    jobs = [(QUESTIONS[i], 4 + 4 * i) for i in range(3)]
    alone = [ask(job, False) for job in jobs]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda job: ask(job, True), jobs))
    assert together == alone
    assert engine.kv_blocks()[0] == 0
