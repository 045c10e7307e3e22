"""A tiny in-memory Hugging Face Hub on 127.0.0.1, for tests only.

It speaks the endpoints huggingface_hub 2.x calls for downloads and for the plain (non-xet) upload path:
  GET  /api/models/{repo}[/revision/{rev}]          model info: sha, siblings
  GET  /api/models/{repo}/tree/{rev}[/{path}]         file listing (git oid, size, lfs sha256)
  HEAD/GET /{repo}/resolve/{rev}/{file}               ETag, X-Repo-Commit, X-Linked-Etag/-Size, Range
  POST /api/repos/create, /api/models/{repo}/preupload/{rev}, /api/models/{repo}/commit/{rev}
Errors carry the X-Error-Code header the hub sends (RepoNotFound, RevisionNotFound, EntryNotFound), so
huggingface_hub raises the same exception classes as against the real hub.

Faults for tests: `server.fault(repo, path, cut_after=n)` sends the full Content-Length but closes the
connection after n bytes (an interrupted download); `corrupt=True` serves same-size wrong bytes while
the headers keep the true sha256. `times` bounds how many GETs a fault applies to.

The server binds 127.0.0.1 on a free port, answers at most `max_requests` requests and stops by itself
after `lifetime` seconds; every response closes its connection (HTTP/1.0), so a stopped server is
unreachable at once (no pooled keep-alive connection outlives it).
"""
import base64
import hashlib
import itertools
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

# Stored as git-LFS on the real hub (its default .gitattributes): served with X-Linked-Etag = sha256.
LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".h5", ".msgpack", ".onnx", ".model", ".ckpt")

_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"
_API = re.compile(rf"^/api/models/{_REPO}"
                  r"(?:/(?P<op>revision|tree|preupload|commit|branch)/(?P<rev>[^/]+)(?P<rest>/.*)?)?$")
_RESOLVE = re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


class _Repo:
    def __init__(self, private=False):
        self.private = private
        self.commits = {}  # sha -> {path: bytes}
        self.refs = {}  # branch or tag -> sha


class _Fault:
    def __init__(self, cut_after=None, corrupt=False, times=1):
        self.cut_after, self.corrupt, self.times = cut_after, corrupt, times


