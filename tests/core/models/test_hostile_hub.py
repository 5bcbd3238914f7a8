"""Every Hub call against a hostile server (tests/fixtures/hostile_hub.py): bounded, typed, one sentence.

Each case runs the real core functions or the real CLI front door (app.cli.main)
against a real server on 127.0.0.1, with the HTTP policy's deadlines made small
through its environment variables. Each must end with a plan or a typed error
whose text is one line with no raw control characters, and the process's RSS
may grow by at most `RSS_LIMIT` while it runs (sampled every few ms: a size,
not a timing). The only time check is liveness: a case still running after
`LIVENESS_S` fails instead of hanging the suite.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import psutil
import pytest

from app import paths
from app.cli import main
from app.core.errors import (
    CamelidError,
    NotGGUFError,
    RangeNotSupportedError,
    RemoteError,
    TruncatedGGUFError,
)
from app.core.fit import ModelMeta, read_gguf, read_gguf_remote
from app.core.http_policy import (
    HttpTimeoutError,
    HubCallCancelled,
    MalformedAnswerError,
    ResponseTooLargeError,
    unsafe_char,
)
from app.core.models import hub
from tests.fixtures.hostile_hub import HOSTILE_NAMES, SCENARIOS, HostileHub
from tests.fixtures.synthetic_gguf import big_model

READ_TIMEOUT_S = 0.3
DEADLINE_S = 1.0
RSS_LIMIT = 48 * 2**20
LIVENESS_S = 30.0

#: What each scenario must end as, through repo_files and then read_gguf_remote.
EXPECTED: dict[str, type[CamelidError] | type[ModelMeta]] = {
    "api-silent": HttpTimeoutError, "api-slowloris": HttpTimeoutError, "api-endless": ResponseTooLargeError,
    "api-oversize": ResponseTooLargeError, "api-gzip-bomb": ResponseTooLargeError,
    "api-deflate-bomb": ResponseTooLargeError,
    **{s: MalformedAnswerError for s in ("json-sha-int", "json-siblings-dict", "json-rfilename-int",
                                         "size-string", "size-negative", "size-float", "json-infinity",
                                         "json-deep", "json-not-json", "json-not-object", "lfs-sha-bad")},
    # Names that cannot be shown are refused at the listing; names that cannot be written
    # (too long, Windows devices, streams) are listed, planned from the header, refused by download.
    "names-ansi": RemoteError, "names-newline": RemoteError, "names-bidi": RemoteError,
    "names-long": ModelMeta, "names-con": ModelMeta, "names-aux": ModelMeta, "names-ads": ModelMeta,
    "endless-206": ModelMeta,  # the range asked for is what is read: the real header, nothing more
    "gzip-bomb-206": MalformedAnswerError, "silent": HttpTimeoutError, "slowloris": HttpTimeoutError,
    "stall-mid": HttpTimeoutError, "range-ignored-huge": RangeNotSupportedError,
    "lying-range": MalformedAnswerError, "lying-total": MalformedAnswerError,
    "lying-length": TruncatedGGUFError, "lying-hash": ModelMeta,
}
_DISPLAY_UNSAFE = ("names-ansi", "names-newline", "names-bidi")
_DISK_UNSAFE = ("names-long", "names-con", "names-aux", "names-ads")


def test_every_scenario_has_an_expectation() -> None:
    assert set(EXPECTED) == set(SCENARIOS)


@pytest.fixture(scope="module")
def gguf_header(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, int]:
    path = tmp_path_factory.mktemp("hostile") / "model.gguf"
    size = big_model(path, n_tokens=2000)  # a Llama-3.1-8B header, ~100 KB, on a sparse 4.9 GB file
    with path.open("rb") as f:
        head = f.read(read_gguf(path).header_bytes + 4096)
    return head, size


@pytest.fixture
def hostile(gguf_header: tuple[bytes, int], monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileHub]:
    head, size = gguf_header
    with HostileHub(head, file_size=size, pace=0.05) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setenv("CAMELID_HTTP_TIMEOUT", str(READ_TIMEOUT_S))
        monkeypatch.setenv("CAMELID_HTTP_CONNECT_TIMEOUT", str(READ_TIMEOUT_S))
        monkeypatch.setenv("CAMELID_HTTP_DEADLINE", str(DEADLINE_S))
        # Warm up (imports, the TLS context) so a case's RSS growth is its own.
        read_gguf_remote(*_first(hub.repo_files("evil/lying-hash")))
        yield server


def _first(files: hub.RepoFiles) -> tuple[str, str]:
    return files.repo_id, files.quants[0].first_file


class Bounded:
    """Runs `fn` in a thread, sampling this process's RSS; records outcome, seconds and peak growth."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        proc = psutil.Process()
        self.outcome: Any = None
        base = proc.memory_info().rss
        peak = base
        done = threading.Event()

        def work() -> None:
            try:
                self.outcome = fn()
            except BaseException as exc:  # recorded, then judged by the test
                self.outcome = exc
            finally:
                done.set()

        began = time.monotonic()
        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        while not done.wait(0.005):
            peak = max(peak, proc.memory_info().rss)
            if time.monotonic() - began > LIVENESS_S:
                break
        self.seconds = time.monotonic() - began
        self.growth = max(peak, proc.memory_info().rss) - base
        self.finished = done.is_set()


