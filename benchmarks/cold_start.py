"""Cold start: the README's main command, from a new process to the whole answer, ours vs HF transformers.

    python benchmarks/cold_start.py            # 3 rounds per side, sides alternating; writes docs/benchmarks.md
    python benchmarks/cold_start.py --quick    # 1 round, prints only

Ours is `mindformers-hf generate --chat-template "What is the capital of France?"` with torch hidden from the
process, as on the fresh machine the README's first command installs (no torch there; with torch installed,
transformers' own config modules import it, which costs ours about 2 s that a new user does not pay). HF is the
same question through transformers on torch: `AutoTokenizer` / `AutoModelForCausalLM.from_pretrained(folder,
gguf_file=...)` on the same embedded SmolLM2 GGUF, the chat template, greedy `generate` with a `TextStreamer`
and the same max_new_tokens. Each round is a new Python process; the wall time covers interpreter start,
imports, loading (GGUF dequantisation), compilation and generation.
Both sides must print the same answer.
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import arguments, machine, publish  # noqa: E402

QUESTION = "What is the capital of France?"
MAX_NEW_TOKENS = 128  # the CLI's default

# Hides torch as the demo venv lacks it: find_spec says absent (transformers' availability check) and an import
# fails (tests/trainer/test_resume.py does the same).
NO_TORCH = """
import importlib.util, sys
_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] == "torch" else _find_spec(name, *a)
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError("No module named 'torch' (hidden by benchmarks/cold_start.py)")
sys.meta_path.insert(0, NoTorch())
"""

OURS = NO_TORCH + f"""
sys.argv = ["mindformers-hf", "generate", "--chat-template", {QUESTION!r}, "--max-new-tokens", "{MAX_NEW_TOKENS}"]
from mindformers_hf.commands.cli import main
main()
"""

HF = f"""
from mindformers_hf.gguf_io import default_gguf_model
folder, gguf = default_gguf_model()
from transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer
tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf)
text = tokenizer.apply_chat_template([{{"role": "user", "content": {QUESTION!r}}}], tokenize=False,
                                     add_generation_prompt=True)
enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
model.generate(**enc, streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True),
               max_new_tokens={MAX_NEW_TOKENS}, do_sample=False)
"""


def run(code):
    """(wall seconds, stdout) of one new Python process running `code`."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONWARNINGS="ignore")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"cold_start: a side failed (exit {proc.returncode}):\n{err.decode()[-2000:]}")
    return seconds, out.decode().strip()


def main():
    _, args = arguments(__doc__, skip_model=False)
    rounds = 1 if args.quick else 3
    times = {"ours": [], "hf": []}
    answers = {}
    for round_index in range(rounds):
        for side, code in (("ours", OURS), ("hf", HF)):
            seconds, answer = run(code)
            times[side].append(seconds)
            answers.setdefault(side, answer)
            print(f"round {round_index + 1}: {side} {seconds:.2f} s  {answer!r}", flush=True)
    if answers["ours"] != answers["hf"]:
        sys.exit(f"cold_start: the answers differ: ours {answers['ours']!r}, HF {answers['hf']!r}")
    best = {side: min(values) for side, values in times.items()}
    median = {side: sorted(values)[len(values) // 2] for side, values in times.items()}
    load = os.getloadavg()[0]
    section = "\n".join([
        "## Cold start",
        "",
        f"`python benchmarks/cold_start.py` on a {machine()}, load {load:.1f} at the end: the README's main command "
        f"(`mindformers-hf generate --chat-template \"{QUESTION}\"`, torch hidden as in the demo venv) and the same "
        "question through transformers on torch with the same embedded SmolLM2 GGUF, each round a new process "
        f"(imports, GGUF loading, compilation, greedy generation of the whole answer), sides alternating, "
        f"{rounds} rounds. Ratio = HF / ours (> 1: ours answers sooner). Both answered {answers['ours']!r}.",
        "",
        "| side | best s | median s | rounds s |",
        "| --- | ---: | ---: | --- |",
        *(f"| {side} | {best[side]:.2f} | {median[side]:.2f} | {', '.join(f'{t:.2f}' for t in times[side])} |"
          for side in ("ours", "hf")),
        "",
        f"Ratio (best): **{best['hf'] / best['ours']:.2f}x**; (median): {median['hf'] / median['ours']:.2f}x.",
        "",
    ])
    publish(section, args.quick)


if __name__ == "__main__":
    main()
