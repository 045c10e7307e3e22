"""from_pretrained("org/name") through huggingface_hub against a local hub on 127.0.0.1 (tests/hub/hub_server.py).

Expected logits come from HF transformers (torch) on the same checkpoint folder the server serves.
"""
import glob
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM
from mindformers_hf import hub
from tests.conftest import batch, hf_forward, make_hf_checkpoint

REPO = "org/tiny"
# Files a repo often carries that we must never download.
JUNK = {"pytorch_model.bin": b"\x80\x02pickle" * 64, "flax_model.msgpack": b"m" * 256, "tf_model.h5": b"h" * 256,
        "onnx/model.onnx": b"o" * 256, "consolidated.safetensors": b"c" * 512, "modeling_custom.py": b"import os\n"}


def _tokenizer_files(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 128)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>", eos_token="</s>").save_pretrained(
        folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tokenizer_files(make_hf_checkpoint(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def tiny_v2(tmp_path_factory):
    return make_hf_checkpoint(tmp_path_factory.mktemp("tiny_v2"), seed=1)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    return make_hf_checkpoint(tmp_path_factory.mktemp("sharded"), save_kwargs={"max_shard_size": "30KB"})


def _logits(model, seed=0):
    ids, mask = batch(pad_left=(0, 0), seed=seed)
    return np.asarray(model(input_ids=ids, attention_mask=mask).logits)


def _hf_logits(folder, seed=0):
    ids, mask = batch(pad_left=(0, 0), seed=seed)
    return hf_forward(folder, ids, mask).logits.numpy()


def _gets(server):
    return [path.split("?")[0] for method, path, _ in server.requests if method == "GET" and "/resolve/" in path]


def _publish(server, folder, repo=REPO, **extra):
    sha = server.add_folder(repo, folder)
    if extra:
        sha = server.add_commit(repo, extra)
    return sha


# ------------------------------------------------------------------------------------------- downloads
def test_download_matches_hf_skips_other_formats_and_shows_progress(hub_env, tiny, capfd):
    server = hub_env.server
    _publish(server, tiny, **JUNK)
    model = AutoModelForCausalLM.from_pretrained(REPO)
    np.testing.assert_allclose(_logits(model), _hf_logits(tiny), atol=1e-4, rtol=0)

    fetched = {path.rsplit("/", 1)[-1] for path in _gets(server)}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= fetched
    assert not fetched & {"pytorch_model.bin", "flax_model.msgpack", "tf_model.h5", "model.onnx",
                          "consolidated.safetensors", "modeling_custom.py"}
    assert "Fetching" in capfd.readouterr().err  # huggingface_hub's progress bars are on
    # the same cache transformers uses
    assert glob.glob(os.path.join(hub_env.cache, "models--org--tiny", "snapshots", "*", "model.safetensors"))

    server.stop()  # cache hit: no server needed any more
    again = AutoModelForCausalLM.from_pretrained(REPO)
    np.testing.assert_allclose(_logits(again), _logits(model), atol=0, rtol=0)


def test_sharded_checkpoint_downloads_only_indexed_shards(hub_env, sharded):
    server = hub_env.server
    with open(os.path.join(sharded, "model.safetensors.index.json")) as f:
        shards = set(json.load(f)["weight_map"].values())
    assert len(shards) > 1
    _publish(server, sharded, **{"consolidated.safetensors": b"x" * 1024, "model-extra.safetensors": b"y" * 64})
    model = AutoModelForCausalLM.from_pretrained(REPO)
    np.testing.assert_allclose(_logits(model), _hf_logits(sharded), atol=1e-4, rtol=0)
    fetched = {p.rsplit("/", 1)[-1] for p in _gets(server) if p.endswith(".safetensors")}
    assert fetched == shards


def test_offline_modes(hub_env, tiny):
    server = hub_env.server
    _publish(server, tiny)
    with pytest.raises(hub.NotCachedError, match="local_files_only=True") as info:
        AutoModelForCausalLM.from_pretrained(REPO, local_files_only=True)
    assert info.value.repo_id == REPO
    hub_env.offline()
    with pytest.raises(hub.NotCachedError, match="HF_HUB_OFFLINE=1"):
        AutoModelForCausalLM.from_pretrained(REPO)
    assert server.requests == []  # offline means no request at all

    hub_env.offline(False)
    reference = _logits(AutoModelForCausalLM.from_pretrained(REPO))
    count = len(server.requests)
    hub_env.offline()
    np.testing.assert_array_equal(_logits(AutoModelForCausalLM.from_pretrained(REPO)), reference)
    hub_env.offline(False)
    np.testing.assert_array_equal(_logits(AutoModelForCausalLM.from_pretrained(REPO, local_files_only=True)),
                                  reference)
    assert len(server.requests) == count


def test_cache_dir_and_force_download(hub_env, tiny, tmp_path):
    server = hub_env.server
    _publish(server, tiny)
    cache = str(tmp_path / "elsewhere")
    AutoModelForCausalLM.from_pretrained(REPO, cache_dir=cache)
    assert glob.glob(os.path.join(cache, "models--org--tiny", "snapshots", "*", "model.safetensors"))
    assert not os.path.exists(os.path.join(hub_env.cache, "models--org--tiny"))
    AutoModelForCausalLM.from_pretrained(REPO, cache_dir=cache, local_files_only=True)
    assert server.count("GET", "/model.safetensors") == 1
    AutoModelForCausalLM.from_pretrained(REPO, cache_dir=cache, force_download=True)
    assert server.count("GET", "/model.safetensors") == 2


def test_offline_with_metadata_cached_but_not_weights(hub_env, tiny):
    """The tokenizer was fetched (by transformers) but the weights never were: the error names the file."""
    from transformers import AutoTokenizer

    _publish(hub_env.server, tiny)
    AutoTokenizer.from_pretrained(REPO)
    hub_env.offline()
    with pytest.raises(hub.NotCachedError, match="model.safetensors.*HF_HUB_OFFLINE=1"):
        AutoModelForCausalLM.from_pretrained(REPO)


def test_revision_by_branch_and_by_commit(hub_env, tiny, tiny_v2):
    server = hub_env.server
    first = server.add_folder(REPO, tiny)
    server.add_folder(REPO, tiny_v2, branch="v2")
    server.add_folder(REPO, tiny_v2)  # main moves on to the v2 weights
    want_v1, want_v2 = _hf_logits(tiny), _hf_logits(tiny_v2)

    np.testing.assert_allclose(_logits(AutoModelForCausalLM.from_pretrained(REPO)), want_v2, atol=1e-4, rtol=0)
    np.testing.assert_allclose(_logits(AutoModelForCausalLM.from_pretrained(REPO, revision="v2")), want_v2,
                               atol=1e-4, rtol=0)
    np.testing.assert_allclose(_logits(AutoModelForCausalLM.from_pretrained(REPO, revision=first)), want_v1,
                               atol=1e-4, rtol=0)
    server.stop()  # a commit hash resolves from the cache alone
    np.testing.assert_allclose(_logits(AutoModelForCausalLM.from_pretrained(REPO, revision=first)), want_v1,
                               atol=1e-4, rtol=0)


def test_missing_repo_revision_and_file_errors(hub_env, tiny, tmp_path):
    server = hub_env.server
    _publish(server, tiny)
    with pytest.raises(hub.RepositoryNotFoundError, match="'org/nope' is not a local folder and not a model repo"):
        AutoModelForCausalLM.from_pretrained("org/nope")
    with pytest.raises(hub.RevisionNotFoundError, match="Revision 'no-such-branch' not found in org/tiny") as info:
        AutoModelForCausalLM.from_pretrained(REPO, revision="no-such-branch")
    assert isinstance(info.value, OSError) and info.value.revision == "no-such-branch"
    with pytest.raises(hub.HubFileNotFoundError, match="no file 'other.gguf'; its GGUF files: none"):
        AutoModelForCausalLM.from_pretrained(REPO, gguf_file="other.gguf")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        AutoModelForCausalLM.from_pretrained(str(tmp_path / "no" / "such" / "dir"))

    # an index naming a shard the repo does not have
    with open(os.path.join(tiny, "config.json"), "rb") as f:
        config = f.read()
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}}
    server.add_commit("org/broken", {"config.json": config, "model.safetensors.index.json": json.dumps(index).encode()})
    with pytest.raises(hub.HubFileNotFoundError, match="has no file 'model-00001-of-00002.safetensors'"):
        AutoModelForCausalLM.from_pretrained("org/broken")


