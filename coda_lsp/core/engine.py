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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from coda_lsp.core import positions, prompt
from coda_lsp.core.settings import Settings
from coda_model import Cancelled, ContextCarry, SamplerConfig, infill, load_model, load_tokenizer
from coda_model.compiled import compile_layers
from coda_model.infill import fill_ends
from coda_model.quantize import cpu_flags, full_precision, int8_fast

log = logging.getLogger(__name__)

MASK_GLYPH = "\u2591"  # how a still-masked token shows in a partial fill
INLINE_CANDIDATES = 2  # mask counts tried per keystroke-driven request (hole fills try all)
CARRIED_DOCUMENTS = 4  # context keys/values kept for this many documents (~117 MB each at 1.7B)
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


@dataclass(frozen=True)
class Healing:
    """The prompt's end re-decided with the fill (``Engine.healing``)."""

    prefix_ids: list[int]  # the prefix without the tokens taken back
    text: str  # their text: the fill's first token starts with it, the offer drops it
    banned: torch.Tensor  # [V] bool: what the first canvas position may not be
    extra: int  # canvas positions added for the text


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


def pick_dtype(dtype: str | None, device: str) -> str | None:
    if dtype not in (None, "auto"):
        return dtype
    if device == "cuda":
        return "bfloat16"
    if device != "cpu":
        return None  # MPS: float32 (load_model's default)
    # bf16 halves the weights' memory traffic where the CPU computes in bf16 natively (emulated,
    # it is slower than fp32). Else int8 weights where the CPU has int8 dot products (VNNI):
    # typing 1.4x faster through the server (shipped model; ~2x at 30-50 M), fills as good
    # (benchmarks/README.md, "dtype on CPU"). Else fp32.
    if native_bf16():
        return "bfloat16"
    return "int8" if int8_fast() else None


class Engine:
    def __init__(self, model, tokenizer, device: str = "cpu",
                 dtype_name: str | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype_name = dtype_name or dtype_of(model)  # what status lines report
        self.carries: OrderedDict[str, ContextCarry] = OrderedDict()  # worker thread only
        self.banned_before = functools.lru_cache(maxsize=1024)(self._banned_before)

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "auto", dtype: str | None = None,
             compile: bool = False) -> Engine:
        """Load weights and tokenizer; raises CheckpointError/TokenizerError with the path.
        compile: the layers through torch.compile (CUDA only), compiled now by a warm-up."""
        dev = pick_device(device)
        if compile and dev != "cuda":
            raise ValueError(f"--compile is for CUDA GPUs, not {dev}")
        chosen = pick_dtype(dtype, dev)
        model = load_model(model_dir, device=dev, dtype=chosen)
        tokenizer = load_tokenizer(model_dir)
        tokenizer.texts_in_order  # noqa: B018 -- decoded and sorted now, not on a keystroke
        engine = cls(model, tokenizer, dev, chosen)
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

    def context_budget(self, settings: Settings) -> int:
        """The setting, capped at the positions the model was trained on (a small model's
        quality collapses past them, and every extra token costs latency)."""
        trained = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        return min(settings.context_tokens, trained) if trained else settings.context_tokens

    def sampler(self, settings: Settings, steps: int, fast: bool = False,
                seed: int | None = None) -> SamplerConfig:
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
            cache_window=0 if fast else HOLE_CACHE_WINDOW,
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
        prefix, suffix = positions.for_model(job.prefix), positions.for_model(job.suffix)
        p = prompt.build(
            self.tokenizer,
            prefix,
            suffix,
            job.span_lengths,
            self.context_budget(job.settings),
            job.settings.max_middle_tokens,
        )
        lengths = list(p.lengths)
        if job.fast:  # typing: the shortest candidates only, latency grows with the batch
            lengths = lengths[:INLINE_CANDIDATES]
        carry = self.carry(job.carry_key) if job.fast else None
        prefix_ids = p.prefix_ids
        if carry is not None:  # keep the window's far end where the carried keys start
            prefix_ids = prefix_ids[carry.overhang(prefix_ids):]
        heal = self.healing(prefix_ids)
        healed, first_banned = ("", None) if heal is None else (heal.text, heal.banned)
        if heal is not None:  # the prompt's last tokens are decided again, with the fill
            prefix_ids, lengths = heal.prefix_ids, [n + heal.extra for n in lengths]
        t1 = time.perf_counter()
        # typing takes int8's speed; hole fills (a second to spare) its fp32 weights
        precision = contextlib.nullcontext() if job.fast else full_precision()
        with torch.inference_mode(), precision:
            candidates = infill(
                self.model,
                self.tokenizer,
                prefix_ids,
                p.suffix_ids,
                lengths,
                self.sampler(job.settings, job.steps, job.fast, job.seed),
                should_stop=should_stop,
                on_step=on_step,
                carry=carry,
                first_banned=first_banned,
                on_middles=None if on_partial is None else (
                    lambda step, steps, middles: on_partial(
                        step, steps, [self.partial_text(ids).removeprefix(healed)
                                      for ids in middles])),
            )
        t2 = time.perf_counter()
        one_line = job.inline and one_line_only(job.settings.multiline, prefix)
        fills = [
            Fill(tidy(c.text.removeprefix(healed), suffix, job.line_ending, prefix,
                      one_line=one_line), c.fill_confidence, c.length)
            for c in candidates
        ]
        timings = {"prompt": (t1 - t0) * 1e3, "model": (t2 - t1) * 1e3}
        log.debug("prompt %d+%d tokens, lengths %s", len(prefix_ids), len(p.suffix_ids),
                  p.lengths)
        return FillResult(fills, timings, carry.last_reused if carry else 0,
                          len(prefix_ids) + len(p.suffix_ids))

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

    def _banned_before(self, text: str) -> torch.Tensor:
        """[V] mask of the ids whose text does not start with ``text`` (cached per text: one
        binary search, then reused on every keystroke; callers only read it)."""
        banned = torch.ones(self.model.config.vocab_size, dtype=torch.bool)
        allowed = [i for i in self.tokenizer.ids_starting_with(text) if i < len(banned)]
        banned[allowed] = False
        return banned

    def carry(self, key: str | None) -> ContextCarry | None:
        """The document's context carry; the least recently used beyond CARRIED_DOCUMENTS go."""
        if key is None:
            return None
        carry = self.carries.pop(key, None) or ContextCarry()
        self.carries[key] = carry
        while len(self.carries) > CARRIED_DOCUMENTS:
            self.carries.popitem(last=False)
        return carry


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
