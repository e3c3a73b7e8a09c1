"""Hours of uptime: ``coda-lsp http`` and the language server under steady typing load,
their memory, file descriptors, threads and latency sampled over time.

HTTP: client threads type through a real file (each request the text up to a moving cursor),
under client ids that come and go (newest wins per id), some hang up mid-fill, some change
``steps``. LSP: one editor (a real pygls client over stdio) opens documents, types into them
(``didChange`` + inline completion), closes them and opens new ones under new URIs, and now
and then changes its settings (``workspace/didChangeConfiguration``). Every ``--every``
seconds both servers' RSS, open fds and threads (from /proc), each side's p50/p95 latency
and the machine's 1-minute load average are appended to the CSV (flushed: a cut run keeps
its samples); the PNG is drawn at the end, or later from the CSV with ``--plot-only``.
At the end: RSS growth after the warm-up (the first five minutes, or the first fifth of a
shorter run) and p95 drift (last fifth against the second, beside the load average then),
the issue's goals: RSS <= +10 %, p95 <= +20 %, fds and threads flat.

    python benchmarks/soak.py --minutes 60 --png benchmarks/soak.png     # the real soak
    python benchmarks/soak.py --minutes 3 --every 15 --clients 4          # a smoke run
    python benchmarks/soak.py --plot-only soak.csv --png benchmarks/soak.png
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import http.client
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "coda_lsp" / "core" / "engine.py").read_text(encoding="utf-8")


def start_server(model: str, fast: bool, log: Path, python: str = sys.executable
                 ) -> tuple[subprocess.Popen, int]:
    """The server, its stderr (request log, failures) in ``log``; returns once it serves.
    ``python``: what runs ``-m coda_lsp`` (a heap profiler, e.g. ``memray run --native``)."""
    command = [*shlex.split(python), "-m", "coda_lsp", "http", "--model", model, "--port", "0"]
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


class Editor:
    """One editor on the language server (its own thread and event loop): documents opened,
    typed into, closed; settings changed. Latencies of inline completions land in
    ``latencies``; ``pid`` is the server's once it started."""

    SETTINGS = [{"confidenceThreshold": 0.0, "contextTokens": 1024},
                {"confidenceThreshold": 0.1, "contextTokens": 512, "steps": 4},
                {"confidenceThreshold": 0.0, "contextTokens": 2048, "multiline": "never"}]

    def __init__(self, model: str, seed: int = 1000) -> None:
        self.model = model
        self.rng = random.Random(seed)
        self.latencies: list[float] = []
        self.counts = {"opened": 0, "closed": 0, "settings": 0, "completions": 0, "errors": 0}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.pid: int | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self.run()), daemon=True)

    async def run(self) -> None:
        client = LanguageClient("soak", "0")
        loaded = asyncio.Event()

        @client.feature("coda/status")
        def status(params):
            if params.state in ("ready", "error"):
                loaded.set()

        @client.feature(types.WINDOW_LOG_MESSAGE)
        def log_message(params):  # the server's request log: not needed here
            pass

        await client.start_io(sys.executable, "-m", "coda_lsp", "--model", self.model)
        self.pid = client._server.pid
        caps = types.ClientCapabilities(text_document=types.TextDocumentClientCapabilities(
            inline_completion=types.InlineCompletionClientCapabilities()))
        await client.initialize_async(types.InitializeParams(
            capabilities=caps, initialization_options={"coda": self.SETTINGS[0]}))
        client.initialized(types.InitializedParams())
        await asyncio.wait_for(loaded.wait(), 600)
        self.ready.set()
        open_docs: dict[str, list] = {}  # uri -> [version, text, cursor]
        serial = 0
        try:
            while not self.stop.is_set():
                if not open_docs or (len(open_docs) < 4 and self.rng.random() < 0.05):
                    serial += 1
                    uri = f"file:///soak/doc_{serial}.py"
                    cursor = self.rng.randrange(200, len(TEXT) - 200)
                    text = TEXT
                    open_docs[uri] = [1, text, cursor]
                    client.text_document_did_open(types.DidOpenTextDocumentParams(
                        types.TextDocumentItem(uri=uri, language_id="python", version=1,
                                               text=text)))
                    self.counts["opened"] += 1
                if len(open_docs) > 1 and self.rng.random() < 0.03:
                    uri = self.rng.choice(sorted(open_docs))
                    del open_docs[uri]
                    client.text_document_did_close(types.DidCloseTextDocumentParams(
                        types.TextDocumentIdentifier(uri=uri)))
                    self.counts["closed"] += 1
                if self.rng.random() < 0.01:
                    client.workspace_did_change_configuration(
                        types.DidChangeConfigurationParams(
                            settings={"coda": self.rng.choice(self.SETTINGS)}))
                    self.counts["settings"] += 1
                uri = self.rng.choice(sorted(open_docs))
                await self.type_one(client, uri, open_docs[uri])
                await asyncio.sleep(self.rng.random() * 0.3)  # typing pauses
        finally:
            try:
                await asyncio.wait_for(client.shutdown_async(None), 30)
                client.exit(None)
            except Exception:  # the server may be gone; the soak's figures are taken already
                pass
            await client.stop()

    async def type_one(self, client: LanguageClient, uri: str, doc: list) -> None:
        """Type one character at the document's cursor and ask for an inline completion."""
        version, text, cursor = doc
        ch = self.rng.choice("abcdefghij _(.")
        before = text[:cursor]
        line = before.count("\n")
        col = cursor - (before.rfind("\n") + 1)
        at = types.Position(line=line, character=col)
        doc[:] = [version + 1, before + ch + text[cursor:], cursor + 1]
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version + 1),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(start=at, end=at), text=ch)]))
        start = time.perf_counter()
        try:
            await asyncio.wait_for(client.text_document_inline_completion_async(
                types.InlineCompletionParams(
                    text_document=types.TextDocumentIdentifier(uri=uri),
                    position=types.Position(line=line, character=col + 1),
                    context=types.InlineCompletionContext(
                        trigger_kind=types.InlineCompletionTriggerKind.Automatic))), 300)
            with self.lock:
                self.latencies.append(time.perf_counter() - start)
                self.counts["completions"] += 1
        except Exception:
            with self.lock:
                self.counts["errors"] += 1

    def take(self) -> list[float]:
        with self.lock:
            out, self.latencies = self.latencies, []
        return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 \
        else values[0]


