"""The Hub: turning `pretrained_model_name_or_path` into a local folder, and pushing folders back.

A local folder is used as is. A repo id goes through huggingface_hub's `snapshot_download`, so the
endpoint (HF_ENDPOINT, e.g. a mirror), the cache (HF_HOME / HF_HUB_CACHE / cache_dir), offline mode
(HF_HUB_OFFLINE, local_files_only), tokens and progress bars are exactly transformers'. Two downloads
(both under `subfolder/` when one is given): first the small files (config, generation config,
tokenizer, chat template, safetensors index) by `locate`, then, once the caller has accepted the config,
only the weights we will load by `CheckpointLocation.weight_files()`: `model.safetensors` or the shards
its index names (checkpoint_files.py decides, for a repo listing as for a local folder, variants
included), or the one `gguf_file`. Pickled or framework-specific weights (*.bin, *.pt, *.h5, *.msgpack,
onnx) are never downloaded.

Every file we hand on is checked against the hub's own hash, which huggingface_hub already keeps as
the blob's name in the cache (the X-Linked-Etag sha256 of an LFS file, the ETag git-sha1 of a regular
one) and against the size in the repo listing. A mismatch is fetched once more; a file that is still
wrong is deleted and refused, never loaded. A blob that passed is remembered (size and mtime in
`<repo cache>/.verified/`) so that later loads do not hash it again.

Errors say what is missing (repo, revision, file, or "offline and not cached") as subclasses of
OSError / ValueError naming the repo, the revision and the file.
"""
import contextlib
import hashlib
import json
import os
import re
import tempfile

from .checkpoint_files import (SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, add_variant, local_weight_files,
                               missing_weights_message, weight_file_names)
from .models.families import remote_format
from .safetensors_io import CheckpointError
from .utils import logger, warn_once

# First download: what from_pretrained and the tokenizer read besides the weights.
METADATA_PATTERNS = ["*.json", "*.model", "*.tiktoken", "*.jinja", "merges.txt", "vocab.txt", "tokenizer*"]
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_OTHER_WEIGHT_SUFFIXES = (".h5", ".msgpack", ".onnx", ".ot")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")
VERIFY_ENV = "MINDFORMERS_HF_VERIFY_DOWNLOADS"  # "0": skip the hash check (a mirror with non-hub ETags)


class HubError(OSError):
    """A repo, revision or file could not be had; `repo_id`, `revision` and `filename` say which."""

    def __new__(cls, message, *args, **kwargs):
        return super().__new__(cls, message)  # OSError would read extra positional args as errno/strerror

    def __init__(self, message, repo_id=None, revision=None, filename=None):
        super().__init__(message)
        self.repo_id, self.revision, self.filename = repo_id, revision, filename

    def __str__(self):
        return self.args[0]  # OSError's own __str__ would print "[Errno None] None: <filename>"


class RepositoryNotFoundError(HubError):
    pass


class RevisionNotFoundError(HubError):
    pass


class HubFileNotFoundError(HubError, FileNotFoundError):
    pass


class NotCachedError(HubError, FileNotFoundError):
    """Offline (HF_HUB_OFFLINE=1 or local_files_only=True, or the hub unreachable) and not in the cache."""


class CorruptFileError(HubError):
    pass


class UnsupportedWeightsError(HubError):
    """The repo holds only weight formats we never load (pickled *.bin / *.pt, TF, Flax, ONNX)."""


class RemoteCodeError(ValueError):
    """The checkpoint needs code from the repo (config.json `auto_map`) for a model we have no class for."""


