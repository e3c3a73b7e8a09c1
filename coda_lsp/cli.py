"""Command line: ``coda-lsp`` serves LSP (stdio or TCP); ``coda-lsp fill`` fills once and exits;
``coda-lsp http`` serves llama.cpp's /infill and OpenAI's /v1/completions.

Startup problems (bad flags, a missing or unreadable model folder) end in one line on stderr
and a non-zero exit status; nothing but the protocol ever reaches stdout in stdio mode.
``fill`` judges candidates by the fill contract (``coda_lsp.core.contract``, as the editors
and HTTP do), says on stderr why each span it left alone was left alone, and which candidate
came closest; ``--accept-rejected`` uses that one instead.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from coda_lsp import __version__
from coda_lsp.core import logs
from coda_lsp.core.models import (
    ModelError,
    NotAModel,
    Role,
    is_hub_id,
    resolve,
    shipped_model_dir,
    spec_for,
)
from coda_lsp.core.settings import (
    ALGORITHMS,
    API_KEY_ENV,
    DEVICES,
    MULTILINE,
    Settings,
    remote_url,
)
from coda_lsp.http.guard import ALLOW_ORIGINS_ENV, Policy, origins_from_env

if TYPE_CHECKING:  # the engine imports torch: only once the flags are known good
    from coda_lsp.core.contract import Decision
    from coda_lsp.core.engine import Fill

EXIT_NOTHING, EXIT_USAGE = 1, 2


class StartupError(Exception):
    """A problem worth one line on stderr and exit status 2."""


def default_model_dir() -> Path:
    """The shipped model (``core.models.shipped_model_dir``)."""
    return shipped_model_dir()


MODEL_SETTING_ENV = "CODA_LSP_MODEL_SETTING"


def model_hint() -> str:
    """How to point at another model: the editor's setting when the editor that started the
    server names it in $CODA_LSP_MODEL_SETTING (e.g. ``coda.server.modelPath``), else the flag."""
    setting = os.environ.get(MODEL_SETTING_ENV, "").strip()
    return f"set {setting} to a model folder" if setting else "pass --model DIR"


def check_model_dir(path: Path | str) -> Path:
    """Cheap checks so a wrong path fails at startup, not minutes later in the editor."""
    try:
        return resolve(str(path))
    except NotAModel as exc:
        raise StartupError(f"{exc} ({model_hint()})") from exc
    except ModelError as exc:
        raise StartupError(str(exc)) from exc


def check_models(settings: Settings, roles: tuple[Role, ...] = tuple(Role)) -> None:
    """Every model the given roles name resolves (one line at startup if not)."""
    for role in roles:
        spec = spec_for(settings, role)
        ref = spec.fallback if spec.remote else spec.ref  # a remote: its local fallback
        if ref is not None and not is_hub_id(ref):  # a Hub id is fetched when it loads
            check_model_dir(ref)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not the usage block
        raise StartupError(message)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="the typing model, a folder (default: the shipped model)")
    p.add_argument("--fill-model", default=None,
                   help="the model for hole fills and invoked completions (default: --model)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="the typing model's device; auto: cuda, then mps, then cpu")
    p.add_argument("--fill-device", choices=DEVICES, default=None,
                   help="the fill model's device (default: --device)")
    p.add_argument("--dtype", default=None,
                   help="float32, bfloat16, float16, int8 (CPU only) (default: auto)")
    p.add_argument("--fill-dtype", default=None, help="the fill model's dtype (default: --dtype)")
    p.add_argument("--compile", action="store_true",
                   help="CUDA: run the layers through torch.compile (a slower start, compiled "
                        "once; faster steps)")
    p.add_argument("--alg", choices=(*ALGORITHMS, "original"), default=None)
    p.add_argument("--multiline", choices=MULTILINE, default=None,
                   help="inline fills of several lines: auto (not mid-statement), always, never")
    p.add_argument("--log-file", default=None)
    p.add_argument("-v", "--verbose", action="count", default=0)


def serve_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="coda-lsp", description="Diffusion fill-in-the-middle language server")
    _common(p)
    transport = p.add_mutually_exclusive_group()
    # vscode-languageclient (TransportKind.stdio) and other clients append --stdio: accept it
    transport.add_argument("--stdio", action="store_true", help="serve on stdio (the default)")
    transport.add_argument("--tcp", action="store_true", help="listen on TCP instead of stdio")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2087)
    remote = p.add_argument_group(
        "remote engine", "a coda-lsp http on another machine (a GPU elsewhere) runs the model; "
        "this server keeps the documents, spans, ranking and cancellation")
    remote.add_argument("--remote", metavar="URL", default=None,
                        help="the fill role (hole fills, invoked completions) on the coda-lsp "
                             "http at URL, e.g. http://gpu-box:8012 (typing stays local)")
    remote.add_argument("--typing-remote", metavar="URL", default=None,
                        help="typing (ghost text) on the coda-lsp http at URL, and hole fills "
                             "too unless --remote or --fill-model names another; while it is "
                             "down, typing falls back to --model (default: the shipped model)")
    remote.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                        help="the remote's key, sent as Authorization: Bearer KEY (default: "
                             f"${API_KEY_ENV}; never logged)")
    p.add_argument("--version", action="version", version=f"coda-lsp {__version__}")
    return p


def fill_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="coda-lsp fill", description="Fill the span at FILE:LINE:COL (1-based)")
    _common(p)
    p.add_argument("target", help="FILE:LINE:COL, or FILE with --holes")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--write", action="store_true", help="rewrite the file in place")
    out.add_argument("--diff", action="store_true", help="print a unified diff")
    p.add_argument("--holes", action="store_true", help="fill every hole marker in the file")
    p.add_argument("--min-confidence", type=float, default=Settings().confidence_threshold,
                   metavar="P", help="reject candidates whose mean token confidence is below P "
                   "(default: the server's confidenceThreshold, %(default)g)")
    p.add_argument("--accept-rejected", action="store_true",
                   help="where every candidate of a span was rejected, write the best "
                        "non-empty one anyway (it may add a syntax error)")
    return p


def http_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="coda-lsp http",
                description="Serve fills over HTTP: llama.cpp /infill, OpenAI /v1/completions")
    _common(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    p.add_argument("--port", type=int, default=8012, help="port (8012: llama.vim's default)")
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                   help=f"require Authorization: Bearer KEY (default: ${API_KEY_ENV})")
    p.add_argument("--fast", action="store_true",
                   help="the language server's typing path: faster, approximate (fills may "
                        "differ from coda-lsp fill)")
    p.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                   default=origins_from_env(os.environ.get(ALLOW_ORIGINS_ENV)),
                   help="a web origin (https://example.com, or *) whose pages may call the "
                        "server; repeatable (default: none; $CODA_LSP_ALLOW_ORIGINS, "
                        "comma-separated)")
    p.add_argument("--max-queue", type=int, default=32, metavar="N",
                   help="fills waiting or running at once; past it a request is answered 503 "
                        "with Retry-After at once (default 32)")
    p.add_argument("--max-batch", type=_max_batch, default="auto", metavar="N|auto",
                   help="--fast fills from different clients that wait at the same time run "
                        "as rows of one batch, up to N (1: one at a time); auto measures at "
                        "start-up how many pay on this machine (default auto)")
    p.add_argument("--allow-host", action="append", metavar="NAME", default=[],
                   help="a Host name besides loopback names, IP addresses and --host that "
                        "requests may name (DNS rebinding guard); repeatable, * for any")
    return p


def _max_batch(text: str) -> str | int:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 or auto, got {text!r}")
    return int(text)


def pull_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="coda-lsp pull",
                description="Fetch a model from the Hugging Face Hub into the HF cache; print "
                            "its folder")
    p.add_argument("model", help="Hub id owner/name[@revision] (or a folder, to check it)")
    p.add_argument("--force", action="store_true",
                   help="fetch every file again (a corrupt cache)")
    return p


def pull_main(args: argparse.Namespace) -> int:
    from coda_model.hub import HubError
    from coda_model.hub import resolve as fetch

    try:  # huggingface_hub's tqdm bars on stderr; the folder alone on stdout, for scripts
        folder = fetch(args.model, force=args.force)
    except HubError as exc:
        raise StartupError(str(exc)) from exc
    print(check_model_dir(folder))
    return 0


def defaults_from(args: argparse.Namespace) -> Settings:
    for flag, ref in (("--model", args.model), ("--fill-model", args.fill_model)):
        if ref and ref.startswith(("http://", "https://")):
            raise StartupError(f"{flag} takes a model folder or Hub id; a coda-lsp http "
                               "elsewhere is --remote URL (or --typing-remote URL)")
    s = Settings(typing_model=args.model, fill_model=args.fill_model, typing_device=args.device,
                 fill_device=args.fill_device, typing_dtype=args.dtype,
                 fill_dtype=args.fill_dtype,
                 typing_remote=_url(getattr(args, "typing_remote", None), "--typing-remote"),
                 fill_remote=_url(getattr(args, "remote", None), "--remote"))
    if args.steps is not None:
        if args.steps < 1:
            raise StartupError("--steps must be at least 1")
        s = replace(s, steps=args.steps)
    if args.alg is not None:
        s = replace(s, alg="origin" if args.alg == "original" else args.alg)
    if args.multiline is not None:
        s = replace(s, multiline=args.multiline)
    if not 0.0 <= getattr(args, "min_confidence", 0.0) <= 1.0:
        raise StartupError("--min-confidence must be between 0 and 1")
    if args.compile and args.device in ("cpu", "mps") and args.fill_device in (None, "cpu", "mps"):
        raise StartupError(f"--compile is for CUDA GPUs, not --device {args.device}")
    return s


def _url(url: str | None, flag: str) -> str | None:
    """A remote's URL, checked (a typo fails at start, not at the first keystroke)."""
    if url is None:
        return None
    try:
        return remote_url(url)
    except ValueError as exc:
        raise StartupError(f"{flag} must be {exc}") from exc