def test_unreachable_hub_and_nothing_cached(hub_env, tiny):
    _publish(hub_env.server, tiny)
    hub_env.server.stop()
    with pytest.raises(hub.NotCachedError, match="could not be reached"):
        AutoModelForCausalLM.from_pretrained(REPO)


def test_private_repo_needs_the_token(hub_env, tiny):
    server = hub_env.server
    server.add_folder("org/private", tiny, private=True)
    with pytest.raises(hub.RepositoryNotFoundError, match="pass token="):
        AutoModelForCausalLM.from_pretrained("org/private")
    model = AutoModelForCausalLM.from_pretrained("org/private", token="hf_test_token")
    np.testing.assert_allclose(_logits(model), _hf_logits(tiny), atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------- safety
def test_interrupted_download_resumes_with_a_range_request(hub_env, tiny, monkeypatch):
    from huggingface_hub import constants

    # huggingface_hub keeps what it received in whole chunks (10 MB by default); a tiny file needs tiny chunks
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16384)
    server = hub_env.server
    _publish(server, tiny)
    cut = os.path.getsize(os.path.join(tiny, "model.safetensors")) // 3
    server.fault(REPO, "model.safetensors", cut_after=cut)
    model = AutoModelForCausalLM.from_pretrained(REPO)
    np.testing.assert_allclose(_logits(model), _hf_logits(tiny), atol=1e-4, rtol=0)
    ranges = [r for m, p, r in server.requests if m == "GET" and p.endswith("/model.safetensors")]
    assert len(ranges) == 2 and ranges[0] is None
    resumed_at = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= cut  # the second request asked only for the rest


