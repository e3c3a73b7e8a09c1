"""N typing clients against ``coda-lsp http --fast``, one fill at a time against batched.

Starts the real server twice in one run, ``--max-batch 1`` (one fill at a time, what it was)
and ``--max-batch auto`` (fills waiting together share forward passes, batch size measured
at start-up), both alive for the whole run. For each N in ``--clients`` it runs the round on
one server and then the other (interleaved: a busy box drifts between rounds).

A round: N clients, each typing a line into its own file (``bench_http.context``) for
``--seconds``: one llama.vim-shaped ``/infill`` per typed character under its own
``X-Coda-Client`` key, sent when the previous answer came back (plus ``--think-ms``).
All clients start at the line's first character and stay in step (the figures in
benchmarks/README.md); ``--stagger`` starts client c c/N of the way into the line, as a
team's editors are at different places. A
request sent before the deadline is waited for. Each client's first request (its file's
first: a full pass, no context carried from a previous keystroke) is sent before the clock
starts and not timed, unless ``--cold``. Prints, per server and N, the fills
answered, fills per second (answered over the round's wall time) and p50/p95 latency, the
server's own account of its worker (``/metrics``: fills per run, busy and gathering shares), then
the issue's two ratios and the load average before and after.

    python benchmarks/bench_clients.py                        # N = 1 4 16 64, 20 s rounds
    python benchmarks/bench_clients.py --clients 1 16 --seconds 10
    python benchmarks/bench_clients.py --clients 1 16 --repeat 3   # medians of 3 rounds each
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http import TYPED, Target, context, infill_body, percentile  # noqa: E402


def start_server(max_batch: str, args) -> tuple[subprocess.Popen, str, str]:
    """The server's process, URL and its batching line ("" when it printed none)."""
    command = [sys.executable, "-m", "coda_lsp", "http", "--fast", "--port", "0",
               "--max-batch", max_batch, "--max-queue", "1024"]
    if args.model:
        command += ["--model", args.model]
    if args.steps:
        command += ["--steps", str(args.steps)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ})
    assert proc.stderr is not None
    note = ""
    for line in proc.stderr:
        if "coda-lsp http: batching" in line:
            note = line.split("batching", 1)[1].strip()
        if "serving" in line:
            url = line.strip().rsplit(" ", 1)[1]
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, url, note
    raise SystemExit("the server did not start:\n" + proc.stderr.read())


FILLS_GOAL = 4.0  # issue 33: 16 clients get >= 4x the fills/s of one at a time ...
P95_GOAL = 4.0  # ... at a p95 <= 4x a lone client's

WORKER_FIGURES = ("coda_batch_rows_count", "coda_batch_rows_sum",
                  "coda_worker_busy_seconds_total", "coda_batch_gather_seconds_total")


def worker_figures(target: Target) -> dict[str, float]:
    """The server's own account of its model worker (``/metrics``), to difference per round."""
    conn = http.client.HTTPConnection(target.host, target.port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines()
                  if line and not line.startswith("#"))
    return {name: float(values[name]) for name in WORKER_FIGURES}


def worker_share(before: dict[str, float], after: dict[str, float], wall_s: float) -> str:
    """Where the worker's time went in a round (its untimed first requests included): fills
    per run, the share of the round it ran fills, the share it waited for a batch's clients;
    the rest it had nothing to do."""
    runs, rows, busy, gathered = (after[k] - before[k] for k in WORKER_FIGURES)
    return (f"{rows / max(runs, 1):.1f} fills a run of {1e3 * busy / max(runs, 1):.0f} ms, "
            f"worker busy {busy / wall_s:.0%}, "
            f"gathering {gathered / wall_s:.0%}")


