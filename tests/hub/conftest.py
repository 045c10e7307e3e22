"""Fixtures: a local hub on 127.0.0.1 and an HF environment (endpoint, cache, offline flag) pointing at it.

huggingface_hub reads HF_ENDPOINT / HF_HOME / HF_HUB_OFFLINE into `huggingface_hub.constants` once, at
import time, so setting the environment variables inside a running process changes nothing. `HubEnv`
sets both: the variables (for subprocesses and for code that reads os.environ) and the constants that
huggingface_hub and transformers consult at call time (and drops transformers' cached HfApi).
"""
import os

import pytest

from .hub_server import HubServer


class HubEnv:
    def __init__(self, monkeypatch, server, home):
        from huggingface_hub import constants

        self._mp, self._constants, self.server, self.home = monkeypatch, constants, server, str(home)
        self.cache = os.path.join(self.home, "hub")
        values = {
            "ENDPOINT": server.url,
            "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HOME": self.home,
            "HF_HUB_CACHE": self.cache,
            "HF_TOKEN_PATH": os.path.join(self.home, "token"),
            "HF_STORED_TOKENS_PATH": os.path.join(self.home, "stored_tokens"),
            "HF_HUB_OFFLINE": False,
            "HF_HUB_DISABLE_XET": True,  # the test hub speaks plain HTTP, not the xet protocol
            "HF_HUB_DISABLE_TELEMETRY": True,
        }
        for name, value in values.items():
            monkeypatch.setattr(constants, name, value)
        import transformers.utils.hub

        # transformers keeps one HfApi, built with the endpoint of its first use: make it build a new one
        monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)
        env = {"HF_ENDPOINT": server.url, "HF_HOME": self.home, "HF_HUB_CACHE": self.cache,
               "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": None,
               "HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None, "HF_TOKEN": None, "HUGGING_FACE_HUB_TOKEN": None}
        for name, value in env.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)

    def offline(self, on=True):
        self._mp.setattr(self._constants, "HF_HUB_OFFLINE", on)
        if on:
            self._mp.setenv("HF_HUB_OFFLINE", "1")
        else:
            self._mp.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.fixture
def hub_server():
    server = HubServer(token="hf_test_token", lifetime=120.0).start()
    yield server
    server.stop()


@pytest.fixture
def hub_env(monkeypatch, tmp_path, hub_server):
    return HubEnv(monkeypatch, hub_server, tmp_path / "hf_home")
