"""Shipping a budgeted run's export as model/: what is replaced, kept, refused and recorded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from coda_model import load_model
from training import ship

BEFORE = {"masked_ce": 6.0, "fim_masked_ce": 2.4, "ce_sigma0.05": 5.7, "top1_sigma0.05": 0.13}
AFTER = {"masked_ce": 5.5, "fim_masked_ce": 2.1, "ce_sigma0.05": 5.2, "top1_sigma0.05": 0.17}
MANIFEST = {"files": 3, "bytes": 3000, "tokens": 900, "licences": ["MIT", "PSF"],
            "dropped_files": {"duplicate": 1}, "decontamination": "humaneval_infilling.json",
            "packages": [{"package": "python-stdlib", "version": "3.11.7", "licence": "PSF",
                          "files": 2, "tokens": 600},
                         {"package": "attrs", "version": "26.1.0", "licence": "MIT",
                          "files": 1, "tokens": 300}],
            "excluded_packages": [{"package": "tqdm", "reason": "copyleft: MPL"}]}


def make_run(tmp_path: Path, source: Path, *, status="done", after=AFTER) -> Path:
    """A gpu_run output whose export is ``source``'s weights, all doubled, in one file."""
    run = tmp_path / "out"
    (run / "model").mkdir(parents=True)
    shutil.copy2(source / "config.json", run / "model" / "config.json")
    tensors = {k: 2 * v for f in source.glob("*.safetensors") for k, v in load_file(f).items()}
    save_file(tensors, run / "model" / "model.safetensors")
    report = {"status": status, "device": "cpu", "torch": torch.__version__,
              "parameters": 1000, "steps": 10, "tokens": 5120, "train_seconds": 60.0,
              "flops": 3.1e10, "calibration": {"tokens_per_s": 85.0},
              "data": {"seq_len": 64, "train_tokens": 4000},
              "recipe": {"init_from": "model", "train": {"batch_size": 8, "precision": "auto"},
                         "optim": {"lr": 6e-4, "warmup_steps": 100, "min_lr_ratio": 0.1}},
              "eval_before": BEFORE, "eval_after": after,
              "metrics": [{"kind": "train", "step": 5, "tokens": 2560, "masked_ce": 5.0},
                          {"kind": "train", "step": 10, "tokens": 5120, "masked_ce": 4.5},
                          {"kind": "eval", "step": 10, "tokens": 5120, "masked_ce": 4.7}]}
    (run / "report.json").write_text(json.dumps(report))
    (run / "corpus_manifest.json").write_text(json.dumps(MANIFEST))
    return run


PROBE = {"ce_sigma0.05": 4.2, "top1_sigma0.05": 0.34, "ce_sigma0.3": 4.5, "top1_sigma0.3": 0.31,
         "ce_sigma0.8": 5.5, "top1_sigma0.8": 0.17, "ce_spans": 5.4, "top1_spans": 0.18,
         "ce_mean": 4.9}


def judge_says(monkeypatch, after_mean: float) -> list:
    """Replace the probe (tested in test_training_probe.py) with a verdict; records its calls."""
    calls = []

    def judge(model, candidate):
        calls.append((model, candidate))
        return PROBE, {**PROBE, "ce_sigma0.05": 4.0, "ce_mean": after_mean}
    monkeypatch.setattr(ship, "probe_judge", judge)
    return calls


@pytest.fixture
def better(monkeypatch) -> list:
    return judge_says(monkeypatch, 4.8)


@pytest.fixture
def shipped(tiny_model_dir, tmp_path) -> Path:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    return model


def test_a_better_run_replaces_the_weights_and_keeps_the_tokenizer(shipped, tiny_model_dir,
                                                                  tmp_path, better):
    tokenizer_files = {p.name: p.read_bytes() for p in shipped.iterdir()
                       if p.name.startswith(("tokenizer", "special"))}
    assert tokenizer_files
    run = make_run(tmp_path, tiny_model_dir)
    section = ship.ship(run, shipped)
    assert better == [(shipped, run / "model")]   # judged before the weights were replaced
    old = load_model(tiny_model_dir).state_dict()
    new = load_model(shipped).state_dict()
    assert all(torch.allclose(new[k], 2 * old[k]) for k in old)
    assert {p.name: p.read_bytes() for p in shipped.iterdir()
            if p.name in tokenizer_files} == tokenizer_files
    assert json.loads((shipped / "corpus_manifest.json").read_text()) == MANIFEST
    [entry] = json.loads((shipped / "training_runs.json").read_text())
    assert entry["eval_after"] == AFTER and "metrics" not in entry
    assert entry["probe"]["before"] == PROBE and entry["probe"]["after"]["ce_mean"] == 4.8
    assert "| sigma0.05 | 4.200 / 0.340 | 4.000 / 0.340 |" in section
    assert "| mean CE | 4.900 | 4.800 |" in section
    assert "| FIM masked CE | 2.400 | 2.100 |" in section
    assert "| attrs | 26.1.0 | MIT | 1 | 0.00 M |" in section
    assert "tqdm (copyleft: MPL)" in section
    assert (shipped / "loss.run1.png").stat().st_size > 1000
    second = make_run(tmp_path / "second", tiny_model_dir)
    (second / "corpus_manifest.json").write_text(json.dumps({**MANIFEST, "files": 2}))
    ship.ship(second, shipped)   # history grows, the first run's provenance stays
    assert len(json.loads((shipped / "training_runs.json").read_text())) == 2
    assert json.loads((shipped / "corpus_manifest.run1.json").read_text()) == MANIFEST
    assert json.loads((shipped / "corpus_manifest.json").read_text())["files"] == 2
    assert (shipped / "loss.run2.png").is_file()