def test_corrupt_download_is_fetched_again(hub_env, tiny):
    server = hub_env.server
    _publish(server, tiny)
    server.fault(REPO, "model.safetensors", corrupt=True, times=1)
    model = AutoModelForCausalLM.from_pretrained(REPO)
    np.testing.assert_allclose(_logits(model), _hf_logits(tiny), atol=1e-4, rtol=0)
    assert server.count("GET", "/model.safetensors") == 2


def test_corrupt_download_is_refused_never_loaded(hub_env, tiny):
    server = hub_env.server
    _publish(server, tiny)
    server.fault(REPO, "model.safetensors", corrupt=True, times=None)
    with pytest.raises(hub.CorruptFileError, match="'model.safetensors' of org/tiny .* still corrupt after"):
        AutoModelForCausalLM.from_pretrained(REPO)
    assert server.count("GET", "/model.safetensors") == 2
    with open(os.path.join(tiny, "model.safetensors"), "rb") as f:
        blob = os.path.join(hub_env.cache, "models--org--tiny", "blobs", hashlib.sha256(f.read()).hexdigest())
    assert not os.path.exists(blob)  # the bad bytes are gone from the cache
    assert not glob.glob(os.path.join(hub_env.cache, "models--org--tiny", "snapshots", "*", "model.safetensors"))