def _clean_sentence(text: str) -> None:
    assert text.strip() and "\n" not in text.strip(), text
    assert not any(unsafe_char(c) for c in text.strip()), repr(text)
    assert "Traceback" not in text


# -- the core -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_core_listing_and_header_read_end_typed_and_bounded(hostile: HostileHub, scenario: str) -> None:
    def plan_header() -> ModelMeta:
        files = hub.repo_files(f"evil/{scenario}")
        quant = files.quants[0]
        return read_gguf_remote(quant.repo_id, quant.first_file, revision=quant.revision)

    run = Bounded(plan_header)
    assert run.finished, f"{scenario} still running after {LIVENESS_S} s"
    print(f"{scenario}: {type(run.outcome).__name__} after {run.seconds:.2f} s, RSS +{run.growth / 2**20:.1f} MiB")
    assert isinstance(run.outcome, EXPECTED[scenario]), repr(run.outcome)
    assert run.growth < RSS_LIMIT
    if isinstance(run.outcome, CamelidError):
        _clean_sentence(str(run.outcome))
    else:
        assert run.outcome.n_layer == 32 and run.outcome.bytes_fetched <= 2 * 2**20
    if scenario in _DISPLAY_UNSAFE:
        assert "unsafe name" in str(run.outcome)


@pytest.mark.parametrize("scenario", _DISK_UNSAFE)
def test_names_unsafe_on_disk_are_refused_before_a_download_writes(hostile: HostileHub, scenario: str) -> None:
    from app.core.models.downloads import plan_download

    quant = hub.repo_files(f"evil/{scenario}").quants[0]
    with pytest.raises(RemoteError, match="unsafe name") as refused:
        plan_download(quant)
    _clean_sentence(str(refused.value))
    assert not any(paths.models_dir().rglob("*")) if paths.models_dir().exists() else True


def test_validate_filename_refuses_each_hazard() -> None:
    for name in (*HOSTILE_NAMES.values(), "PRN", "sub/nul.txt.gguf", "com1.gguf", "LPT9.Q4_K_M.gguf",
                 "a?.gguf", "trailing-dot.", "x" * 201 + ".gguf", "tab\there.gguf", "del\x7f.gguf"):
        with pytest.raises(RemoteError) as refused:
            hub.validate_filename(name)
        _clean_sentence(str(refused.value))
    for name in ("Q4_K_M/model-Q4_K_M.gguf", "Qwen3-8B-Q4_K_M-00001-of-00002.gguf", "console.gguf",
                 "auxiliary-Q8_0.gguf", "модель-Q4_0.gguf"):
        hub.validate_filename(name)


def test_cancel_stops_a_listing_and_a_header_read(hostile: HostileHub) -> None:
    for fn in (lambda c: hub.repo_files("evil/api-slowloris", cancel=c),
               lambda c: read_gguf_remote("evil/slowloris", "model-Q4_K_M.gguf", cancel=c)):
        cancel = threading.Event()
        threading.Timer(0.2, cancel.set).start()
        run = Bounded(lambda fn=fn, cancel=cancel: fn(cancel))
        assert isinstance(run.outcome, HubCallCancelled), repr(run.outcome)
        _clean_sentence(str(run.outcome))