def test_old_shards_go_when_the_new_export_is_one_file(shipped, tiny_model_dir, tmp_path,
                                                       better):
    (shipped / "model-00002-of-00002.safetensors").write_bytes(b"stale")
    (shipped / "model.safetensors.index.json").write_text("{}")
    ship.ship(make_run(tmp_path, tiny_model_dir), shipped)
    assert sorted(p.name for p in shipped.glob("*.safetensors*")) == ["model.safetensors"]


@pytest.mark.parametrize("kind", ["worse", "unfinished"])
def test_a_worse_or_unfinished_run_is_refused_in_one_line(shipped, tiny_model_dir, tmp_path,
                                                          capsys, monkeypatch, kind):
    judge_says(monkeypatch, 5.0 if kind == "worse" else 4.8)
    run = make_run(tmp_path, tiny_model_dir) if kind == "worse" else \
        make_run(tmp_path, tiny_model_dir, status="training")
    weights = (shipped / "model.safetensors").read_bytes()
    assert ship.main([str(run), "--model", str(shipped)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert ("mean CE 4.900 → 5.000" in err) if kind == "worse" else "'training'" in err
    assert (shipped / "model.safetensors").read_bytes() == weights   # nothing touched
    assert ship.main([str(run), "--model", str(shipped), "--force"]) == 0


def test_the_runs_own_noisy_evaluation_warns_but_the_probe_decides(shipped, tiny_model_dir,
                                                                   tmp_path, better, caplog):
    """Last CPU run: its eval's top-1 fell 0.13 → 0.10 while the probe found it better at
    every mask rate; one noisy figure must not refuse a better model."""
    run = make_run(tmp_path, tiny_model_dir, after={**AFTER, "top1_sigma0.05": 0.10})
    ship.ship(run, shipped)
    assert "top-1, 5 % masked 0.130 → 0.100" in caplog.text
    assert json.loads((shipped / "training_runs.json").read_text())


def test_a_folder_that_is_not_a_run_is_one_line(shipped, tmp_path, capsys):
    assert ship.main([str(tmp_path), "--model", str(shipped)]) == 2
    assert "not a finished training.gpu_run output" in capsys.readouterr().err


FILLS = {"exact": 0.015, "similarity": 0.139, "parses": 0.767}


def fills_say(monkeypatch, similarity: float) -> list:
    calls = []

    def factory(server_fill):
        def judge(model, candidate):
            calls.append((model, candidate, server_fill))
            return FILLS, {**FILLS, "similarity": similarity}
        return judge
    monkeypatch.setattr(ship, "fills_judge", factory)
    return calls


def test_a_probe_better_run_whose_fills_are_worse_is_refused(shipped, tiny_model_dir, tmp_path,
                                                              capsys, monkeypatch, better):
    """Twice a run the probe found better wrote no better fills: with the server's fill path
    (scripts/ship_model.py) the held-out fills decide too."""
    fills_say(monkeypatch, 0.120)
    run = make_run(tmp_path, tiny_model_dir)
    weights = (shipped / "model.safetensors").read_bytes()
    assert ship.main([str(run), "--model", str(shipped)], server_fill=print) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "edit similarity 0.139 → 0.120" in err
    assert err.startswith("scripts/ship_model.py: error:")
    assert (shipped / "model.safetensors").read_bytes() == weights
    assert ship.main([str(run), "--model", str(shipped)]) == 0   # probe only: ships


def test_with_the_fill_path_the_fills_decide_and_the_probe_only_warns(
        shipped, tiny_model_dir, tmp_path, monkeypatch, caplog):
    judge_says(monkeypatch, 5.0)   # the probe: worse
    fills_say(monkeypatch, 0.150)  # the fills: better
    run = make_run(tmp_path, tiny_model_dir)
    assert ship.main([str(run), "--model", str(shipped)], server_fill=print) == 0
    assert "mean CE 4.900 → 5.000" in caplog.text and "held-out fills decide" in caplog.text
    assert (shipped / "model.safetensors").read_bytes() == \
        (run / "model" / "model.safetensors").read_bytes()   # installed


def test_fills_no_worse_ship_and_are_recorded(shipped, tiny_model_dir, tmp_path, capsys,
                                              monkeypatch, better):
    calls = fills_say(monkeypatch, 0.150)
    run = make_run(tmp_path, tiny_model_dir)
    assert ship.main([str(run), "--model", str(shipped)], server_fill=print) == 0
    assert calls == [(shipped, run / "model", print)]
    assert "| similarity | 0.139 | 0.150 |" in capsys.readouterr().out
    [entry] = json.loads((shipped / "training_runs.json").read_text())
    assert entry["fills"]["after"]["similarity"] == 0.150


def test_the_fill_judge_scores_the_candidate_with_the_shipped_tokenizer(shipped, tiny_model_dir,
                                                                         tmp_path):
    run = make_run(tmp_path, tiny_model_dir)   # weights doubled, no tokenizer files
    seen = []

    def server_fill(model, tokenizer):
        seen.append((next(model.parameters()).flatten()[0].item(), tokenizer.vocab_size))
        return lambda prefix, suffix, steps: "pass"
    judge = ship.fills_judge(server_fill, limit=2, per_file=1)
    before, after = judge(shipped, run / "model")
    assert seen[1][0] == pytest.approx(2 * seen[0][0]) and seen[0][0] != 0
    assert seen[0][1] == seen[1][1]
    assert set(before) == set(after) == {"exact", "similarity", "parses"}
    assert before == after   # the same fill text on the same cases scores the same


@pytest.mark.parametrize("p50, p95, over", [(60.0, 90.0, False), (130.0, 240.0, True)])
def test_the_candidates_typing_latency_is_recorded_and_warned_past_the_budget(
        shipped, tiny_model_dir, tmp_path, capsys, caplog, better, p50, p95, over):
    """scripts/ship_model.py measures the staged candidate's typing; past the issue's budget
    the card and the log say so, and the run still ships (the shape was measured beforehand)."""
    measured = []

    def latency(folder):
        measured.append(sorted(p.name for p in folder.iterdir()))
        return {"p50_ms": p50, "p95_ms": p95, "cold_s": 2.5, "rss_mb": 320}

    run = make_run(tmp_path, tiny_model_dir)
    assert ship.main([str(run), "--model", str(shipped)], typing_latency=latency) == 0
    assert "config.json" in measured[0] and "tokenizer.json" in measured[0]   # loadable
    card = capsys.readouterr().out
    assert f"p50 {p50:.0f} ms, p95 {p95:.0f} ms" in card
    assert ("OVER THE BUDGET (p50 130 ms > 100; p95 240 ms > 200)" in card) == over
    assert ("types over the budget" in caplog.text) == over
    [entry] = json.loads((shipped / "training_runs.json").read_text())
    assert entry["typing"]["p50_ms"] == p50


def test_ship_models_latency_runs_the_typing_benchmark(tiny_model_dir):
    """scripts/ship_model.py's measurement itself: a real server, a few keystrokes."""
    import importlib.util
    script = Path(__file__).resolve().parents[2] / "scripts" / "ship_model.py"
    spec = importlib.util.spec_from_file_location("ship_model_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    typing = module.typing_latency(tiny_model_dir, requests=3, spans=4)
    assert set(typing) == {"p50_ms", "p95_ms", "cold_s", "rss_mb", "automatic_bar"}
    assert 0 < typing["p50_ms"] <= typing["p95_ms"] and typing["cold_s"] > 0
    from coda_lsp.core.settings import Settings
    bar = typing["automatic_bar"]
    assert bar["spans"] == 4 and bar["bar"] == Settings().automatic_confidence_threshold
    assert 0 <= bar["shown"] <= 1 and bar["exact_kept"] <= bar["exact_at_base"] <= 4


@pytest.mark.parametrize(("shown", "off"), [(0.7, False), (0.95, True), (0.3, True)])
def test_the_card_says_when_the_automatic_bar_needs_measuring_again(shown, off):
    row = {"bar": 0.4, "shown": shown, "es_shown": 0.4, "es_hidden": 0.2, "exact_kept": 50,
           "exact_at_base": 52, "spans": 400}
    line = ship.automatic_bar_line(row)
    assert f"automaticConfidenceThreshold 0.4 shows {shown:.0%} of the offers" in line
    assert "50 of 52 exact offers kept" in line
    assert ("measure the bar again" in line) == off == ship.automatic_bar_off(row)


def test_the_card_counts_passes_over_the_corpus_the_run_ended_with(tmp_path, tiny_model_dir):
    """gpu_run grows its corpus while it trains: passes are over the final one."""
    run = make_run(tmp_path, tiny_model_dir)
    report = json.loads((run / "report.json").read_text())
    assert "(1.28 passes over the final corpus)" in ship.card_section(report, MANIFEST)
    report["data_growth"] = [{"step": 3, "train_tokens": 8000}, {"step": 6, "train_tokens": 10240}]
    line = ship.card_section(report, MANIFEST)
    assert "(0.50 passes over the final corpus, which grew from 0.0 M training tokens" in line
    assert "at the start)" in line
    assert "grown from" not in line
    report["grown"] = {"layers": [4, 6], "hidden": [256, 384], "max_logit_gap": 2.8e-5,
                       "parameters": [5245696, 13473408]}
    assert ", grown from 4 × 256 to 6 × 384 (layers × width, function-preserving: largest " \
        "logit difference 3e-05), " in ship.card_section(report, MANIFEST)
