"""Downloads never lose data (issue 15, F4-F6), against the real loopback Hub.

- F4: two files with one name in different repo folders (or revisions) both survive.
- F5: a body that runs past the announced size is cut there and refused.
- F6: one writer per part file; a second download of the same file joins the first.

Across all of them: nothing already in the library is ever replaced or deleted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app import paths
from app.core.errors import DiskSpaceError, RemoteError
from app.core.models import downloads, hub, library
from app.core.models.downloads import AlreadyDownloading, RetryPolicy, download, plan_download
from app.core.models.part_lock import PartLock
from tests.conftest import REPO_ROOT
from tests.fixtures.loopback_hub import LoopbackHub

REPO = "org/Dup-GGUF"
FAST = RetryPolicy(base_delay=0.01, max_delay=0.05, read_timeout=5)


def _payload(size: int, seed: int) -> bytes:
    block = bytes((i * 31 + seed) % 251 for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


def _plan(quant: str, repo: str = REPO) -> downloads.DownloadPlan:
    return plan_download(hub.select_quant(hub.repo_files(repo), quant))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _library() -> dict[Path, str]:
    """Every file in the library (not the part folder), with its sha256."""
    root = paths.models_dir()
    if not root.is_dir():
        return {}
    return {p: _sha(p) for p in root.rglob("*") if p.is_file() and paths.downloads_dir() not in p.parents}


def _assert_nothing_lost(before: dict[Path, str]) -> None:
    after = _library()
    for path, digest in before.items():
        assert after.get(path) == digest, f"{path} was replaced or deleted"


# -- F4: unique local paths --------------------------------------------------------------


@pytest.mark.parametrize("sizes", [(900_000, 900_000), (900_000, 1_300_000)], ids=["same-size", "other-size"])
def test_per_quant_folders_with_one_file_name_both_survive(loopback_hub: LoopbackHub,
                                                           sizes: tuple[int, int]) -> None:
    q4, q8 = _payload(sizes[0], seed=4), _payload(sizes[1], seed=8)
    loopback_hub.add_file(REPO, "Q4_K_M/model.gguf", q4)
    loopback_hub.add_file(REPO, "Q8_0/model.gguf", q8)
    first = download(_plan("Q4_K_M"), retry=FAST)
    kept = _library()
    second = download(_plan("Q8_0"), retry=FAST)
    _assert_nothing_lost(kept)
    folder = downloads.destination_folder(REPO)
    assert first.path == folder / "Q4_K_M" / "model.gguf" and second.path == folder / "Q8_0" / "model.gguf"
    assert _sha(first.path) == hashlib.sha256(q4).hexdigest() == loopback_hub.repo(REPO).files[
        "Q4_K_M/model.gguf"].sha256
    assert _sha(second.path) == hashlib.sha256(q8).hexdigest()
    assert first.verified and second.verified and not second.notes
    # The library tells them apart by repo and quant, and each name opens the right file.
    models = {m.quant: m for m in library.scan_models(["camelid"])}
    assert set(models) == {"Q4_K_M", "Q8_0"} and {m.repo_id for m in models.values()} == {REPO}
    assert library.find_model(f"{REPO}:Q8_0") == second.path
    assert library.find_model(f"{REPO}:Q4_K_M") == first.path
    # Asking again finds each in place: nothing fetched, nothing moved.
    served = loopback_hub.bytes_served(REPO)
    again = download(_plan("Q4_K_M"), retry=FAST)
    assert again.path == first.path and again.verified and loopback_hub.bytes_served(REPO) == served
    _assert_nothing_lost(kept)


def test_a_file_saved_by_the_old_flat_layout_is_used_and_never_deleted(loopback_hub: LoopbackHub) -> None:
    q4, q8 = _payload(900_000, seed=4), _payload(900_000, seed=8)
    loopback_hub.add_file(REPO, "Q4_K_M/model.gguf", q4)
    loopback_hub.add_file(REPO, "Q8_0/model.gguf", q8)
    legacy = downloads.destination_folder(REPO) / "model.gguf"  # where Camelid used to save both
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(q4)
    kept = _library()
    plan = _plan("Q4_K_M")
    assert plan.layout == "flat" and plan.remaining_bytes == 0
    result = download(plan, retry=FAST)
    assert result.path == legacy and result.verified and loopback_hub.bytes_served(REPO) == 0
    # Q8_0 has the same size: the old code hashed the Q4_K_M file, called it damaged and deleted it.
    result = download(_plan("Q8_0"), retry=FAST)
    _assert_nothing_lost(kept)
    assert result.path == downloads.destination_folder(REPO) / "Q8_0" / "model.gguf"
    assert _sha(result.path) == hashlib.sha256(q8).hexdigest() and result.verified
    assert legacy.read_bytes() == q4
    assert any("left as it is" in note for note in result.notes)


@pytest.mark.parametrize("new_size", [1_000_000, 1_200_000], ids=["same-size", "other-size"])
def test_a_new_revision_of_a_file_is_saved_beside_the_old_one(loopback_hub: LoopbackHub,
                                                              new_size: int) -> None:
    name = "Tiny-Q4_K_M.gguf"
    old, new = _payload(1_000_000, seed=1), _payload(new_size, seed=2)
    loopback_hub.add_file(REPO, name, old)
    first = download(_plan("Q4_K_M"), retry=FAST)
    kept = _library()
    loopback_hub.add_file(REPO, name, new)  # a new commit on the Hub
    commit = loopback_hub.repo(REPO).sha
    result = download(_plan("Q4_K_M"), retry=FAST)
    _assert_nothing_lost(kept)
    assert first.path.read_bytes() == old
    assert result.path == downloads.destination_folder(REPO) / f"@{commit[:12]}" / name
    assert _sha(result.path) == hashlib.sha256(new).hexdigest() and result.verified
    listed = [m for m in library.scan_models(["camelid"]) if m.repo_id == REPO]
    assert sorted(str(m.path) for m in listed) == sorted([str(first.path), str(result.path)])


def test_a_file_that_appears_at_the_destination_after_planning_is_kept(loopback_hub: LoopbackHub) -> None:
    data = _payload(800_000, seed=3)
    loopback_hub.add_file(REPO, "Q8_0/model.gguf", data)
    plan = _plan("Q8_0")
    foreign = b"someone else's file"
    plan.destination.parent.mkdir(parents=True)
    plan.destination.write_bytes(foreign)
    result = download(plan, retry=FAST)
    assert plan.destination.read_bytes() == foreign
    assert result.path != plan.destination and result.path.read_bytes() == data and result.verified


def test_a_part_from_the_old_flat_layout_resumes(loopback_hub: LoopbackHub) -> None:
    data = _payload(2_000_000, seed=5)
    loopback_hub.add_file(REPO, "Q8_0/model.gguf", data)
    loopback_hub.drop_after(700_000)
    plan = _plan("Q8_0")
    with pytest.raises(RemoteError):
        download(plan, retry=RetryPolicy(attempts=1, base_delay=0.01))
    # Move the part where the old code kept it (base name only), as an upgrade would find it.
    legacy = plan.files[0].part.parent.parent / "model.gguf.part"
    plan.files[0].part.rename(legacy)
    Path(f"{plan.files[0].part}.json").rename(f"{legacy}.json")
    loopback_hub.clear_log()
    result = download(_plan("Q8_0"), retry=FAST)
    assert result.path.read_bytes() == data and result.verified
    assert loopback_hub.bytes_served(REPO) == len(data) - 700_000


# -- F5: never past the announced size ---------------------------------------------------


@pytest.mark.parametrize(("extra", "content_length"), [(None, "omit"), (5_000_000, "inflated")],
                         ids=["endless-without-length", "inflated-length"])
def test_a_body_past_the_announced_size_is_cut_and_refused(loopback_hub: LoopbackHub, extra: int | None,
                                                           content_length: str) -> None:
    size = 1_500_000
    loopback_hub.add_file(REPO, "Tiny-Q4_K_M.gguf", _payload(size, seed=7))
    loopback_hub.oversize(extra, content_length=content_length)
    plan = _plan("Q4_K_M")
    with pytest.raises(RemoteError) as err:
        download(plan, retry=FAST)
    message = str(err.value)
    assert f"announced {size} bytes" in message and "refused" in message
    part = plan.files[0].part
    assert not part.exists() or part.stat().st_size <= size
    assert _library() == {}
    # Refused at once, not retried: one body request.
    assert len(loopback_hub.requests(method="GET", path_contains="/cdn/")) == 1


def test_an_overrun_on_resume_keeps_only_the_bytes_from_before(loopback_hub: LoopbackHub) -> None:
    size = 2_000_000
    data = _payload(size, seed=9)
    loopback_hub.add_file(REPO, "Tiny-Q4_K_M.gguf", data)
    loopback_hub.drop_after(600_000)
    plan = _plan("Q4_K_M")
    with pytest.raises(RemoteError):
        download(plan, retry=RetryPolicy(attempts=1, base_delay=0.01))
    part = plan.files[0].part
    assert part.stat().st_size == 600_000
    loopback_hub.oversize(None)
    with pytest.raises(RemoteError) as err:
        download(_plan("Q4_K_M"), retry=FAST)
    assert "refused" in str(err.value)
    assert part.stat().st_size == 600_000  # the overrunning answer's bytes were not kept
    loopback_hub.reset_faults()
    result = download(_plan("Q4_K_M"), retry=FAST)
    assert result.path.read_bytes() == data and result.verified


def test_a_head_size_that_contradicts_the_listing_at_a_commit_is_refused(loopback_hub: LoopbackHub) -> None:
    loopback_hub.add_file(REPO, "Tiny-Q4_K_M.gguf", _payload(1_000_000, seed=15))
    loopback_hub.announce_size(REPO, "Tiny-Q4_K_M.gguf", 10 * 1024**4)  # 10 TiB, the listing says 1 MB
    plan = _plan("Q4_K_M")
    with pytest.raises(RemoteError) as err:
        download(plan, retry=FAST)
    assert "lists Tiny-Q4_K_M.gguf at 1000000 bytes" in str(err.value)
    assert loopback_hub.requests(method="GET", path_contains="/cdn/") == []
    assert not plan.files[0].part.exists() or plan.files[0].part.stat().st_size == 0


def test_a_branch_that_grew_past_the_free_space_is_refused_before_any_byte(
        loopback_hub: LoopbackHub, tmp_path: Path) -> None:
    loopback_hub.add_file(REPO, "Tiny-Q4_K_M.gguf", _payload(1_000_000, seed=16))
    plan = dataclasses.replace(_plan("Q4_K_M"), revision="main")  # a branch may move
    huge = tmp_path / "huge.gguf"
    with huge.open("wb") as f:
        f.truncate(downloads.disk_free_bytes(paths.downloads_dir()) + 10 * 1024**3)  # sparse
    loopback_hub.add_file(REPO, "Tiny-Q4_K_M.gguf", huge, sha256="0" * 64)
    with pytest.raises(DiskSpaceError) as err:
        download(plan, retry=FAST)
    assert "is now" in str(err.value) and "free" in str(err.value)
    assert loopback_hub.requests(method="GET", path_contains="/cdn/") == []


# -- F6: one writer per part file --------------------------------------------------------


def _wait_for_part(part: Path, at_least: int = 1, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if part.exists() and part.stat().st_size >= at_least:
            return
        time.sleep(0.01)
    raise AssertionError(f"{part} never reached {at_least} bytes")


def test_a_second_download_in_another_thread_joins_the_first(loopback_hub: LoopbackHub) -> None:
    size = 4 * 1024 * 1024
    data = _payload(size, seed=11)
    loopback_hub.add_file(REPO, "Tiny-Q4_K_M.gguf", data)
    loopback_hub.throttle(4 * 1024 * 1024)
    results: dict[str, downloads.DownloadResult] = {}
    errors: list[BaseException] = []

    def run(who: str, plan: downloads.DownloadPlan,
            progress: downloads.ProgressCallback | None = None) -> None:
        try:
            results[who] = download(plan, progress=progress, retry=FAST)
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    plan = _plan("Q4_K_M")
    first = threading.Thread(target=run, args=("first", plan))
    first.start()
    _wait_for_part(plan.files[0].part, 256 * 1024)
    seen: list[downloads.DownloadProgress] = []
    second = threading.Thread(target=run, args=("second", _plan("Q4_K_M"), seen.append))
    second.start()
    first.join(60)
    second.join(60)
    assert not errors, errors
    assert results["first"].path == results["second"].path
    assert results["second"].path.read_bytes() == data and results["second"].verified
    assert results["second"].files[0].sha256 == hashlib.sha256(data).hexdigest()
    waiting = [p for p in seen if p.state == "waiting"]
    assert waiting and "already being downloaded" in (waiting[0].message or "")
    assert loopback_hub.bytes_served(REPO) == size  # one writer fetched it, once
    assert len(loopback_hub.requests(method="GET", path_contains="/cdn/")) == 1
    assert not [p for p in paths.downloads_dir().rglob("*") if p.is_file()]  # no part, sidecar or lock left


def test_without_waiting_a_second_download_says_it_is_already_downloading(
        loopback_hub: LoopbackHub) -> None:
    loopback_hub.add_file(REPO, "Tiny-Q4_K_M.gguf", _payload(500_000, seed=12))
    plan = _plan("Q4_K_M")
    with PartLock(plan.files[0].part) as held:
        assert held.try_acquire()
        with pytest.raises(AlreadyDownloading) as err:
            download(plan, retry=FAST, wait=False)
    assert f"already being downloaded by another Camelid (pid {os.getpid()})" not in str(err.value)
    assert "already being downloaded" in str(err.value) and "Wait" in str(err.value)
    assert loopback_hub.requests(method="HEAD") == []  # not one byte was asked for
    assert loopback_hub.requests(method="GET", path_contains="/cdn/") == []
    assert download(_plan("Q4_K_M"), retry=FAST, wait=False).verified


def test_a_lock_left_by_a_dead_process_does_not_block(loopback_hub: LoopbackHub) -> None:
    loopback_hub.add_file(REPO, "Tiny-Q4_K_M.gguf", _payload(500_000, seed=13))
    plan = _plan("Q4_K_M")
    lock = PartLock(plan.files[0].part).path
    lock.parent.mkdir(parents=True)
    lock.write_text("999999999\n")  # a SIGKILLed writer's file: the OS lock died with it
    assert download(plan, retry=FAST, wait=False).verified
    assert not lock.exists()


def test_part_locks_exclude_each_other_within_one_process(tmp_path: Path) -> None:
    part = tmp_path / "x.gguf.part"
    a, b = PartLock(part), PartLock(part)
    assert a.try_acquire() and not b.try_acquire()
    assert b.holder_pid() == os.getpid()
    a.release()
    assert not a.path.exists()
    assert b.try_acquire()
    b.release()


def test_two_camelid_processes_one_file_one_writer(loopback_hub: LoopbackHub, camelid_home: Path) -> None:
    size = 6 * 1024 * 1024
    data = _payload(size, seed=14)
    loopback_hub.add_file(REPO, "Tiny-Q4_K_M.gguf", data)
    loopback_hub.throttle(1024 * 1024)  # 6 s: the second process starts well before the first ends
    env = {**os.environ, "CAMELID_HOME": str(camelid_home), "HF_ENDPOINT": loopback_hub.url,
           "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "app", "download", f"{REPO}:Q4_K_M", "--json", "--no-fit-check"]
    first = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    part = downloads.part_path(REPO, "Tiny-Q4_K_M.gguf")
    _wait_for_part(part, 512 * 1024)
    second = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=90)
    out, err = first.communicate(timeout=90)
    assert first.returncode == 0, err
    assert second.returncode == 0, second.stderr
    assert f"already being downloaded by another Camelid (pid {first.pid})" in second.stderr
    one, two = json.loads(out), json.loads(second.stdout)
    assert one["path"] == two["path"] and one["verified"] and two["verified"]
    assert one["sha256"] == two["sha256"] == hashlib.sha256(data).hexdigest()
    assert Path(two["path"]).read_bytes() == data
    assert loopback_hub.bytes_served(REPO) == size
