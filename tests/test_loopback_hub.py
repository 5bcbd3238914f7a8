"""The loopback Hub fixture itself: the API shape, ranges, errors and faults."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url

from tests.fixtures.loopback_hub import LoopbackHub


def test_api_and_resolve_with_cdn_redirect(loopback_hub: LoopbackHub, tmp_path: Path) -> None:
    big = tmp_path / "big.gguf"
    with big.open("wb") as f:
        f.truncate(5_000_000)  # sparse: streamed from disk
        f.seek(4_999_999)
        f.write(b"\x01")
    loopback_hub.add_repo("org/M-GGUF", downloads=7, gguf={"total": 42})
    loopback_hub.add_file("org/M-GGUF", "m-Q4_0.gguf", big)
    api = HfApi(endpoint=os.environ["HF_ENDPOINT"], token=False)
    found = list(api.list_models(search="m-gguf", filter="gguf", sort="downloads", limit=3))
    assert [m.id for m in found] == ["org/M-GGUF"]
    info = api.model_info("org/M-GGUF", files_metadata=True)
    sibling = info.siblings[0]
    assert sibling.size == 5_000_000
    assert sibling.lfs.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    meta = get_hf_file_metadata(hf_hub_url("org/M-GGUF", "m-Q4_0.gguf", endpoint=loopback_hub.url),
                                token=False)
    assert meta.size == 5_000_000 and meta.commit_hash == info.sha and meta.etag == sibling.lfs.sha256
    assert meta.location.startswith(loopback_hub.cdn_url)
    r = httpx2.get(meta.location, headers={"Range": "bytes=4999990-"})
    assert r.status_code == 206 and r.headers["Content-Range"] == "bytes 4999990-4999999/5000000"
    assert r.content.endswith(b"\x01") and len(r.content) == 10
    assert loopback_hub.bytes_served("org/M-GGUF", "m-Q4_0.gguf") == 10


def test_faults(loopback_hub: LoopbackHub) -> None:
    data = bytes(range(256)) * 1024
    loopback_hub.add_file("org/F", "f.gguf", data)
    url = loopback_hub.file_url("org/F", "f.gguf")
    loopback_hub.fail_next(1, status=503)
    assert httpx2.get(url, follow_redirects=True).status_code == 503
    loopback_hub.corrupt_byte("org/F", "f.gguf", 5)
    body = httpx2.get(url, follow_redirects=True).content
    assert body[5] == data[5] ^ 0xFF and body[6:] == data[6:]
    loopback_hub.reset_faults()
    loopback_hub.ignore_range()
    r = httpx2.get(url, headers={"Range": "bytes=100-"}, follow_redirects=True)
    assert r.status_code == 200 and r.content == data
    loopback_hub.reset_faults()
    loopback_hub.drop_after(1000)
    with pytest.raises(httpx2.RemoteProtocolError):
        httpx2.get(url, follow_redirects=True)
    dropped = [rec for rec in loopback_hub.requests(method="GET") if rec.dropped]
    assert dropped and dropped[0].bytes_sent == 1000


def test_errors(loopback_hub: LoopbackHub) -> None:
    loopback_hub.add_repo("org/Gated", gated=True, tokens={"hf_good"})
    loopback_hub.add_file("org/Gated", "g.gguf", b"g" * 10)
    url = loopback_hub.file_url("org/Gated", "g.gguf")
    assert httpx2.head(url).headers["X-Error-Code"] == "GatedRepo"
    assert httpx2.head(url, headers={"Authorization": "Bearer hf_bad"}).status_code == 403
    assert httpx2.head(url, headers={"Authorization": "Bearer hf_good"}).status_code == 302
    missing = httpx2.head(loopback_hub.file_url("org/Gated", "nope.gguf"),
                          headers={"Authorization": "Bearer hf_good"})
    assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"
    assert httpx2.get(f"{loopback_hub.url}/api/models/org/none").headers["X-Error-Code"] == "RepoNotFound"