def quiet_threads() -> None:
    """OpenMP threads sleep when idle instead of spinning (before torch is imported): a
    spinning pool held the cores the event loop, the client and other processes needed, and
    "Fill this hole" took seconds on a busy machine (issue #30,
    benchmarks/bench_fill_hole_server.py). A value the user set is kept."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def loader(args: argparse.Namespace, settings: Settings, roles: tuple[Role, ...] = tuple(Role)):
    """Loads a role's model. ``--compile`` compiles the models that land on CUDA, and where
    none does, every load says why it cannot (one line)."""
    from coda_lsp.core.engine import pick_device
    from coda_lsp.core.models import load_engine

    on_cuda = {spec_for(settings, r).device for r in roles if args.compile}
    any_cuda = any(pick_device(d) == "cuda" for d in on_cuda)
    api_key = getattr(args, "api_key", None) if hasattr(args, "remote") else None
    return lambda spec: load_engine(
        spec, args.compile and (not any_cuda or pick_device(spec.device) == "cuda"), api_key)


def main(argv: list[str] | None = None) -> int:
    quiet_threads()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["fill"]:
            return fill_main(fill_parser().parse_args(argv[1:]))
        if argv[:1] == ["http"]:
            return http_main(http_parser().parse_args(argv[1:]))
        if argv[:1] == ["pull"]:
            return pull_main(pull_parser().parse_args(argv[1:]))
        return serve_main(serve_parser().parse_args(argv))
    except StartupError as exc:
        print(f"coda-lsp: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def serve_main(args: argparse.Namespace) -> int:
    defaults = defaults_from(args)
    check_models(defaults)
    logs.setup(args.verbose, args.log_file)
    from coda_lsp.lsp.server import create_server  # torch: only once the flags are known good

    server = create_server(defaults, loader(args, defaults), args.verbose)
    if args.tcp:
        server.start_tcp(args.host, args.port)
    else:
        stdout = sys.stdout.buffer
        sys.stdout = sys.stderr  # a stray print must not corrupt the protocol stream
        server.start_io(sys.stdin.buffer, stdout)
    return 0


def http_main(args: argparse.Namespace) -> int:
    defaults = defaults_from(args)
    if args.max_queue < 1:
        raise StartupError("--max-queue must be at least 1")
    role = Role.TYPING if args.fast else Role.FILL  # --fast: the typing path, its model
    check_models(defaults, (role,))
    spec = spec_for(defaults, role)
    logs.setup(args.verbose, args.log_file)
    from coda_lsp.core.models import Models
    from coda_lsp.http import server as http_server

    try:
        sock = http_server.bind(args.host, args.port)
    except (OSError, OverflowError) as exc:
        raise StartupError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc
    models = Models(loader(args, defaults, (role,)))
    named = args.fill_model if role is Role.FILL and args.fill_model else args.model
    name = spec.label if named else "coda"
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"
    # at once: /health says "loading" (with the percent while a Hub id downloads) meanwhile
    print(f"coda-lsp http: listening on {url}, loading the model {spec.ref}",
          file=sys.stderr, flush=True)
    policy = Policy.make(args.allow_origin, args.allow_host, bound_host=args.host)
    service = http_server.Service(models, role, defaults, name, args.api_key, fast=args.fast,
                                  policy=policy, max_queue=args.max_queue,
                                  max_batch=http_server.AUTO_BATCH if args.max_batch == "auto"
                                  else args.max_batch)

    def ready() -> None:  # the line scripts wait for: fills are served from now on
        if service.probe is not None:
            print(f"coda-lsp http: batching {service.probe.describe()}", file=sys.stderr,
                  flush=True)
        print(f"coda-lsp http: serving {name} on {url}", file=sys.stderr, flush=True)

    http_server.serve(service, sock, args.verbose, load=spec, on_ready=ready)
    if service.load_error is not None:
        raise StartupError(service.load_error)
    return 0


_TARGET = re.compile(r"^(?P<path>.+?)(?::(?P<line>\d+):(?P<col>\d+))?$")


def fill_main(args: argparse.Namespace) -> int:
    m = _TARGET.match(args.target)
    if m is None or (m["line"] is None and not args.holes):
        raise StartupError(f"expected FILE:LINE:COL, got {args.target!r}")
    path = Path(m["path"])
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise StartupError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise StartupError(f"{path} is not UTF-8 text") from exc
    defaults = defaults_from(args)
    check_models(defaults, (Role.FILL,))
    spec = spec_for(defaults, Role.FILL)  # fill: the fill model's job
    logs.setup(args.verbose, args.log_file)

    try:
        engine = loader(args, defaults, (Role.FILL,))(spec)
    except Exception as exc:  # CheckpointError, TokenizerError, torch errors: one line
        raise StartupError(f"cannot load the model from {spec.ref}: {exc}") from exc
    position = None if args.holes else (int(m["line"]), int(m["col"]))
    result, outcomes = fill_text(engine, path, text, defaults, position, args.min_confidence,
                                 args.accept_rejected)
    for outcome in outcomes:
        if outcome.note:
            print(f"coda-lsp: {path}:{outcome.line}:{outcome.column}: {outcome.note}",
                  file=sys.stderr)
    filled = sum(o.used is not None for o in outcomes)
    print(f"coda-lsp: filled {filled} of {len(outcomes)} span(s) in {path}", file=sys.stderr)
    if args.write:
        if result != text:
            path.write_bytes(result.encode("utf-8"))
    elif args.diff:
        sys.stdout.writelines(difflib.unified_diff(
            text.splitlines(keepends=True), result.splitlines(keepends=True),
            f"{path} (original)", f"{path} (filled)"))
    else:
        sys.stdout.write(result)
    return 0 if filled else EXIT_NOTHING


@dataclass
class SpanOutcome:
    """One span of a ``fill`` run: the contract's decision, and the fill written, if any."""

    line: int  # 1-based, where the span starts, in characters
    column: int
    decision: Decision
    used: Fill | None = None  # the fill written, if any

    @property
    def note(self) -> str:
        """One line for stderr: why nothing was written, or that a rejected fill was."""
        from coda_lsp.core.contract import describe

        best = self.decision.best_rejected
        if self.used is not None:
            return "" if self.used is not best else \
                f"used a rejected candidate ({describe(best)})"
        line = f"not filled: {self.decision.reason}"
        if best is not None:
            line += (f"; best rejected ({describe(best)}): {_preview(best.text)}"
                     " (--accept-rejected uses it)")
        return line


