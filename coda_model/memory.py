"""The process's native memory: what glibc's heap holds, handing free pages back, and keeping
long-lived tensors out of the heap.

Why a module of its own: a serving process allocates tensors in bursts (a batch of fills) and
keeps a few of them for minutes (typing carries). glibc places both in the same arena, so
kept buffers pin pages among the freed ones, and the arena's footprint ratchets up with each
burst that lands around them. These helpers measure that and avoid it.
"""

from __future__ import annotations

import ctypes
import math
import mmap

import torch

_ALIGN = 64  # bytes: each copy starts on a cache line, as an allocator would place it


def return_freed_memory() -> None:
    """Hand the memory the load freed back to the system (glibc keeps freed tensors' pages in
    its heaps): a 1.7B int8 load leaves 2.07 GiB resident, 1.56 GiB after this. Elsewhere
    (another C library) nothing happens."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # no such symbol, or no C library to open
        pass


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def heap_bytes() -> tuple[int, int] | None:
    """(bytes the C heap hands out now, bytes it holds free) over every arena, or None without
    glibc's ``mallinfo2``: beside the resident size it tells live growth (caches, leaks) from
    free pages kept (fragmentation, which ``return_freed_memory`` hands back in part)."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError, TypeError):
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return info.uordblks + info.hblkhd, info.fordblks


def outside_heap(tensors: list[torch.Tensor],
                 over: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Contiguous copies of CPU `tensors`, all in one anonymous memory map of their own that
    the system takes back whole when the last copy goes. For tensors kept across many
    allocation bursts (a typing carry lives for minutes, among thousands of a batch's
    temporaries): in the heap they would pin pages that glibc can then neither reuse nor
    return. The map has room for a quarter more. Other devices' tensors are cloned as usual.

    `over`: an earlier copy from here, it and every copy made with it no longer read (the
    carry being replaced): their map is written over when it is big enough, not twice too
    big, and no tensor to copy lives in it. A fresh map's pages fault in one by one: 1.5 ms
    for a 1.6 MB carry, ten times the copy, on every keystroke."""
    places = _places([(t.shape, t.dtype) for t in tensors], tensors, over)
    if places is None:
        return [t.clone(memory_format=torch.contiguous_format) for t in tensors]
    return [place.copy_(t) for place, t in zip(places, tensors, strict=True)]


def _places(shapes: list[tuple[tuple[int, ...], torch.dtype]], sources: list[torch.Tensor],
            over: torch.Tensor | None) -> list[torch.Tensor] | None:
    """Empty tensors of these shapes side by side in one map (``over``'s when it may be
    written over), each on a cache line; None for tensors off the CPU."""
    if not sources or any(t.device.type != "cpu" for t in sources):
        return None
    starts, end = [], 0
    for shape, dtype in shapes:
        starts.append(end)
        end += -(-math.prod(shape) * dtype.itemsize // _ALIGN) * _ALIGN
    block = _reusable(over, sources, end)
    if block is None:
        # a quarter more: the next carry, a keystroke longer, fits (unwritten pages are never
        # resident); shared: the kernel never merges it with a neighbouring map, so each
        # block stays a mapping of its own in /proc/self/maps, where a test (or a person)
        # can find it
        room = -(-(end + end // 4) // mmap.PAGESIZE) * mmap.PAGESIZE or mmap.PAGESIZE
        block = torch.frombuffer(mmap.mmap(-1, room, flags=mmap.MAP_SHARED), dtype=torch.uint8)
    return [block[start : start + math.prod(shape) * dtype.itemsize].view(dtype).view(shape)
            for (shape, dtype), start in zip(shapes, starts, strict=True)]


def _reusable(over: torch.Tensor | None, tensors: list[torch.Tensor],
              size: int) -> torch.Tensor | None:
    """The map under `over` as bytes, if the copies of `tensors` may go there."""
    if over is None or over.device.type != "cpu":
        return None
    storage = over.untyped_storage()
    if not size <= storage.nbytes() <= 2 * size + mmap.PAGESIZE:
        return None
    if any(t.untyped_storage().data_ptr() == storage.data_ptr() for t in tensors):
        return None  # a source in that map: writing over it would corrupt the copy
    return torch.empty(0, dtype=torch.uint8).set_(storage)