def test_corrupted_cache_is_detected(hub_env, tiny, monkeypatch):
    server = hub_env.server
    _publish(server, tiny)
    reference = _logits(AutoModelForCausalLM.from_pretrained(REPO))
    (pointer,) = glob.glob(os.path.join(hub_env.cache, "models--org--tiny", "snapshots", "*", "model.safetensors"))

    def damage():
        blob = os.path.realpath(pointer)
        with open(blob, "r+b") as f:
            f.seek(os.path.getsize(blob) - 7)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0x01]))  # one bit in the last tensor; the size stays right

    blob = os.path.basename(os.path.realpath(pointer))
    assert os.path.isfile(os.path.join(hub_env.cache, "models--org--tiny", ".verified", blob))  # hashed once
    damage()
    hub_env.offline()
    with monkeypatch.context() as patch:  # the documented opt-out really skips the check
        patch.setenv(hub.VERIFY_ENV, "0")
        assert not np.array_equal(_logits(AutoModelForCausalLM.from_pretrained(REPO)), reference)
    with pytest.raises(hub.CorruptFileError, match="cached 'model.safetensors' of org/tiny .* is corrupt"):
        AutoModelForCausalLM.from_pretrained(REPO)
    hub_env.offline(False)
    gets = server.count("GET", "/model.safetensors")
    np.testing.assert_array_equal(_logits(AutoModelForCausalLM.from_pretrained(REPO)), reference)  # refetched
    assert server.count("GET", "/model.safetensors") == gets + 1


def test_pickle_only_repo_is_refused_without_download(hub_env, tiny):
    server = hub_env.server
    server.add_folder("org/old", tiny, skip=("model.safetensors",))
    server.add_commit("org/old", {"pytorch_model.bin": b"\x80\x02" + b"p" * 1000})
    with pytest.raises(hub.UnsupportedWeightsError, match="only pickled weights \\(pytorch_model.bin\\).*never "
                                                          "unpickles.*save_pretrained") as info:
        AutoModelForCausalLM.from_pretrained("org/old")
    assert isinstance(info.value, OSError)
    assert not [p for p in _gets(server) if p.endswith(".bin")]


def test_remote_code_is_never_executed(hub_env, tiny):
    server = hub_env.server
    with open(os.path.join(tiny, "config.json")) as f:
        config = json.load(f)
    auto_map = {"AutoConfig": "configuration_custom.CustomConfig", "AutoModelForCausalLM": "modeling_custom.Custom"}
    trap = b"raise SystemExit('remote code ran')\n"
    # a known model_type with an auto_map: transformers' config class and our native model
    server.add_folder(REPO, tiny)
    server.add_commit(REPO, {"config.json": json.dumps({**config, "auto_map": auto_map}).encode(),
                             "modeling_custom.py": trap, "configuration_custom.py": trap})
    model = AutoModelForCausalLM.from_pretrained(REPO, trust_remote_code=True)
    np.testing.assert_allclose(_logits(model), _hf_logits(tiny), atol=1e-4, rtol=0)
    # an architecture only the repo's code knows (chatglm, qwen, ... are read natively: tests/models/test_remote_formats.py)
    custom = {**config, "model_type": "custom_lm", "architectures": ["CustomLMForCausalLM"], "auto_map": auto_map}
    server.add_folder("org/custom", tiny)
    server.add_commit("org/custom", {"config.json": json.dumps(custom).encode(), "modeling_custom.py": trap})
    with pytest.raises(hub.RemoteCodeError, match="never executes code.*CustomLMForCausalLM"):
        AutoModelForCausalLM.from_pretrained("org/custom", trust_remote_code=True)
    # transformers' config and tokenizer classes: the same rule
    from mindformers_hf import AutoConfig, AutoTokenizer

    assert type(AutoConfig.from_pretrained(REPO, trust_remote_code=True)).__name__ == "LlamaConfig"
    with pytest.raises(hub.RemoteCodeError, match="AutoConfig of org/custom needs code from its repo"):
        AutoConfig.from_pretrained("org/custom", trust_remote_code=True)
    tokenizer_config = {"tokenizer_class": "ChatGLMTokenizer",
                        "auto_map": {"AutoTokenizer": ["tokenization_custom.ChatGLMTokenizer", None]}}
    server.add_commit("org/custom", {"tokenizer_config.json": json.dumps(tokenizer_config).encode(),
                                     "tokenization_custom.py": trap})
    with pytest.raises(hub.RemoteCodeError, match="AutoTokenizer of org/custom needs code from its repo"):
        AutoTokenizer.from_pretrained("org/custom", trust_remote_code=True)
    assert not [p for p in _gets(server) if p.endswith(".py") or "/org/custom/" in p and p.endswith(".safetensors")]


