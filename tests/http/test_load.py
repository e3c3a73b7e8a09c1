"""Many clients at once (a small run of benchmarks/bench_http.py against the test server):
every request is answered, superseded by its client's newer one, or hung up on by the
client; the last request of each client is answered; the server is alive after."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from http_kit import API_KEY

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_http.py"
CLIENTS, REQUESTS = 4, 5


def test_concurrent_typing_clients_are_each_answered_or_cancelled_cleanly(http_server):
    run = subprocess.run(
        [sys.executable, str(BENCH), "--url", http_server.base_url, "--api-key", API_KEY,
         "--clients", str(CLIENTS), "--requests", str(REQUESTS), "--gap-ms", "10",
         "--abort-every", "2", "--abort-ms", "30", "--burst", "6", "--alone", "2", "--json"],
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    alone, typing, burst = report["rounds"]
    assert report["alive"] and not alone["errors"] + typing["errors"] + burst["errors"]
    assert alone["answered"] == 2
    assert typing["requests"] == CLIENTS * REQUESTS
    assert typing["answered"] + typing["superseded"] + typing["hung_up"] == typing["requests"]
    assert typing["last_answered"] == CLIENTS  # the newest request of each client wins
    assert typing["superseded"] + typing["hung_up"] > 0  # older ones were really replaced
    assert burst["answered"] == burst["requests"] == 6
    assert http_server.alive and not [ln for ln in http_server.lines if "Traceback" in ln]
