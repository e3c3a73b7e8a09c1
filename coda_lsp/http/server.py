"""``coda-lsp http``: the diffusion engine behind llama.cpp's ``/infill`` and OpenAI's
``/v1/completions``, so llama.vim, llama.vscode, Continue and scripts fill in the middle
with no plugin of ours.

Thin Starlette handlers: ``wire`` checks the request and shapes the answer, ``fim``
fills (the path ``coda-lsp fill`` takes too), and one model worker (``scheduling``) runs
every fill. Requests that name the same client (``X-Coda-Client`` header, or OpenAI's
``user``) replace each other, newest wins; a request whose client hangs up is cancelled
between denoising steps. The port is bound first (a busy port fails at once, before the
model loads) and served at once: while the model loads (a Hub id downloads first)
``/health`` answers 503 ``"status": "loading"`` with the percent, and fills 503 with
Retry-After; then ``"ok"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import itertools
import json
import logging
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from coda_lsp import __version__
from coda_lsp.core import batching, fim, logs
from coda_lsp.core.engine import Cancelled, Engine, FillJob
from coda_lsp.core.models import (
    Models,
    ModelSpec,
    Role,
    Served,
    download_message,
    first_line,
    model_name,
)
from coda_lsp.core.scheduling import Scheduler, Superseded
from coda_lsp.core.settings import Settings
from coda_lsp.http.grammar import document_uri
from coda_lsp.http.guard import Policy, WebGuard
from coda_lsp.http.metrics import Metrics
from coda_lsp.http.openapi import document
from coda_lsp.http.wire import (
    Answer,
    BadRequest,
    FimRequest,
    choices,
    completion_body,
    completion_chunk,
    completion_id,
    error_body,
    fim_body,
    fim_chunk,
    infill_body,
    infill_chunk,
    parse_completions,
    parse_infill,
    usage,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 2 << 20  # llama.vim's 16 extra-context chunks are ~100 KB
CLIENT_HEADER = "x-coda-client"
CLIENT_GONE = 499  # nginx's "client closed request": nobody reads it, the log does
MAX_QUEUE = 32  # fills waiting or running; past it a request is answered 503 at once
RETRY_AFTER_MAX = 60  # seconds: the most a 503 asks a client to wait
RETRY_LOADING = 2  # seconds a request asks to wait while the model loads
AUTO_BATCH = 0  # --max-batch auto: measure at load how many fills a batch may hold


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class Service:
    """The role's model and its worker, the server's settings; what every handler shares.
    ``--fast`` serves the typing role (the language server's typing path), else the fill
    role (``core.models``)."""

    def __init__(self, models: Models, role: Role, settings: Settings, model_name: str,
                 api_key: str | None = None, fast: bool = False,
                 policy: Policy | None = None, max_queue: int = MAX_QUEUE,
                 max_batch: int = 1) -> None:
        self.models = models
        self.role = role
        self.policy = policy or Policy.make()  # who may call: no web page unless allowed
        self.fast = fast  # the language server's typing path: approximate, far faster
        self.settings = settings
        self.model_name = model_name
        self.api_key = api_key
        self.max_queue = max_queue
        self.max_batch = max_batch  # --fast fills per batch; AUTO_BATCH: measured at load
        self.probe: batching.Probe | None = None  # what the measurement found
        self.metrics = Metrics(
            lambda: self.scheduler.depth() if self.ready else 0, max_queue,
            carried=lambda: len(getattr(self.engine, "carries", ())) if self.ready else 0,
            trims=lambda: self.scheduler.trims if self.ready else 0)
        self.fill_seconds = 1.0  # recent fills' mean model time (EWMA): sizes Retry-After
        self.closing = False
        self._ids = itertools.count(1)
        # while the model loads: what /health says; written by the loading thread
        self.loading: dict[str, Any] = {"percent": None, "message": "loading the model"}
        self.load_error: str | None = None

    @property
    def ready(self) -> bool:
        return self.models.get(self.role) is not None

    async def load(self, spec: ModelSpec, on_ready: Callable[[], None] = lambda: None,
                   on_error: Callable[[str], None] = lambda message: None) -> None:
        """Load the role's model in the background (a Hub id downloads first, its percent
        in ``loading``); ``on_error`` gets the one line that says why it cannot."""
        name = model_name(spec)
        self.loading = {"percent": None, "message": f"loading {name}"}

        def download(done: int, total: int | None) -> None:
            message, percent = download_message(name, done, total)
            if done == total:  # the weights load next
                message = f"loading {name} (downloaded {total / 1e6:.1f} MB)"
            self.loading = {"percent": percent, "message": message}

        def load_model() -> Served:
            served = self.models.load(spec, download)
            served.scheduler.on_run = self.metrics.worker_ran
            self.batch(served)
            return served

        try:
            served = await _in_thread(load_model)
        except Exception as exc:  # ModelError, CheckpointError, torch errors: one line
            self.load_error = f"cannot load the model from {spec.ref}: {first_line(exc)}"
            self.loading = {"percent": None, "message": self.load_error}
            on_error(self.load_error)
            return
        self.models.install(self.role, served)
        on_ready()

    def batch(self, served: Served) -> None:
        """Let the worker run waiting ``--fast`` fills as one batch: up to ``max_batch``, or
        as many as pay on this machine (``batching.probe``, a few seconds) under AUTO_BATCH.
        The exact path (hole fills, retries, fp32) and remote engines stay one at a time."""
        engine = served.engine
        if not self.fast or self.max_batch == 1 or not hasattr(engine, "fill_many"):
            return
        size = self.max_batch
        if size == AUTO_BATCH:
            self.loading = {"percent": None, "message": "measuring what batching gains"}
            self.probe = batching.probe(engine, self.settings)
            size = self.probe.max_batch
        served.scheduler.batching(functools.partial(batching.run_batch, engine), size)

    def require_ready(self) -> None:
        if not self.ready:
            percent = self.loading["percent"]
            raise HttpError(503, "the model is loading" + (
                f" ({percent} %)" if percent is not None else "") +
                f"; retry in {RETRY_LOADING} s", {"Retry-After": str(RETRY_LOADING)})

    @property
    def engine(self) -> Engine:
        served = self.models.get(self.role)
        assert served is not None
        return served.engine

    @property
    def scheduler(self) -> Scheduler:
        """The worker of the model serving this server's role (its queue is the HTTP queue)."""
        served = self.models.get(self.role)
        assert served is not None
        return served.scheduler

    def authorize(self, request: Request) -> None:
        if not self.api_key:
            return
        given = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise HttpError(401, "missing or wrong API key (Authorization: Bearer KEY)")

    def admit(self, req: FimRequest) -> None:
        """Refuse at once (503, Retry-After) when the queue is full; a request that replaces
        its client's waiting one adds nothing to the queue and is always admitted; while
        the model loads, 503 too."""
        self.require_ready()
        depth = self.scheduler.depth()
        if depth < self.max_queue or self.scheduler.has_pending(req.client):
            return
        self.metrics.rejected.labels("queue_full").inc()
        wait = min(RETRY_AFTER_MAX, max(1, math.ceil(depth * self.fill_seconds)))
        log.warning("queue full (%d fills waiting or running): 503", depth)
        raise HttpError(503, f"the server is busy ({depth} fills queued); retry in {wait} s",
                        {"Retry-After": str(wait)})

    def submit(self, req: FimRequest, stages: logs.Stages,
               on_partial: fim.Partial | None = None) -> tuple[asyncio.Future, Settings]:
        settings = req.settings(self.settings)
        self.admit(req)
        served = self.models.get(self.role)
        assert served is not None
        # the model this request started on, even across a swap
        work = FillWork(self, served.engine, req, settings, stages, on_partial)
        # --fast fills that draw no partial fills may share a batch (``core.batching``)
        typing = self.fast and on_partial is None and (req.lengths is None or req.fast)
        group = "typing" if typing else None
        return served.scheduler.submit(req.client, work, group), settings

    def answer(self, future: asyncio.Future, req: FimRequest, settings: Settings,
               stages: logs.Stages) -> Answer:
        """The finished fill, or the HttpError that says why there is none."""
        endpoint = stages.request_id.rsplit("-", 1)[0]
        outcome_of = self.metrics.fills.labels
        self.metrics.latency.labels(endpoint).observe(stages.total_ms / 1e3)
        try:
            outcome: fim.Outcome = future.result()
        except asyncio.CancelledError:
            outcome_of(endpoint, "cancelled").inc()
            log.info("%s", stages.line("cancelled: the client went away"))
            raise HttpError(CLIENT_GONE, "the client closed the request") from None
        except Superseded:
            outcome_of(endpoint, "superseded").inc()
            if self.closing:
                raise HttpError(503, "the server is shutting down") from None
            log.info("%s", stages.line("superseded"))
            raise HttpError(409, "superseded by a newer request from this client") from None
        except Exception as exc:  # a model failure costs one request, never the server
            outcome_of(endpoint, "failed").inc()
            log.exception("%s", stages.line("failed"))
            raise HttpError(500, f"the fill failed: {exc}") from None
        outcome_of(endpoint, "ok").inc()
        stages.mark("queue+model")
        stages.add(outcome.timings)
        if self.fast:
            stages.note("reused", outcome.reused)
        texts = choices([f.text for f in outcome.fills], req.n, req.stop)
        tokens = [len(self.engine.tokenizer.encode(t, allow_special=False)) for t in texts]
        refused = outcome.decision is not None and not outcome.decision.accepted
        log.info("%s", stages.line(f"no fill: {outcome.decision.reason}" if refused else
                                   f"{len(texts)} text(s)"))
        candidates = None if req.lengths is None else [
            {"text": f.text, "confidence": f.confidence, "length": f.length}
            for f in outcome.fills]
        return Answer(texts, outcome.prompt_tokens, tokens, outcome.timings.get("prompt", 0.0),
                      outcome.timings.get("model", 0.0), settings.steps, self.model_name,
                      candidates)

    def empty(self, req: FimRequest) -> Answer:
        return Answer([""], 0, [0], 0.0, 0.0, req.settings(self.settings).steps, self.model_name)

    async def fill(self, request: Request, req: FimRequest, name: str) -> Answer:
        """Fill and wait, cancelling the fill if the client hangs up first."""
        stages = logs.Stages(f"{name}-{next(self._ids)}")
        future, settings = self.submit(req, stages)
        watcher = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({future, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not future.done():
            future.cancel()  # raises the worker's stop flag: it quits at the next step
        return self.answer(future, req, settings, stages)

    async def events(self, req: FimRequest, name: str, on_state: Callable[[dict], dict],
                     on_answer: Callable[[Answer], list]) -> AsyncIterator[str]:
        """Server-sent events: partial fills while denoising (if asked), then the answer.

        Starlette cancels this generator when the client hangs up; ``finally`` then stops
        the fill."""
        stages = logs.Stages(f"{name}-{next(self._ids)}")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        on_partial = None
        if req.stream_states:
            def on_partial(step: int, steps: int, texts: list[str]) -> None:
                loop.call_soon_threadsafe(queue.put_nowait,
                                          {"step": step, "steps": steps, "candidates": texts})
        try:
            future, settings = self.submit(req, stages, on_partial)
        except HttpError as exc:  # the queue filled up since the handler admitted it
            yield _sse(error_body(str(exc), exc.status))
            return
        future.add_done_callback(lambda _f: queue.put_nowait(None))
        try:
            while (state := await queue.get()) is not None:
                yield _sse(on_state(state))
            try:
                events = on_answer(self.answer(future, req, settings, stages))
            except HttpError as exc:
                events = [error_body(str(exc), exc.status)]
            for event in events:
                yield _sse(event)
        finally:
            if not future.done():
                future.cancel()
                self.metrics.fills.labels(name, "cancelled").inc()
                log.info("%s", stages.line("cancelled: the client went away"))

    def close(self) -> None:
        self.closing = True
        self.models.close()


class FillWork:
    """One request's fill on the model worker: alone (called with its stop flag) or, as
    ``steps``, beside other requests' rows in one batch (``core.batching``)."""

    def __init__(self, service: Service, engine: Engine, req: FimRequest, settings: Settings,
                 stages: logs.Stages, on_partial: fim.Partial | None) -> None:
        self.service, self.engine, self.req, self.settings = service, engine, req, settings
        self.stages, self.on_partial = stages, on_partial
        self.queued = time.perf_counter()

    def __call__(self, should_stop: Callable[[], bool]) -> fim.Outcome:
        polls = 0  # the sampler asks before each step: polls - 1 steps ran

        def counted() -> bool:
            nonlocal polls
            polls += 1
            return should_stop()

        try:
            return fim.drive(self.steps(counted), lambda job: self.engine.fill(
                job, counted, on_partial=self.on_partial))
        except Cancelled:
            log.info("[%s] stopped after %d of %d denoising steps", self.stages.request_id,
                     polls - 1, self.req.steps or self.settings.steps)
            raise

    def steps(self, should_stop: Callable[[], bool]) -> fim.FillSteps:
        """The fill as steps: the jobs it needs the model for (one, unless retried)."""
        service, req, settings = self.service, self.req, self.settings
        started = time.perf_counter()
        service.metrics.waited.observe(started - self.queued)
        uri, how = document_uri(req.prefix, req.suffix, req.language, req.filename)
        log.debug("[%s] running (%s: %s)", self.stages.request_id, how, uri)
        try:
            if req.lengths is not None:  # the caller chose the span and ranks the fills
                return (yield from span_steps(req, settings))
            return (yield from fim.between_steps(req.prefix, req.suffix, settings,
                                                 settings.steps, uri=uri, fast=service.fast,
                                                 carry_key=f"client:{req.client}",
                                                 choices=req.n))
        finally:
            seconds = time.perf_counter() - started
            service.metrics.model.observe(seconds)
            service.fill_seconds = 0.8 * service.fill_seconds + 0.2 * seconds


def span_steps(req: FimRequest, settings: Settings) -> fim.FillSteps:
    """A span request: one ``Engine.fill`` at the caller's lengths, its fills as they came
    (the caller ranks them with its own syntax tree and runs the fill contract's retries)."""
    job = FillJob(req.prefix, req.suffix, req.lengths or (), req.steps or settings.steps, settings,
                  fast=req.fast,
                  carry_key=f"client:{req.client}" if req.fast and req.client else None,
                  inline=req.inline, seed=req.seed, choices=req.n)
    result = yield job
    return fim.Outcome(result.fills, len(result.fills), result.prompt_tokens, result.timings,
                       result.reused, batch=getattr(result, "batch", 1))


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _sse(event: Any) -> str:
    return "data: " + (event if isinstance(event, str) else json.dumps(event)) + "\n\n"


def _stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def read_json(request: Request) -> Any:
    """The body as JSON, refusing bodies over MAX_BODY_BYTES before reading them whole."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        raise HttpError(413, f"the body is over {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HttpError(413, f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise HttpError(400, f"malformed JSON: {exc}") from None


def _checked(req: FimRequest, service: Service) -> FimRequest:
    """Everything that can be wrong with a request, found before any answer starts."""
    if req.stream_states and not req.stream:
        raise BadRequest("stream_states needs stream: true")
    req.settings(service.settings)
    return req


def create_app(service: Service,
               on_start: Callable[[], Awaitable[None]] | None = None) -> Starlette:
    """The app; ``on_start`` runs in the background once it serves (the model's load)."""
    async def health(request: Request) -> Response:
        # which model serves which role, on which device and dtype (no key needed: no text)
        if not service.ready:  # llama.cpp's convention: 503 while loading
            status = "error" if service.load_error else "loading"
            return JSONResponse({"status": status, **service.loading}, status_code=503,
                                headers={"Retry-After": str(RETRY_LOADING)})
        return JSONResponse({"status": "ok", "models": service.models.describe(with_ref=False),
                             "queue": {"depth": service.scheduler.depth(),
                                       "max": service.max_queue,
                                       "max_batch": service.scheduler.max_batch}})

    async def metrics(request: Request) -> Response:
        return Response(service.metrics.text(), media_type=service.metrics.content_type)

    api = document(__version__)

    async def openapi(request: Request) -> Response:
        # the request shapes (no text, no key needed), from the models wire.py checks with
        return JSONResponse(api)

    def model_card() -> dict:
        return {"id": service.model_name, "object": "model", "created": 0, "owned_by": "coda-lsp"}

    async def models(request: Request) -> Response:
        service.authorize(request)
        return JSONResponse({"object": "list", "data": [model_card()]})

    async def model(request: Request) -> Response:
        """OpenAI's models.retrieve: the one model this server serves, by its name."""
        service.authorize(request)
        if request.path_params["model"] != service.model_name:
            raise HttpError(404, f"no model {request.path_params['model']!r}; this server "
                                 f"serves {service.model_name!r}")
        return JSONResponse(model_card())

    async def infill(request: Request) -> Response:
        service.authorize(request)
        req = _checked(parse_infill(await read_json(request), request.headers.get(CLIENT_HEADER)),
                       service)
        if req.nothing_to_predict:  # a cache-warming request: nothing to run
            return JSONResponse(infill_body(service.empty(req), req.response_fields))
        if not req.stream:
            answer = await service.fill(request, req, "infill")
            return JSONResponse(infill_body(answer, req.response_fields))

        def on_answer(a: Answer) -> list:
            return [infill_chunk(a.texts[0]), {**infill_body(a), "content": ""}]

        service.admit(req)  # a full queue is a 503 before the event stream starts

        return _stream(service.events(req, "infill", lambda s: infill_chunk("", s), on_answer))

    def completions(shape: Callable, chunk: Callable, name: str):
        """OpenAI's /v1/completions (``text`` choices) or the FIM endpoint that Mistral and
        Continue use (chat-shaped ``delta.content`` choices): one request shape, two answers."""

        async def handler(request: Request) -> Response:
            service.authorize(request)
            req = _checked(parse_completions(await read_json(request),
                                             request.headers.get(CLIENT_HEADER)), service)
            cid = completion_id()
            if req.nothing_to_predict:
                answer = service.empty(req)
            elif not req.stream:
                answer = await service.fill(request, req, name)
            else:
                def on_answer(a: Answer) -> list:
                    events: list = [chunk(cid, a.model, i, t, "stop")
                                    for i, t in enumerate(a.texts)]
                    if req.include_usage:
                        events.append({**chunk(cid, a.model, 0, ""), "choices": [],
                                       "usage": usage(a)})
                    return [*events, "[DONE]"]

                def on_state(state: dict) -> dict:
                    return chunk(cid, service.model_name, 0, "", state=state)

                service.admit(req)

                return _stream(service.events(req, name, on_state, on_answer))
            return JSONResponse(shape(answer, cid))

        return handler

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status", None) or getattr(exc, "status_code", 500)
        message = str(getattr(exc, "detail", None) or exc) or "error"
        return JSONResponse(error_body(message, status), status_code=status,
                            headers=getattr(exc, "headers", None))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        loading = asyncio.create_task(on_start()) if on_start is not None else None
        yield
        if loading is not None:
            loading.cancel()
        service.close()

    text = completions(completion_body, completion_chunk, "completions")
    chat = completions(fim_body, fim_chunk, "fim")
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
        Route("/models/{model:path}", model, methods=["GET"]),
        Route("/infill", infill, methods=["POST"]),
        Route("/v1/completions", text, methods=["POST"]),
        Route("/completions", text, methods=["POST"]),
        Route("/v1/fim/completions", chat, methods=["POST"]),
    ]
    handlers = {HttpError: http_error, BadRequest: http_error, HTTPException: http_error}
    origins = sorted(service.policy.origins)
    middleware = [
        # outermost: a foreign Origin or Host is refused before anything else runs
        Middleware(WebGuard, policy=service.policy,
                   on_refused=service.metrics.rejected.labels("forbidden").inc),
        Middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                   allow_headers=["Authorization", "Content-Type", "X-Api-Key", CLIENT_HEADER],
                   max_age=600),
    ]
    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan,
                     middleware=middleware)


