"""The model side of a completion: load once, turn a span into ranked candidate fills.

``Engine.fill`` runs on the model worker thread (tokenize, batch every candidate length,
denoise, tidy). Ranking needs the document's syntax tree, which only the event loop touches,
so ``rank`` is a separate pure function the caller runs once the fills come back. The CLI
uses the same two calls synchronously.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from coda_lsp.core import budget, positions, prompt
from coda_lsp.core.settings import Settings
from coda_model import (
    Cancelled,
    ContextCarry,
    InfillRequest,
    SamplerConfig,
    infill,
    infill_many,
    load_model,
    load_tokenizer,
    quantize,
)
from coda_model.bucketing import bucket_linears
from coda_model.checkpoint import stored_parameters
from coda_model.compiled import compile_layers
from coda_model.infill import fill_ends
from coda_model.quantize import cpu_flags, full_precision, int8_fast

log = logging.getLogger(__name__)

MASK_GLYPH = "\u2591"  # how a still-masked token shows in a partial fill
INLINE_CANDIDATES = 2  # the most mask counts a keystroke-driven request tries (holes: all)
CARRIED_DOCUMENTS = 4  # context keys/values kept for at least this many documents (~117 MB
#                       each at 1.7B), and for as many more as CARRY_BUDGET holds, up to 64:
CARRY_BUDGET = 128 << 20  # bytes; the shipped model's carry is ~1 MiB: 64 clients keep theirs
MAX_CARRIED = 64
CARRY_IDLE_S = 120.0  # beyond the CARRIED_DOCUMENTS most recent, a carry unused this long goes:
#                       an HTTP client that left never says so (a soak's came and went: 64
#                       carries, 128 MiB, sat on); a returning one pays one full first pass
STOP_WEIGHT = 0.0  # padding committed last: longer, less often empty fills (bench_ranking.py)
HOLE_CACHE_WINDOW = 16  # hole fills recompute this much context by the hole: 97 % same as exact
SHARED_HOLE_CONTEXT = True  # hole fills: one candidate's context keys/values serve all
HEAL_DEPTH = 3  # prefix tokens a heal may take back: a word cut into pieces ("ret" + "u")


@dataclass(frozen=True)
class FillJob:
    """Everything the worker needs, copied from the document so edits cannot race it."""

    prefix: str
    suffix: str
    span_lengths: tuple[int, ...]
    steps: int
    settings: Settings
    line_ending: str = "\n"
    fast: bool = False  # typing: the shortest lengths only, context carried across requests
    carry_key: str | None = None  # typing: reuse context keys/values across requests with this key
    inline: bool = False  # an inline span (on the cursor's line): see one_line_only
    seed: int | None = None  # sampling noise's seed (a retry: coda_lsp.core.contract)
    choices: int = 1  # typing: fills the caller can show (HTTP ``n``, an invoked completion)


def typing_lengths(lengths: Sequence[int], choices: int = 1) -> list[int]:
    """A keystroke's mask counts from its span's (shortest first): the second shortest alone,
    or the two shortest when the caller shows alternatives (``choices`` > 1). Measured on
    600 mid-line cursors in six unseen repositories against the two shortest ranked
    (benchmarks/README.md, "One candidate row for typing"): the second alone +0.010 ± 0.005
    and +0.013 ± 0.005 edit similarity (two seeds) in 60 % of the time; the shortest alone
    -0.012 ± 0.005."""
    if choices > 1:
        return list(lengths[:INLINE_CANDIDATES])
    return list(lengths[1:2] or lengths[:1])


@dataclass(frozen=True)
class Healing:
    """The prompt's end re-decided with the fill (``Engine.healing``)."""

    prefix_ids: list[int]  # the prefix without the tokens taken back
    text: str  # their text: the fill's first token starts with it, the offer drops it
    banned: torch.Tensor  # [V] bool: what the first canvas position may not be
    extra: int  # canvas positions added for the text


@dataclass(frozen=True)
class _Prepared:
    """A job's text as the model sees it and its ``infill`` input (``Engine._prepare``)."""

    prefix: str
    suffix: str
    healed: str  # the prefix text token healing gave back to the canvas
    request: InfillRequest
    plan: budget.Plan  # context, lengths, steps and window (core.budget: a big model's CPU plan)


@dataclass(frozen=True)
class Fill:
    text: str
    confidence: float
    length: int
    errors: int = 0


