"""What the editor waits for "Fill this hole": the real server, driven as editors drive it.

Starts ``coda-lsp`` as a subprocess and, per held-out span (``bench_fill_hole.py``'s holes:
the span selected, as when code is selected and rewritten), sends ``textDocument/codeAction``
then ``codeAction/resolve`` with work-done progress on (the client accepts the progress
token and counts the reports), and applies the edit (``didChange``), timing each from the
code action to the applied edit. Beside it, in the same run and on the same holes, the same
job without the server (the selection widened as the code action widens it, ``fim.hole_span``,
then the fill contract with its retries, ``fim.fill_span``; this process runs with
OMP_WAIT_POLICY=PASSIVE as the server does). bench_fill_hole.py times a different job (the
typing span's lengths at the hole's start, shorter than a selection's), so its figure is not
what the editor waits. With
``--wait-policy-active`` a second server runs with OMP_WAIT_POLICY=ACTIVE (spinning OpenMP
threads, the default before issue #30) to show what PASSIVE changed. A refused hole (the fill
contract) counts like any other: the client dismisses the "Fill anyway" question at once.
A measurement, not a test.

    python benchmarks/bench_fill_hole_server.py [--model DIR] [--holes 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as coda-lsp runs; before torch loads
import torch  # noqa: E402
from lsprotocol import types  # noqa: E402
from pygls.lsp.client import LanguageClient  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fill_hole import percentile  # noqa: E402

from coda_lsp.cli import default_model_dir  # noqa: E402
from coda_lsp.core import fim  # noqa: E402
from coda_lsp.core.engine import Engine  # noqa: E402
from coda_lsp.core.settings import Settings  # noqa: E402
from training.data import heldout  # noqa: E402
from training.run import recipes  # noqa: E402


def position_at(text: str, offset: int) -> types.Position:
    """A code-point offset as an LSP position (the client asks for utf-32)."""
    line = text.count("\n", 0, offset)
    return types.Position(line=line, character=offset - (text.rfind("\n", 0, offset) + 1))


def engine_ms(engine: Engine, examples, settings: Settings) -> list[float]:
    """The server's own job per hole, without the server: the selection widened as the code
    action widens it (``fim.hole_span``), judged by the fill contract, retries included."""
    out = []
    for ex in examples:
        doc = fim.open_document(ex.prefix + ex.middle + ex.suffix, "file:///hole", ex.language)
        span = fim.hole_span(doc, len(ex.prefix), len(ex.prefix) + len(ex.middle))
        t0 = time.perf_counter()
        if span is not None:
            fim.fill_span(engine, doc, span, settings.fill_hole_steps, settings)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


class Editor:
    """A pygls client with an editor's capabilities: progress, resolve, applyEdit."""

    def __init__(self) -> None:
        self.client = LanguageClient("bench-editor", "1")
        self.ready = asyncio.Event()
        self.reports = 0
        c = self.client

        @c.feature("coda/status")
        def status(params):
            if getattr(params, "state", None) in ("ready", "error"):
                self.ready.set()

        @c.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def create(params):
            return None

        @c.feature(types.PROGRESS)
        def progress(params):
            self.reports += 1

        @c.feature(types.WINDOW_SHOW_MESSAGE_REQUEST)
        def ask(params):
            return None  # "Fill anyway?": dismissed

        @c.feature(types.WINDOW_SHOW_MESSAGE)
        def show(params):
            pass

        @c.feature(types.WINDOW_LOG_MESSAGE)
        def log(params):
            pass

    async def start(self, model: Path, threads: int, wait_policy: str | None) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        env.pop("OMP_WAIT_POLICY", None)
        if wait_policy:
            env["OMP_WAIT_POLICY"] = wait_policy
        await self.client.start_io(sys.executable, "-m", "coda_lsp", "--model", str(model),
                                   env=env)
        caps = types.ClientCapabilities(
            window=types.WindowClientCapabilities(
                work_done_progress=True,
                show_message=types.ShowMessageRequestClientCapabilities()),
            workspace=types.WorkspaceClientCapabilities(
                apply_edit=True,
                workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=True)),
            text_document=types.TextDocumentClientCapabilities(
                code_action=types.CodeActionClientCapabilities(
                    resolve_support=types.ClientCodeActionResolveOptions(properties=["edit"]))),
            general=types.GeneralClientCapabilities(position_encodings=["utf-32"]))
        await self.client.initialize_async(types.InitializeParams(capabilities=caps))
        self.client.initialized(types.InitializedParams())
        await asyncio.wait_for(self.ready.wait(), 120)

    async def fill(self, n: int, ex: heldout.Example) -> float:
        text = ex.prefix + ex.middle + ex.suffix
        uri = f"file:///bench/hole{n}"
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id=ex.language, version=1,
                text=text)))
        start = position_at(text, len(ex.prefix))
        end = position_at(text, len(ex.prefix) + len(ex.middle))
        t0 = time.perf_counter()
        actions = await self.client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=types.Range(start=start, end=end),
            context=types.CodeActionContext(diagnostics=[])))
        if actions:
            resolved = await self.client.code_action_resolve_async(actions[0])
            if resolved.edit and resolved.edit.document_changes:
                change = resolved.edit.document_changes[0]
                self.client.text_document_did_change(types.DidChangeTextDocumentParams(
                    text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
                    content_changes=[types.TextDocumentContentChangePartial(
                        range=e.range, text=e.new_text) for e in change.edits]))
        ms = (time.perf_counter() - t0) * 1e3
        self.client.text_document_did_close(types.DidCloseTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=uri)))
        return ms

    async def stop(self) -> None:
        await self.client.shutdown_async(None)
        self.client.exit(None)
        await self.client.stop()