def typing_round(target: Target, clients: int, seconds: float, think_s: float,
                 warmup: bool, stagger: bool = False) -> dict:
    """Closed-loop typing clients for ``seconds``; their answered requests' latencies."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    clock: list[float] = []  # start, deadline: set as the warmed-up clients are released

    def start_clock() -> None:
        now = time.perf_counter()
        clock[:] = [now, now + seconds]

    warm = threading.Barrier(clients + 1, action=start_clock)

    def client(c: int) -> None:
        before, after = context(c)
        k = c * len(TYPED) // clients if stagger else 0
        if warmup:  # the file's first request (a full pass, no carried context): not timed
            target.post("/infill", infill_body(before + "    " + TYPED[:k], after),
                        f"client-{c}", None, (c, -1))
        warm.wait()
        while time.perf_counter() < clock[1]:
            typed = TYPED[: k % len(TYPED) + 1]
            result = target.post("/infill", infill_body(before + "    " + typed, after),
                                 f"client-{c}", None, (c, k))
            with lock:
                statuses[result.status] = statuses.get(result.status, 0) + 1
                if result.status == 200:
                    latencies.append(result.ms)
            k += 1
            time.sleep(think_s)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    warm.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - clock[0]
    return {"clients": clients, "answered": len(latencies), "wall_s": wall,
            "fills_per_s": len(latencies) / wall, "p50_ms": percentile(latencies, 50),
            "p95_ms": percentile(latencies, 95),
            "other": {s: n for s, n in statuses.items() if s != 200}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model folder (default: shipped)")
    p.add_argument("--steps", type=int, default=None, help="server --steps (default: its own)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--seconds", type=float, default=20.0, help="typing time per round")
    p.add_argument("--think-ms", type=float, default=20.0, help="between answer and next key")
    p.add_argument("--batched", default="auto", help="--max-batch of the batched server")
    p.add_argument("--cold", action="store_true",
                   help="time each client's first request too (by default it warms the "
                        "server's carried context for that client and is not timed)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the rounds this many times over (same servers) and print the "
                        "median of each round's ratios too: the box's speed drifts by a "
                        "fifth between rounds, and each ratio pairs two of them")
    p.add_argument("--stagger", action="store_true",
                   help="client c starts c/N of the way into the line (by default all "
                        "type the same character at the same time)")
    args = p.parse_args()

    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}")
    servers = {}
    try:
        for name, max_batch in (("one at a time", "1"), ("batched", args.batched)):
            proc, url, note = start_server(max_batch, args)
            servers[name] = (proc, Target(url, None))
            print(f"{name}: --max-batch {max_batch} on {url}" + (f" ({note})" if note else ""))
        rows: dict[str, list[dict]] = {name: [] for name in servers}
        for repeat in range(args.repeat):
            for n in args.clients:
                for name, (_, target) in servers.items():
                    before, since = worker_figures(target), time.perf_counter()
                    row = typing_round(target, n, args.seconds, args.think_ms / 1e3,
                                       not args.cold, args.stagger)
                    worker = worker_share(before, worker_figures(target),
                                          time.perf_counter() - since)
                    row["load"], row["repeat"] = os.getloadavg()[0], repeat
                    rows[name].append(row)
                    print(f"  {name:>13}, {n:>3} clients: {row['answered']:>5} fills, "
                          f"{row['fills_per_s']:6.2f}/s, p50 {row['p50_ms']:8.0f} ms, "
                          f"p95 {row['p95_ms']:8.0f} ms, load {row['load']:.1f}; {worker}"
                          + (f", other {row['other']}" if row["other"] else ""), flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)

    for name, table in rows.items():
        print(f"\n{name}\n| clients | fills | fills/s | p50 ms | p95 ms | load |\n"
              "|---|---|---|---|---|---|")
        for r in table:
            print(f"| {r['clients']} | {r['answered']} | {r['fills_per_s']:.2f} | "
                  f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['load']:.1f} |")
    one, batched = rows["one at a time"], rows["batched"]
    print()
    ratios: dict[int, list[tuple[float, float]]] = {}
    for a, b in zip(one, batched, strict=True):
        alone = next(r for r in batched if r["repeat"] == b["repeat"]
                     and r["clients"] == min(args.clients))
        pair = (b["fills_per_s"] / a["fills_per_s"], b["p95_ms"] / alone["p95_ms"])
        ratios.setdefault(a["clients"], []).append(pair)
        print(f"{a['clients']:>3} clients: batched/one-at-a-time fills/s {pair[0]:.2f}x; "
              f"batched p95 / batched {alone['clients']}-client p95 {pair[1]:.2f}x")
    if args.repeat > 1:  # the box's speed drifts between rounds: the median of the pairs
        for n, pairs in ratios.items():
            print(f"{n:>3} clients, median of {len(pairs)}: fills/s "
                  f"{statistics.median(p[0] for p in pairs):.2f}x, p95 "
                  f"{statistics.median(p[1] for p in pairs):.2f}x; rounds meeting issue 33's "
                  f"goals: fills/s >= {FILLS_GOAL:g}x {sum(p[0] >= FILLS_GOAL for p in pairs)}"
                  f", p95 <= {P95_GOAL:g}x {sum(p[1] <= P95_GOAL for p in pairs)}")
    print(f"load average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
