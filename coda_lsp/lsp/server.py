"""The language server: thin LSP handlers over documents, spans, the engine and the worker.

Each handler fetches the document, calls one pipeline method of ``CodaServer`` and converts
the result; it returns ``None`` when there is nothing to offer. The model loads in the
background after ``initialized``; until then completion requests return ``None`` at once.
Everything syntax-related runs on the event loop; only ``Engine.fill`` runs on the worker.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from lsprotocol import types
from pygls.exceptions import (
    FeatureRequestError,
    JsonRpcException,
    JsonRpcInvalidParams,
    JsonRpcServerNotInitialized,
)
from pygls.lsp.server import LanguageServer

from coda_lsp import __version__
from coda_lsp.core import contract, edits, fim, logs, positions, prompt
from coda_lsp.core import settings as settings_mod
from coda_lsp.core.contract import Decision
from coda_lsp.core.documents import Document, DocumentStore
from coda_lsp.core.engine import Engine, Fill, FillJob, FillResult, rank
from coda_lsp.core.models import Loader, Models, ModelSpec, Role, Served, model_name
from coda_lsp.core.remote import RemoteError
from coda_lsp.core.scheduling import Superseded
from coda_lsp.core.settings import Settings
from coda_lsp.lsp.progress import FillProgress, LoadProgress
from coda_lsp.lsp.protocol import CodaProtocol, explain, strict_converter
from coda_syntax import spans
from coda_syntax.syntax import make_syntax

log = logging.getLogger(__name__)

FILL_HOLE = "coda.fillHole"
FILL_TITLE = "Fill this hole"
STATUS = "coda/status"
DOCUMENT_TEXT = "coda/documentText"  # read-only: the server's copy of a document, for tests
STATUS_INTERVAL = 1.0  # seconds between latency updates after completions
MAX_ITEMS = 3
NO_FILL = "coda-lsp: no fill for this hole: "  # + the contract's one-line reason


@dataclass(frozen=True)
class Target:
    """A span resolved against one document version, in code points and bytes."""

    doc: Document
    version: int
    start: int
    end: int
    span: spans.Span


class CodaServer(LanguageServer):
    def __init__(self, defaults: Settings, loader: Loader, verbose: int = 0):
        super().__init__("coda-lsp", __version__, protocol_cls=CodaProtocol,
                         converter_factory=strict_converter, max_workers=2)
        self.defaults = defaults
        self.settings = defaults
        self.models = Models(loader)  # the typing and the fill model, a worker each
        self.verbose = verbose
        self.state = "loading"
        self.is_initialized = False
        self.model_requested = False
        self.encoding: str = positions.UTF16
        self.store = DocumentStore(syntax_factory=make_syntax)
        self.warnings = logs.Warnings()
        self.last_latency_ms: float | None = None
        self.status_message = ""
        self.status = logs.Throttle(self._notify_status, STATUS_INTERVAL)
        self._ids = itertools.count(1)

    # -- plumbing -------------------------------------------------------------------------

    @property
    def engine(self) -> Engine | None:
        """The typing model's engine (None until it has loaded)."""
        return self.models.engine(Role.TYPING)

    def serve(self, engine: Engine, spec: ModelSpec | None = None) -> Served:
        """Serve both roles with one loaded engine (tests, and callers that load themselves)."""
        served = Served(spec or ModelSpec("in-process"), engine)
        for role in Role:
            self.models.install(role, served)
        return served

    def require_initialized(self) -> None:
        if not self.is_initialized:
            raise JsonRpcServerNotInitialized("the server has not been initialized")

    def report_server_error(self, error: Exception, source: Any) -> None:
        """pygls' read loop reports a body it could not parse here: answer it (with id null)
        instead of pygls' "Error in server" pop-up; other errors pop up at most once a minute."""
        # JSONDecodeError and UnicodeDecodeError are ValueErrors; RecursionError: deep nesting
        if source is JsonRpcException and isinstance(error, ValueError | RecursionError):
            self.protocol.refuse_unreadable(error)
            return
        if source is FeatureRequestError:
            return  # answered with the error already
        log.error("%s", error)
        if self.warnings.allow("server-error"):
            super().report_server_error(error, source)

    def warn_user(self, key: str, message: str, kind=types.MessageType.Warning) -> None:
        log.warning("%s", message)
        if self.warnings.allow(key):
            self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    def send_status(self, message: str = "") -> None:
        """A state change: sent at once (latency updates go through ``status.soon()``)."""
        self.status_message = message
        self.status.now()

    def _notify_status(self) -> None:
        self.protocol.notify(STATUS, {"state": self.state, "message": self.status_message,
                                      "latencyMs": self.last_latency_ms,
                                      "models": self.models.describe()})

    def report_remote(self) -> None:
        """What a remote engine has to say (down, the key refused): one line each, shown
        once, logged. Typing goes on locally meanwhile (``core.remote``)."""
        for served in {id(s): s for s in self.models.roles.values()}.values():
            take = getattr(served.engine, "take_notices", None)
            for line in take() if take is not None else ():
                self.warn_user(f"remote:{line}", f"coda-lsp: {line}")

    def apply_settings(self, payload: Any) -> None:
        self.settings, problems = settings_mod.update(self.settings, payload, self.defaults)
        if problems:
            self.warn_user("settings:" + ";".join(problems),
                           "coda-lsp: " + "; ".join(problems))
        log.info("settings: %s", settings_mod.to_wire(self.settings))

    async def load_model(self) -> None:
        self.send_status("loading the model")
        progress = LoadProgress(self, on_message=self.send_status)
        await progress.begin()
        changes = await self.models.apply(self.settings, *self._load_hooks(progress))
        for change in changes:
            if change.error is not None:
                self.warn_user(f"load:{change.role.value}", f"coda-lsp: {change.message}",
                               types.MessageType.Error)
        self.report_remote()
        if self.engine is not None:
            self.state, message = "ready", "model ready"
            log.info("serving %s", self.roles_line())
        else:
            failed = next((c for c in changes if c.role is Role.TYPING), None)
            self.state = "error"
            message = f"coda-lsp: {failed.message}" if failed else "coda-lsp: no model loaded"
        progress.end(message)
        log.info("%s", message)
        self.send_status(message)

    def _load_hooks(self, progress: LoadProgress):
        """``Models.apply``'s hooks: the progress (and through it the status line) says which
        model loads, and a Hub id's download in percent and MB."""
        def loading(role: Role, spec: ModelSpec) -> None:
            progress.loading(f"the {role.value} model {model_name(spec)}")

        def download(spec: ModelSpec, done: int, total: int | None) -> None:
            progress.download(model_name(spec), done, total)

        return loading, download

    def roles_line(self) -> str:
        """One line: which model serves what, where ("typing tiny on cpu (float32); ...")."""
        described = self.models.describe()
        if described.get("typing") == described.get("fill") and "typing" in described:
            d = described["typing"]
            return f"typing and fill: {d['model']} on {d['device']} ({d['dtype']})"
        return "; ".join(f"{role}: {d['model']} on {d['device']} ({d['dtype']})"
                         for role, d in described.items())

    async def swap_models(self) -> None:
        """After a settings change: load what a role now names beside the old model, then
        switch; a failed load keeps the old model and says so in one line."""
        pending = self.models.pending(self.settings)
        progress = LoadProgress(self, "coda-lsp: loading " + ", ".join(
            f"the {role.value} model {model_name(spec)}" for role, spec in pending),
            on_message=self.send_status)
        if pending:
            await progress.begin()
        changes = await self.models.apply(self.settings, *self._load_hooks(progress))
        for change in changes:
            if change.error is not None:
                self.warn_user(f"load:{change.role.value}:{change.spec}",
                               f"coda-lsp: {change.message}; keeping the model it had")
            else:
                log.info("%s", change.message)
        progress.end("; ".join(c.message for c in changes) or "no change")
        self.report_remote()
        if changes:
            if self.engine is not None:
                self.state = "ready"
            self.send_status(("model ready: " if self.engine else "") + self.roles_line())

    # -- pipeline ---------------------------------------------------------------------------

    def inline_target(self, doc: Document, position: types.Position) -> Target | None:
        cursor = doc.offset_at(position, self.encoding)
        span = spans.choose(doc.syntax, doc.byte_at(cursor))
        start = doc.offset_of_byte(span.start)
        end = edits.clamp_to_line(doc, start, doc.offset_of_byte(span.end))
        span = replace(span, start=doc.byte_at(start), end=doc.byte_at(end))
        return Target(doc, doc.version, start, end, span)

    def hole_target(self, doc: Document, rng: types.Range) -> Target | None:
        a = doc.offset_at(rng.start, self.encoding)
        span = fim.hole_span(doc, a, max(a, doc.offset_at(rng.end, self.encoding)))
        if span is None:
            return None
        start, end = doc.offset_of_byte(span.start), doc.offset_of_byte(span.end)
        return Target(doc, doc.version, start, end, span)

    def usable(self, doc: Document | None, role: Role = Role.TYPING) -> bool:
        return (doc is not None and self.models.get(role) is not None and not doc.binary
                and doc.syntax is not None and self.settings.language_enabled(doc.language_id))

    def job_for(self, target: Target, steps: int, fast: bool = False,
                inline: bool = False, choices: int = 1) -> FillJob:
        doc, s = target.doc, self.settings
        window = s.context_tokens * prompt.CHARS_PER_TOKEN + 1
        return FillJob(
            prefix=doc.text[max(0, target.start - window) : target.start],
            suffix=doc.text[target.end : target.end + window],
            span_lengths=tuple(target.span.lengths),
            steps=steps,
            settings=s,
            line_ending=edits.line_ending(doc.text),
            fast=fast,
            carry_key=doc.uri if fast else None,
            inline=inline,
            choices=choices,
        )

    async def run_job(self, target: Target, job: FillJob, key: str, stages: logs.Stages,
                      on_partial: Callable[[int, int, list[str]], None] | None = None,
                      role: Role = Role.TYPING) -> FillResult | None:
        """One job on the role's worker: its raw fills, or None if superseded, failed or
        outdated."""
        served = self.models.get(role)
        assert served is not None
        engine = served.engine
        log.debug("[%s] %s model %s", stages.request_id, role.value, served.spec.label)
        try:
            work = partial(engine.fill, job, on_partial=on_partial) if on_partial else \
                partial(engine.fill, job)
            result = await served.scheduler.submit(key, work)
        except Superseded:
            log.info("%s", stages.line("superseded"))
            return None
        except RemoteError as exc:  # the remote is down or refused: one line, no traceback
            log.info("%s", stages.line("failed: remote"))
            self.warn_user(f"remote:{exc}", f"coda-lsp: {exc}")
            self.report_remote()
            return None
        except Exception as exc:  # a model failure costs one completion, never the server
            log.exception("%s", stages.line("failed"))
            self.warn_user("fill-error", f"coda-lsp: completion failed: {exc}")
            return None
        self.report_remote()
        stages.mark("queue+model")
        stages.add(result.timings)
        if job.fast:
            stages.note("reused", result.reused)
        doc = target.doc
        if self.store.get(doc.uri) is not doc or doc.version != target.version:
            log.info("%s", stages.line(f"dropped: document moved past version {target.version}"))
            return None
        return result

    def errors_of(self, target: Target) -> Callable[[str], int]:
        errors = spans.error_counter(target.doc.syntax, target.span)
        return lambda text: errors(positions.to_bytes(text))

    async def fill(self, target: Target, steps: int, key: str, stages: logs.Stages,
                   fast: bool = False, inline: bool = False, role: Role = Role.TYPING,
                   choices: int = 1):
        """Typing: the model's fills for a target, ranked (those with a syntax error last),
        or None if superseded or outdated."""
        stages.mark("span")
        result = await self.run_job(target, self.job_for(target, steps, fast, inline, choices),
                                    key, stages, role=role)
        if result is None:
            return None
        ranked = rank(result.fills, self.settings.confidence_threshold, self.errors_of(target))
        stages.mark("rank")
        return ranked

    async def decide(self, target: Target, key: str, stages: logs.Stages,
                     on_partial: Callable[[int, int, list[str]], None] | None = None
                     ) -> Decision | None:
        """A hole fill by the fill contract (``coda_lsp.core.contract``), retries included;
        None if superseded or outdated."""
        stages.mark("span")
        attempts = contract.Attempts(self.job_for(target, self.settings.fill_hole_steps),
                                     self.settings.confidence_threshold, self.errors_of(target))
        first_ms = None
        while (job := attempts.next_job()) is not None:
            result = await self.run_job(target, job, key, stages, on_partial, Role.FILL)
            if result is None:
                return None
            first_ms = stages.total_ms if first_ms is None else first_ms
            attempts.add(result.fills, contract.engine_seconds(result.timings))
        stages.mark("judge")
        decision = attempts.decision
        stages.note("attempts", decision.attempts)
        stages.note("first", round(first_ms or 0))  # what the hole cost had it passed at once
        return decision

    async def complete_inline(self, params: types.InlineCompletionParams):
        self.require_initialized()
        doc = self.store.get(params.text_document.uri)
        automatic = params.context.trigger_kind == types.InlineCompletionTriggerKind.Automatic
        role = Role.TYPING if automatic else Role.FILL  # asked for: the fill model answers
        if not self.usable(doc, role):
            return None
        if not automatic:
            cursor = doc.byte_at(doc.offset_at(params.position, self.encoding))
            hole = spans.hole_at(doc.syntax, cursor)
            if hole is not None:
                return await self.complete_hole(doc, hole)
        stages = logs.Stages(f"inline-{next(self._ids)}")
        target = self.inline_target(doc, params.position)
        # typed: one fill (the surest length); asked for: alternatives to cycle through
        ranked = await self.fill(target, self.settings.steps, doc.uri, stages, fast=True,
                                 inline=True, role=role, choices=1 if automatic else 2)
        if ranked is None:
            return None
        bar = self.settings.inline_threshold(automatic)
        shown = [f for f in ranked if f.confidence >= bar]
        hidden = "" if shown or not ranked else \
            f", hidden: confidence {max(f.confidence for f in ranked):.2f} < {bar} (automatic)"
        items = self.inline_items(target, shown)
        total = stages.total_ms
        self.last_latency_ms = round(total, 1)
        self.status.soon()  # after the response, at most once per STATUS_INTERVAL
        log.info("%s", stages.line(f"{len(items)} item(s){hidden}", total))
        return types.InlineCompletionList(items=items) if items else None

    def inline_items(self, target: Target, fills: list) -> list[types.InlineCompletionItem]:
        return [edits.inline_item(target.doc, target.start, target.end, f.text, self.encoding)
                for f in distinct(fills)]

    async def complete_hole(self, doc: Document, hole: spans.Span):
        """An invoked inline completion at a hole: up to MAX_ITEMS fills that pass the
        contract, best first, for the editor to cycle through; nothing when none passes."""
        start, end = doc.offset_of_byte(hole.start), doc.offset_of_byte(hole.end)
        target = Target(doc, doc.version, start, end, hole)
        stages = logs.Stages(f"hole-inline-{next(self._ids)}")
        decision = await self.decide(target, "hole:" + doc.uri, stages)
        if decision is None:
            return None
        items = self.inline_items(target, decision.fills)
        log.info("%s", stages.line(f"{len(items)} item(s)" if items else
                                   f"no fill: {decision.reason}"))
        return types.InlineCompletionList(items=items) if items else None

    async def fill_hole(self, uri: str, rng: types.Range, asked: bool = True,
                        accept_rejected: bool = False) -> types.WorkspaceEdit | None:
        """The hole's best fill by the contract, as an edit (see ``hole_fills``)."""
        found = await self.hole_fills(uri, rng, asked, accept_rejected)
        return None if found is None else self.hole_edit(found[0], found[1][0].text)

    async def hole_fills(self, uri: str, rng: types.Range, asked: bool = True,
                         accept_rejected: bool = False) -> tuple[Target, list[Fill]] | None:
        """What may be written at the hole: the fills that pass the contract (best first, at
        most MAX_ITEMS, texts once), or the best rejected one the user took; None for nothing.
        ``asked``: the user chose the action, so a refusal says why and offers the best
        rejected fill (not when a client without resolve lists actions). ``accept_rejected``:
        that fill without asking."""
        self.require_initialized()
        doc = self.store.get(uri)
        if not self.usable(doc, Role.FILL):
            return None
        target = self.hole_target(doc, rng)
        if target is None:
            return None
        stages = logs.Stages(f"hole-{next(self._ids)}")
        progress = FillProgress(self)
        await progress.begin()
        try:
            decision = await self.decide(target, "hole:" + uri, stages,
                                         on_partial=progress.on_partial if progress.token else None)
        except asyncio.CancelledError:  # $/cancelRequest, or the progress's cancel button
            log.info("%s", stages.line("cancelled"))
            raise
        finally:
            progress.end()
        if decision is None:
            return None
        if decision.accepted:
            log.info("%s", stages.line(f"{len(decision.fills)} fill(s)"))
            return target, distinct(decision.fills)
        log.info("%s", stages.line(f"no fill: {decision.reason}"))
        best = decision.best_rejected
        if best is not None and (accept_rejected or (asked and await self.ask_anyway(decision))):
            log.info("filling anyway (%s)", contract.describe(best))
            return target, [best]
        if asked and not accept_rejected and best is None:
            self.window_show_message(types.ShowMessageParams(
                type=types.MessageType.Warning, message=NO_FILL + decision.reason))
        return None

    def choices(self, target: Target, fills: list[Fill]) -> dict:
        """``coda.fillHole``'s answer to a client that picks (``choose``): each passing fill's
        text, a few words about it and its edit, best first; the client applies the one the
        user picks."""
        wire = self.protocol._converter.unstructure
        return {"choices": [{"text": f.text, "detail": contract.describe(f),
                             "edit": wire(self.hole_edit(target, f.text))} for f in fills]}

    async def ask_anyway(self, decision: Decision) -> bool:
        """Say why nothing passed and offer the best rejected fill; True if the user takes it.
        Waits on the client without blocking other requests (this handler is a task)."""
        message = NO_FILL + decision.reason
        window = self.client_capabilities.window
        if not (window and window.show_message):
            self.window_show_message(types.ShowMessageParams(
                type=types.MessageType.Warning, message=message))
            return False
        title = decision.anyway_title
        try:
            choice = await self.window_show_message_request_async(types.ShowMessageRequestParams(
                type=types.MessageType.Warning, message=message,
                actions=[types.MessageActionItem(title=title)]))
        except JsonRpcException as exc:  # the client refused or answered nonsense: just say
            log.warning("window/showMessageRequest failed: %s", exc)
            self.window_show_message(types.ShowMessageParams(
                type=types.MessageType.Warning, message=message))
            return False
        return choice is not None and getattr(choice, "title", None) == title

    def hole_edit(self, target: Target, text: str) -> types.WorkspaceEdit:
        edit = edits.text_edit(target.doc, target.start, target.end, text, self.encoding)
        caps = self.client_capabilities.workspace
        versioned = bool(caps and caps.workspace_edit and caps.workspace_edit.document_changes)
        return edits.workspace_edit(target.doc, edit, versioned)

    def code_actions(self, params: types.CodeActionParams) -> list[types.CodeAction] | None:
        self.require_initialized()
        doc = self.store.get(params.text_document.uri)
        if not self.usable(doc, Role.FILL):
            return None
        target = self.hole_target(doc, params.range)
        if target is None:
            return None
        is_hole = params.range.start == params.range.end
        kind = types.CodeActionKind.QuickFix if is_hole else types.CodeActionKind.RefactorRewrite
        only = params.context.only
        if only and not any(kind.value.startswith(getattr(k, "value", k)) for k in only):
            return None
        rng = edits.to_range(doc, target.start, target.end, self.encoding)
        data = {"uri": doc.uri, "range": self.protocol._converter.unstructure(rng)}
        return [types.CodeAction(title=FILL_TITLE, kind=kind, data=data)]

    def resolve_supported(self) -> bool:
        ca = self.client_capabilities.text_document and \
            self.client_capabilities.text_document.code_action
        return bool(ca and ca.resolve_support and "edit" in ca.resolve_support.properties)

    def parse_target_args(self, arg: Any) -> tuple[str, types.Range, bool]:
        """``{uri, range, acceptRejected?}``: the command's argument, or a code action's data."""
        try:
            uri = arg["uri"]
            rng = self.protocol._converter.structure(arg["range"], types.Range)
            if not isinstance(uri, str):
                raise TypeError("uri must be a string")
        except Exception as exc:  # KeyError, TypeError, cattrs' validation errors
            raise JsonRpcInvalidParams(
                f"expected {{uri, range, acceptRejected?}}: {explain(exc)}") from exc
        return uri, rng, self.parse_flag(arg, "acceptRejected")

    @staticmethod
    def parse_flag(arg: dict, name: str) -> bool:
        value = arg.get(name, False)
        if not isinstance(value, bool):
            raise JsonRpcInvalidParams(f"{name} must be true or false")
        return value


