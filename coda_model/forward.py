"""Logits providers for the sampler: which positions are recomputed at each step.

`FullForward` recomputes the whole window every step (the reference) but applies `lm_head`
only where the sampler needs logits. `ContextCache` (infill) computes the keys/values of the
fixed prefix and suffix once and then recomputes only the hole, the token just before it
(whose output predicts the hole's first token) and an optional window of context on each side.
`ContextCarry` goes one step further for typing: the context keys/values of one request seed
the next request's first pass, so a keystroke recomputes only what changed near the cursor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .graphs import static_windows, window_step
from .memory import outside_heap
from .modeling import KVSlots, apply_rotary, rotary_tables

DENSE_ON_CPU = False  # tests set it to check the accelerator layout on the CPU


def dense_logits(device) -> bool:
    """Whether logits providers return every column of the hole's range (fixed shapes, no
    host sync: an accelerator's layout) rather than only the masked positions (a CPU's: the
    lm_head then runs only where masks remain, and there is no device to wait for)."""
    return DENSE_ON_CPU or torch.device(device).type != "cpu"


CARRY_ON_ACCELERATORS = False  # benchmarks set it to measure the carry on a GPU anyway


def carry_pays(device) -> bool:
    """Whether carried context keys/values save time. On a CPU the full pass is the cost and
    the carry skips most of it. On a GPU a full 1k-token pass of CoDA-1.7B takes ~23 ms, and
    the carry's partial pass (a few dozen tokens, eager, so launch-bound, plus re-rotating the
    keys) no less: issue 14 measured 345 ms per request with the carry against 219 ms without.
    So there it is not used, and the carry path is never slower than the plain cache."""
    return CARRY_ON_ACCELERATORS or torch.device(device).type == "cpu"


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def row_positions(a: int, b: int, offsets: torch.Tensor | None) -> torch.Tensor:
    """Position ids of columns [a, b): [b - a], or [B, b - a] with row r's columns moved back
    by offsets[r] (its left padding: a padded row keeps the positions it has alone; padding
    columns, hidden from attention, get 0)."""
    columns = torch.arange(a, b, device=None if offsets is None else offsets.device)
    if offsets is None:
        return columns
    return (columns[None, :] - offsets[:, None]).clamp_(min=0)


ROWS_ON_DEMAND = True  # benchmarks clear it to compare with computing every row every step


def needed_rows(mask: torch.Tensor) -> slice | torch.Tensor | None:
    """The batch rows with a position in ``mask`` (the sampler leaves out the rows that commit
    nothing this step): None for all of them (or none), a slice when they are consecutive
    (views of per-row buffers, no copies: candidates are sorted by length, so the rows
    waiting for their last steps are the first ones), else their indices."""
    if not ROWS_ON_DEMAND:
        return None
    rows = mask.any(dim=1).nonzero().squeeze(1).tolist()
    if not rows or len(rows) == mask.shape[0]:
        return None
    if rows[-1] - rows[0] + 1 == len(rows):
        return slice(rows[0], rows[-1] + 1)
    return torch.tensor(rows, device=mask.device)


def shifted_sources(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) of the raw outputs that predict the masked positions: column p-1 (p=0: 0)."""
    rows, cols = mask.nonzero(as_tuple=True)
    return rows, (cols - 1).clamp(min=0)


class FullForward:
    """region (lo, hi): the columns that can hold masks; on an accelerator the logits come
    back as [B, hi - lo, V] for all of them (`dense_region`), else as [N, V] for the masks."""

    def __init__(self, model, key_mask: torch.Tensor | None = None,
                 region: tuple[int, int] | None = None,
                 offsets: torch.Tensor | None = None) -> None:
        self.model = model
        self.key_mask = key_mask
        self.offsets = offsets  # [B]: row r's position p is column p + offsets[r] (left pad)
        self.passes = 0
        self.dense_region = region if region and dense_logits(model_device(model)) else None

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.passes += 1
        positions = None if self.offsets is None else row_positions(0, x.shape[1], self.offsets)
        if self.dense_region is not None:
            hidden = self.model.hidden_states(x, positions=positions,
                                              key_mask=self.key_mask)  # [B, L, H]
            lo, hi = self.dense_region
            sources = (torch.arange(lo, hi, device=x.device) - 1).clamp(min=0)
            return self.model.lm_head(hidden[:, sources])  # [B, hi - lo, V]
        key_mask = self.key_mask
        sel = needed_rows(mask)
        if sel is not None:  # rows are independent: the others' logits are not wanted
            x, mask = x[sel], mask[sel]
            key_mask = None if key_mask is None else key_mask[sel]
            positions = None if positions is None else positions[sel]
        hidden = self.model.hidden_states(x, positions=positions, key_mask=key_mask)  # [B', L, H]
        rows, cols = shifted_sources(mask)
        return self.model.lm_head(hidden[rows, cols])  # [N, V]