def test_no_agent_registry_request(hostile: HostileHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """huggingface_hub's build_hf_headers would fetch {constants.ENDPOINT}/api/agent-harnesses (F20)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _detect_agent

    monkeypatch.setattr(constants, "ENDPOINT", hostile.url)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", False)
    monkeypatch.setattr(_detect_agent, "_registry", None)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    hostile.requests.clear()
    read_gguf_remote(*_first(hub.repo_files("evil/lying-hash")))
    hub.search_models("evil")
    assert hostile.requests and not [r for r in hostile.requests if "agent" in r]


# -- the CLI --------------------------------------------------------------------------------------


def _cli(*argv: str) -> tuple[int, str, str, Bounded]:
    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with redirect_stdout(out), redirect_stderr(err):
            return main(list(argv))

    bounded = Bounded(run)
    assert bounded.finished, f"camelid {' '.join(argv)} still running after {LIVENESS_S} s"
    code = bounded.outcome
    assert isinstance(code, int), repr(code)
    return code, out.getvalue(), err.getvalue(), bounded


def _check_output(code: int, out: str, err: str) -> None:
    assert "Traceback" not in out + err
    assert not any(unsafe_char(c) for c in out.replace("\n", "") + err.replace("\n", "")), repr(out + err)
    if code != 0:
        assert code == 2 and err.startswith("camelid: ") and err.count("\n") == 1, err


HW = ("--vram", "24", "--ram", "64")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_cli_plan_files_and_download_start(hostile: HostileHub, scenario: str) -> None:
    repo = f"evil/{scenario}"
    fails = EXPECTED[scenario] is not ModelMeta
    for argv in (("plan", repo, *HW), ("files", repo, *HW),
                 ("download", repo, "--dry-run", *HW)):
        code, out, err, run = _cli(*argv)
        print(f"{' '.join(argv[:2])}: exit {code} after {run.seconds:.2f} s, RSS +{run.growth / 2**20:.1f} MiB: "
              f"{err.strip()[:100]!a}")
        _check_output(code, out, err)
        assert run.growth < RSS_LIMIT
        listing_fails = fails and scenario not in _FILE_ONLY
        if argv[0] == "plan":
            assert (code == 2) == fails, err
        elif argv[0] == "files":
            # `files` lists what the listing holds; a header that cannot be read leaves the verdict "?".
            assert (code == 2) == listing_fails, err
        else:
            # The download's fit check is tolerant (a note); the plan then needs a safe name.
            assert (code == 2) == (listing_fails or scenario in _DISK_UNSAFE), err


_FILE_ONLY = ("gzip-bomb-206", "silent", "slowloris", "stall-mid", "range-ignored-huge", "lying-range",
              "lying-total", "lying-length")


def test_cli_download_refuses_disk_unsafe_names_before_writing(hostile: HostileHub) -> None:
    for scenario in _DISK_UNSAFE:
        code, out, err, _ = _cli("download", f"evil/{scenario}", "--no-fit-check")
        _check_output(code, out, err)
        assert code == 2 and "unsafe name" in err
    assert hostile.body_bytes_sent < 16 * 2**20  # listings and no file body
    assert not [r for r in hostile.requests if r.startswith("HEAD ")]


_LISTING = ("api-silent", "api-slowloris", "api-endless", "api-oversize", "api-gzip-bomb", "api-deflate-bomb",
            "json-infinity", "json-deep", "json-not-json", "json-not-object", "json-sha-int", "size-string",
            "names-ansi")


@pytest.mark.parametrize("scenario", _LISTING)
def test_cli_catalog_refresh(hostile: HostileHub, scenario: str) -> None:
    hostile.listing = scenario
    code, out, err, run = _cli("catalog", "--refresh")
    print(f"catalog --refresh {scenario}: exit {code} after {run.seconds:.2f} s, "
          f"RSS +{run.growth / 2**20:.1f} MiB: {err.strip()[:100]!a}")
    _check_output(code, out, err)
    assert run.growth < RSS_LIMIT
    if scenario.startswith("api-"):
        # The Hub too slow or too big: the refresh stops at the first listing, the catalog untouched.
        assert code == 2 and "not changed" in err
        assert not paths.user_catalog_path().exists()
        assert len([r for r in hostile.requests if r.startswith("GET /api/models?")]) == 1
    else:
        # A malformed listing (or odd items in it) skips that lab; nothing of it is added.
        assert code == 0


def test_header_budget_is_a_typed_error(hostile: HostileHub, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.http_policy import HeaderTooLargeError, HttpPolicy

    policy = HttpPolicy.current().with_(max_header_bytes=16 * 1024)
    with pytest.raises(HeaderTooLargeError) as refused:
        read_gguf_remote("evil/endless-206", "model-Q4_K_M.gguf", policy=policy)
    _clean_sentence(str(refused.value))
    with pytest.raises((NotGGUFError, TruncatedGGUFError, RemoteError)):
        read_gguf_remote("evil/lying-length", "model-Q4_K_M.gguf")