def test_remote_format_tokenizer_from_a_hub_repo(hub_env):
    """A repo whose tokenizer_config.json names ChatGLM3's tokenization_chatglm.ChatGLMTokenizer: the native class
    reads tokenizer.model from the hub (revision honoured); the repo's .py file is never run (its text is read to
    tell ChatGLM2 from ChatGLM3, which share the class name; no other .py file is downloaded)."""
    import sentencepiece

    from mindformers_hf import AutoTokenizer
    from tests.models.remote_tokenizer_fixtures import train_sentencepiece
    from tests.models.test_chatglm_tokenizer import TOKENIZER_CONFIG

    model = train_sentencepiece()
    trap = b"raise SystemExit('remote code ran')\n"
    hub_env.server.add_commit("org/chatglm3", {"tokenizer.model": model, "tokenization_chatglm.py": trap,
                                               "tokenizer_config.json": json.dumps(TOKENIZER_CONFIG).encode()},
                              branch="v1")
    tok = AutoTokenizer.from_pretrained("org/chatglm3", revision="v1", trust_remote_code=True)
    sp = sentencepiece.SentencePieceProcessor(model_proto=model)
    assert type(tok).__name__ == "ChatGLMTokenizer"
    assert tok("你好")["input_ids"] == [sp.vocab_size() + 1, sp.vocab_size() + 3] + sp.encode("你好")
    assert {p.rsplit("/", 1)[-1] for p in _gets(hub_env.server) if p.endswith(".py")} <= {"tokenization_chatglm.py"}
    # a ChatGLM2 repo (same class name): its tokenization_chatglm.py, read at the revision asked, tells
    from tests.models.test_chatglm2_tokenizer import V2_SOURCE

    hub_env.server.add_commit("org/chatglm2", {"tokenizer.model": model, "tokenization_chatglm.py": V2_SOURCE,
                                               "tokenizer_config.json": json.dumps(TOKENIZER_CONFIG).encode()},
                              branch="v2")
    assert type(AutoTokenizer.from_pretrained("org/chatglm2", revision="v2")).__name__ == "ChatGLM2Tokenizer"


def test_gguf_file_downloads_only_that_file(hub_env, tiny):
    server = hub_env.server
    server.add_commit("org/gguf", {"a-Q4_0.gguf": b"GGUF" + b"a" * 300, "b-Q8_0.gguf": b"GGUF" + b"b" * 300,
                                   "tokenizer.json": b'{"version": "1.0"}',
                                   "model.safetensors": b"s" * 100})
    folder = hub.resolve_folder("org/gguf", gguf_file="b-Q8_0.gguf")
    assert sorted(os.listdir(folder)) == ["b-Q8_0.gguf", "tokenizer.json"]
    with pytest.raises(hub.HubFileNotFoundError, match="its GGUF files: a-Q4_0.gguf, b-Q8_0.gguf"):
        hub.resolve_folder("org/gguf", gguf_file="c.gguf")