@dataclass
class FillResult:
    fills: list[Fill]
    timings: dict[str, float] = field(default_factory=dict)  # stage -> milliseconds
    reused: int = 0  # context tokens whose keys/values came from the previous request
    prompt_tokens: int = 0  # prefix + suffix tokens the model saw
    batch: int = 1  # requests whose rows shared these forward passes (``Engine.fill_many``)


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def dtype_of(model) -> str:
    """The dtype of a model's weights by name ("float32"), for status lines."""
    try:
        return str(next(model.parameters()).dtype).removeprefix("torch.")
    except (AttributeError, StopIteration, TypeError):
        return "unknown"


BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 flags; aarch64 "Features: bf16"


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (its flags say so); False when unknown."""
    return bool(BF16_CPU_FLAGS & cpu_flags())


def pick_dtype(dtype: str | None, device: str, parameters: int = 0) -> str | None:
    """``dtype`` unless auto; else the device's best for a model of ``parameters``."""
    if dtype not in (None, "auto"):
        return dtype
    if device == "cuda":
        return "bfloat16"
    if device != "cpu":
        return None  # MPS: float32 (load_model's default)
    # A big model on a CPU waits on reading its weights, and int8 holds them in half of bf16's
    # bytes: a CoDA-1.7B's invoked completion 1.48 s in int8 vs 2.04 s in bf16 on 2 cores,
    # 2.7 vs 3.6 GiB resident (benchmarks/README.md, "A 1.7B fill model through the server").
    if parameters >= budget.BIG_MODEL_PARAMS and quantize.int8_available():
        return "int8"
    # bf16 halves the weights' memory traffic where the CPU computes in bf16 natively (emulated,
    # it is slower than fp32). Else int8 weights where the CPU has int8 dot products (VNNI):
    # typing 1.4x faster through the server (shipped model; ~2x at 30-50 M), fills as good
    # (benchmarks/README.md, "dtype on CPU"). Else fp32.
    if native_bf16():
        return "bfloat16"
    return "int8" if int8_fast() else None