# ---------------------------------------------------------------------------------------------- resolve
class CheckpointLocation:
    """What from_pretrained reads: `folder` (config, generation config and tokenizer files, already local;
    `<repo>/<subfolder>` when a subfolder is given) and `weight_files()`, the safetensors or GGUF files,
    which a hub repo downloads only when they are asked for, so that a config we cannot load is refused
    before any weight file is fetched."""

    def __init__(self, name, root, subfolder="", variant=None, gguf_file=None, hub=None):
        self.name, self.root, self.subfolder = name, root, subfolder
        self.folder = os.path.join(root, subfolder) if subfolder else root
        self.variant, self.gguf_file, self.hub, self._files = variant, gguf_file, hub, None

    def weight_files(self):
        """Absolute paths of the weight files, in loading order (see checkpoint_files for the rules)."""
        if self._files is None:
            self._files = self._download() if self.hub else self._local()
        return self._files

    def _local(self):
        if self.gguf_file:
            path = os.path.join(self.folder, self.gguf_file)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"GGUF file {self.gguf_file!r} not found in {self.folder}")
            return [path]
        return local_weight_files(self.folder, self.variant)

    def _download(self):
        hub, prefix = self.hub, self.subfolder + "/" if self.subfolder else ""
        weights = [prefix + n for n in _weight_files(hub, self.root, self.subfolder, self.gguf_file, self.variant)]
        snapshot = hub.snapshot(weights, revision=os.path.basename(self.root))
        for name in weights:
            if os.path.isfile(os.path.join(snapshot, name)):
                continue
            if hub.listing_is_complete and name not in hub.listing(snapshot):
                named_by = (f", which its {add_variant(SAFE_WEIGHTS_INDEX_NAME, self.variant)} names"
                            if not self.gguf_file else "")
                raise HubFileNotFoundError(f"{hub.where()} has no file {name!r}{named_by}", hub.repo_id,
                                           hub.revision, name)
            raise hub.not_cached(name)
        hub.verify(snapshot, weights)
        return [os.path.join(snapshot, name) for name in weights]


def locate(name_or_path, revision=None, cache_dir=None, local_files_only=False, token=None, gguf_file=None,
           force_download=False, subfolder="", variant=None, **_ignored):
    """A CheckpointLocation for a local folder or a repo id. For a repo only the small files are
    downloaded here (config, tokenizer, index); the weights wait for `weight_files()` (except a GGUF
    file, which holds the config)."""
    path, subfolder = os.fspath(name_or_path), (subfolder or "").strip("/")
    if os.path.isdir(path):
        location = CheckpointLocation(path, path, subfolder, variant, gguf_file)
        if not os.path.isdir(location.folder):
            raise FileNotFoundError(f"{path} has no subfolder {subfolder!r}")
        check_remote_code(location.folder, location.folder)
        return location
    if os.path.isfile(path):
        raise ValueError(
            f"{path} is a file; pass its folder (and for a GGUF file, gguf_file='{os.path.basename(path)}')"
        )
    _check_repo_id(path)
    hub = _Download(path, revision, cache_dir, local_files_only, token, force_download)
    patterns = [f"{subfolder}/{p}" for p in METADATA_PATTERNS] if subfolder else METADATA_PATTERNS
    snapshot = hub.snapshot(patterns)
    hub.verify(snapshot, _present(snapshot, _matching(hub.listing(snapshot), patterns)))
    location = CheckpointLocation(path, snapshot, subfolder, variant, gguf_file, hub=hub)
    check_remote_code(location.folder, hub.where())
    if gguf_file:
        location.weight_files()  # a GGUF file carries the config itself
    return location


def resolve_folder(name_or_path, **kwargs):
    """A local folder holding config, tokenizer files and the weights from_pretrained will load
    (keywords as `locate`)."""
    location = locate(name_or_path, **kwargs)
    location.weight_files()
    return location.folder


def _check_repo_id(path):
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    looks_like_path = path.startswith(("/", "./", "../", "~")) or os.sep in path.replace("/", "") \
        or path.count("/") > 1
    if looks_like_path:
        raise FileNotFoundError(f"{path} is not a folder (no such directory), and not a repo id like 'org/name'")
    try:
        validate_repo_id(path)
    except HFValidationError as e:
        raise ValueError(f"{path!r} is neither a local folder nor a valid repo id: {e}") from None


