"""Hours of uptime, HTTP side: ``coda-lsp http`` under steady typing load, its memory, file
descriptors, threads and latency sampled over time.

Client threads type through a real file (each request the text up to a moving cursor), under
client ids that come and go (newest wins per id), some hang up mid-fill, some change
``steps``; every ``--every`` seconds the server's RSS, open fds and threads (from /proc) and
the interval's p50/p95 latency are printed and kept in a CSV (and a PNG with --png).
At the end: RSS growth after the warm-up (first fifth of the run) and p95 drift (last fifth
against the second), the issue's goals: RSS <= +10 %, p95 <= +20 %, fds and threads flat.

    python benchmarks/soak.py --minutes 60 --png benchmarks/soak.png     # the real soak
    python benchmarks/soak.py --minutes 3 --clients 4                     # a smoke run
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "coda_lsp" / "core" / "engine.py").read_text(encoding="utf-8")


def start_server(model: str, fast: bool, log: Path) -> tuple[subprocess.Popen, int]:
    """The server, its stderr (request log, failures) in ``log``; returns once it serves."""
    command = [sys.executable, "-m", "coda_lsp", "http", "--model", model, "--port", "0"]
    with open(log, "w") as out:
        proc = subprocess.Popen(command + (["--fast"] if fast else []), stderr=out,
                                stdout=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        for line in log.read_text().splitlines():
            if "serving" in line:
                return proc, int(line.rsplit(":", 1)[1])
        time.sleep(0.2)
    raise SystemExit(f"the server did not start: {log}")


def proc_stats(pid: int) -> tuple[float, int, int]:
    """(RSS MiB, open fds, threads) of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    rss = int(fields["VmRSS"].split()[0]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"])


class Load:
    """Typing clients; each finished request's latency lands in ``latencies``."""

    def __init__(self, port: int, clients: int, seed: int = 0) -> None:
        self.port = port
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(i, seed + i), daemon=True)
                        for i in range(clients)]

    def client(self, index: int, seed: int) -> None:
        rng = random.Random(seed)
        cursor = rng.randrange(200, len(TEXT) - 200)
        session = 0
        while not self.stop.is_set():
            if rng.random() < 0.02:  # a client goes; a new one comes under a new id
                session, cursor = session + 1, rng.randrange(200, len(TEXT) - 200)
            cursor = min(len(TEXT) - 1, cursor + rng.randrange(1, 6))
            body = {"input_prefix": TEXT[max(0, cursor - 4000):cursor],
                    "input_suffix": TEXT[cursor:cursor + 1000], "n_predict": 32}
            if rng.random() < 0.1:
                body["steps"] = rng.choice([4, 8, 16])  # settings change per request
            hang_up = rng.random() < 0.05
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
            start = time.perf_counter()
            try:
                conn.request("POST", "/infill", body=json.dumps(body), headers={
                    "Content-Type": "application/json",
                    "X-Coda-Client": f"soak-{index}-{session}"})
                if hang_up:
                    time.sleep(rng.random() * 0.2)
                    conn.sock.shutdown(2)
                    continue
                response = conn.getresponse()
                response.read()
                with self.lock:
                    self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
                    if response.status == 200:
                        self.latencies.append(time.perf_counter() - start)
            except OSError:
                with self.lock:
                    self.statuses[-1] = self.statuses.get(-1, 0) + 1
            finally:
                conn.close()
            time.sleep(rng.random() * 0.3)  # typing pauses

    def take(self) -> list[float]:
        with self.lock:
            out, self.latencies = self.latencies, []
        return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 \
        else values[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "model"))
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--every", type=float, default=60, help="seconds between samples")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--exact", action="store_true", help="the exact path, not --fast")
    p.add_argument("--csv", default="soak.csv")
    p.add_argument("--png", default=None)
    p.add_argument("--log", default="soak-server.log", help="the server's stderr")
    args = p.parse_args()
    proc, port = start_server(args.model, not args.exact, Path(args.log))
    load = Load(port, args.clients)
    rows = []
    try:
        for t in load.threads:
            t.start()
        started = time.monotonic()
        print(f"{'min':>6} {'RSS MiB':>8} {'fds':>4} {'thr':>4} {'fills':>6} "
              f"{'p50 s':>6} {'p95 s':>6}", flush=True)
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(args.every)
            lat = load.take()
            rss, fds, threads = proc_stats(proc.pid)
            row = [(time.monotonic() - started) / 60, rss, fds, threads, len(lat),
                   percentile(lat, 50), percentile(lat, 95)]
            rows.append(row)
            print(f"{row[0]:>6.1f} {rss:>8.1f} {fds:>4} {threads:>4} {len(lat):>6} "
                  f"{row[5]:>6.2f} {row[6]:>6.2f}", flush=True)
    finally:
        load.stop.set()
        proc.terminate()
        proc.wait(timeout=30)
    with open(args.csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["minute", "rss_mib", "fds", "threads", "fills", "p50_s", "p95_s"])
        w.writerows(rows)
    report(rows, load.statuses)
    if args.png:
        plot(rows, args.png)


def report(rows: list[list[float]], statuses: dict[int, int]) -> None:
    if len(rows) < 5:
        print("too few samples for drift figures (at least 5)")
        return
    fifth = len(rows) // 5
    warm, mid, last = rows[fifth], rows[fifth:2 * fifth], rows[-fifth:]
    growth = 100 * (rows[-1][1] / warm[1] - 1)
    p95 = [statistics.median(r[6] for r in part) for part in (mid, last)]
    print(f"answers by status: {dict(sorted(statuses.items()))}")
    print(f"RSS {warm[1]:.1f} -> {rows[-1][1]:.1f} MiB after warm-up: {growth:+.1f} % "
          f"(goal <= +10 %)")
    print(f"p95 {p95[0]:.2f} -> {p95[1]:.2f} s: {100 * (p95[1] / p95[0] - 1):+.1f} % "
          f"(goal <= +20 %)")
    print(f"fds {min(r[2] for r in rows)}..{max(r[2] for r in rows)}, threads "
          f"{min(r[3] for r in rows)}..{max(r[3] for r in rows)}")


def plot(rows: list[list[float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r[0] for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(7, 8), sharex=True)
    for ax, col, label in zip(axes, (1, 2, 3, 6), ("RSS MiB", "open fds", "threads", "p95 s"),
                              strict=True):
        ax.plot(minutes, [r[col] for r in rows])
        ax.set_ylabel(label)
    axes[-1].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
