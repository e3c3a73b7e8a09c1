"""Load on ``coda-lsp http``: many clients typing at once, each request timed.

Three rounds against one server:

- **alone**: ``--alone`` requests one after another, each waiting for the previous answer:
  the latency of one fill with nothing else queued (the service time).
- **typing**: ``--clients`` clients, each typing a line into its own file and sending a
  llama.vim-shaped ``/infill`` request per character (``--requests`` of them, ``--gap-ms``
  apart) under its own ``X-Coda-Client`` key, never waiting for the previous answer, and
  hanging up on every ``--abort-every``-th request after ``--abort-ms`` (as llama.vim kills
  its curl job). A newer request replaces the client's older one (409), a hang-up stops its
  fill; the last request of each client must be answered.
- **burst**: ``--burst`` requests at once with no client key: every one answered, in arrival
  order, by the one model worker (the latency is mostly queueing).

Every request must end answered (200), superseded (409) or hung up by us; anything else is
an error. Prints counts and p50/p95 per round, then whether the server is still alive.

    python benchmarks/bench_http.py [--model DIR] [--steps 8] [--clients 20] [--requests 10]
                                    [--fast]
    python benchmarks/bench_http.py --url http://127.0.0.1:8012 [--api-key K] --json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

TYPED = "total = sum(v * scale for v in values)"
HUNG_UP = -1  # status of a request we abandoned on purpose


def context(client: int) -> tuple[str, str]:
    """Each client's own file: a few helpers before the cursor line, one after."""
    before = "".join(
        f"def helper_{client}_{i}(values, scale={i}):\n"
        f"    total = 0\n    for v in values:\n        total += v * scale\n    return total\n\n"
        for i in range(6))
    return before + f"def combined_{client}(values, scale):\n", "\n    return total\n"


@dataclass
class Result:
    client: int
    index: int
    status: int
    ms: float
    error: str = ""


class Target:
    def __init__(self, url: str, api_key: str | None) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.api_key = api_key

    def headers(self, client: str | None) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        if client:
            h["X-Coda-Client"] = client
        return h

    def post(self, path: str, body: dict, client: str | None, abort_s: float | None,
             who: tuple[int, int]) -> Result:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=abort_s or 600)
        t0 = time.perf_counter()
        try:
            conn.request("POST", path, json.dumps(body), self.headers(client))
            response = conn.getresponse()
            payload = response.read()
            status = response.status
            error = "" if status in (200, 409) else payload.decode("utf-8", "replace")[:200]
        except TimeoutError:
            status, error = (HUNG_UP, "") if abort_s else (0, "timeout")
        except OSError as exc:
            status, error = 0, f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        return Result(*who, status, (time.perf_counter() - t0) * 1e3, error)

    def alive(self) -> bool:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()


def infill_body(prefix: str, suffix: str) -> dict:
    cut = prefix.rfind("\n") + 1
    return {"input_prefix": prefix[:cut], "prompt": prefix[cut:], "input_suffix": suffix,
            "input_extra": [], "n_predict": 128, "top_k": 40, "top_p": 0.99, "stream": False,
            "samplers": ["top_k", "top_p", "infill"], "cache_prompt": True,
            "t_max_prompt_ms": 500, "t_max_predict_ms": 1500}