def _matching(names, patterns):
    from huggingface_hub.utils import filter_repo_objects

    return list(filter_repo_objects(names, allow_patterns=patterns))


def _present(folder, names):
    return [n for n in names if os.path.isfile(os.path.join(folder, n))]


def _weight_files(hub, snapshot, subfolder, gguf_file, variant):
    """The files the model will load, relative to `subfolder`: only what the index names (checkpoint_files
    decides, as for a local folder), never formats we cannot read."""
    prefix = subfolder + "/" if subfolder else ""
    names = [n[len(prefix):] for n in hub.listing(snapshot) if n.startswith(prefix)]
    if gguf_file:
        if gguf_file not in names and hub.listing_is_complete:
            ggufs = sorted(n for n in names if n.endswith(".gguf"))
            raise HubFileNotFoundError(f"{hub.where()} has no file {prefix + gguf_file!r}; its GGUF files: "
                                       f"{', '.join(ggufs) or 'none'}", hub.repo_id, hub.revision, gguf_file)
        return [gguf_file]
    try:
        files = weight_file_names(names, os.path.join(snapshot, subfolder), variant)
    except CheckpointError as e:
        raise CheckpointError(f"{hub.where()}: {e}") from None
    if files is not None:
        return files
    single = add_variant(SAFE_WEIGHTS_NAME, variant)
    if not hub.listing_is_complete:
        return [single]  # when only the cache is known, a missing file is reported as not cached
    top_level = sorted(n for n in names if "/" not in n)
    pickled = [n for n in top_level if n.endswith(_PICKLE_SUFFIXES)]
    others = [n for n in top_level if n.endswith(_OTHER_WEIGHT_SUFFIXES)]
    if pickled and not variant:
        raise UnsupportedWeightsError(
            f"{hub.where()} has only pickled weights ({', '.join(pickled[:4])}). mindformers_hf never unpickles "
            "checkpoints (unpickling can run arbitrary code) and did not download them. Convert them to "
            "safetensors once in a torch environment, e.g. transformers.AutoModelForCausalLM.from_pretrained("
            f"'{hub.repo_id}').save_pretrained('<folder>') and load '<folder>', or look for a safetensors "
            "conversion on a 'refs/pr/<n>' revision of the repo.", hub.repo_id, hub.revision, pickled[0])
    if others and not variant:
        raise UnsupportedWeightsError(
            f"{hub.where()} has weights only as {', '.join(others[:4])}; mindformers_hf loads safetensors and "
            "GGUF. Convert them to safetensors first.", hub.repo_id, hub.revision, others[0])
    ggufs = [n for n in top_level if n.endswith(".gguf")]
    hint = f" It has GGUF files: pass gguf_file='{ggufs[0]}'." if ggufs else ""
    where = f"{hub.where()}{f' (subfolder {subfolder!r})' if subfolder else ''}"
    raise HubFileNotFoundError(missing_weights_message(names, where, variant) + hint,
                               hub.repo_id, hub.revision, prefix + single)


def check_remote_code(folder, name):
    """Remote code is never executed. A config whose `auto_map` points at repo code loads with
    transformers' own config class when transformers knows its model_type, or with ours for the formats
    we implement natively (families declaring a `config` class: models/families.py); otherwise we refuse, naming the architecture
    (whatever `trust_remote_code` says)."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return  # load_config reports unreadable configs
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if not auto_map:
        return
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    classes = ", ".join(f"{k} -> {v}" for k, v in auto_map.items())
    if model_type in CONFIG_MAPPING_NAMES:
        warn_once(f"{name}: config.json points at remote code ({classes}); remote code is never executed here, "
                  f"transformers' '{model_type}' config and the native model class are used instead")
        return
    native = remote_format(config)
    if native is not None:
        warn_once(f"{name}: config.json points at remote code ({classes}); remote code is never executed here: "
                  f"mindformers_hf reads the '{native}' format natively (trust_remote_code is not needed)")
        return
    raise RemoteCodeError(
        f"{name} needs remote code: config.json's auto_map names {classes} (architectures "
        f"{architectures}, model_type {model_type!r}). mindformers_hf never executes code from a model repo, "
        f"and neither transformers nor mindformers_hf has a native implementation of "
        f"{', '.join(architectures) or model_type}."
    )


@contextlib.contextmanager
def no_remote_code(kwargs, name, what):
    """Around transformers' AutoConfig / AutoTokenizer: `trust_remote_code` is forced off (warned about once
    when it was on), and transformers' "custom code must be executed" error becomes a RemoteCodeError."""
    if kwargs.get("trust_remote_code"):
        warn_once(f"{what}.from_pretrained: trust_remote_code=True is accepted, but code from a repo is never "
                  "executed here; transformers' or mindformers_hf's own classes are used")
    kwargs["trust_remote_code"] = False
    try:
        yield
    except ValueError as e:
        if "custom code" not in str(e):
            raise
        raise RemoteCodeError(f"{what} of {name} needs code from its repo (an auto_map in its config files), "
                              "and mindformers_hf never executes remote code.") from None


