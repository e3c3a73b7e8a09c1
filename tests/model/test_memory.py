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
    """The copies share one anonymous map with room for a quarter more (the heap's arenas are
    far larger), and the system gets it back when the last copy goes, whatever the heap does."""
    tensors = [torch.randn(1, 2, 300, 64) for _ in range(6)]  # 6 x 150 KiB: heap-sized
    copies = memory.outside_heap(tensors)
    spans = {mapping_of(c.data_ptr()) for c in copies}
    assert len(spans) == 1
    (start, end), = spans
    assert end - start == -(-6 * 2 * 300 * 64 * 4 * 5 // 4 // 4096) * 4096
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


def test_outside_heap_writes_over_a_replaced_map_only_when_that_is_safe():
    """A carry replaced on every keystroke reuses its map (a fresh one's pages fault in one by
    one, ten times the copy), unless it is too small, more than twice too big, or holds one
    of the tensors to copy (writing over it would corrupt that copy)."""
    first = memory.outside_heap([torch.randn(1, 2, 100, 16) for _ in range(4)])
    home = first[0].untyped_storage().data_ptr()
    same = [torch.randn(1, 2, 90, 16) for _ in range(4)]
    again = memory.outside_heap(same, over=first[0])
    assert {c.untyped_storage().data_ptr() for c in again} == {home}
    assert all(torch.equal(c, t) for c, t in zip(again, same, strict=True))
    inside = [again[1][:, :, 10:60], torch.randn(1, 2, 50, 16)]  # a view into that map
    moved = memory.outside_heap(inside, over=again[0])
    assert moved[0].untyped_storage().data_ptr() != home
    assert all(torch.equal(c, t) for c, t in zip(moved, inside, strict=True))
    bigger = memory.outside_heap([torch.randn(1, 2, 600, 16)], over=again[0])
    smaller = memory.outside_heap([torch.randn(1, 2, 10, 16)], over=again[0])
    assert home not in {bigger[0].untyped_storage().data_ptr(),
                        smaller[0].untyped_storage().data_ptr()}


def test_a_carry_kept_again_stays_in_its_mapping_with_the_new_values():
    """Keystroke after keystroke: one mapping, each time holding the latest request's
    keys/values, and the earlier carry's taken prefix (views into that mapping) feeding the
    new one stays right."""
    from coda_model import ContextCarry

    torch.manual_seed(0)
    carry = ContextCarry(margin=2)
    layers = [(torch.randn(2, 2, 40, 8), torch.randn(2, 2, 40, 8)) for _ in range(2)]
    ids = list(range(40))
    carry.keep(ids, layers, prefix_len=20, length0=6, suffix_len=10, reused=0)
    home = carry.prefix_kv[0][0].untyped_storage().data_ptr()
    taken = carry.take_prefix(ids[:20] + [99], limit=19, rope_theta=10000.0)
    assert taken[0][0].untyped_storage().data_ptr() == home  # views, no shift
    old = [(k.clone(), v.clone()) for k, v in taken]
    fresh = [(torch.randn(2, 2, 41, 8), torch.randn(2, 2, 41, 8)) for _ in range(2)]
    # the next request's columns as _all_columns builds them: the taken ones, then its own
    joined = [(torch.cat((k.expand(2, -1, -1, -1), fk[:, :, 18:]), 2),
               torch.cat((v.expand(2, -1, -1, -1), fv[:, :, 18:]), 2))
              for (k, v), (fk, fv) in zip(taken, fresh, strict=True)]
    carry.keep(ids[:20] + [99] + ids[20:], joined, prefix_len=21, length0=6, suffix_len=10,
               reused=18)
    assert carry.prefix_kv[1][0].untyped_storage().data_ptr() == home
    assert torch.equal(carry.prefix_kv[1][0][:, :, :18], old[1][0][:1])
    assert torch.equal(carry.prefix_kv[0][1], joined[0][1][:1, :, :21])
    assert torch.equal(carry.suffix_kv[1][0], joined[1][0][:1, :, 27:37])