def _preview(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def fill_text(engine, path: Path, text: str, settings: Settings,
              position: tuple[int, int] | None, min_confidence: float | None = None,
              accept_rejected: bool = False) -> tuple[str, list[SpanOutcome]]:
    """Fill the span at a 1-based (line, column in characters), or every hole; last first.

    Returns the new text and what happened to each span tried, in file order.
    """
    from lsprotocol import types

    from coda_lsp.core import edits, fim, positions
    from coda_lsp.core.documents import DocumentStore
    from coda_syntax import spans
    from coda_syntax.syntax import make_syntax

    store = DocumentStore(encoding=positions.UTF32, syntax_factory=make_syntax)
    doc = store.open(types.TextDocumentItem(uri=path.resolve().as_uri(), language_id="",
                                            version=1, text=text))
    if min_confidence is not None:  # the contract's confidence bar
        settings = replace(settings, confidence_threshold=min_confidence)
    inline = False  # a hole, or holes; an inline span (the cursor's line) when no hole is there
    if position is None:
        targets = spans.holes(doc.syntax)
        steps = settings.fill_hole_steps
    else:
        cursor = doc.offset_at(types.Position(line=max(0, position[0] - 1),
                                              character=max(0, position[1] - 1)), positions.UTF32)
        hole = spans.hole_at(doc.syntax, doc.byte_at(cursor))
        if hole is not None:
            targets, steps = [hole], settings.fill_hole_steps
        else:
            span = spans.choose(doc.syntax, doc.byte_at(cursor))
            end = edits.clamp_to_line(doc, cursor, doc.offset_of_byte(span.end))
            targets, steps = [replace(span, end=doc.byte_at(end))], settings.steps
            inline = True
    outcomes = []
    for span in sorted(targets, key=lambda s: s.start, reverse=True):
        start, end = doc.offset_of_byte(span.start), doc.offset_of_byte(span.end)
        filled = fim.fill_span(engine, doc, span, steps, settings, inline=inline)  # as HTTP fills
        at = doc.position_at(start, positions.UTF32)
        decision = filled.decision
        used = decision.fills[0] if decision.fills else \
            (decision.best_rejected if accept_rejected else None)
        outcome = SpanOutcome(at.line + 1, at.character + 1, decision, used)
        outcomes.append(outcome)
        if outcome.used is not None:
            doc = store.open(types.TextDocumentItem(
                uri=doc.uri, language_id="", version=doc.version + 1,
                text=doc.text[:start] + outcome.used.text + doc.text[end:]))
    return doc.text, outcomes[::-1]
