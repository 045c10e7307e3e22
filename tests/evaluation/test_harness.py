"""The `mindformers_hf` lm_eval backend against lm_eval's own `hf` backend (torch) on the same checkpoint and
local tasks: the same metrics, per-sample log-likelihoods and generated texts."""
import math
import subprocess
import sys

import pytest

lm_eval = pytest.importorskip("lm_eval")

from .conftest import local_task_manager  # noqa: E402

TASKS = ["tiny_mc", "tiny_gen", "tiny_rolling"]


def evaluate(model, folder, task_dir, model_args="", **kwargs):
    import mindformers_hf.evaluation  # noqa: F401  (registers the model)

    model_args = f"pretrained={folder},dtype=float32" + model_args
    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=TASKS,
                                   batch_size=2, device="cpu", task_manager=local_task_manager(task_dir),
                                   log_samples=True, **kwargs)


def assert_same_results(ours, hf):
    """Metrics within 1e-3 relative, per-sample log-likelihoods within 2e-3, the same generated texts."""
    for task in TASKS:
        for key, want in hf["results"][task].items():
            got = ours["results"][task][key]
            if isinstance(want, float) and math.isfinite(want):
                assert got == pytest.approx(want, rel=1e-3), (task, key)
        assert len(ours["samples"][task]) == len(hf["samples"][task])
        for got, want in zip(ours["samples"][task], hf["samples"][task]):
            assert got["arguments"] == want["arguments"]  # the same prompts reached both models
            for got_resp, want_resp in zip(got["resps"], want["resps"]):
                if isinstance(want_resp[0], str):
                    assert got_resp == want_resp, task
                else:
                    got_value, want_value = got_resp[0], want_resp[0]
                    if isinstance(want_value, (tuple, list)):  # (log-likelihood, is_greedy)
                        assert got_value[1] == want_value[1]
                        got_value, want_value = got_value[0], want_value[0]
                    assert got_value == pytest.approx(want_value, abs=2e-3), task


@pytest.fixture(scope="module")
def hf_results(char_llama_dir, task_dir):
    return evaluate("hf", char_llama_dir, task_dir)


def test_same_metrics_logliks_and_texts_as_lm_eval_hf(char_llama_dir, task_dir, hf_results):
    ours = evaluate("mindformers_hf", char_llama_dir, task_dir)
    assert_same_results(ours, hf_results)
    assert any(s["resps"][0][0] for s in ours["samples"]["tiny_gen"])  # something was generated
    # the rolling task needs several 64-token windows for its first document
    assert len(ours["samples"]["tiny_rolling"][0]["arguments"][0][0]) > 2 * 64


def test_chat_template_and_system_instruction_as_lm_eval_hf(char_llama_dir, task_dir):
    kwargs = dict(apply_chat_template=True, system_instruction="be brief", limit=3)
    ours = evaluate("mindformers_hf", char_llama_dir, task_dir, **kwargs)
    hf = evaluate("hf", char_llama_dir, task_dir, **kwargs)
    assert ours["samples"]["tiny_gen"][0]["arguments"][0][0].startswith("system be brief\nuser ")
    assert_same_results(ours, hf)


def test_smollm2_same_as_lm_eval_hf(smollm2, smollm2_hf_folder, task_dir):
    """SmolLM2-135M-Instruct, two documents per task: ours reads the GGUF, lm_eval's `hf` backend the fp32 weights
    transformers dequantized from the same GGUF (saved once by the session's fixture)."""
    ours = evaluate("mindformers_hf", smollm2.folder, task_dir, model_args=f",gguf_file={smollm2.file}", limit=2)
    hf = evaluate("hf", smollm2_hf_folder, task_dir, limit=2)
    assert_same_results(ours, hf)
    assert all(s["resps"][0][0] for s in ours["samples"]["tiny_gen"])


def test_model_args_are_checked(char_llama_dir):
    from mindformers_hf.evaluation import MindFormersLM

    with pytest.raises(TypeError, match="unknown model_args.*no_such_arg"):
        MindFormersLM(pretrained=char_llama_dir, no_such_arg=1)
    with pytest.raises(NotImplementedError, match="peft"):
        MindFormersLM(pretrained=char_llama_dir, peft="adapter")
    with pytest.raises(ValueError):
        MindFormersLM(pretrained=char_llama_dir, batch_size="eight")


def test_imports_stay_lazy():
    code = ("import sys\nimport mindformers_hf\nassert 'lm_eval' not in sys.modules\n"
            "import mindformers_hf.evaluation\nassert 'mindformers_hf.evaluation.harness' not in sys.modules\n"
            "from lm_eval.api.registry import get_model\n"
            "assert get_model('mindformers_hf').__name__ == 'MindFormersLM'\n"
            "from mindformers_hf.evaluation import perplexity, ceval_accuracy, rouge_bleu, pass_at_k, run_humaneval\n"
            "rouge_bleu(['今天天气很好'], ['今天天气不错']), rouge_bleu(['a cat'], ['the cat'], language='en')\n"
            "assert 'torch' not in sys.modules, 'torch'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
