"""``SiloClient.upload`` against the live API: the file streams up in blocks
(progress heard per block), its id and SHA-256 come back, and a file over the
server's limit is refused with 413 (``silo upload``: tests/client/test_client_cli.py)."""

from __future__ import annotations

import hashlib

import pytest
from tiny_jobs import sqlite_only

from silo_client.client import UPLOAD_CHUNK
from silo_client.errors import SiloApiError

LIMIT = 3 * UPLOAD_CHUNK


@sqlite_only
@pytest.mark.parametrize("live_settings", [{"max_upload_bytes": LIMIT}])
def test_upload_streams_the_file_and_reports_progress(api, tmp_path):
    path = tmp_path / "dense.safetensors"
    data = bytes(range(256)) * (UPLOAD_CHUNK // 128 + 3)  # a bit over two blocks
    path.write_bytes(data)
    heard: list[int] = []
    info = api.upload(path, on_progress=heard.append)
    assert heard == [UPLOAD_CHUNK, 2 * UPLOAD_CHUNK, len(data)]
    assert info.name == "dense.safetensors" and info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert api.file(info.id) == info and [f.id for f in api.files()] == [info.id]
    big = tmp_path / "big.pt"
    big.write_bytes(b"\0" * (LIMIT + 1))
    with pytest.raises(SiloApiError) as refused:
        api.upload(big)
    assert refused.value.status == 413
    api.delete_file(info.id)
    assert list(api.files()) == []
