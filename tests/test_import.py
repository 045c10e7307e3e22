"""`import mindformers_hf` is fast and never imports torch (nor MindSpore until a model is touched)."""
import subprocess
import sys


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_does_not_import_torch_and_is_fast():
    result = _run(
        "import time, sys\n"
        "import mindspore\n"
        "t = time.perf_counter()\n"
        "import mindformers_hf\n"
        "elapsed = time.perf_counter() - t\n"
        "print('torch' in sys.modules, elapsed)\n"
    )
    assert result.returncode == 0, result.stderr
    torch_loaded, elapsed = result.stdout.split()
    assert torch_loaded == "False"
    assert float(elapsed) < 3.0


def test_loading_a_model_class_does_not_import_torch():
    result = _run(
        "import sys\n"
        "from mindformers_hf import LlamaForCausalLM, AutoModelForCausalLM\n"
        "print('torch' in sys.modules)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_unknown_public_name_is_an_attribute_error():
    result = _run("import mindformers_hf\nmindformers_hf.NoSuchThing\n")
    assert "AttributeError" in result.stderr and "NoSuchThing" in result.stderr