COLUMNS = ["minute", "load1", "rss_mib", "fds", "threads", "fills", "p50_s", "p95_s",
           "lsp_rss_mib", "lsp_fds", "lsp_threads", "completions", "lsp_p50_s", "lsp_p95_s",
           "heap_in_use_mib", "heap_free_mib", "carried"]
SERVER_GAUGES = ("coda_heap_in_use_bytes", "coda_heap_free_bytes", "coda_carried_contexts")


def server_gauges(port: int) -> list[float]:
    """The HTTP server's own view from /metrics: its C heap's live and free MiB (glibc) and
    the clients whose context it carries; NaN for any it does not show."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
    except OSError:
        return [float("nan")] * len(SERVER_GAUGES)
    values = dict(line.rsplit(" ", 1) for line in text.splitlines()
                  if line and not line.startswith("#"))
    scale = (1 / 2**20, 1 / 2**20, 1)
    return [float(values.get(name, "nan")) * k for name, k in zip(SERVER_GAUGES, scale,
                                                                     strict=True)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "model"))
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--every", type=float, default=60, help="seconds between samples")
    p.add_argument("--clients", type=int, default=4, help="HTTP typing clients")
    p.add_argument("--no-lsp", action="store_true", help="HTTP only")
    p.add_argument("--exact", action="store_true", help="the exact path, not --fast")
    p.add_argument("--csv", default="soak.csv")
    p.add_argument("--png", default=None)
    p.add_argument("--plot-only", metavar="CSV", help="draw --png from a CSV and stop")
    p.add_argument("--log", default="soak-server.log", help="the HTTP server's stderr")
    p.add_argument("--python", default=sys.executable,
                   help="what runs the HTTP server's '-m coda_lsp', e.g. "
                        "'memray run --native -o heap.bin' to see what holds its memory")
    args = p.parse_args()
    if args.plot_only:
        rows = read_csv(args.plot_only)
        report(rows, {}, {})
        if args.png:
            plot(rows, args.png)
        return
    proc, port = start_server(args.model, not args.exact, Path(args.log), args.python)
    load = Load(port, args.clients)
    editor = None if args.no_lsp else Editor(args.model)
    rows = []
    out = open(args.csv, "w", newline="")
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    out.flush()
    try:
        if editor:
            editor.thread.start()
            if not editor.ready.wait(600):
                raise SystemExit("the language server did not become ready")
        for t in load.threads:
            t.start()
        started = time.monotonic()
        print(f"{'min':>6} {'load':>5} | {'RSS MiB':>8} {'fds':>4} {'thr':>4} {'fills':>6} "
              f"{'p95 s':>6} | LSP {'RSS MiB':>8} {'fds':>4} {'thr':>4} {'compl':>6} "
              f"{'p95 s':>6}", flush=True)
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(args.every)
            lat = load.take()
            rss, fds, threads = proc_stats(proc.pid)
            row = [(time.monotonic() - started) / 60, os.getloadavg()[0], rss, fds, threads,
                   len(lat), percentile(lat, 50), percentile(lat, 95)]
            if editor and editor.pid:
                lsp_lat = editor.take()
                row += [*proc_stats(editor.pid), len(lsp_lat), percentile(lsp_lat, 50),
                        percentile(lsp_lat, 95)]
            else:
                row += [float("nan")] * 6
            row += server_gauges(port)
            rows.append(row)
            writer.writerow([f"{v:.4f}" if isinstance(v, float) else v for v in row])
            out.flush()
            print(f"{row[0]:>6.1f} {row[1]:>5.2f} | {rss:>8.1f} {fds:>4} {threads:>4} "
                  f"{len(lat):>6} {row[7]:>6.2f} | LSP {row[8]:>8.1f} {row[9]:>4} "
                  f"{row[10]:>4} {row[11]:>6} {row[13]:>6.2f}", flush=True)
    finally:
        load.stop.set()
        if editor:
            editor.stop.set()
            editor.thread.join(60)
        proc.terminate()
        proc.wait(timeout=30)
        out.close()
    report(rows, load.statuses, editor.counts if editor else {})
    if args.png:
        plot(rows, args.png)


def read_csv(path: str) -> list[list[float]]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        return [[float(v) for v in line] for line in reader]


def report(rows: list[list[float]], statuses: dict[int, int], counts: dict[str, int]) -> None:
    if len(rows) < 5:
        print("too few samples for drift figures (at least 5)")
        return
    fifth = len(rows) // 5
    warm_at = next((i for i, r in enumerate(rows) if r[0] >= 5), fifth) \
        if rows[-1][0] >= 25 else fifth
    mid, last = rows[fifth:2 * fifth], rows[-fifth:]
    if statuses:
        print(f"HTTP answers by status: {dict(sorted(statuses.items()))}")
    if counts:
        print(f"LSP editor: {counts}")
    load = [statistics.median(r[1] for r in part) for part in (mid, last)]
    for name, off in (("HTTP", 2), ("LSP", 8)):
        if any(r[off] != r[off] for r in rows):  # NaN: that side did not run
            continue
        warm = rows[warm_at]
        growth = 100 * (rows[-1][off] / warm[off] - 1)
        peak = max(r[off] for r in rows[warm_at:])
        p95 = [statistics.median([r[off + 5] for r in part if r[off + 5] == r[off + 5]]
                                 or [float("nan")]) for part in (mid, last)]  # none: no clients
        print(f"{name}: RSS {warm[off]:.1f} MiB at {warm[0]:.1f} min -> {rows[-1][off]:.1f} "
              f"MiB at the end ({growth:+.1f} %, goal <= +10 %; peak {peak:.1f})")
        print(f"{name}: p95 {p95[0]:.2f} -> {p95[1]:.2f} s ({100 * (p95[1] / p95[0] - 1):+.1f} "
              f"%, goal <= +20 %) with load average {load[0]:.2f} -> {load[1]:.2f}")
        fds, threads = [r[off + 1] for r in rows], [r[off + 2] for r in rows]
        print(f"{name}: fds {min(fds):.0f}..{max(fds):.0f}, "
              f"threads {min(threads):.0f}..{max(threads):.0f}")


def plot(rows: list[list[float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r[0] for r in rows]
    fig, axes = plt.subplots(5, 1, figsize=(7, 9), sharex=True)
    panels = [((2, 8), "RSS MiB"), ((3, 9), "open fds"), ((4, 10), "threads"),
              ((7, 13), "p95 s")]
    for ax, (cols, label) in zip(axes, panels, strict=False):
        for col, side in zip(cols, ("http", "lsp"), strict=True):
            ax.plot(minutes, [r[col] for r in rows], label=side)
        ax.set_ylabel(label)
    if len(rows[0]) > 14:  # the HTTP server's live C heap under its RSS
        axes[0].plot(minutes, [r[14] for r in rows], "--", label="http heap in use")
    axes[0].legend(loc="lower right", fontsize="small")
    axes[4].plot(minutes, [r[1] for r in rows], color="gray")
    axes[4].set_ylabel("load avg (1 min)")
    axes[-1].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=70)


if __name__ == "__main__":
    main()