# ------------------------------------------------------------------------------------------- transformers' side
def test_tokenizer_and_config_share_endpoint_cache_and_offline_mode(hub_env, tiny):
    from mindformers_hf import AutoConfig, AutoTokenizer

    server = hub_env.server
    _publish(server, tiny)
    AutoModelForCausalLM.from_pretrained(REPO)
    tokenizer = AutoTokenizer.from_pretrained(REPO)
    assert tokenizer("w5 w7", return_tensors="np")["input_ids"].tolist() == [[5, 7]]
    assert AutoConfig.from_pretrained(REPO).hidden_size == 64
    assert all(path.startswith(f"/{REPO}/") or path.startswith(f"/api/models/{REPO}")
               for _, path, _ in server.requests)  # everything went to HF_ENDPOINT
    assert len(glob.glob(os.path.join(hub_env.cache, "models--*"))) == 1  # one shared cache entry
    count = len(server.requests)
    hub_env.offline()
    assert AutoTokenizer.from_pretrained(REPO)("w9")["input_ids"] == [9]
    assert AutoConfig.from_pretrained(REPO, revision="main").vocab_size == 128
    assert len(server.requests) == count


def test_environment_variables_in_a_fresh_process(hub_env, tiny):
    """What a user does: HF_ENDPOINT / HF_HOME / HF_HUB_OFFLINE in the environment before Python starts."""
    _publish(hub_env.server, tiny)
    code = ("import sys; from mindformers_hf.hub import resolve_folder; "
            "print(resolve_folder('org/tiny', revision=sys.argv[1]))")
    env = {**os.environ, "HF_ENDPOINT": hub_env.server.url, "HF_HOME": hub_env.home}
    env.pop("HF_HUB_CACHE", None)

    def run(**extra):
        done = subprocess.run([sys.executable, "-c", code, "main"], env={**env, **extra}, capture_output=True,
                              text=True, timeout=60)
        return done.returncode, done.stdout.strip(), done.stderr

    code_online, folder, err = run()
    assert code_online == 0, err
    assert folder.startswith(os.path.join(hub_env.home, "hub", "models--org--tiny", "snapshots"))
    assert os.path.isfile(os.path.join(folder, "model.safetensors"))
    hub_env.server.stop()
    code_offline, again, err = run(HF_HUB_OFFLINE="1")
    assert (code_offline, again) == (0, folder), err


# ------------------------------------------------------------------------------------------- push
def test_push_to_hub_round_trip_through_hf(hub_env, tiny):
    server = hub_env.server
    model = AutoModelForCausalLM.from_pretrained(tiny)
    info = model.push_to_hub("me/pushed", token="hf_test_token", commit_message="first push")
    files = server.files("me/pushed")
    assert {"README.md", "config.json", "generation_config.json", "model.safetensors"} <= set(files)
    assert info.oid == server.repos["me/pushed"].refs["main"]
    assert b"library_name: transformers" in files["README.md"]
    # HF transformers itself downloads what we pushed, through the same endpoint, and agrees with us
    import transformers

    theirs = transformers.AutoModelForCausalLM.from_pretrained("me/pushed").eval()
    ids, mask = batch(pad_left=(0, 0))
    import torch

    with torch.no_grad():
        want = theirs(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    np.testing.assert_allclose(_logits(model), want, atol=1e-4, rtol=0)

    # save_pretrained(push_to_hub=True) and a branch
    model.save_pretrained(hub_env.home + "/out", push_to_hub=True, repo_id="me/pushed", token="hf_test_token",
                          revision="dev")
    assert server.files("me/pushed", "dev")["model.safetensors"] == files["model.safetensors"]
    with pytest.raises(OSError):
        model.push_to_hub("me/other")  # no token: the hub refuses


def test_push_folder_with_ignore_patterns(hub_env, tmp_path):
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / "state.json").write_text("{}")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x").write_text("x")
    (tmp_path / "trainer_state.json").write_text("{}")
    hub.push_folder_to_hub(tmp_path, "me/run", token="hf_test_token", ignore_patterns=["checkpoint-*"])
    assert set(hub_env.server.files("me/run")) == {".gitattributes", "trainer_state.json"}


def test_tokenizer_push_to_hub_is_transformers_own(hub_env, tiny):
    from mindformers_hf import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    tokenizer.push_to_hub("me/tok", token="hf_test_token")
    assert "tokenizer.json" in hub_env.server.files("me/tok")
    assert AutoTokenizer.from_pretrained("me/tok")("w3 w4")["input_ids"] == [3, 4]
