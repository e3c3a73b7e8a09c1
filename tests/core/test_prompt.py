"""Prompt budgets: context cut from the far ends, candidate lengths clipped, never empty."""

from coda_lsp.core import prompt


class CharTokenizer:
    """One token per character (its code point), so budgets are easy to read."""

    def __init__(self):
        self.calls = []

    def encode(self, text, allow_special=True):
        self.calls.append(len(text))
        return [ord(c) for c in text]

    def decode(self, ids):
        return decode(ids)


def decode(ids):
    return "".join(map(chr, ids))


def test_small_context_is_kept_whole():
    p = prompt.build(CharTokenizer(), "def f(", "):\n", [4, 8], 100, 64)
    assert decode(p.prefix_ids) == "def f(" and decode(p.suffix_ids) == "):\n"
    assert p.lengths == (4, 8)


def test_budget_counts_the_canvas_and_cuts_far_ends():
    p = prompt.build(CharTokenizer(), "a" * 50 + "PREFIX", "SUFFIX" + "z" * 50, [8], 48, 64)
    total = len(p.prefix_ids) + len(p.suffix_ids) + max(p.lengths)
    assert total <= 48
    assert decode(p.prefix_ids).endswith("PREFIX")
    assert decode(p.suffix_ids).startswith("SUFFIX")
    assert len(p.suffix_ids) == 10  # a quarter of the 40 tokens left after the canvas


def test_short_prefix_gives_room_to_the_suffix():
    p = prompt.build(CharTokenizer(), "x", "s" * 100, [8], 48, 64)
    assert len(p.prefix_ids) == 1 and len(p.suffix_ids) == 39


def test_empty_prefix_gets_one_token():
    p = prompt.build(CharTokenizer(), "", "tail", [4], 64, 64)
    assert decode(p.prefix_ids) == "\n"


def test_huge_documents_tokenize_only_a_window():
    tok = CharTokenizer()
    prompt.build(tok, "x" * 5_000_000, "y" * 5_000_000, [16], 1024, 64)
    assert max(tok.calls) <= 1024 * prompt.CHARS_PER_TOKEN


def test_candidate_lengths():
    assert prompt.candidate_lengths([100, 8, 8, 16], 32) == (8, 16, 32)
    assert prompt.candidate_lengths([], 64) == (16,)
    assert prompt.candidate_lengths([0], 64) == (1,)
    assert prompt.candidate_lengths([1, 2, 3, 4, 5, 6, 7], 64) == (1, 3, 5, 7)


def test_a_literal_mask_token_in_the_document_stays_text(tiny_model_dir):
    from coda_model import SamplerConfig, infill, load_model, load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    p = prompt.build(tok, 'MARK = "<|mask|>"\nx = ', '\nprint("<|mask|>")\n', [4], 256, 16)
    assert tok.mask_id not in p.prefix_ids + p.suffix_ids
    [cand] = infill(load_model(tiny_model_dir), tok, p.prefix_ids, p.suffix_ids, list(p.lengths),
                    SamplerConfig(steps=2, context_cache=True))
    assert cand.length == 4


def test_typing_keeps_the_far_end_of_the_prefix_in_place():
    """The prefix window starts at a line break, so a keystroke at the cursor leaves the
    far end's tokens where they were (their cached keys/values stay valid)."""
    lines = "".join(f"line_{i:03d} = {i}\n" for i in range(200))
    starts = set()
    for typed in ["", "t", "to", "tot", "tota", "total", "tota"]:
        p = prompt.build(CharTokenizer(), lines + typed, "\nend\n", [8], 300, 64)
        text = decode(p.prefix_ids)
        assert text.startswith("line_") and text.endswith(lines[-20:] + typed)
        starts.add(text[:8])
    assert len(starts) == 2  # six keystrokes moved the far end once, by one whole line


def test_a_prefix_without_line_breaks_is_still_cut_to_the_budget():
    p = prompt.build(CharTokenizer(), "x" * 5000, "", [8], 100, 64)
    assert len(p.prefix_ids) == 92