def bind(host: str, port: int) -> socket.socket:
    """Bind and listen before loading the model: a port in use fails fast, and the line that
    names the port names the real one (port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections from now on wait in the backlog until uvicorn accepts
    return sock


def serve(service: Service, sock: socket.socket, verbose: int = 0,
          load: ModelSpec | None = None, on_ready: Callable[[], None] = lambda: None) -> None:
    """Serve until stopped; with ``load``, load that model in the background meanwhile
    (``on_ready`` once it serves). A load that fails stops the server: ``service.load_error``
    says why."""
    import uvicorn

    server: uvicorn.Server | None = None

    def failed(message: str) -> None:  # the caller prints it, once
        if server is not None:
            server.should_exit = True

    async def start() -> None:
        await service.load(load, on_ready, failed)

    app = create_app(service, start if load is not None else None)
    config = uvicorn.Config(app, log_level="info" if verbose else "warning",
                            access_log=verbose > 1, timeout_graceful_shutdown=5,
                            limit_concurrency=1024)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])


async def _in_thread(work: Callable[[], Any]) -> Any:
    """``work()`` on a daemon thread: a download must not keep a stopped server alive, as
    ``asyncio.to_thread``'s pool would (the interpreter waits for it at exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        result, error = None, None
        try:
            result = work()
        except BaseException as exc:  # handed to the loop, raised there
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="coda-load", daemon=True).start()
    return await future
