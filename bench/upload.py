"""Upload throughput and the API's memory while a large file arrives.

Run as::

    python bench/upload.py [--mib 1024] [--repeat 2]

Starts ``silo serve`` (embedded SQLite, no dispatcher), writes a file of
``--mib`` MiB of random bytes, and uploads it ``--repeat`` times with
``SiloClient.upload`` while a thread samples the server's resident memory
every 20 ms. Beside each upload, in the same run, the same file is read and
hashed with SHA-256 in this process (what the server must at least do with
it), so the table's ratio says what the HTTP path costs on this machine
rather than an absolute speed. Prints MiB/s of both, their ratio, and the
server's RSS before, at its peak during the upload, and after; then checks
that the recorded size and SHA-256 match the file.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from serve import silo_serve_process

from silo_client import SiloClient

MIB = 1 << 20


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError("VmRSS")


class PeakMemory:
    """The largest RSS of ``pid`` seen while the block runs (sampled every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def make_file(path: Path, mib: int) -> str:
    """``mib`` MiB of random bytes; returns their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        for _ in range(mib):
            block = os.urandom(MIB)
            handle.write(block)
            digest.update(block)
    return digest.hexdigest()


def read_and_hash(path: Path) -> float:
    """Seconds to read and hash the file here: the floor under any upload."""
    started = time.perf_counter()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(MIB):
            digest.update(block)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="silo-bench-upload-") as tmp:
        folder = Path(tmp)
        source = folder / "weights.bin"
        expected = make_file(source, args.mib)
        env = {"SILO_DATA_DIR": str(folder / "data"), "SILO_DISPATCHER": "false"}
        table = Table(title=f"upload of {args.mib} MiB (silo serve, SQLite, loopback)")
        for column in (
            "run",
            "upload MiB/s",
            "read+hash MiB/s",
            "upload / read+hash",
            "server RSS before",
            "peak",
            "after",
        ):
            table.add_column(column, justify="right")
        with silo_serve_process(folder, env) as (base, process):
            token = (folder / "data" / "admin-token").read_text().strip()
            with SiloClient(base, token, timeout=600) as client:
                for run in range(1, args.repeat + 1):
                    floor = read_and_hash(source)
                    before = rss_mib(process.pid)
                    with PeakMemory(process.pid) as memory:
                        started = time.perf_counter()
                        uploaded = client.upload(source)
                        seconds = time.perf_counter() - started
                    after = rss_mib(process.pid)
                    assert uploaded.size == args.mib * MIB, uploaded
                    assert uploaded.sha256 == expected, "the recorded SHA-256 differs"
                    table.add_row(
                        str(run),
                        f"{args.mib / seconds:.0f}",
                        f"{args.mib / floor:.0f}",
                        f"{floor / seconds:.2f}",
                        f"{before:.0f} MiB",
                        f"{memory.peak:.0f} MiB",
                        f"{after:.0f} MiB",
                    )
        Console().print(table)


if __name__ == "__main__":
    main()
