"""The process's native memory: what glibc's heap holds, handing free pages back, and keeping
long-lived tensors out of the heap.

Why a module of its own: a serving process allocates tensors in bursts (a batch of fills) and
keeps a few of them for minutes (typing carries). glibc places both in the same arena, so
kept buffers pin pages among the freed ones, and the arena's footprint ratchets up with each
burst that lands around them. These helpers measure that and avoid it.
"""

from __future__ import annotations

import ctypes
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


def outside_heap(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Contiguous copies of CPU `tensors`, all in one anonymous memory map of their own that
    the system takes back whole when the last copy goes. For tensors kept across many
    allocation bursts (a typing carry lives for minutes, among thousands of a batch's
    temporaries): in the heap they would pin pages that glibc can then neither reuse nor
    return. Other devices' tensors are cloned as usual."""
    if not tensors or any(t.device.type != "cpu" for t in tensors):
        return [t.clone(memory_format=torch.contiguous_format) for t in tensors]
    starts, end = [], 0
    for t in tensors:
        starts.append(end)
        end += -(-t.numel() * t.element_size() // _ALIGN) * _ALIGN
    # shared: the kernel never merges it with a neighbouring map, so each block stays a
    # mapping of its own in /proc/self/maps, where a test (or a person) can find it
    block = torch.frombuffer(mmap.mmap(-1, max(end, 1), flags=mmap.MAP_SHARED), dtype=torch.uint8)
    copies = []
    for t, start in zip(tensors, starts, strict=True):
        size = t.numel() * t.element_size()
        copy = block[start : start + size].view(t.dtype).view(t.shape)
        copies.append(copy.copy_(t))
    return copies