# ---------------------------------------------------------------------------------------------- download
class _Download:
    """One repo at one revision: snapshot downloads with errors translated into ours, and verification."""

    def __init__(self, repo_id, revision, cache_dir, local_files_only, token, force_download):
        self.repo_id, self.revision = repo_id, revision or "main"
        self.cache_dir, self.local_files_only, self.token = cache_dir, local_files_only, token
        self.force_download = force_download
        self.listing_is_complete = False
        self._sizes = None

    def where(self):
        return f"{self.repo_id} (revision {self.revision!r})"

    def offline_reason(self):
        from huggingface_hub import constants

        if self.local_files_only:
            return "local_files_only=True"
        if constants.is_offline_mode():
            return "HF_HUB_OFFLINE=1"
        return None

    def not_cached(self, filename=None, cause=None, detail=""):
        from huggingface_hub import constants

        reason = self.offline_reason() or f"{constants.ENDPOINT} could not be reached" + (
            f" ({cause})" if cause else "")
        what = f"{filename!r} of {self.where()}" if filename else self.where()
        return NotCachedError(f"{what} is not in the cache ({self.cache_dir or constants.HF_HUB_CACHE}) and "
                              f"cannot be downloaded: {reason}.{detail}", self.repo_id, self.revision, filename)

    def snapshot(self, patterns, revision=None):
        from huggingface_hub import snapshot_download

        with self._translated_errors():
            return snapshot_download(self.repo_id, revision=revision or self.revision, cache_dir=self.cache_dir,
                                     local_files_only=self.local_files_only, token=self.token,
                                     allow_patterns=patterns, force_download=self.force_download)

    def download(self, filename, commit):
        from huggingface_hub import hf_hub_download

        with self._translated_errors(filename):
            return hf_hub_download(self.repo_id, filename, revision=commit, cache_dir=self.cache_dir,
                                   token=self.token)

    def listing(self, folder):
        """The repo's file names at the snapshot's commit: the listing snapshot_download cached, or else
        (offline, cache written by another tool) the files present in the snapshot folder."""
        if self._sizes is None:
            from huggingface_hub import get_cached_repo_tree
            from huggingface_hub.errors import CachedRepoTreeNotFoundError

            try:
                tree = get_cached_repo_tree(self.repo_id, revision=os.path.basename(folder), cache_dir=self.cache_dir)
                self._sizes = {f.path: f.size for f in tree}
                self.listing_is_complete = True
            except CachedRepoTreeNotFoundError:
                self._sizes = {}
                for root, _, names in os.walk(folder):
                    for name in names:
                        self._sizes[os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")] = None
        return list(self._sizes)

    # -------------------------------------------------------------------------- verification
    def verify(self, folder, files):
        if os.environ.get(VERIFY_ENV, "1") == "0":
            return
        from concurrent.futures import ThreadPoolExecutor

        commit = os.path.basename(folder)
        size_of = lambda name: self._sizes.get(name) if self._sizes else None  # noqa: E731
        check = lambda name: _check_file(os.path.join(folder, name), size_of(name))  # noqa: E731
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # hashlib releases the GIL
            problems = dict(zip(files, pool.map(check, files)))
        for name, problem in problems.items():
            if problem is None:
                continue
            _discard(os.path.join(folder, name))
            if self.offline_reason():
                raise CorruptFileError(
                    f"The cached {name!r} of {self.where()} is corrupt ({problem}); it was deleted and not "
                    f"loaded, and cannot be fetched again: {self.offline_reason()}.", self.repo_id, self.revision, name)
            logger.warning(f"{name} of {self.where()} is corrupt ({problem}); downloading it again")
            self.download(name, commit)
            problem = check(name)
            if problem is not None:
                _discard(os.path.join(folder, name))
                raise CorruptFileError(
                    f"{name!r} of {self.where()} (commit {commit}) is still corrupt after downloading it again "
                    f"({problem}); it was deleted from the cache and not loaded.", self.repo_id, self.revision, name)

    # -------------------------------------------------------------------------- errors
    def _translated_errors(self, filename=None):
        return _ErrorTranslation(self, filename)


class _ErrorTranslation:
    """huggingface_hub's exceptions -> ours, with the repo, revision and file in the message."""

    def __init__(self, hub, filename):
        self.hub, self.filename = hub, filename

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if error is None or isinstance(error, HubError):
            return False
        from huggingface_hub import constants
        from huggingface_hub import errors as hf

        hub, endpoint = self.hub, constants.ENDPOINT
        if isinstance(error, hf.GatedRepoError):
            raise RepositoryNotFoundError(
                f"{hub.repo_id} on {endpoint} is gated: request access on its page and pass token=... "
                "(or log in with `hf auth login`).", hub.repo_id, hub.revision) from None
        if isinstance(error, hf.RepositoryNotFoundError):
            raise RepositoryNotFoundError(
                f"{hub.repo_id!r} is not a local folder and not a model repo on {endpoint} (if it is private, "
                "pass token=... or log in with `hf auth login`).", hub.repo_id, hub.revision) from None
        if isinstance(error, hf.RevisionNotFoundError):
            raise RevisionNotFoundError(
                f"Revision {hub.revision!r} not found in {hub.repo_id} on {endpoint}: pass an existing branch, tag "
                "or full commit hash.", hub.repo_id, hub.revision) from None
        if isinstance(error, hf.RemoteEntryNotFoundError):
            raise HubFileNotFoundError(f"{hub.where()} on {endpoint} has no file {self.filename!r}",
                                       hub.repo_id, hub.revision, self.filename) from None
        if isinstance(error, hf.LocalEntryNotFoundError):
            incomplete = re.search(r"\d+ file\(s\) are missing \(.*?\)(?=\.)", str(error))
            raise hub.not_cached(self.filename, cause=error.__cause__ or error,
                                 detail=f" The cached snapshot is incomplete: {incomplete.group(0)}." if incomplete
                                 else "") from None
        if isinstance(error, hf.HfHubHTTPError):
            status = getattr(error.response, "status_code", None)
            raise HubError(f"{endpoint} answered HTTP {status} for {hub.where()}: {str(error).splitlines()[0]}",
                           hub.repo_id, hub.revision, self.filename) from None
        if isinstance(error, OSError) and "Consistency check failed" in str(error):
            raise CorruptFileError(f"A download of {hub.where()} from {endpoint} came out the wrong size and was not "
                                   f"kept: {str(error).splitlines()[0]}", hub.repo_id, hub.revision,
                                   self.filename) from None
        return False


def _blob_of(path):
    """The `blobs/<etag>` entry a snapshot file links to in huggingface_hub's cache layout, else None
    (no symlinks on this filesystem). Only one link is followed: the blob may itself link elsewhere."""
    if not os.path.islink(path):
        return None
    target = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
    return target if os.path.basename(os.path.dirname(target)) == "blobs" else None


def _check_file(path, expected_size):
    """None if the cached file matches the hub's size and hash, else what is wrong with it."""
    if not os.path.isfile(path):
        return "missing"
    stat = os.stat(path)
    if expected_size is not None and stat.st_size != expected_size:
        return f"{stat.st_size} bytes, the hub lists {expected_size}"
    blob = _blob_of(path)
    etag = os.path.basename(blob) if blob else ""
    if not (_SHA256.match(etag) or _GIT_SHA1.match(etag)):
        return None  # no hub hash to compare with (no symlinks, or a mirror's own ETags): size only
    marker = os.path.join(os.path.dirname(os.path.dirname(blob)), ".verified", etag)
    stamp = f"{stat.st_size} {stat.st_mtime_ns}"
    try:
        with open(marker, encoding="utf-8") as f:
            if f.read() == stamp:
                return None
    except OSError:
        pass
    digest = _file_digest(path, git_blob=len(etag) == 40)
    if digest != etag:
        kind = "sha256" if len(etag) == 64 else "git sha1"
        return f"{kind} {digest}, the hub's ETag says {etag}"
    try:
        from .safetensors_io import atomic_write_text

        os.makedirs(os.path.dirname(marker), exist_ok=True)
        atomic_write_text(marker, stamp)
    except OSError:
        pass  # a read-only cache: the file is fine, it will just be hashed again next time
    return None


def _file_digest(path, git_blob):
    """sha256 of the content (LFS files), or git's blob sha1 (regular files: sha1 of "blob <size>\\0" + content)."""
    digest = hashlib.sha1() if git_blob else hashlib.sha256()
    if git_blob:
        digest.update(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 23), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _discard(path):
    """Remove a snapshot file and its blob, so huggingface_hub fetches it afresh."""
    for victim in (_blob_of(path), path):
        try:
            if victim:
                os.remove(victim)
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------------------------- push
def push_folder_to_hub(folder, repo_id, *, commit_message=None, commit_description=None, private=None, token=None,
                       revision=None, create_pr=False, ignore_patterns=None):
    """Create `repo_id` if needed and commit the files of `folder` (less hidden ones and those matching
    `ignore_patterns`, e.g. "checkpoint-*") in one commit; files the hub already has unchanged are skipped
    by huggingface_hub. Returns huggingface_hub's CommitInfo. The Trainer's push goes through here too."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.utils import filter_repo_objects

    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision is not None and not revision.startswith("refs/pr"):
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    paths = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        paths += [os.path.relpath(os.path.join(root, n), folder).replace(os.sep, "/") for n in sorted(names)
                  if not n.startswith(".")]
    operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=os.path.join(folder, p))
                  for p in filter_repo_objects(paths, ignore_patterns=ignore_patterns)]
    return api.create_commit(repo_id, operations, commit_message=commit_message or "Upload folder",
                             commit_description=commit_description, revision=revision, create_pr=create_pr)


def push_to_hub(model, repo_id, *, commit_message=None, commit_description=None, private=None, token=None,
                revision=None, create_pr=False, max_shard_size="50GB", tags=None, safe_serialization=True,
                **kwargs):
    """transformers' `model.push_to_hub`: save_pretrained into a temporary folder with transformers' model
    card (README.md, tagged), then one commit."""
    from huggingface_hub import HfApi
    from transformers.utils.hub import create_and_tag_model_card

    for key in kwargs:
        warn_once(f"push_to_hub: keyword {key!r} is accepted for compatibility and ignored")
    repo_id = HfApi(token=token).create_repo(repo_id, private=private, exist_ok=True).repo_id
    card = create_and_tag_model_card(repo_id, tags, token=token)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, max_shard_size=max_shard_size, safe_serialization=safe_serialization)
        card.save(os.path.join(tmp, "README.md"))
        return push_folder_to_hub(tmp, repo_id, commit_message=commit_message or "Upload model",
                                  commit_description=commit_description, token=token, revision=revision,
                                  create_pr=create_pr)