class HubServer:
    def __init__(self, token=None, lifetime=120.0, max_requests=5000):
        self.token = token  # required for private repos and for every write
        self.repos = {}
        self.requests = []  # (method, path, Range header or None)
        self.max_requests = max_requests
        self._faults = {}
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._timer = threading.Timer(lifetime, self.stop)
        self._timer.daemon = True
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        self._thread.start()
        self._timer.start()
        return self

    def stop(self):
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._timer.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()

    # ------------------------------------------------------------------ content
    def add_commit(self, repo_id, files, branch="main", private=False, message="upload"):
        """Commit `files` ({path: bytes}) on top of `branch` (created if new); return the commit sha."""
        with self._lock:
            repo = self.repos.setdefault(repo_id, _Repo(private=private))
            parent = repo.refs.get(branch)
            tree = dict(repo.commits[parent]) if parent else {}
            tree.update(files)
            return self._commit(repo_id, repo, branch, tree, message)

    def add_folder(self, repo_id, folder, branch="main", private=False, skip=()):
        """Commit every file of a local folder (e.g. written by HF save_pretrained)."""
        files = {}
        for root, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(root, name)
                rel = os.path.relpath(path, folder).replace(os.sep, "/")
                if rel not in skip:
                    with open(path, "rb") as f:
                        files[rel] = f.read()
        return self.add_commit(repo_id, files, branch=branch, private=private)

    def files(self, repo_id, revision="main"):
        repo = self.repos[repo_id]
        return repo.commits[repo.refs.get(revision, revision)]

    def fault(self, repo_id, path, cut_after=None, corrupt=False, times=1):
        self._faults[(repo_id, path)] = _Fault(cut_after, corrupt, times)

    def count(self, method, path_suffix):
        return sum(1 for m, p, _ in self.requests if m == method and p.split("?")[0].endswith(path_suffix))

    def _commit(self, repo_id, repo, branch, tree, message):
        digest = hashlib.sha1(f"{repo_id}|{branch}|{message}|{next(self._counter)}".encode())
        for path in sorted(tree):
            digest.update(path.encode() + git_blob_sha1(tree[path]).encode())
        sha = digest.hexdigest()
        repo.commits[sha] = tree
        repo.refs[branch] = sha
        return sha

    # ------------------------------------------------------------------ lookups used by the handler
    def _authorized(self, headers):
        return self.token is None or headers.get("Authorization") == f"Bearer {self.token}"

    def _lookup(self, repo_id, revision, headers):
        """(repo, sha) or an error tuple (status, X-Error-Code, message)."""
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized(headers)):
            return None, (401, "RepoNotFound", "Repository not found")
        sha = repo.refs.get(revision, revision if revision in repo.commits else None)
        if sha is None:
            return None, (404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return (repo, sha), None

    def _take_fault(self, repo_id, path):
        with self._lock:
            fault = self._faults.get((repo_id, path))
            if fault is None or fault.times == 0:
                return None
            if fault.times is not None:
                fault.times -= 1
            return fault


def _handler_for(server):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: a stopped server is gone at once

        def log_message(self, *args):
            pass

        # -------------------------------------------------------------- plumbing
        def _record(self):
            with server._lock:
                server.requests.append((self.command, self.path, self.headers.get("Range")))
                return len(server.requests) <= server.max_requests

        def _send(self, status, body=b"", headers=None, content_type="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status, value, headers=None):
            self._send(status, json.dumps(value).encode(), headers)

        def _error(self, status, code, message, headers=None):
            self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message,
                                                    **(headers or {})})

        def _body(self):
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _dispatch(self):
            if not self._record():
                return self._error(503, "TooManyRequests", "test server request budget exhausted")
            parts = urlsplit(self.path)
            path, query = parts.path, parse_qs(parts.query)
            if self.command in ("GET", "HEAD"):
                match = _RESOLVE.match(path)
                if match:
                    return self._resolve(unquote(match["repo"]), unquote(match["rev"]), unquote(match["file"]))
            match = _API.match(path)
            if match:
                repo_id, op = unquote(match["repo"]), match["op"]
                rev = unquote(match["rev"]) if match["rev"] else "main"
                rest = unquote(match["rest"] or "").lstrip("/")
                if self.command == "GET" and op in (None, "revision"):
                    return self._model_info(repo_id, rev)
                if self.command == "GET" and op == "tree":
                    return self._tree(repo_id, rev, rest, query.get("recursive", ["false"])[0].lower() == "true")
                if self.command == "POST" and op == "preupload":
                    return self._preupload(repo_id, rev)
                if self.command == "POST" and op == "commit":
                    return self._commit(repo_id, rev)
                if self.command == "POST" and op == "branch":
                    return self._create_branch(repo_id, rev)
            if self.command == "POST" and path == "/api/repos/create":
                return self._create_repo()
            if self.command == "POST" and path == "/api/validate-yaml":
                self._body()
                return self._json(200, {"errors": [], "warnings": []})
            return self._error(404, "NotFound", f"test hub has no endpoint {self.command} {path}")

        do_GET = do_HEAD = do_POST = _dispatch

        # -------------------------------------------------------------- downloads
        def _model_info(self, repo_id, rev):
            found, error = server._lookup(repo_id, rev, self.headers)
            if error:
                return self._error(*error)
            repo, sha = found
            siblings = [{"rfilename": p} for p in sorted(repo.commits[sha])]
            self._json(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private,
                             "siblings": siblings, "tags": [], "downloads": 0, "likes": 0})

        def _tree(self, repo_id, rev, prefix, recursive):
            found, error = server._lookup(repo_id, rev, self.headers)
            if error:
                return self._error(*error)
            repo, sha = found
            files = repo.commits[sha]
            base = prefix.rstrip("/") + "/" if prefix else ""
            entries, folders = [], set()
            for path in sorted(files):
                if not path.startswith(base):
                    continue
                rel = path[len(base):]
                if "/" in rel:
                    top = base + rel.split("/")[0]
                    folders.add(top)
                    if not recursive:
                        continue
                    for i in range(1, rel.count("/")):
                        folders.add(base + "/".join(rel.split("/")[:i + 1]))
                entries.append(_tree_entry(path, files[path]))
            if prefix and not entries and not folders:
                return self._error(404, "EntryNotFound", f"{prefix} does not exist on {rev}",
                                   {"X-Repo-Commit": sha})
            listing = [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                       for f in sorted(folders)] + entries
            self._json(200, listing)

        def _resolve(self, repo_id, rev, file):
            found, error = server._lookup(repo_id, rev, self.headers)
            if error:
                return self._error(*error)
            repo, sha = found
            data = repo.commits[sha].get(file)
            if data is None:
                return self._error(404, "EntryNotFound", f"{file} does not exist on {rev}", {"X-Repo-Commit": sha})
            headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
            if is_lfs(file):
                digest = hashlib.sha256(data).hexdigest()
                headers.update({"ETag": f'"{digest}"', "X-Linked-Etag": f'"{digest}"', "X-Linked-Size": str(len(data))})
            else:
                headers["ETag"] = f'"{git_blob_sha1(data)}"'
            if self.command == "HEAD":
                self.send_response(200)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                return
            fault = server._take_fault(repo_id, file)
            if fault is not None and fault.corrupt:
                middle = len(data) // 2
                data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
            status, start, end = 200, 0, len(data)
            range_header = self.headers.get("Range")
            if range_header:
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
                start = int(match.group(1))
                end = int(match.group(2)) + 1 if match.group(2) else len(data)
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
            body = data[start:end]
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if fault is not None and fault.cut_after is not None:
                self.wfile.write(body[:fault.cut_after])
                self.wfile.flush()
                self.close_connection = True
                return  # the promised Content-Length is never reached: the client sees a broken download
            self.wfile.write(body)

        # -------------------------------------------------------------- uploads (plain git blobs, no LFS/xet)
        def _create_repo(self):
            payload = json.loads(self._body() or b"{}")
            if not server._authorized(self.headers) or server.token is None:
                return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
            repo_id = "/".join(p for p in (payload.get("organization"), payload["name"]) if p)
            if repo_id in server.repos:
                return self._json(409, {"error": "You already created this model repo",
                                        "url": f"{server.url}/{repo_id}"})
            server.add_commit(repo_id, {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"},
                              private=payload.get("visibility") == "private" or bool(payload.get("private")),
                              message="initial commit")
            self._json(200, {"url": f"{server.url}/{repo_id}", "name": repo_id, "id": repo_id})

        def _create_branch(self, repo_id, branch):
            payload = json.loads(self._body() or b"{}")
            if not server._authorized(self.headers) or server.token is None:
                return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
            found, error = server._lookup(repo_id, payload.get("startingPoint") or "main", self.headers)
            if error:
                return self._error(*error)
            repo, sha = found
            if branch in repo.refs:
                return self._error(409, "Conflict", f"Reference already exists: refs/heads/{branch}")
            repo.refs[branch] = sha
            self._json(200, {})

        def _preupload(self, repo_id, rev):
            payload = json.loads(self._body())
            found, error = server._lookup(repo_id, rev, self.headers)
            if error:
                return self._error(*error)
            repo, sha = found
            existing = repo.commits[sha]
            files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                      "oid": git_blob_sha1(existing[f["path"]]) if f["path"] in existing else None}
                     for f in payload["files"]]
            self._json(200, {"files": files, "commitOid": sha})

        def _commit(self, repo_id, rev):
            body = self._body()
            if not server._authorized(self.headers) or server.token is None:
                return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
            found, error = server._lookup(repo_id, rev, self.headers)
            if error:
                return self._error(*error)
            repo, sha = found
            tree, message = dict(repo.commits[sha]), "commit"
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    message = value.get("summary", message)
                elif key == "file":
                    tree[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    tree.pop(value["path"], None)
                elif key == "deletedFolder":
                    tree = {p: d for p, d in tree.items() if not p.startswith(value["path"].rstrip("/") + "/")}
                else:
                    return self._error(400, "BadRequest", f"test hub does not accept {key!r} operations")
            with server._lock:
                new_sha = server._commit(repo_id, repo, rev, tree, message)
            self._json(200, {"commitUrl": f"{server.url}/{repo_id}/commit/{new_sha}", "commitOid": new_sha,
                             "success": True, "pullRequestUrl": None})

    return Handler


def _tree_entry(path, data):
    entry = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
    if is_lfs(path):
        pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
                   f"size {len(data)}\n").encode()
        entry.update(oid=git_blob_sha1(pointer),
                     lfs={"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)})
    return entry

