"""A real Camelid server on 127.0.0.1 for the API tests: the starter model and the embedding model in a
temporary library, uvicorn in a thread, the engine on its owner thread."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.core.server import ModelService, ServerConfig, ServerHandle, ThreadRunner

CHAT_MODEL = "SmolLM2-135M-Instruct.Q4_1"
EMBED_MODEL = "all-MiniLM-L6-v2-F16"


@dataclass
class LiveServer:
    handle: ServerHandle
    service: ModelService
    runner: ThreadRunner
    models_dir: Path

    @property
    def url(self) -> str:
        return self.handle.url


def _link(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, starter_model: Path, embedding_model: Path) -> Path:
    """A models folder with the two test models (hard links: no copies of 140 MB per module)."""
    folder = tmp_path_factory.mktemp("server-models")
    _link(starter_model, folder / starter_model.name)
    _link(embedding_model, folder / embedding_model.name)
    return folder


def start_server(models_dir: Path, *, queue_limit: int = 32, idle_unload_s: float = 900.0,
                 **config: object) -> LiveServer:
    """A server on a free port; `config` goes to ServerConfig (host, api_key, cors, max_body)."""
    from app.core.models.library import LibraryModel, scan_models

    def models() -> list[LibraryModel]:
        return scan_models(sources=("folder",), folders=[models_dir])

    runner = ThreadRunner()
    service = ModelService(runner, models=models, queue_limit=queue_limit, idle_unload_s=idle_unload_s)
    handle = ServerHandle(service, ServerConfig(port=0, **config))  # type: ignore[arg-type]
    handle.start()
    return LiveServer(handle, service, runner, models_dir)


def stop_server(server: LiveServer) -> None:
    server.handle.stop()
    server.service.close()
    server.runner.close()


@pytest.fixture(scope="module")
def server(library: Path) -> Iterator[LiveServer]:
    """One server per test module, loopback, no key."""
    live = start_server(library)
    yield live
    stop_server(live)