class ContextCache:
    """Infill logits with the prefix/suffix keys and values computed once per request.

    With bidirectional attention the context tokens' own inputs never change, but their deeper
    keys/values do depend on the hole's content, so caching them is an approximation (Fast-dLLM
    DualCache, dKV-Cache): `refresh_every` recomputes everything every k steps (1 = exact) and
    `cache_window` recomputes that many context tokens on each side of the hole every step. The
    token just before the hole is always recomputed: its output predicts the first hole token.
    Rows share one prefix (right-padded batch), so one column range [start, stop) is recomputed
    for every row: it spans the longest candidate's hole. With a `carry`, the first pass takes
    the context keys/values it offers and computes only the columns it does not.
    """

    def __init__(self, model, ids: torch.Tensor, key_mask: torch.Tensor | None,
                 prefix_len: int, lengths, config, carry: ContextCarry | None = None,
                 offsets: torch.Tensor | None = None) -> None:
        self.model = model
        self.key_mask = key_mask
        self.offsets = offsets  # [B] left padding per row (infill_many), no carry with it
        self.refresh_every = config.refresh_every
        self.shared = config.shared_context and ids.shape[0] > 1 and carry is None
        self.start = max(0, prefix_len - 1 - config.cache_window)
        self.stop = min(ids.shape[1], prefix_len + max(lengths) + config.cache_window)
        self.prefix_len = prefix_len
        self.lengths = [int(n) for n in lengths]
        self.suffix_len = ids.shape[1] - prefix_len - max(self.lengths)
        device = model_device(model)
        if carry is not None and not carry_pays(device):
            carry = None
        self.carry = carry
        self.context_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        hole = (prefix_len, prefix_len + max(self.lengths))
        self.dense_region = hole if dense_logits(device) or (
            static_windows(device) and offsets is None) else None
        self.static = static_windows(device) and offsets is None
        # one row's context for every row: rows of one request only (not infill_many's)
        self.shared = self.shared and self.dense_region is None and offsets is None
        self.window = None  # graphs.WindowStep: the bucketed window step (static path)
        self.slots: list[KVSlots] = []  # the dynamic path's per-layer context + window buffers
        self.window_mask: torch.Tensor | None = None  # its key mask, context then window
        self.calls = 0
        self.passes = 0  # full passes
        self.window_passes = 0

    def _positions(self, a: int, b: int, device) -> torch.Tensor:
        if self.offsets is None:
            return torch.arange(a, b, device=device)
        return row_positions(a, b, self.offsets)

    def _split_mask(self, a: int, b: int) -> torch.Tensor | None:
        """The key mask reordered as [columns before a, columns from b, columns a..b-1]."""
        if self.key_mask is None:
            return None
        m = self.key_mask
        return torch.cat((m[:, :a], m[:, b:], m[:, a:b]), 1)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        refresh = self.context_kv is None or (
            self.refresh_every > 0 and self.calls % self.refresh_every == 0)
        self.calls += 1
        a, b = self.start, self.stop
        if refresh and self.shared:
            self.passes += 1
            hidden, src = self._shared_pass(x)
            self._load_slots(b - a)
            if int(mask.sum()) == int(mask[src].sum()):  # only that row commits now
                return self._logits_of(hidden, 0, mask[src : src + 1])
            self.window_passes += 1  # other rows commit now too: their window, shared context
            return self._window_logits(x, mask)
        if refresh:
            self.passes += 1
            hidden, c, layers_kv = self._full_pass(x, carried=self.context_kv is None)
            self._keep_context(layers_kv, room=0 if self.static else b - a)
            if self.static:
                self._load_window(x)
            return self._logits_of(hidden, c, mask)
        self.window_passes += 1
        if self.static:  # fixed shapes and buffers: a CUDA graph replay on a GPU
            return self._logits_of(self.window(x[:, a:b]), a, mask, head_done=True)
        return self._window_logits(x, mask)

    def _window_logits(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The dynamic window step: columns [start, stop) against the cached context."""
        a, b = self.start, self.stop
        slots, window_mask, sel = self.slots, self.window_mask, None
        positions = self._positions(a, b, x.device)  # [b - a], or [B, b - a] with offsets
        if self.dense_region is None:
            rows, cols = shifted_sources(mask)
            if cols.numel() and (cols.min() < a or cols.max() >= b):
                raise ValueError("ContextCache: a mask lies outside the recomputed window")
            sel = needed_rows(mask)
        if sel is not None:  # only the rows that commit this step (the others wait)
            x, mask = x[sel], mask[sel]
            slots = [s.rows(sel) for s in slots]
            window_mask = None if window_mask is None else window_mask[sel]
            positions = positions[sel] if positions.dim() == 2 else positions
        hidden = self.model.hidden_states(
            x[:, a:b], positions=positions,
            key_mask=window_mask, kv_context=slots)  # [B', b - a, H]
        return self._logits_of(hidden, a, mask)

    def _load_slots(self, width: int) -> None:
        """Context keys/values (refreshed) into one buffer per layer with room for the window
        after them: a window step writes its own keys/values there instead of concatenating
        the whole context again (~7 % of a CPU keystroke). Same tensors, same results."""
        self.slots = []
        for k, v in self.context_kv:
            batch, heads, n, dim = k.shape
            kb = k.new_empty(batch, heads, n + width, dim)
            vb = v.new_empty(batch, heads, n + width, dim)
            kb[:, :, :n].copy_(k)
            vb[:, :, :n].copy_(v)
            self.slots.append(KVSlots(kb, vb, n))
        self.window_mask = self._split_mask(self.start, self.stop)

    def _logits_of(self, hidden: torch.Tensor, first: int, mask: torch.Tensor,
                   head_done: bool = False) -> torch.Tensor:
        """Logits for the masks from hidden states (or logits) of columns first, first + 1, ..:
        [B, hole, V] for the whole hole (dense_region), else [N, V] at the masks."""
        if self.dense_region is not None:
            lo, hi = self.dense_region
            out = hidden[:, lo - 1 - first : hi - 1 - first]
            return out if head_done else self.model.lm_head(out)
        rows, cols = shifted_sources(mask)
        return self.model.lm_head(hidden[rows, cols - first])

    def _load_window(self, x: torch.Tensor) -> None:
        """Context keys/values (refreshed) into the bucketed window step's buffers."""
        a, b = self.start, self.stop
        k0 = self.context_kv[0][0]
        self.window = window_step(self.model, x.shape[0], b - a, k0.shape[2], k0.dtype, x.device)
        mask = self._split_mask(a, b)
        cos, sin = self.model.rotary(torch.arange(a, b, device=x.device), k0.dtype)
        self.window.load(self.context_kv, None if mask is None else mask[:, : k0.shape[2]],
                         None if mask is None else mask[:, k0.shape[2] :], cos, sin)

    def _shared_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """One row's full pass (the longest candidate's: no padding) whose context keys and
        values serve every row: the prefix's as they are (the same tokens at the same
        positions), the suffix's moved to each row's positions (a row with k fewer masks has
        its suffix k columns earlier: one more RoPE rotation). Another approximation on top
        of the cache's: a shorter row's context was computed beside the longest row's masks,
        and the window beside the hole is still recomputed every step. -> (the row's hidden
        states [1, width, H], its index)."""
        batch, width = x.shape
        src = max(range(batch), key=lambda r: self.lengths[r])
        p, n, s = self.prefix_len, self.lengths[src], self.suffix_len
        a, b = self.start, self.stop
        layers_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        hidden = self.model.hidden_states(x[src : src + 1], out_kv=layers_kv)
        shifts = torch.tensor([length - n for length in self.lengths])
        suffixes = []
        for k, v in layers_kv:  # [1, KV, width, D] -> each row's columns [b, width)
            ks = k.new_zeros((batch, k.shape[1], width - b, k.shape[3]))
            vs = torch.zeros_like(ks)
            for r, length in enumerate(self.lengths):
                first = b - p - length  # the suffix index in row r's column b
                m = max(0, min(s - first, width - b))
                ks[r, :, :m] = k[0, :, p + n + first : p + n + first + m]
                vs[r, :, :m] = v[0, :, p + n + first : p + n + first + m]
            suffixes.append((ks, vs))
        if shifts.any():
            suffixes = _rotate(suffixes, shifts, self.model.config.rope_theta)
        self.context_kv = [
            (torch.cat((k[:, :, :a].expand(batch, -1, -1, -1), ks), 2),
             torch.cat((v[:, :, :a].expand(batch, -1, -1, -1), vs), 2))
            for (k, v), (ks, vs) in zip(layers_kv, suffixes, strict=True)]
        return hidden, src

    def _keep_context(self, layers_kv: list[tuple[torch.Tensor, torch.Tensor]],
                      room: int = 0) -> None:
        """Every column's keys/values less the recomputed window's: the cached context, at the
        start of a buffer with `room` columns after it, the dynamic window step's slots (its
        keys/values go there: no second copy of the context, as ``_load_slots`` makes)."""
        a, b = self.start, self.stop
        self.context_kv = []
        if room:
            self.slots = []
            self.window_mask = self._split_mask(a, b)
        for k, v in layers_kv:
            n = k.shape[2] - (b - a)
            kb, vb = (t.new_empty(t.shape[0], t.shape[1], n + room, t.shape[3]) for t in (k, v))
            for buffer, t in ((kb, k), (vb, v)):
                buffer[:, :, :a] = t[:, :, :a]
                buffer[:, :, a:n] = t[:, :, b:]
            self.context_kv.append((kb[:, :, :n], vb[:, :, :n]))
            if room:
                self.slots.append(KVSlots(kb, vb, n))

    def _full_pass(self, x: torch.Tensor, carried: bool):
        """Hidden states of columns [c, e) and every column's keys/values [B, KV, width, D].

        Columns [0, c) and [e, width) come from the carry when it has them (first pass only);
        otherwise c = 0 and e = width, the plain full pass.
        """
        c, e, pieces = self._first_columns(x, carried)
        layers_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        hidden = self.model.hidden_states(
            x[:, c:e], positions=self._positions(c, e, x.device),
            key_mask=self._split_mask(c, e), kv_context=_joined(pieces, x.shape[0]),
            out_kv=layers_kv)
        if pieces is None and (not carried or self.carry is None):
            return hidden, c, layers_kv  # nothing to join or keep: the pass's own tensors
        return hidden, c, layer_pairs(self._all_columns(x, c, pieces, stacked(layers_kv),
                                                        carried))

    def _first_columns(self, x: torch.Tensor, carried: bool):
        """(c, e, pieces): a first pass computes columns [c, e); the carry's keys/values
        (``Carried``) stand for the others: columns [0, c) for every row, then [e, width) or
        none (no suffix carried: e = width); pieces None, and the pass computes every
        column."""
        width = x.shape[1]
        theta = self.model.config.rope_theta
        p, e = self.prefix_len, width
        if not carried or self.carry is None:
            return 0, e, None
        prefix = self.carry.taken_prefix(x[0, :p].tolist(), self.start, theta)
        if prefix is None:
            return 0, e, None
        suffix = None
        if self.suffix_len > 0:
            n0 = self.lengths[0]
            suffix = self.carry.taken_suffix(
                x[0, p + n0 : p + n0 + self.suffix_len].tolist(),
                [p + n for n in self.lengths], self.stop, width, theta)
        if suffix is not None:
            e = self.stop
        return prefix.shape[3], e, Carried(prefix, suffix)

    def _all_columns(self, x: torch.Tensor, c: int, pieces: Carried | None,
                     computed: torch.Tensor, carried: bool) -> torch.Tensor:
        """The computed columns' keys/values (every layer stacked, [2L, B, KV, e - c, D]) and
        the carried ones in column order ([0, c) + [c, e) + [e, width)), handed to the carry
        for the next request."""
        if pieces is not None:
            parts = [pieces.prefix.expand(-1, computed.shape[1], -1, -1, -1), computed]
            if pieces.suffix is not None:
                parts.append(pieces.suffix)
            computed = torch.cat(parts, 3)
        if carried and self.carry is not None:
            self.carry.keep_stacked(x[0].tolist(), computed, self.prefix_len, self.lengths[0],
                                    self.suffix_len, reused=c)
        return computed


@dataclass(frozen=True)
class Carried:
    """A first pass's carried keys/values, every layer stacked as [2L, rows, KV, n, D] (k
    then v of layer 0, then of layer 1, ...): one copy moves them all. The prefix's columns
    [0, c) (one row, the same for every row) and the suffix's [e, width), or None."""

    prefix: torch.Tensor
    suffix: torch.Tensor | None

    def layers(self, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One context per layer [batch, KV, c + s, D] (a view when only the prefix)."""
        prefix = self.prefix.expand(-1, batch, -1, -1, -1)
        joined = prefix if self.suffix is None else torch.cat((prefix, self.suffix), 3)
        return layer_pairs(joined)


def stacked(layers_kv: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Per-layer (k, v) as one tensor [2L, ...]: k then v of layer 0, then of layer 1, ..."""
    return torch.stack([t for kv in layers_kv for t in kv])


def layer_pairs(stack: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``stacked``'s inverse, as views."""
    return list(zip(stack[0::2], stack[1::2], strict=True))


SIMILAR_WIDTHS = 1.5  # first passes batched together compute at most this x the fewest columns


def _joined(pieces: Carried | None, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """A first pass's carried pieces as one context per layer, or None."""
    return None if pieces is None else pieces.layers(batch)


def _similar_widths(widths: dict[int, int]) -> list[list[int]]:
    """Requests grouped by the columns their first passes compute, each group's widest at
    most SIMILAR_WIDTHS x its narrowest plus 16: a full pass (no carry, hundreds of columns)
    padded beside keystrokes' few dozen would cost them all a full pass."""
    groups: list[list[int]] = []
    for i in sorted(widths, key=widths.__getitem__):
        if groups and widths[i] <= SIMILAR_WIDTHS * widths[groups[-1][0]] + 16:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class BatchedWindows:
    """Logits for several requests' rows in ``infill_many``'s layout (holes aligned at column
    ``start``, row r's columns moved right by offsets[r]), each request decoding as it would
    alone through its own ``ContextCache``.

    The first pass is each request's own (its carry included: on a CPU that pass is the
    cost, and the carry skips most of it); the later steps recompute every row's window in
    one batched pass. A row's window is its request's own columns [p - 1, p + longest): in
    the aligned layout they all start at column start - 1, and the columns a shorter window
    does not have are computed but hidden from every key mask. The context keys/values are
    each request's own, padded to the longest and masked. For the fast path's settings only
    (no refresh, no window of context, the CPU layout)."""

    def __init__(self, model, caches: Sequence[ContextCache], rows: Sequence[int],
                 key_mask: torch.Tensor, start: int, offsets: torch.Tensor,
                 own_offsets: Sequence[int], own_widths: Sequence[int]) -> None:
        self.model = model
        self.caches = list(caches)
        self.rows = list(rows)  # rows per request, in order
        self.key_mask = key_mask  # [B, width] of the aligned layout
        self.start = start
        self.offsets = offsets
        self.own_offsets, self.own_widths = list(own_offsets), list(own_widths)
        self.window = max(c.stop - c.start for c in self.caches)
        self.slots: list[KVSlots] = []
        self.mask: torch.Tensor | None = None  # context then window
        self.passes = 0
        self.window_passes = 0

    @property
    def carried(self) -> int:
        return sum(c.carry.last_reused for c in self.caches if c.carry is not None)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not self.slots:
            self.passes += 1
            logits, columns = self._first_pass(x, mask)
            self._load(columns)
            return logits
        self.window_passes += 1
        a = self.start - 1
        b = a + self.window
        offsets, key_mask, slots = self.offsets, self.mask, self.slots
        sel = needed_rows(mask)
        if sel is not None:  # only the rows that commit this step (finished requests' rest)
            x, mask, offsets, key_mask = x[sel], mask[sel], offsets[sel], key_mask[sel]
            slots = [s.rows(sel) for s in slots]
        hidden = self.model.hidden_states(
            x[:, a:b], positions=row_positions(a, b, offsets), key_mask=key_mask,
            kv_context=slots)  # [B', window, H]
        rows, cols = shifted_sources(mask)
        return self.model.lm_head(hidden[rows, cols - a])

    def _first_pass(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Every request's first pass as it has it alone (its carry's columns skipped), those
        computing a similar number of columns as rows of one batch: on a CPU a typing fill's
        own first pass is a few dozen columns, mostly fixed cost, and once batched the
        requests' first passes were most of a batch's time (8 requests: 80 of 210 ms).
        -> (logits, each request's keys/values of every column where this pass computed
        them, every layer stacked [2L, rows, KV, width, D]: ``_load`` takes its context from
        them)."""
        logits: list[torch.Tensor | None] = [None] * len(self.caches)
        columns: dict[int, torch.Tensor] = {}
        plans: dict[int, tuple] = {}  # request -> (own x, own mask, c, e, carried pieces)
        picked: dict[int, torch.Tensor] = {}  # request -> hidden states predicting its masks
        row = 0
        for i, (cache, n, off, w) in enumerate(zip(self.caches, self.rows, self.own_offsets,
                                                   self.own_widths, strict=True)):
            own_x, own_mask = x[row : row + n, off : off + w], mask[row : row + n, off : off + w]
            if cache.shared or cache.static or cache.context_kv is not None:
                logits[i] = cache(own_x, own_mask)  # its own kind of first pass
            else:
                cache.calls += 1
                cache.passes += 1
                plans[i] = (own_x, own_mask, *cache._first_columns(own_x, carried=True))
            row += n
        for group in _similar_widths({i: plan[3] - plan[2] for i, plan in plans.items()}):
            together = self._columns_together([self.caches[i] for i in group],
                                              [plans[i] for i in group])
            for i, (hidden, computed) in zip(group, together, strict=True):
                cache, (own_x, own_mask, c, _, pieces) = self.caches[i], plans[i]
                columns[i] = cache._all_columns(own_x, c, pieces, computed, carried=True)
                rows, cols = shifted_sources(own_mask)
                picked[i] = hidden[rows, cols - c]
        if picked:  # one head call for every request's masks (CPU layout: logits at masks)
            heads = self.model.lm_head(torch.cat(list(picked.values())))
            for i, out in zip(picked, heads.split([len(h) for h in picked.values()]),
                              strict=True):
                logits[i] = out
        return torch.cat(logits), columns

    def _columns_together(self, caches: list[ContextCache],
                          plans: list[tuple]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(hidden states, keys/values of every layer stacked [2L, rows, KV, e - c, D]) of
        each plan's columns [c, e) against its carried context, as
        ``ContextCache._full_pass`` computes them, from one pass: the columns right-padded,
        the contexts padded, padding hidden from every key mask."""
        if len(plans) == 1:  # alone: exactly its own pass
            (own_x, _, c, e, pieces), cache = plans[0], caches[0]
            kv: list = []
            hidden = self.model.hidden_states(
                own_x[:, c:e], positions=cache._positions(c, e, own_x.device),
                key_mask=cache._split_mask(c, e), kv_context=_joined(pieces, own_x.shape[0]),
                out_kv=kv)
            return [(hidden, stacked(kv))]
        rows = [own_x.shape[0] for own_x, *_ in plans]
        widths = [e - c for *_, c, e, _ in plans]
        # carried columns: the prefix's c, then the suffix's (own width - e)
        contexts = [0 if pieces is None else c + own_x.shape[1] - e
                    for own_x, _, c, e, pieces in plans]
        total, most, widest = sum(rows), max(widths), max(contexts)
        device = plans[0][0].device
        ids = torch.zeros(total, most, dtype=torch.long, device=device)
        positions = torch.zeros(total, most, dtype=torch.long, device=device)
        key_mask = torch.zeros(total, widest + most, dtype=torch.bool, device=device)
        context = None  # every layer's carried keys/values, stacked: [2L, total, KV, widest, D]
        if widest:
            p0 = next(pieces for *_, pieces in plans if pieces is not None).prefix
            context = p0.new_zeros((p0.shape[0], total, p0.shape[2], widest, p0.shape[4]))
        at = 0
        for cache, (own_x, _, c, e, pieces), n, w, m in zip(
                caches, plans, rows, widths, contexts, strict=True):
            r = slice(at, at + n)
            ids[r, :w] = own_x[:, c:e]
            positions[r, :w] = cache._positions(c, e, device)
            own_mask = cache._split_mask(c, e)  # [n, m + w]: context columns, then computed
            key_mask[r, :m] = True if own_mask is None else own_mask[:, :m]
            key_mask[r, widest : widest + w] = True if own_mask is None else own_mask[:, m:]
            if pieces is not None:  # the carried prefix (one for every row), then suffix
                context[:, r, :, :c] = pieces.prefix
                if pieces.suffix is not None:
                    context[:, r, :, c:m] = pieces.suffix
            at += n
        kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        hidden = self.model.hidden_states(ids, positions=positions, key_mask=key_mask,
                                          kv_context=None if context is None
                                          else layer_pairs(context), out_kv=kv)
        computed = stacked(kv)  # [2L, total, KV, most, D]
        out, at = [], 0
        for n, w in zip(rows, widths, strict=True):
            out.append((hidden[at : at + n, :w], computed[:, at : at + n, :, :w]))
            at += n
        return out

    def _load(self, columns: dict[int, torch.Tensor]) -> None:
        """Every request's context keys/values into one buffer (every layer stacked, rows
        padded to the longest context, room for the window after them), the key mask to
        match. A request whose first pass ran here has its context copied straight from
        that pass's `columns` (less its window's), two copies for all layers, not through a
        context of its own first."""
        batch, device = self.key_mask.shape[0], self.key_mask.device
        sizes = [columns[i].shape[3] - (c.stop - c.start) if i in columns
                 else c.context_kv[0][0].shape[2] for i, c in enumerate(self.caches)]
        widest = max(sizes)
        context = torch.zeros(batch, widest, dtype=torch.bool, device=device)
        windows = torch.zeros(batch, self.window, dtype=torch.bool, device=device)
        a = self.start - 1
        row = 0
        for cache, n, width in zip(self.caches, self.rows, sizes, strict=True):
            own = cache._split_mask(cache.start, cache.stop)
            context[row : row + n, :width] = True if own is None else own[:, :width]
            length = cache.stop - cache.start
            windows[row : row + n, :length] = self.key_mask[row : row + n, a : a + length]
            row += n
        self.mask = torch.cat((context, windows), 1)
        k0 = columns[0] if 0 in columns else self.caches[0].context_kv[0][0][None]
        buffer = k0.new_zeros((2 * len(self.model.model.layers), batch, k0.shape[2],
                               widest + self.window, k0.shape[4]))
        row = 0
        for i, (cache, n, width) in enumerate(zip(self.caches, self.rows, sizes, strict=True)):
            r = slice(row, row + n)
            if i in columns:  # every column but the window's [start, stop)
                start, stop = cache.start, cache.stop
                buffer[:, r, :, :start] = columns[i][:, :, :, :start]
                buffer[:, r, :, start:width] = columns[i][:, :, :, stop:]
            else:
                for layer, kv in enumerate(cache.context_kv):
                    for j, t in enumerate(kv):
                        buffer[2 * layer + j, r, :, :width] = t
            row += n
        self.slots = [KVSlots(k, v, widest) for k, v in layer_pairs(buffer)]


class ContextCarry:
    """Context keys/values handed from one infill to the next on the same document (typing).

    Between keystrokes the prompt's prefix mostly stays the same tokens: the same positions, or
    all shifted left when the context window drops tokens at its far end; the suffix stays the
    same tokens at positions shifted by the prefix's growth. A RoPE key moves to another
    position by one more rotation, so carried keys are re-rotated by the shift and the next
    first pass computes only the recent prefix and the hole, attending to the carried ones.

    This is an approximation on top of ContextCache's: carried keys/values were computed with
    the previous text around them. It is bounded: the last `margin` matching prefix tokens
    before the first difference are recomputed, and once `max_stale` new prefix tokens have
    been computed against carried ones (the text has drifted), the next request does a full
    pass and starts afresh. A suffix is carried only if it is the same tokens as before.
    A margin of 8 writes the fill of 16 at 98-99 % of keystrokes typed on unseen repositories
    (edit similarity within its standard error) for a first pass a third smaller
    (benchmarks/README.md, "The carry's margin").
    """

    def __init__(self, margin: int = 8, max_stale: int = 64, max_shift: int = 64) -> None:
        self.margin = margin
        self.max_stale = max_stale
        self.max_shift = max_shift
        self.clear()

    def clear(self) -> None:
        self.prefix_ids: list[int] = []
        self.prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # positions 0..
        self.suffix_ids: list[int] = []
        self.suffix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.suffix_at = 0  # the position suffix_ids[0] was computed at
        # the same keys/values stacked, [2 x layers (k, v of layer 0, ...), 1, KV, n, D]: one
        # copy for every layer where a batch of carries would make thousands of small ones
        self._prefix_stack: torch.Tensor | None = None
        self._suffix_stack: torch.Tensor | None = None
        self.stale = 0  # new prefix tokens computed against carried ones since a full pass
        self.last_reused = 0  # context tokens the last request took from the carry
        self._new = 0

    def match(self, ids: Sequence[int]) -> tuple[int, int]:
        """(shift, count): ids[:count] == carried prefix[shift : shift + count], count maximal
        over shifts up to max_shift (the window's far end dropped `shift` tokens)."""
        best = (0, 0)
        old = self.prefix_ids
        for shift in range(min(self.max_shift, len(old)) + 1):
            n = 0
            limit = min(len(ids), len(old) - shift)
            while n < limit and ids[n] == old[shift + n]:
                n += 1
            if n > best[1]:
                best = (shift, n)
            if n == limit:
                break
        return best

    def overhang(self, ids: Sequence[int], least: int = 32) -> int:
        """How many leading tokens of `ids` precede the carried prefix's first token (the
        window's far end moved back, e.g. after a backspace): a caller that drops them keeps
        the carry usable. 0 when ids already start inside the carried prefix or do not match."""
        old = self.prefix_ids
        if not old or len(ids) <= least or ids[: least] == old[: least]:
            return 0
        for extra in range(1, min(self.max_shift, len(ids) - least) + 1):
            if ids[extra : extra + least] == old[:least]:
                return extra
        return 0

    def take_prefix(self, ids: list[int], limit: int, rope_theta: float):
        """Carried keys/values for ids[:c] at positions 0..c-1 (c <= limit) per layer, or
        None."""
        taken = self.taken_prefix(ids, limit, rope_theta)
        return None if taken is None else layer_pairs(taken)

    def taken_prefix(self, ids: list[int], limit: int, rope_theta: float
                     ) -> torch.Tensor | None:
        """``take_prefix``'s keys/values, every layer stacked [2L, 1, KV, c, D]."""
        self.last_reused = 0
        if self._prefix_stack is None or self.stale >= self.max_stale:
            return None
        shift, count = self.match(ids)
        c = min(count - self.margin, limit)
        if c <= 0:
            return None
        kept = self._prefix_stack[:, :, :, shift : shift + c]
        if shift:  # every key back by `shift` positions
            kept = kept.clone()
            kept[0::2] = _rotated(kept[0::2], torch.tensor([-shift]), rope_theta)
        self.last_reused = c
        self._new = len(ids) - count
        return kept

    def take_suffix(self, ids: list[int], starts: list[int], stop: int, width: int,
                    rope_theta: float):
        """Carried suffix keys/values for columns [stop, width) per layer, row r's suffix
        starting at column starts[r] (rows right-padded: a row's missing tail is zeros), or
        None."""
        taken = self.taken_suffix(ids, starts, stop, width, rope_theta)
        return None if taken is None else layer_pairs(taken)

    def taken_suffix(self, ids: list[int], starts: list[int], stop: int, width: int,
                     rope_theta: float) -> torch.Tensor | None:
        """``take_suffix``'s keys/values, every layer stacked [2L, rows, KV, width - stop, D]."""
        if self._suffix_stack is None or self.suffix_ids[: len(ids)] != ids:
            return None
        n, kept = len(ids), self._suffix_stack  # [2L, 1, KV, s, D]
        out = kept.new_zeros((kept.shape[0], len(starts), kept.shape[2], width - stop,
                              kept.shape[4]))
        for r, start in enumerate(starts):
            first = stop - start  # the suffix index that lands on column `stop`
            m = max(0, n - first)  # a short suffix may end before it
            out[:, r, :, :m] = kept[:, 0, :, first : first + m]
        shifts = torch.tensor([start - self.suffix_at for start in starts])
        self.last_reused += len(ids)
        out[0::2] = _rotated(out[0::2], shifts, rope_theta)  # every layer's keys in one go
        return out

    def keep(self, ids: list[int], layers_kv, prefix_len: int, length0: int, suffix_len: int,
             reused: int) -> None:
        """Remember row 0's context keys/values [B, KV, width, D] per layer for the next
        request."""
        self.keep_stacked(ids, stacked(layers_kv), prefix_len, length0, suffix_len, reused)

    def keep_stacked(self, ids: list[int], columns: torch.Tensor, prefix_len: int,
                     length0: int, suffix_len: int, reused: int) -> None:
        """``keep`` for keys/values of every layer stacked [2L, B, KV, width, D]."""
        p, s0, s1 = prefix_len, prefix_len + length0, prefix_len + length0 + suffix_len
        self.prefix_ids = ids[:p]
        self.suffix_ids = ids[s0:s1]
        # kept for minutes among thousands of a batch's temporaries: outside the heap, in
        # the map of the carry it replaces (read by nothing once this request's first pass
        # has taken what it needed: a batch never gives two requests one carry)
        self._prefix_stack, self._suffix_stack = outside_heap(
            [columns[:, :1, :, :p], columns[:, :1, :, s0:s1]], over=self._prefix_stack)
        self.prefix_kv = layer_pairs(self._prefix_stack)
        self.suffix_kv = layer_pairs(self._suffix_stack)
        self.suffix_at = s0
        self.stale = self.stale + self._new if reused else 0


def _rotate(kv, shifts: torch.Tensor, rope_theta: float):
    """Keys moved by `shifts` positions ([1] for all rows, or one per row); values unchanged."""
    return [(_rotated(k, shifts, rope_theta), v) for k, v in kv]


def _rotated(keys: torch.Tensor, shifts: torch.Tensor, rope_theta: float) -> torch.Tensor:
    """Keys [..., rows, KV, n, D] moved by `shifts` positions ([1] for all rows, or one per
    row): the same arithmetic for one layer's keys or every layer's stacked."""
    cos, sin = rotary_tables(shifts.to(keys.device), keys.shape[-1], rope_theta, keys.dtype)
    cos, sin = cos[:, None, None, :], sin[:, None, None, :]  # [rows, 1, 1, D]
    return apply_rotary(keys, cos, sin)