def distinct(fills: list[Fill]) -> list[Fill]:
    """The first fill of each text, at most MAX_ITEMS: what an editor offers to cycle."""
    out: list[Fill] = []
    for f in fills:
        if len(out) < MAX_ITEMS and all(f.text != o.text for o in out):
            out.append(f)
    return out


def create_server(defaults: Settings, loader: Loader, verbose: int = 0) -> CodaServer:
    """``loader(spec)`` loads the model a role names (``models.load_engine``)."""
    ls = CodaServer(defaults, loader, verbose)

    @ls.feature(types.INITIALIZE)
    def initialize(ls: CodaServer, params: types.InitializeParams):
        # logMessage is allowed during initialize: from here on the client's log, not stderr
        logs.bridge(ls.window_log_message, asyncio.get_running_loop(), ls.verbose)
        ls.encoding = positions.choose_encoding(params.capabilities)
        ls.store.encoding = ls.encoding
        ls.apply_settings(settings_mod.coda_section(params.initialization_options))
        ls.is_initialized = True

    @ls.feature(types.INITIALIZED)
    async def initialized(ls: CodaServer, params: types.InitializedParams):
        if ls.is_initialized and not ls.model_requested:  # once, however often it comes
            ls.model_requested = True
            await ls.load_model()

    @ls.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: CodaServer, params: types.DidOpenTextDocumentParams):
        if ls.is_initialized:
            ls.store.open(params.text_document)

    @ls.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: CodaServer, params: types.DidChangeTextDocumentParams):
        ls.store.change(params)

    @ls.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: CodaServer, params: types.DidCloseTextDocumentParams):
        ls.store.close(params.text_document.uri)
        ls.models.forget(params.text_document.uri)

    @ls.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: CodaServer, params: types.DidChangeConfigurationParams):
        payload = params.settings
        if not (isinstance(payload, dict) and "coda" in payload):
            ws = ls.client_capabilities.workspace
            if not (ws and ws.configuration):
                return
            items = [types.ConfigurationItem(section="coda")]
            try:
                payload = (await ls.workspace_configuration_async(
                    types.ConfigurationParams(items=items)))[0]
            except Exception as exc:  # an error or nonsense from the client: keep the settings
                log.warning("workspace/configuration failed: %s", exc)
                return
        ls.apply_settings(settings_mod.coda_section(payload))
        if ls.model_requested:  # before that, the first load reads the settings anyway
            await ls.swap_models()

    @ls.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: CodaServer, params: types.InlineCompletionParams):
        return await ls.complete_inline(params)

    kinds = [types.CodeActionKind.QuickFix, types.CodeActionKind.RefactorRewrite]

    @ls.feature(types.TEXT_DOCUMENT_CODE_ACTION,
                types.CodeActionOptions(code_action_kinds=kinds, resolve_provider=True))
    async def code_action(ls: CodaServer, params: types.CodeActionParams):
        actions = ls.code_actions(params)
        if actions and not ls.resolve_supported():
            for action in actions:
                uri, rng, accept = ls.parse_target_args(action.data)
                action.edit = await ls.fill_hole(uri, rng, asked=False, accept_rejected=accept)
            actions = [a for a in actions if a.edit is not None] or None
        return actions

    @ls.feature(types.CODE_ACTION_RESOLVE)
    async def resolve_code_action(ls: CodaServer, action: types.CodeAction):
        if action.edit is None and action.data is not None:
            uri, rng, accept = ls.parse_target_args(action.data)
            action.edit = await ls.fill_hole(uri, rng, accept_rejected=accept)
        return action

    @ls.command(FILL_HOLE)
    async def fill_hole_command(ls: CodaServer, *args: Any):
        if len(args) != 1:
            raise JsonRpcInvalidParams(
                f"{FILL_HOLE} takes one argument {{uri, range, acceptRejected?, choose?}}")
        uri, rng, accept = ls.parse_target_args(args[0])
        choose = ls.parse_flag(args[0], "choose")
        ls.protocol.follow_cancel()  # $/cancelRequest (VS Code's Cancel) stops the fill
        found = await ls.hole_fills(uri, rng, accept_rejected=accept)
        if found is None:
            return False
        target, fills = found
        if choose and len(fills) > 1:  # the user picks; nothing is applied here
            return ls.choices(target, fills)
        try:
            result = await ls.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(
                edit=ls.hole_edit(target, fills[0].text), label=FILL_TITLE))
        except JsonRpcException as exc:  # the client refused or answered nonsense
            log.warning("workspace/applyEdit failed: %s", exc)
            return False
        return bool(result and result.applied)

    @ls.feature(DOCUMENT_TEXT)
    def document_text(ls: CodaServer, params: Any):
        ls.require_initialized()
        uri = params.get("uri") if isinstance(params, dict) else getattr(params, "uri", None)
        if not isinstance(uri, str):
            raise JsonRpcInvalidParams(f"{DOCUMENT_TEXT} takes {{uri}}")
        doc = ls.store.get(uri)
        return None if doc is None else {"text": doc.text, "version": doc.version}

    @ls.feature(types.SHUTDOWN)
    def shutdown(ls: CodaServer, params: Any = None):
        ls.status.cancel()
        ls.models.close()

    return ls


__all__ = ["CodaServer", "create_server", "JsonRpcException", "DOCUMENT_TEXT", "FILL_HOLE",
           "FILL_TITLE", "STATUS"]
