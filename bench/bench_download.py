"""Download throughput: Camelid's resumable, hashing downloader vs plain hf_hub_download.

Both fetch the same sparse file from the loopback Hub (tests/fixtures/loopback_hub.py,
served with sendfile) on 127.0.0.1, alternating, several rounds. Camelid also
computes sha256 while streaming and verifies it; hf_hub_download does not hash.
Then the cost of a resume: a download stopped at half, picked up again from
the part file on disk (as after a crash or a restart).

Run: .venv/bin/python bench/bench_download.py   (writes its section of docs/BENCHMARKS.md)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from bench.report import machine_line, summary, table, update_section

SIZE = 512 * 1024 * 1024
ROUNDS = 5
REPO = "bench/Sparse-GGUF"
FILE = "Sparse-Q4_K_M.gguf"


def _sparse_file(folder: Path) -> tuple[Path, str]:
    path = folder / FILE
    with path.open("wb") as f:
        f.truncate(SIZE)
        f.seek(SIZE // 2)
        f.write(b"camelid")  # one non-zero run so a wrong offset would change the hash
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(8 * 1024 * 1024):
            digest.update(block)
    return path, digest.hexdigest()


def main() -> None:
    from huggingface_hub import hf_hub_download

    from app.core.models import downloads, hub
    from tests.fixtures.loopback_hub import LoopbackHub

    work = Path(tempfile.mkdtemp(prefix="camelid-bench-dl-"))
    os.environ["CAMELID_HOME"] = str(work / "home")
    source, sha = _sparse_file(work)
    with LoopbackHub() as server:
        os.environ["HF_ENDPOINT"] = server.url
        server.add_repo(REPO)
        server.add_file(REPO, FILE, source, sha256=sha)
        quant = hub.select_quant(hub.repo_files(REPO), "Q4_K_M")

        def camelid_once() -> float:
            plan = downloads.plan_download(quant)
            t = time.perf_counter()
            result = downloads.download(plan)
            elapsed = time.perf_counter() - t
            assert result.verified and result.bytes == SIZE
            result.path.unlink()
            return elapsed

        def hf_once() -> float:
            cache = work / "hf-cache"
            t = time.perf_counter()
            path = hf_hub_download(REPO, FILE, endpoint=server.url, cache_dir=cache, token=False)
            elapsed = time.perf_counter() - t
            assert Path(path).stat().st_size == SIZE
            shutil.rmtree(cache)
            return elapsed

        camelid_once(), hf_once()  # warm the page cache and the connection pools
        camelid_times, hf_times = [], []
        for _ in range(ROUNDS):
            hf_times.append(hf_once())
            camelid_times.append(camelid_once())

        # Resume: stop at half, then a fresh plan picks the part up from disk.
        resumed, refetched, rehash = [], [], []
        for _ in range(3):
            cancel = threading.Event()
            plan = downloads.plan_download(quant)
            server.throttle(256 * 1024 * 1024)  # slow enough to stop near the middle

            def stop_at_half(p: downloads.DownloadProgress, cancel: threading.Event = cancel) -> None:
                if p.bytes_done >= SIZE // 2:
                    cancel.set()

            with contextlib.suppress(downloads.DownloadCancelled):
                downloads.download(plan, progress=stop_at_half, cancel=cancel)
            server.throttle(None)
            kept = plan.files[0].part.stat().st_size
            served_before = server.bytes_served(REPO)
            t = time.perf_counter()
            result = downloads.download(downloads.plan_download(quant))
            resumed.append((time.perf_counter() - t, kept))
            assert result.verified
            refetched.append(server.bytes_served(REPO) - served_before - (SIZE - kept))
            t = time.perf_counter()
            h = hashlib.sha256()
            with result.path.open("rb") as f:
                remaining = kept
                while remaining and (block := f.read(min(8 * 1024 * 1024, remaining))):
                    h.update(block)
                    remaining -= len(block)
            rehash.append(time.perf_counter() - t)
            result.path.unlink()
    shutil.rmtree(work, ignore_errors=True)

    mib = SIZE / 1024**2
    cam_med, cam_spread = summary(camelid_times)
    hf_med, hf_spread = summary(hf_times)
    ratio = hf_med / cam_med
    fresh_rate = SIZE / cam_med
    resume_rows = []
    for (elapsed, kept), again, hashed in zip(resumed, refetched, rehash, strict=True):
        expected = (SIZE - kept) / fresh_rate
        resume_rows.append([f"{kept / 1024**2:.0f} MiB", f"{elapsed:.3f} s", f"{expected:.3f} s",
                            f"{hashed:.3f} s", f"{again} B"])
    body = "\n".join([
        "Script: `bench/bench_download.py`. " + machine_line(),
        "",
        f"A {mib:.0f} MiB sparse file from the loopback Hub (127.0.0.1, sendfile), {ROUNDS} alternating "
        "rounds after one warm-up each. Camelid hashes (sha256) while streaming and verifies against the "
        "LFS hash; hf_hub_download does not hash.",
        "",
        table(["downloader", "median", "spread", "throughput"], [
            ["hf_hub_download", f"{hf_med:.3f} s", f"{hf_spread:.3f} s", f"{mib / hf_med:.0f} MiB/s"],
            ["Camelid downloads.download", f"{cam_med:.3f} s", f"{cam_spread:.3f} s",
             f"{mib / cam_med:.0f} MiB/s"],
        ]),
        "",
        f"**Throughput ratio (Camelid / hf_hub_download): {ratio:.2f}** (target >= 0.95).",
        "",
        "Resume cost: a download cancelled near half-way, then a new plan resumes from the part file "
        "(what a restart after a crash does). 'Fresh' is the time the missing bytes take at the full-"
        "download rate; the re-hash of the kept part overlaps with the transfer.",
        "",
        table(["kept", "resume time", "fresh time for the rest", "re-hash of kept part alone",
               "bytes fetched twice"], resume_rows),
    ])
    update_section("download", "Download throughput and resume", body)
    print(body)


if __name__ == "__main__":
    main()
