"""coda_model.memory: glibc's heap measured, freed pages handed back, kept tensors outside it."""

from pathlib import Path

import pytest
import torch

from coda_model import memory


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def has_malloc_trim() -> bool:
    import ctypes

    try:
        return Path("/proc/self/status").is_file() and hasattr(ctypes.CDLL(None), "malloc_trim")
    except OSError:
        return False


@pytest.mark.skipif(not has_malloc_trim(), reason="glibc on Linux only")
def test_memory_a_load_freed_goes_back_to_the_system():
    """What a streamed load does to glibc: a freed 16 MB tensor raises its mmap threshold, so
    later tensors come from its heap and stay resident when freed, until the load hands them
    back (2.07 -> 1.56 GiB after a 1.7B int8 load)."""
    big = torch.ones(16 << 20, dtype=torch.uint8)
    del big
    held = [torch.ones(1 << 20, dtype=torch.uint8) for _ in range(200)]
    keep = held[-1]
    del held
    before = resident_mib()
    memory.return_freed_memory()
    assert resident_mib() < before - 100
    assert keep.sum() == keep.numel()


def mapping_of(address: int) -> tuple[int, int] | None:
    """(start, end) of the memory mapping holding `address`, from /proc/self/maps."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        start, end = (int(x, 16) for x in line.split()[0].split("-"))
        if start <= address < end:
            return start, end
    return None


def test_outside_heap_copies_are_equal_and_independent():
    """Shapes, dtypes and values as given, contiguous, and writing a copy leaves the original."""
    k = torch.randn(2, 3, 10, 4)[:1, :, 2:7]  # a non-contiguous slice, as a carry takes
    v = torch.arange(12, dtype=torch.bfloat16).view(3, 4)
    empty = torch.zeros(1, 2, 0, 4)
    copies = memory.outside_heap([k, v, empty])
    for original, copy in zip([k, v, empty], copies, strict=True):
        assert copy.dtype == original.dtype and copy.shape == original.shape
        assert copy.is_contiguous() and torch.equal(copy, original)
    copies[0].zero_()
    assert k.abs().sum() > 0


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="Linux only")
def test_outside_heap_is_one_mapping_of_its_own_that_goes_with_the_copies():
    """The copies share one anonymous map just big enough for them (the heap's arenas are far
    larger), and the system gets it back when the last copy goes, whatever the heap does."""
    tensors = [torch.randn(1, 2, 300, 64) for _ in range(6)]  # 6 x 150 KiB: heap-sized
    copies = memory.outside_heap(tensors)
    spans = {mapping_of(c.data_ptr()) for c in copies}
    assert len(spans) == 1
    (start, end), = spans
    assert end - start == -(-6 * 2 * 300 * 64 * 4 // 4096) * 4096
    keep = copies[-1]
    del copies
    assert mapping_of(keep.data_ptr()) == (start, end)
    address = keep.data_ptr()
    del keep
    assert mapping_of(address) != (start, end)


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="Linux only")
def test_a_kept_carry_lives_in_one_mapping_that_goes_when_it_is_cleared():
    """What the hour's soak needed: a typing carry outside the heap, given back whole."""
    from coda_model import ContextCarry

    layers = [(torch.randn(2, 2, 40, 8), torch.randn(2, 2, 40, 8)) for _ in range(3)]
    carry = ContextCarry()
    carry.keep(list(range(40)), layers, prefix_len=20, length0=6, suffix_len=10, reused=0)
    kept = [t for kv in carry.prefix_kv + carry.suffix_kv for t in kv]
    assert len(kept) == 12 and len({mapping_of(t.data_ptr()) for t in kept}) == 1
    assert torch.equal(carry.prefix_kv[2][1], layers[2][1][:1, :, :20])
    assert torch.equal(carry.suffix_kv[1][0], layers[1][0][:1, :, 26:36])
    span, address = mapping_of(kept[0].data_ptr()), kept[0].data_ptr()
    del kept
    carry.clear()
    assert mapping_of(address) != span
