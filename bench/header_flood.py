"""Header flood: /healthz latency and server memory while clients send huge headers.

Run as::

    python bench/header_flood.py [--http auto|httptools|h11] [--attackers 10]
        [--header-mib 50] [--seconds 10]

Starts ``silo serve`` (embedded SQLite, no dispatcher) and measures, on one
keep-alive connection, GET /healthz every 20 ms: first for ``--seconds`` alone,
then for ``--seconds`` while ``--attackers`` sockets each send a request whose
one header line is ``--header-mib`` MiB long (in 256 KiB writes, again and
again until the time is up). Prints p50/p99/max latency of both phases, the
requests that failed or timed out (``--probe-timeout``, 2 s), what the
attackers were answered, and the server's resident memory before and at its
peak (VmHWM).
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from serve import silo_serve_process

PROBE_EVERY = 0.02
CHUNK = 256 * 1024


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class Prober:
    """GET /healthz on one keep-alive connection, reconnecting after a failure."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port, self.timeout = port, timeout
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def once(self) -> float | None:
        """Seconds for one answered request, or None when it failed or timed out."""
        started = time.perf_counter()
        try:
            if self.sock is None:
                self.sock = self._connect()
            self.sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                data += chunk
            return time.perf_counter() - started
        except OSError:
            if self.sock is not None:
                self.sock.close()
            self.sock = None
            return None

    def run(self, seconds: float) -> tuple[list[float], int]:
        latencies, failures = [], 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            took = self.once()
            if took is None:
                failures += 1
            else:
                latencies.append(took)
            time.sleep(PROBE_EVERY)
        return latencies, failures


def attack(port: int, header_bytes: int, stop: threading.Event, answers: Counter[str]) -> None:
    chunk = b"a" * CHUNK
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Flood: ")
                sent = 0
                while sent < header_bytes and not stop.is_set():
                    sock.sendall(chunk)
                    sent += CHUNK
                sock.sendall(b"\r\n\r\n")
                status = sock.recv(64).split(b"\r\n", 1)[0].decode(errors="replace")
                answers[status or "closed"] += 1
        except OSError as exc:
            answers[type(exc).__name__] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--http", default="auto")
    parser.add_argument("--attackers", type=int, default=10)
    parser.add_argument("--header-mib", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--probe-timeout", type=float, default=2)
    options = parser.parse_args()
    args = [] if options.http == "auto" else ["--http", options.http]
    with tempfile.TemporaryDirectory() as folder:
        env = {"SILO_DATA_DIR": folder, "SILO_DISPATCHER": "false"}
        with silo_serve_process(Path(folder), env, args=args) as (base, process):
            port = int(base.rsplit(":", 1)[1])
            prober = Prober(port, options.probe_timeout)
            quiet, quiet_failures = prober.run(options.seconds)
            rss_before = memory_kib(process.pid, "VmRSS")
            stop = threading.Event()
            answers: Counter[str] = Counter()
            attackers = [
                threading.Thread(
                    target=attack,
                    args=(port, int(options.header_mib * 2**20), stop, answers),
                    daemon=True,
                )
                for _ in range(options.attackers)
            ]
            for thread in attackers:
                thread.start()
            loud, loud_failures = prober.run(options.seconds)
            stop.set()
            for thread in attackers:
                thread.join(timeout=30)
            peak = memory_kib(process.pid, "VmHWM")
    print(f"http={options.http}, {options.attackers} attackers, {options.header_mib} MiB headers")
    for name, values, failures in (
        ("quiet", quiet, quiet_failures),
        ("attack", loud, loud_failures),
    ):
        print(
            f"{name:>6}: {len(values)} answered, {failures} failed/timed out; "
            f"p50 {percentile(values, 0.5):.1f} ms, p99 {percentile(values, 0.99):.1f} ms, "
            f"max {max(values) * 1000:.1f} ms"
            if values
            else f"{name:>6}: nothing answered, {failures} failed"
        )
    print(f"attackers were answered: {dict(answers)}")
    print(
        f"server RSS {rss_before / 1024:.0f} MiB before the attack, peak {peak / 1024:.0f} MiB "
        f"(+{(peak - rss_before) / 1024:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