def carried_documents(model) -> int:
    """How many documents' (or HTTP clients') context keys/values to keep: what CARRY_BUDGET
    holds at the model's full context, within [CARRIED_DOCUMENTS, MAX_CARRIED]. Many typing
    clients each keep theirs (a batch of them reuses its carries), a large model keeps few."""
    config = getattr(model, "config", None)
    try:
        weight = next(model.parameters())
        per_document = (2 * config.num_hidden_layers * config.num_key_value_heads
                        * config.head_dim * config.max_position_embeddings
                        * weight.element_size())
    except (AttributeError, StopIteration, TypeError):
        return CARRIED_DOCUMENTS
    return max(CARRIED_DOCUMENTS, min(MAX_CARRIED, CARRY_BUDGET // max(1, per_document)))


class Engine:
    def __init__(self, model, tokenizer, device: str = "cpu",
                 dtype_name: str | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype_name = dtype_name or dtype_of(model)  # what status lines report
        self.carries: OrderedDict[str, ContextCarry] = OrderedDict()  # worker thread only
        self.carry_used: dict[str, float] = {}  # key -> monotonic time of its last use
        self.carried_documents = carried_documents(model)
        self.carry_margin = ContextCarry().margin  # prefix tokens a keystroke recomputes

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "auto", dtype: str | None = None,
             compile: bool = False) -> Engine:
        """Load weights and tokenizer; raises CheckpointError/TokenizerError with the path.
        compile: the layers through torch.compile (CUDA only), compiled now by a warm-up."""
        dev = pick_device(device)
        if compile and dev != "cuda":
            raise ValueError(f"--compile is for CUDA GPUs, not {dev}")
        chosen = pick_dtype(dtype, dev, stored_parameters(model_dir))
        model = load_model(model_dir, device=dev, dtype=chosen)
        bucket_linears(model)  # a bounded set of kernel shapes: memory flat over hours
        tokenizer = load_tokenizer(model_dir)
        tokenizer.texts_in_order  # noqa: B018 -- decoded and sorted now, not on a keystroke
        engine = cls(model, tokenizer, dev, chosen)
        if engine.planned:
            log.info("%s on a CPU: fills sized to its speed here (%s)", model_dir, engine.speed)
        if compile:
            compile_layers(model)
            engine.warm_up()
        return engine

    def warm_up(self) -> float:
        """Fill once through the typing path (one and two candidate lengths): compilation and
        the first CUDA graph captures happen at start, not on the first keystroke."""
        start = time.perf_counter()
        tok = self.tokenizer
        prefix = tok.encode("def total(items):\n    result = 0\n    for item in items:\n")
        suffix = tok.encode("\n    return result\n")
        for lengths in ([8, 16], [16]):
            infill(self.model, tok, prefix, suffix, lengths,
                   SamplerConfig(steps=2, context_cache=True))
        seconds = time.perf_counter() - start
        log.info("warm-up (compilation) took %.1f s", seconds)
        return seconds

    @functools.cached_property
    def planned(self) -> bool:
        """Whether fills are sized to this machine (``core.budget``): a big model on a CPU."""
        return self.device == "cpu" and budget.parameters(self.model) >= budget.BIG_MODEL_PARAMS

    @functools.cached_property
    def speed(self) -> budget.Speed:
        """This model's forward-pass cost here, measured once (at load for a planned model)."""
        return budget.measure(self.model)

    def plan(self, wanted: budget.Plan) -> budget.Plan:
        """What the settings want, or for a big model on a CPU what fits the time budget."""
        if not self.planned:
            return wanted
        chosen = budget.plan(wanted, self.speed)
        if chosen != wanted:
            log.info("fill sized to this CPU: %s (expected %.0f ms) instead of %s (%.0f ms)",
                     chosen.describe(), self.speed.fill_ms(chosen), wanted.describe(),
                     self.speed.fill_ms(wanted))
        return chosen

    def context_budget(self, settings: Settings) -> int:
        """The setting, capped at the positions the model was trained on (a small model's
        quality collapses past them, and every extra token costs latency)."""
        trained = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        return min(settings.context_tokens, trained) if trained else settings.context_tokens

    def sampler(self, settings: Settings, steps: int, fast: bool = False,
                seed: int | None = None, window: int | None = None) -> SamplerConfig:
        """Typing and hole fills both compute the context's keys/values once per request;
        hole fills also recompute the HOLE_CACHE_WINDOW context tokens on each side of the hole
        every step (agreement with the exact path: benchmarks/bench_fill_hole.py).
        ``fillHoleExact`` recomputes everything every step for hole fills, the reference."""
        return SamplerConfig(
            steps=steps,
            alg=settings.alg,
            alg_temp=settings.alg_temp,
            temperature=settings.temperature,
            context_cache=fast or not settings.fill_hole_exact,
            cache_window=window if window is not None else 0 if fast else HOLE_CACHE_WINDOW,
            shared_context=SHARED_HOLE_CONTEXT and not fast,
            stop_weight=STOP_WEIGHT,
            seed=seed,
        )

    def fill(self, job: FillJob, should_stop: Callable[[], bool] | None = None,
             on_step: Callable[[int, int], None] | None = None,
             on_partial: Callable[[int, int, list[str]], None] | None = None) -> FillResult:
        """Candidate fills for one hole, one per length; raises Cancelled when told to stop.

        on_step(step, steps) reports denoising progress (from this, the worker, thread);
        on_partial(step, steps, texts) sees every candidate after each denoising step, masks
        drawn as MASK_GLYPH: lets a client draw the fill sharpening.
        """
        t0 = time.perf_counter()
        carry = self.carry(job.carry_key) if job.fast else None
        ready = self._prepare(job, carry)
        t1 = time.perf_counter()
        healed = ready.healed
        with torch.inference_mode(), self._precision(job):
            candidates = infill(
                self.model,
                self.tokenizer,
                ready.request.prefix_ids,
                ready.request.suffix_ids,
                ready.request.lengths,
                self.sampler(job.settings, ready.plan.steps, job.fast, job.seed,
                             ready.plan.window),
                should_stop=should_stop,
                on_step=on_step,
                carry=carry,
                first_banned=ready.request.first_banned,
                on_middles=None if on_partial is None else (
                    lambda step, steps, middles: on_partial(
                        step, steps, [self.partial_text(ids).removeprefix(healed)
                                      for ids in middles])),
            )
        t2 = time.perf_counter()
        if self.planned:  # the machine may be busier or idler than when it was measured
            self.speed = self.speed.observed(ready.plan, (t2 - t1) * 1e3)
        timings = {"prompt": (t1 - t0) * 1e3, "model": (t2 - t1) * 1e3}
        return self._result(job, ready, candidates, timings,
                            carry.last_reused if carry else 0)

    def fill_many(self, jobs: Sequence[FillJob],
                  stops: Sequence[Callable[[], bool]]) -> list[FillResult | BaseException]:
        """``fill`` for several jobs at once (requests from different clients): jobs with the
        same sampler settings are denoised as rows of one batch (``infill_many``), a job
        alone in its group takes ``fill`` itself (its carry included). One result or
        exception per job, in order; a batch stops only when every job in it is stopped."""
        out: list[FillResult | BaseException | None] = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(jobs):
            # a big model on a CPU sizes each fill on its own (core.budget): no batches
            key = (i,) if self.planned else (
                job.fast, self.sampler(job.settings, job.steps, job.fast, job.seed))
            groups.setdefault(key, []).append(i)
        for members in groups.values():
            if len(members) == 1:
                i = members[0]
                try:
                    out[i] = self.fill(jobs[i], stops[i])
                except Exception as exc:  # this job's failure, handed back with it
                    out[i] = exc
                continue
            try:
                results = self._fill_batch([jobs[i] for i in members],
                                           [stops[i] for i in members])
            except Exception as exc:  # the whole batch failed or every job was stopped
                results = [exc] * len(members)
            for i, result in zip(members, results, strict=True):
                out[i] = result
        return out

    def _fill_batch(self, jobs: list[FillJob],
                    stops: list[Callable[[], bool]]) -> list[FillResult]:
        """Jobs with one sampler config as one batch, each with its own carry."""
        t0 = time.perf_counter()
        carries = [self.carry(job.carry_key) if job.fast else None for job in jobs]
        if len({id(c) for c in carries if c is not None}) < sum(c is not None for c in carries):
            carries = [None] * len(jobs)  # two jobs, one carry key: neither may use it
        ready = [self._prepare(job, carry) for job, carry in zip(jobs, carries, strict=True)]
        t1 = time.perf_counter()
        first = jobs[0]
        with torch.inference_mode(), self._precision(first):
            grouped = infill_many(self.model, self.tokenizer, [r.request for r in ready],
                                  self.sampler(first.settings, first.steps, first.fast,
                                               first.seed),
                                  should_stop=lambda: all(stop() for stop in stops),
                                  carries=carries)
        t2 = time.perf_counter()
        timings = {"prompt": (t1 - t0) * 1e3, "model": (t2 - t1) * 1e3}
        return [replace(self._result(job, r, candidates, timings,
                                     carry.last_reused if carry else 0), batch=len(jobs))
                for job, r, candidates, carry in zip(jobs, ready, grouped, carries, strict=True)]

    @staticmethod
    def _precision(job: FillJob):
        """Typing takes int8's speed; hole fills (a second to spare) their fp32 weights."""
        return contextlib.nullcontext() if job.fast else full_precision()

    def _prepare(self, job: FillJob, carry: ContextCarry | None) -> _Prepared:
        """The model's input for a job: prompt within the context budget, candidate lengths
        (one or two when fast: ``typing_lengths``), token healing."""
        prefix, suffix = positions.for_model(job.prefix), positions.for_model(job.suffix)
        lengths = prompt.candidate_lengths(job.span_lengths, job.settings.max_middle_tokens)
        if job.fast:  # typing: one or two candidates, latency grows with the rows
            lengths = typing_lengths(lengths, job.choices)
        wanted = budget.Plan(self.context_budget(job.settings), tuple(lengths), job.steps,
                             0 if job.fast else HOLE_CACHE_WINDOW,
                             SHARED_HOLE_CONTEXT and not job.fast)
        plan = self.plan(wanted)
        p = prompt.build(
            self.tokenizer,
            prefix,
            suffix,
            job.span_lengths if plan.lengths == wanted.lengths else plan.lengths,
            plan.context,
            job.settings.max_middle_tokens,
        )
        lengths = list(p.lengths)
        if job.fast:
            lengths = typing_lengths(lengths, job.choices)
        prefix_ids = p.prefix_ids
        if carry is not None:  # keep the window's far end where the carried keys start
            prefix_ids = prefix_ids[carry.overhang(prefix_ids):]
        heal = self.healing(prefix_ids)
        healed, first_banned = ("", None) if heal is None else (heal.text, heal.banned)
        if heal is not None:  # the prompt's last tokens are decided again, with the fill
            prefix_ids, lengths = heal.prefix_ids, [n + heal.extra for n in lengths]
        log.debug("prompt %d+%d tokens, lengths %s", len(prefix_ids), len(p.suffix_ids),
                  p.lengths)
        return _Prepared(prefix, suffix, healed,
                         InfillRequest(prefix_ids, p.suffix_ids, lengths, first_banned), plan)

    def _result(self, job: FillJob, ready: _Prepared, candidates, timings: dict[str, float],
                reused: int = 0) -> FillResult:
        one_line = job.inline and one_line_only(job.settings.multiline, ready.prefix)
        fills = [
            Fill(tidy(c.text.removeprefix(ready.healed), ready.suffix, job.line_ending,
                      ready.prefix, one_line=one_line), c.fill_confidence, c.length)
            for c in candidates
        ]
        request = ready.request
        return FillResult(fills, dict(timings), reused,
                          len(request.prefix_ids) + len(request.suffix_ids))

    def partial_text(self, ids: list[int]) -> str:
        """A middle being denoised: decoded runs, MASK_GLYPH per mask, cut where the fill will
        be (at padding, eos or any other control token: ``coda_model.infill``)."""
        tok = self.tokenizer
        ends = fill_ends(tok)
        out: list[str] = []
        run: list[int] = []
        for token in ids:
            if token in ends:
                break
            if token == tok.mask_id:
                out.append(tok.decode(run) + MASK_GLYPH)
                run = []
            else:
                run.append(token)
        return "".join(out) + tok.decode(run)

    def healing(self, prefix_ids: list[int]) -> Healing | None:
        """Token healing: where the cursor is, BPE cut the text in a place it never cuts when
        the code goes on ("s" of "self", "ret" + "u" of "return", "." of ".append", the " "
        of " self", an indentation whose last blank belongs to the next word), so the model
        sees splits it never saw in training. The prefix's last token goes back into the
        canvas (with the ones before it while some token still starts with their joined
        text, up to HEAL_DEPTH; a run of blanks gives back only its last blank), and the
        fill's first token must start with that text. None for a one-token prefix (a fill
        needs a token before it) or a token that is part of a character.
        Every fill heals, inline and hole alike: both gained on 400 held-out spans
        (benchmarks/README.md, "Token healing")."""
        if len(prefix_ids) < 2:
            return None
        tok = self.tokenizer
        texts = tok.token_texts
        text = texts[prefix_ids[-1]] if prefix_ids[-1] < len(texts) else "\ufffd"
        if "\ufffd" in text:
            return None
        if len(text) > 1 and text.isspace() and "\n" not in text:
            kept = prefix_ids[:-1] + tok.encode(text[:-1], allow_special=False)
            return Healing(kept, text[-1], self.banned_before(text[-1]), 1)
        k = 1
        while k < min(HEAL_DEPTH, len(prefix_ids) - 1):
            longer = texts[prefix_ids[-k - 1]] + text
            if "\ufffd" in longer or not tok.ids_starting_with(longer):
                break
            k, text = k + 1, longer
        return Healing(prefix_ids[:-k], text, self.banned_before(text), k)

    def banned_before(self, text: str) -> torch.Tensor:
        """[V] mask of the ids whose text does not start with ``text``: made per fill from
        one run of the sorted token texts (microseconds), not kept, so a server typing
        through many files holds no masks (1024 of them were 8 MiB of a slow rise in RSS)."""
        vocab = self.model.config.vocab_size
        lo, hi = self.tokenizer.run_starting_with(text)
        allowed = self._ids_in_order[lo:hi]
        banned = torch.ones(vocab, dtype=torch.bool)
        banned[allowed[allowed < vocab]] = False
        return banned

    @functools.cached_property
    def _ids_in_order(self) -> torch.Tensor:
        return torch.tensor(self.tokenizer.texts_in_order[1], dtype=torch.long)

    def carry(self, key: str | None, now: float | None = None) -> ContextCarry | None:
        """The document's context carry. The least recently used go beyond
        ``carried_documents``, and beyond the CARRIED_DOCUMENTS most recent, those unused for
        CARRY_IDLE_S (``now``: monotonic seconds, for tests)."""
        if key is None:
            return None
        now = time.monotonic() if now is None else now
        carry = self.carries.pop(key, None) or ContextCarry(margin=self.carry_margin)
        self.carries[key] = carry
        self.carry_used[key] = now
        keys = list(self.carries)  # oldest first; one step, as the event loop may ``forget``
        over, idle_ones = len(keys) - self.carried_documents, len(keys) - CARRIED_DOCUMENTS
        for i, old in enumerate(keys[:-1]):
            if i < over or (i < idle_ones
                            and now - self.carry_used.get(old, now) > CARRY_IDLE_S):
                self.forget(old)
        return carry

    def forget(self, key: str) -> None:
        """Drop a closed document's carry now, not when newer documents push it out. Dict
        operations, so safe beside the worker thread (a fill still running keeps its own
        reference, and the carry goes with it)."""
        self.carries.pop(key, None)
        self.carry_used.pop(key, None)


BLOCK_OPENERS = (":", "{", "[", "(")


def finishes_line(prefix: str) -> bool:
    """Whether an inline fill must stay on the cursor's line: there is code before the cursor
    on that line and it does not open a block. Multi-line text is offered on a fresh line (or
    at a line's start) and after an opener, as Copilot-style editors do; mid-statement, the
    lines a model runs on to push the code below down with text nobody asked for. On 400
    held-out inline spans, cutting those fills at their first line break raised edit
    similarity and exact match (benchmarks/README.md, "One line or several")."""
    before = _line_before(prefix).rstrip()
    return bool(before) and not before.endswith(BLOCK_OPENERS)


def one_line_only(multiline: str, prefix: str) -> bool:
    """Whether an inline fill is cut at its first line break, by the ``multiline`` setting:
    "auto" as ``finishes_line`` says, "never" always cut, "always" never cut."""
    if multiline == "auto":
        return finishes_line(prefix)
    return multiline == "never"


def _line_before(prefix: str) -> str:
    """The cursor's line up to the cursor."""
    return prefix[prefix.rfind("\n") + 1 :]


def tidy(text: str, suffix: str, line_ending: str = "\n", prefix: str = "",
         one_line: bool = False) -> str:
    """Make a raw fill fit between the prefix and the suffix.

    The suffix is fixed by the model's input, so any tail of the fill that repeats the start
    of the suffix is cut (the code after the cursor would otherwise appear twice), and
    trailing whitespace goes when the suffix starts a new line or the file ends. When the
    hole's line is indented already (only whitespace before it), the fill's own leading
    blanks would indent it twice (BPE tokens often start with a space): they go too.
    ``one_line``: the fill ends at its first line break (``one_line_only``).
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if one_line:
        text = text.split("\n", 1)[0]
    line_start = _line_before(prefix)
    if line_start and not line_start.strip():
        text = text.lstrip(" \t")
    plain_suffix = suffix.replace("\r\n", "\n")
    for k in range(min(len(text), len(plain_suffix)), 0, -1):
        head = plain_suffix[:k]
        if head.strip() and text.endswith(head):
            text = text[:-k]
            break
    if not plain_suffix or plain_suffix[0] == "\n":
        text = text.rstrip()
    if line_ending != "\n":
        text = text.replace("\n", line_ending)
    return text


_UNITS = re.compile(r"\w+|[^\w\s]+")  # words, and runs of punctuation ("))", "->")


def degenerate(text: str) -> bool:
    """A fill that stutters: the same word twice in a row ("import import"), or a group of
    two or three words/punctuation runs three times in a row ("1,1,1,1", "self.self.self.").
    Weak models fall into such loops; rank puts them after every fluent fill."""
    units = _UNITS.findall(text)
    pairs = zip(units, units[1:], strict=False)
    if any(a == b and (a[0].isalnum() or a[0] == "_") for a, b in pairs):
        return True
    for period in (2, 3):
        run = 0
        for a, b in zip(units, units[period:], strict=False):
            run = run + 1 if a == b else 0
            if run >= 2 * period:  # the group and two more copies of it
                return True
    return False


def rank(fills: list[Fill], threshold: float, errors_of: Callable[[str], int]) -> list[Fill]:
    """Usable fills, best first: parses without new errors, then fluent (not degenerate),
    then the model's confidence in the fill's own tokens.

    A fill is cut where its tokens stop decoding to whole characters; empty and
    whitespace-only fills and those under the confidence threshold are dropped.
    """
    kept = []
    for f in fills:
        text = f.text.split("\ufffd", 1)[0]  # tokens that end inside a character: cut there
        if not text.strip() or f.confidence < threshold:
            continue
        f = Fill(text, f.confidence, f.length)
        kept.append(Fill(f.text, f.confidence, f.length, errors_of(f.text)))
    kept.sort(key=lambda f: (f.errors > 0, degenerate(f.text), -f.confidence))
    return kept


__all__ = ["Cancelled", "Engine", "Fill", "FillJob", "FillResult", "Healing", "finishes_line",
           "rank", "tidy"]
