"""The download manager against the loopback Hub: plan, verify, resume, retry, refuse."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app import paths
from app.core.errors import (
    ChecksumError,
    DiskSpaceError,
    DownloadCancelled,
    GatedRepoError,
    NotFoundError,
    RemoteError,
    WontFitError,
)
from app.core.models import downloads, hub
from app.core.models.downloads import (
    DownloadQueue,
    FitJudgement,
    RetryPolicy,
    download,
    plan_download,
)
from tests.conftest import REPO_ROOT
from tests.fixtures.loopback_hub import LoopbackHub

REPO = "org/Tiny-GGUF"
FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, read_timeout=5)


def _payload(size: int, seed: int = 1) -> bytes:
    block = bytes((i * 31 + seed) % 251 for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


def _publish(hub_server: LoopbackHub, name: str = "Tiny-Q4_K_M.gguf", size: int = 3_000_000,
             repo: str = REPO, **repo_kwargs) -> bytes:
    if repo not in hub_server._repos:
        hub_server.add_repo(repo, **repo_kwargs)
    data = _payload(size, seed=len(name))
    hub_server.add_file(repo, name, data)
    return data


def _plan(quant: str = "Q4_K_M", repo: str = REPO, **kwargs) -> downloads.DownloadPlan:
    return plan_download(hub.select_quant(hub.repo_files(repo), quant), **kwargs)


def _library_files() -> list[Path]:
    root = paths.models_dir()
    return [p for p in root.rglob("*") if p.is_file() and paths.downloads_dir() not in p.parents]


def test_full_download_is_verified_and_moved(loopback_hub: LoopbackHub) -> None:
    data = _publish(loopback_hub)
    reports: list[downloads.DownloadProgress] = []
    result = download(_plan(), progress=reports.append, retry=FAST)
    assert result.path == paths.models_dir() / "org" / "Tiny-GGUF" / "Tiny-Q4_K_M.gguf"
    assert result.path.read_bytes() == data
    out = result.to_dict()
    assert {"path", "bytes", "sha256", "verified"} <= set(out)
    assert out["verified"] is True and out["bytes"] == len(data)
    assert out["sha256"] == loopback_hub.repo(REPO).files["Tiny-Q4_K_M.gguf"].sha256
    assert reports[-1].state == "done" and reports[-1].bytes_done == len(data)
    assert not list(paths.downloads_dir().rglob("*.part"))
    assert loopback_hub.bytes_served(REPO) == len(data)


def test_connection_dropped_mid_body_resumes_with_range(loopback_hub: LoopbackHub) -> None:
    data = _publish(loopback_hub)
    loopback_hub.drop_after(1_234_567)
    result = download(_plan(), retry=FAST)
    assert result.path.read_bytes() == data and result.verified
    gets = loopback_hub.requests(method="GET", path_contains="/cdn/")
    assert [g.range for g in gets] == [None, "bytes=1234567-"]
    assert loopback_hub.bytes_served(REPO) == len(data)  # not one byte fetched twice


def test_server_errors_are_retried_then_succeed(loopback_hub: LoopbackHub) -> None:
    data = _publish(loopback_hub)
    loopback_hub.fail_next(1, status=500, path_contains="/resolve/")
    loopback_hub.fail_next(1, status=503, path_contains="/cdn/")
    result = download(_plan(), retry=FAST)
    assert result.path.read_bytes() == data
    statuses = [r.status for r in loopback_hub.requests() if r.filename or "/resolve/" in r.path or "/cdn/" in r.path]
    assert 500 in statuses and 503 in statuses and statuses[-1] == 200


def test_server_that_ignores_range_restarts_cleanly(loopback_hub: LoopbackHub) -> None:
    data = _publish(loopback_hub)
    loopback_hub.drop_after(1_000_000)
    loopback_hub.ignore_range()
    result = download(_plan(), retry=FAST)
    assert result.path.read_bytes() == data and result.verified


def test_corrupted_byte_is_caught_and_nothing_enters_the_library(loopback_hub: LoopbackHub) -> None:
    _publish(loopback_hub)
    loopback_hub.corrupt_byte(REPO, "Tiny-Q4_K_M.gguf", 2_000_000)
    plan = _plan()
    with pytest.raises(ChecksumError) as err:
        download(plan, retry=FAST)
    assert "sha256" in str(err.value) and "again" in str(err.value)
    assert _library_files() == []
    assert not plan.files[0].part.exists()


def test_missing_repo_and_file_are_not_retried(loopback_hub: LoopbackHub) -> None:
    with pytest.raises(NotFoundError) as err:
        hub.repo_files("org/Nope-GGUF")
    assert "org/Nope-GGUF" in str(err.value)
    _publish(loopback_hub)
    plan = _plan()
    loopback_hub.remove_file(REPO, "Tiny-Q4_K_M.gguf")
    loopback_hub.add_file(REPO, "Other-Q8_0.gguf", b"x" * 10)
    plan = dataclasses.replace(plan, revision="main")
    with pytest.raises(NotFoundError) as err:
        download(plan, retry=FAST)
    assert "Tiny-Q4_K_M.gguf" in str(err.value)
    assert len(loopback_hub.requests(method="HEAD")) == 1


def test_gated_repo_messages(loopback_hub: LoopbackHub, monkeypatch: pytest.MonkeyPatch) -> None:
    _publish(loopback_hub, repo="meta/Gated-GGUF", gated=True, tokens={"hf_granted"})
    plan = _plan(repo="meta/Gated-GGUF")  # the listing is public, the files are not
    with pytest.raises(GatedRepoError) as err:
        download(plan, retry=FAST)
    message = str(err.value)
    assert err.value.code == "gated" and "HF_TOKEN" in message
    assert f"{loopback_hub.url}/meta/Gated-GGUF" in message  # the page where the license is accepted
    monkeypatch.setenv("HF_TOKEN", "hf_other")
    with pytest.raises(GatedRepoError) as err:
        download(plan, retry=FAST)
    assert "not been granted" in str(err.value) and f"{loopback_hub.url}/meta/Gated-GGUF" in str(err.value)
    assert len(loopback_hub.requests(method="HEAD")) == 2  # 401 and 403 are never retried
    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    assert download(plan, retry=FAST).verified


def test_private_repo_without_token(loopback_hub: LoopbackHub) -> None:
    _publish(loopback_hub, repo="me/Private-GGUF", private=True, tokens={"hf_me"})
    with pytest.raises(NotFoundError) as err:
        hub.repo_files("me/Private-GGUF")
    assert "private" in str(err.value) and "HF_TOKEN" in str(err.value)
    assert hub.repo_files("me/Private-GGUF", token="hf_me").quants


def test_disk_space_refusal_before_any_byte(loopback_hub: LoopbackHub, tmp_path: Path) -> None:
    free = downloads.disk_free_bytes(paths.downloads_dir())
    huge = tmp_path / "huge.gguf"
    with huge.open("wb") as f:
        f.truncate(free + 10 * 1024**3)  # sparse: no real space used
    loopback_hub.add_repo(REPO)
    loopback_hub.add_file(REPO, "Huge-Q4_K_M.gguf", huge, sha256="0" * 64)
    with pytest.raises(DiskSpaceError) as err:
        _plan()
    assert "free" in str(err.value) and "CAMELID_MODELS_DIR" in str(err.value)
    assert loopback_hub.requests(method="HEAD") == []


def test_hostile_file_names_are_refused(loopback_hub: LoopbackHub) -> None:
    names = ("../../evil-Q4_K_M.gguf", "dir/../../evil-Q8_0.gguf", "/etc/evil-Q6_K.gguf")
    for i, name in enumerate(names):
        repo = f"org/Evil{i}-GGUF"
        loopback_hub.add_file(repo, name, b"GGUF" * 4)
        # Refused where it is first seen: the listing, or at the latest the plan.
        with pytest.raises(RemoteError) as err:
            plan_download(hub.select_quant(hub.repo_files(repo), None))
        assert "unsafe name" in str(err.value)
    assert not (paths.models_dir().parent / "evil-Q4_K_M.gguf").exists()


def test_split_gguf_three_shards(loopback_hub: LoopbackHub) -> None:
    loopback_hub.add_repo(REPO)
    shards = [_payload(700_000 + i, seed=i) for i in range(3)]
    for i, data in enumerate(shards, start=1):
        loopback_hub.add_file(REPO, f"Q8_0/Tiny-Q8_0-0000{i}-of-00003.gguf", data)
    quant = hub.select_quant(hub.repo_files(REPO), "Q8_0")
    assert quant.is_split and quant.total_bytes == sum(map(len, shards))
    # A bad third shard: the first two are verified but must not enter the library alone.
    loopback_hub.corrupt_byte(REPO, "Q8_0/Tiny-Q8_0-00003-of-00003.gguf", 10)
    with pytest.raises(ChecksumError):
        download(plan_download(quant), retry=FAST)
    assert _library_files() == []
    loopback_hub.reset_faults()
    served_before = loopback_hub.bytes_served(REPO)
    result = download(plan_download(quant), retry=FAST)
    # Shards 1 and 2 were kept as verified parts: only shard 3 is fetched again.
    assert loopback_hub.bytes_served(REPO) - served_before == len(shards[2])
    assert [f.path.name for f in result.files] == [f"Tiny-Q8_0-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert [f.path.read_bytes() for f in result.files] == shards
    assert result.path.name.endswith("00001-of-00003.gguf") and result.verified


def test_remote_change_restarts_the_part(loopback_hub: LoopbackHub) -> None:
    _publish(loopback_hub)
    plan = _plan()
    loopback_hub.drop_after(1_000_000)
    with pytest.raises(RemoteError):
        download(plan, retry=RetryPolicy(attempts=1, base_delay=0.01))
    assert plan.files[0].part.stat().st_size == 1_000_000
    new = _payload(3_000_000, seed=99)
    loopback_hub.add_file(REPO, "Tiny-Q4_K_M.gguf", new)
    loopback_hub.clear_log()
    result = download(_plan(), retry=FAST)  # the command run again: a plan at the new commit
    assert result.path.read_bytes() == new and result.verified
    assert [g.range for g in loopback_hub.requests(method="GET", path_contains="/cdn/")] == [None]


def test_no_fit_needs_an_override(loopback_hub: LoopbackHub) -> None:
    _publish(loopback_hub)
    judged: list[str] = []

    def judge(quant: hub.QuantFile) -> FitJudgement:
        judged.append(quant.first_file)
        return FitJudgement("no_fit", {"total_bytes": 1}, reason="it needs 90 GiB, this machine has 16")

    with pytest.raises(WontFitError) as err:
        _plan(judge=judge)
    assert "90 GiB" in str(err.value) and "--force" in str(err.value)
    plan = _plan(judge=judge, allow_no_fit=True)
    assert plan.verdict == "no_fit" and plan.to_dict()["fit"] == {"total_bytes": 1}
    assert judged == ["Tiny-Q4_K_M.gguf"] * 2


def test_cancel_during_a_stall_keeps_the_part_and_speed_falls(loopback_hub: LoopbackHub) -> None:
    _publish(loopback_hub)
    loopback_hub.stall(20.0, after_bytes=1_500_000)
    cancel = threading.Event()
    reports: list[downloads.DownloadProgress] = []
    stalled_at: list[float] = []

    def progress(p: downloads.DownloadProgress) -> None:
        reports.append(p)
        if p.bytes_done >= 1_500_000 and not stalled_at:
            stalled_at.append(time.monotonic())
        if stalled_at and time.monotonic() - stalled_at[0] > 1.5:
            cancel.set()

    plan = _plan()
    started = time.monotonic()
    with pytest.raises(DownloadCancelled):
        download(plan, progress=progress, cancel=cancel, retry=FAST)
    assert time.monotonic() - started < 12  # did not wait for the 20 s stall to end
    during = [r for r in reports if r.bytes_done == 1_500_000 and r.state == "downloading"]
    assert len(during) >= 4  # reports kept coming at a steady rate while no byte arrived
    assert during[-1].speed_bps < during[0].speed_bps
    assert plan.files[0].part.stat().st_size == 1_500_000
    loopback_hub.clear_log()
    result = download(_plan(), retry=FAST)
    assert result.verified and loopback_hub.bytes_served(REPO) == 1_500_000


def test_queue_runs_one_at_a_time_in_the_chosen_order(loopback_hub: LoopbackHub) -> None:
    for quant in ("Q4_K_M", "Q5_K_M", "Q8_0"):
        _publish(loopback_hub, name=f"Tiny-{quant}.gguf", size=200_000)
    queue = DownloadQueue()
    jobs = {q: queue.add(_plan(q)) for q in ("Q4_K_M", "Q5_K_M", "Q8_0")}
    queue.move(jobs["Q8_0"].id, 0)
    queue.cancel(jobs["Q5_K_M"].id)
    assert [j.plan.quant for j in queue.waiting()] == ["Q8_0", "Q4_K_M"]
    first = queue.take_next()
    assert first is jobs["Q8_0"] and queue.take_next() is None  # one active at a time
    first.state = "waiting"  # hand it back
    seen: list[str] = []
    done = queue.run(progress=lambda job, p: seen.append(job.plan.quant), retry=FAST)
    assert [j.plan.quant for j in done] == ["Q8_0", "Q4_K_M"]
    assert all(j.state == "done" and j.result and j.result.verified for j in done)
    assert jobs["Q5_K_M"].state == "cancelled"
    assert seen.index("Q4_K_M") > seen.index("Q8_0")


def test_sigkill_mid_download_then_resume_refetches_at_most_one_chunk(
        loopback_hub: LoopbackHub, camelid_home: Path) -> None:
    size = 12 * 1024 * 1024
    data = _publish(loopback_hub, size=size)
    loopback_hub.throttle(6 * 1024 * 1024)
    env = {**os.environ, "CAMELID_HOME": str(camelid_home), "HF_ENDPOINT": loopback_hub.url,
           "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "app", "download", f"{REPO}:Q4_K_M", "--json",
                             "--no-fit-check"], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    part = paths.downloads_dir() / "org" / "Tiny-GGUF" / "Tiny-Q4_K_M.gguf.part"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not part.exists() or part.stat().st_size < 3 * 1024 * 1024):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    kept = part.stat().st_size
    assert 0 < kept < size
    deadline = time.monotonic() + 5  # the server notices the dead socket on its next write
    while time.monotonic() < deadline and not loopback_hub.requests(method="GET", path_contains="/cdn/"):
        time.sleep(0.02)
    served_before = loopback_hub.bytes_served(REPO)
    loopback_hub.throttle(None)
    out = subprocess.run([sys.executable, "-m", "app", "download", f"{REPO}:Q4_K_M", "--json",
                          "--no-fit-check"], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["verified"] is True and result["bytes"] == size
    assert Path(result["path"]).read_bytes() == data
    gets = loopback_hub.requests(method="GET", path_contains="/cdn/")
    assert gets[-1].range == f"bytes={kept}-"
    refetched = served_before + gets[-1].bytes_sent - size
    assert refetched <= downloads.CHUNK_SIZE


def test_ctrl_c_leaves_a_resumable_part(loopback_hub: LoopbackHub, camelid_home: Path) -> None:
    size = 8 * 1024 * 1024
    _publish(loopback_hub, size=size)
    # Slow enough that a loaded machine still sees the part half-way (8 s for the whole file).
    loopback_hub.throttle(1024 * 1024)
    env = {**os.environ, "CAMELID_HOME": str(camelid_home), "HF_ENDPOINT": loopback_hub.url,
           "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "app", "download", f"{REPO}:Q4_K_M", "--no-fit-check"],
                            env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = paths.downloads_dir() / "org" / "Tiny-GGUF" / "Tiny-Q4_K_M.gguf.part"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not part.exists() or part.stat().st_size < 512 * 1024):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 130
    assert "resume" in err and "Traceback" not in err
    assert 0 < part.stat().st_size < size and _library_files() == []