def typing_round(target: Target, clients: int, requests: int, gap_s: float,
                 abort_every: int, abort_s: float) -> list[Result]:
    """Each client sends a request per typed character without waiting for answers."""
    results: list[Result] = []
    lock = threading.Lock()

    def client(c: int, pool: ThreadPoolExecutor) -> None:
        before, after = context(c)
        futures = []
        for k in range(requests):
            body = infill_body(before + "    " + TYPED[: k + 1], after)
            abort = abort_s if abort_every and (k + 1) % abort_every == 0 \
                and k != requests - 1 else None
            futures.append(pool.submit(target.post, "/infill", body, f"client-{c}", abort,
                                       (c, k)))
            time.sleep(gap_s)
        for f in futures:
            with lock:
                results.append(f.result())

    with ThreadPoolExecutor(max_workers=clients * requests) as pool:
        threads = [threading.Thread(target=client, args=(c, pool)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return results


def alone_round(target: Target, count: int) -> list[Result]:
    before, after = context(0)
    return [target.post("/infill", infill_body(before + "    " + TYPED[: 1 + i], after), None,
                        None, (0, i)) for i in range(count)]


def burst_round(target: Target, count: int) -> list[Result]:
    before, after = context(0)
    with ThreadPoolExecutor(max_workers=max(1, count)) as pool:
        futures = [pool.submit(target.post, "/infill",
                               infill_body(before + "    " + TYPED[: 1 + i % len(TYPED)],
                                           after), None, None, (i, 0))
                   for i in range(count)]
        return [f.result() for f in futures]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summary(name: str, results: list[Result], requests: int | None = None) -> dict:
    answered = [r.ms for r in results if r.status == 200]
    out = {
        "round": name,
        "requests": len(results),
        "answered": len(answered),
        "superseded": sum(r.status == 409 for r in results),
        "hung_up": sum(r.status == HUNG_UP for r in results),
        "errors": [asdict(r) for r in results if r.status not in (200, 409, HUNG_UP)],
        "p50_ms": round(percentile(answered, 50), 1),
        "p95_ms": round(percentile(answered, 95), 1),
    }
    if answered:
        out["mean_ms"] = round(statistics.fmean(answered), 1)
    if requests is not None:  # typing: what the user waits for, the answer to the last key
        last = [r for r in results if r.index == requests - 1]
        out["last_answered"] = sum(r.status == 200 for r in last)
        out["last_p50_ms"] = round(percentile([r.ms for r in last if r.status == 200], 50), 1)
        out["last_p95_ms"] = round(percentile([r.ms for r in last if r.status == 200], 95), 1)
    return out


def start_server(args) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "coda_lsp", "http", "--port", "0", "--steps",
               str(args.steps)]
    if args.model:
        command += ["--model", args.model]
    if args.fast:
        command.append("--fast")
    env = {**os.environ}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "serving" in line:
            url = line.strip().rsplit(" ", 1)[1]
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, url
    raise SystemExit("the server did not start:\n" + (proc.stderr.read() if proc.stderr else ""))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="an already running server (default: start one)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--model", default=None, help="model folder (default: shipped)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the server")
    p.add_argument("--fast", action="store_true", help="start the server with --fast")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--requests", type=int, default=10, help="requests per client")
    p.add_argument("--gap-ms", type=float, default=30.0, help="between a client's keystrokes")
    p.add_argument("--abort-every", type=int, default=4, help="hang up on every Nth (0: never)")
    p.add_argument("--abort-ms", type=float, default=50.0)
    p.add_argument("--alone", type=int, default=5, help="requests sent one at a time")
    p.add_argument("--burst", type=int, default=20, help="keyless requests sent at once")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args()

    proc = None
    url = args.url
    if url is None:
        proc, url = start_server(args)
    target = Target(url, args.api_key)
    try:
        t0 = time.perf_counter()
        alone = summary("alone", alone_round(target, args.alone))
        alone["wall_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        typing = summary("typing", typing_round(target, args.clients, args.requests,
                                                args.gap_ms / 1e3, args.abort_every,
                                                args.abort_ms / 1e3), args.requests)
        typing["wall_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        burst = summary("burst", burst_round(target, args.burst))
        burst["wall_s"] = round(time.perf_counter() - t0, 2)
        alive = target.alive()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    report = {"url": url, "steps": args.steps, "clients": args.clients,
              "requests_per_client": args.requests, "rounds": [alone, typing, burst],
              "alive": alive}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.clients} clients x {args.requests} requests, steps {args.steps}, {url}")
        for r in (alone, typing, burst):
            line = (f"{r['round']:>6}: {r['requests']} requests, {r['answered']} answered, "
                    f"{r['superseded']} superseded, {r['hung_up']} hung up, "
                    f"{len(r['errors'])} errors; p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms; "
                    f"{r['wall_s']} s")
            if "last_answered" in r:
                line += (f"; last key answered {r['last_answered']}/{args.clients}, "
                         f"p50 {r['last_p50_ms']} ms, p95 {r['last_p95_ms']} ms")
            print(line)
        print("server alive after:", alive)
    errors = alone["errors"] + typing["errors"] + burst["errors"]
    return 0 if alive and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