async def server_ms(model: Path, examples, threads: int, wait_policy: str | None):
    editor = Editor()
    await editor.start(model, threads, wait_policy)
    try:
        await editor.fill(0, examples[0])   # warm-up, not timed
        editor.reports = 0
        ms = [await editor.fill(n, ex) for n, ex in enumerate(examples, 1)]
        return ms, editor.reports
    finally:
        await editor.stop()


def line(name: str, ms: list[float], note: str = "") -> str:
    return f"{name:28} {percentile(ms, 0.5):>8.0f} {percentile(ms, 0.95):>8.0f}  {note}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=default_model_dir())
    p.add_argument("--holes", type=int, default=30)
    p.add_argument("--per-file", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--wait-policy-active", action="store_true",
                   help="also a server with OMP_WAIT_POLICY=ACTIVE (spinning threads)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    engine = Engine.load(args.model, device="cpu")
    docs = heldout.heldout_documents(recipes.get("default_model_cpu").data)
    found = heldout.heldout_examples(docs, engine.tokenizer, per_file=args.per_file, seed=args.seed)
    examples = random.Random(args.seed).sample(found, min(args.holes, len(found)))
    settings = Settings()
    engine_ms(engine, examples[:1], settings)   # warm-up, not timed
    rows = [("engine (same job, no server)", engine_ms(engine, examples, settings), "")]
    policies = [None, "ACTIVE"] if args.wait_policy_active else [None]
    for policy in policies:
        ms, reports = asyncio.run(server_ms(args.model, examples, args.threads, policy))
        name = "server, OMP " + ("ACTIVE" if policy else "PASSIVE (default)")
        rows.append((name, ms, f"$/progress messages per hole: {reports / len(ms):.1f}"))
    rows.append(("engine again (drift check)", engine_ms(engine, examples, settings), ""))
    print(f"model={args.model} holes={len(examples)} steps={settings.fill_hole_steps} "
          f"threads={args.threads} (code action + resolve + apply, progress on)")
    print(f"{'path':28} {'p50 ms':>8} {'p95 ms':>8}")
    for name, ms, note in rows:
        print(line(name, ms, note))
    base = rows[0][1]
    for name, ms, _ in rows[1:-1]:
        print(f"{name} / engine: p50 {percentile(ms, 0.5) / percentile(base, 0.5):.2f}x, "
              f"p95 {percentile(ms, 0.95) / percentile(base, 0.95):.2f}x")


if __name__ == "__main__":
    main()
