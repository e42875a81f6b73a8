"""The benchmark's arms, paired interval, table, subset export and resume, with a fake bundle runner."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scripts.data.record import DynamicsRecord
from scripts.experiments.benchmark import (
    format_table,
    paired_interval,
    parse_arm,
    prune_rate,
    read_results,
    run_benchmark,
    split_window,
)

IDS = [f"c{i}" for i in range(10)]


def test_parse_arm_and_paired_interval():
    assert parse_arm("random") == ("dad", "random")
    assert parse_arm("el2n") == ("el2n", "hard") and parse_arm("dad:ccs") == ("dad", "ccs")
    with pytest.raises(ValueError, match="unknown score"):
        parse_arm("nope:hard")
    assert split_window("dad:ambiguous@30") == ("dad:ambiguous", 30) and split_window("random") == ("random", None)
    with pytest.raises(ValueError, match="positive integer"):
        split_window("dad@x")
    # diffs 1, 2, 3: mean 2, sd 1, t(2) = 4.303 -> half-width 4.303 / sqrt(3)
    mean, half = paired_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 / math.sqrt(3), rel=1e-4)
    assert math.isnan(paired_interval([1.0])[1])


@pytest.mark.parametrize("n_pairs, t", [(13, 2.1788), (31, 2.0423)])  # t(0.975) for 12 and 30 dof, from tables
def test_paired_interval_uses_student_t_beyond_10_degrees_of_freedom(n_pairs, t):
    diffs = np.arange(n_pairs, dtype=float)  # sd (ddof 1) = sqrt(n (n + 1) / 12)
    sd = math.sqrt(n_pairs * (n_pairs + 1) / 12)
    mean, half = paired_interval(diffs)
    assert mean == pytest.approx((n_pairs - 1) / 2)
    assert half == pytest.approx(t * sd / math.sqrt(n_pairs), rel=2e-4)  # not 1.96 (up to 10% narrower)


def _dice(overall):
    return {"center1": {"mean": overall + 0.01}, "overall": {"mean": overall}}


def test_format_table_full_first_and_difference_against_random():
    rows = (
        [{"arm": "random", "keep": 0.5, "seed": s, "test_dice": _dice(0.80 + 0.01 * s)} for s in (0, 1)]
        + [
            {
                "arm": "dad:ambiguous",
                "keep": 0.5,
                "seed": s,
                "test_dice": _dice(0.83 + 0.01 * s),
                "window_end": 30,
                "noise": "retraining",
            }
            for s in (0, 1)
        ]
        + [{"arm": "full", "keep": 1.0, "seed": 0, "test_dice": _dice(0.9)}]
    )
    lines = format_table(rows).splitlines()
    assert lines[0].startswith("| arm | kept | seeds (pairs) | ranked at | noise | Dice center1 |")
    assert lines[2].startswith("| full | 100% | 1 | – | – | 0.9100 ± 0.0000 | 0.9000 ± 0.0000 |")
    assert lines[3].startswith("| random | 50% | 2 (1) |")  # 2 seeds, 1 pair with a full-data run
    # paired differences .03, .03: sd 0 -> +0.0300 ± 0.0000, over 2 pairs; ranked at epoch 30
    assert lines[4].startswith("| dad:ambiguous | 50% | 2 (2) | 30 | retraining |")
    assert lines[4].endswith("| +0.0300 ± 0.0000 |")
    # against full data: only seed 0 has a full run, 0.83 - 0.90 -> one difference, no interval
    assert lines[4].endswith("| -0.0700 | +0.0300 ± 0.0000 |")
    assert lines[3].endswith("| -0.1000 |  |")  # random vs full (seed 0: 0.80 - 0.90)


def _dataset(tmp_path: Path) -> Path:
    (tmp_path / "img.nii.gz").write_text("")
    entry = {"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "img.nii.gz")}
    content = {
        "training": [{**entry, "case_id": c, "center": "a" if i < 5 else "b"} for i, c in enumerate(IDS)],
        "test": [{**entry, "case_id": "t0", "center": "a"}],
    }
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(content))
    return path


class FakeRunner:
    """Writes what each workflow would; fails on call number ``fail_at`` (to test resume)."""

    def __init__(self, dataset_json: Path, fail_at: int | None = None):
        self.dataset_json, self.fail_at, self.calls = dataset_json, fail_at, []

    def __call__(self, run_id, configs, settings, log_file):
        self.calls.append((run_id, dict(settings)))
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise RuntimeError("interrupted")
        out = Path(settings["output_dir"])
        if run_id == "training" and settings.get("score_patches"):
            record = DynamicsRecord(IDS, ["a"] * 5 + ["b"] * 5, 2)
            for e in (1, 2):
                inter = np.arange(10.0)
                counts = np.stack([inter, np.full(10, 10.0), np.full(10, 10.0)], axis=1)[:, :, None]
                record.add_epoch(e, "patches", IDS, counts)
                record.add_scores(e, {"el2n": np.linspace(1, 0, 10)})
            out.mkdir(parents=True, exist_ok=True)
            record.save(out / "dynamics.csv")
            (out / "run.json").write_text(json.dumps({"dataset_json": str(self.dataset_json), "delta_t": 2}))
        if run_id == "training" and "subset_dir" in settings:
            subset = json.loads((Path(settings["subset_dir"]) / "subset_datalist.json").read_text())
            assert len(subset["training"]) == 5  # kept 50% of 10
        if run_id == "evaluating":
            (out / "eval").mkdir(parents=True, exist_ok=True)
            (out / "eval" / "summary.json").write_text(json.dumps(_dice(0.8)))
        return 1.0


def test_benchmark_runs_and_resumes(tmp_path):
    dataset = _dataset(tmp_path)
    work = tmp_path / "bench"
    kwargs = dict(work_dir=str(work), arms=["dad:ambiguous", "el2n", "random"], keep=[0.5], seeds=[0, 1])
    first = FakeRunner(dataset, fail_at=5)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_benchmark(**kwargs, runner=first)
    # stage 1, then seed 0: evaluate full, (retrain, evaluate) x dad, then the el2n retraining fails
    assert [c[0] for c in first.calls] == ["training", "evaluating", "training", "evaluating", "training"]
    assert len(read_results(work / "results.jsonl")) == 2
    second = FakeRunner(dataset)
    rows = run_benchmark(**kwargs, runner=second)
    assert len(rows) == 8  # (full + 3 arms) x 2 seeds
    # no stage 1 again and nothing finished redone: el2n + random for seed 0, full + 3 arms for seed 1
    assert [c[0] for c in second.calls].count("evaluating") == 6
    assert not any(c[1].get("score_patches") for c in second.calls)
    kept = json.loads((work / "subsets" / "el2n_keep50_seed0" / "subset_datalist.json").read_text())
    assert [d["case_id"] for d in kept["training"]] == IDS[:5]  # EL2N, "hard": the 5 highest EL2N kept
    assert (work / "table.md").is_file() and (work / "benchmark.png").is_file()


class FourEpochRunner(FakeRunner):
    """Stage 1 of 4 epochs (delta_t 2): Dice rises with the case index in epochs 1-2, falls in 3-4."""

    def __call__(self, run_id, configs, settings, log_file):
        if run_id == "training" and settings.get("score_patches"):
            out = Path(settings["output_dir"])
            record = DynamicsRecord(IDS, ["a"] * 5 + ["b"] * 5, 2)
            for e in (1, 2, 3, 4):
                inter = np.arange(10.0) if e <= 2 else np.arange(10.0)[::-1].copy()
                counts = np.stack([inter, np.full(10, 10.0), np.full(10, 10.0)], axis=1)[:, :, None]
                record.add_epoch(e, "patches", IDS, counts)
            out.mkdir(parents=True, exist_ok=True)
            record.save(out / "dynamics.csv")
            (out / "run.json").write_text(json.dumps({"dataset_json": str(self.dataset_json), "delta_t": 2}))
            return 1.0
        return super().__call__(run_id, configs, settings, log_file)


def test_arm_at_an_earlier_window(tmp_path):
    work = tmp_path / "bench"
    run_benchmark(str(work), arms=["dad:hard", "dad:hard@2"], keep=[0.5], seeds=[0],
                  runner=FourEpochRunner(_dataset(tmp_path)))  # fmt: skip

    def kept(tag):
        content = json.loads((work / "subsets" / tag / "subset_datalist.json").read_text())
        return sorted(d["case_id"] for d in content["training"])

    # "hard" keeps the 5 lowest DAD: c0-c4 in the window ending at epoch 2, c5-c9 in the last one
    assert kept("dad-hard@2_keep50_seed0") == IDS[:5]
    assert kept("dad-hard_keep50_seed0") == IDS[5:]
    with pytest.raises(ValueError, match="outside the record"):
        run_benchmark(str(work), arms=["dad:hard@6"], keep=[0.5], seeds=[0], runner=FourEpochRunner(_dataset(tmp_path)))


def test_a_users_data_list_reaches_stage1_and_full_runs_not_the_retrainings(tmp_path):
    dataset = _dataset(tmp_path)
    runner = FakeRunner(dataset)
    overrides = {"dataset_json": str(dataset), "epochs": 3, "delta_t": 3, "val_interval": 3}  # passes the checks
    run_benchmark(str(tmp_path / "bench"), arms=["random"], keep=[0.5], seeds=[0, 1], overrides=overrides,
                  runner=runner)  # fmt: skip
    trainings = [s for run_id, s in runner.calls if run_id == "training"]
    retrains = [s for s in trainings if "subset_dir" in s]
    assert len(trainings) == 4 and len(retrains) == 2  # stage 1, full seed 1, a retraining per seed
    assert all("dataset_json" not in s and "epochs" not in s for s in retrains)  # retrain.yaml derives them
    assert all(s["dataset_json"] == str(dataset) and s["epochs"] == 3 for s in trainings if s not in retrains)
    with pytest.raises(ValueError, match="output_dir"):
        run_benchmark(str(tmp_path / "b2"), arms=["random"], overrides={"output_dir": "x"}, runner=runner)


def test_kept_fraction_to_prune_rate_is_the_decimal_meant():
    from scripts.core.selection import num_dropped

    assert num_dropped(100, 1 - 0.9) == 9  # the float 1 - 0.9 = 0.0999...: one drop short
    assert num_dropped(100, prune_rate(0.9)) == 10 and num_dropped(187, prune_rate(0.7)) == 56


class StopRuleRunner(FourEpochRunner):
    """As FourEpochRunner, and stage 1's stop rule fired at epoch 2 (its stop_rule.json)."""

    def __call__(self, run_id, configs, settings, log_file):
        wall = super().__call__(run_id, configs, settings, log_file)
        if run_id == "training" and settings.get("score_patches"):
            rule = {"fired": True, "prune_epoch": 2}
            (Path(settings["output_dir"]) / "stop_rule.json").write_text(json.dumps(rule))
        return wall


def test_arms_rank_where_the_stop_rule_fired_unless_told_otherwise(tmp_path):
    work = tmp_path / "bench"
    runner = StopRuleRunner(_dataset(tmp_path))
    rows = run_benchmark(str(work), arms=["dad:hard", "dad:hard@last"], keep=[0.5], seeds=[0], runner=runner)

    def kept(tag):
        content = json.loads((work / "subsets" / tag / "subset_datalist.json").read_text())
        return sorted(d["case_id"] for d in content["training"])

    # the rule fired at epoch 2: "hard" keeps c0-c4 there (the 5 lowest DAD of epochs 1-2); @last: c5-c9
    assert kept("dad-hard_keep50_seed0") == IDS[:5]
    assert kept("dad-hard@last_keep50_seed0") == IDS[5:]
    ends = {r["arm"]: r.get("window_end") for r in rows}
    assert ends["dad:hard"] == 2 and ends["dad:hard@last"] == 4
    assert "| dad:hard | 50% | 1 (0) | 2 | retraining |" in (work / "table.md").read_text()


def test_a_stage1_per_seed(tmp_path):
    work = tmp_path / "bench"
    runner = FakeRunner(_dataset(tmp_path))
    rows = run_benchmark(str(work), arms=["el2n", "random"], keep=[0.5], seeds=[0, 1], stage1_per_seed=True,
                         runner=runner)  # fmt: skip
    stage1 = [s["output_dir"] for run_id, s in runner.calls if run_id == "training" and s.get("score_patches")]
    assert [Path(p).name for p in stage1] == ["stage1_seed0", "stage1_seed1"]  # one scored stage 1 per seed
    assert [s["seed"] for run_id, s in runner.calls if run_id == "training" and s.get("score_patches")] == [0, 1]
    # each stage 1 is its seed's full-data model: no separate full-data training
    trainings = [s for run_id, s in runner.calls if run_id == "training"]
    assert len(trainings) == 2 + 2 * 2  # 2 stage 1s, (el2n + random) x 2 seeds
    el2n = [r for r in rows if r["arm"] == "el2n"]
    assert {r["stage1"] for r in el2n} == {"stage1_seed0", "stage1_seed1"}
    assert "| el2n | 50% | 2 (2) | 2 | stage 1 + retraining |" in (work / "table.md").read_text()
    # resuming the same work dir with one shared stage 1 would mix what the intervals cover
    with pytest.raises(ValueError, match="another --work_dir"):
        run_benchmark(str(work), arms=["el2n"], keep=[0.5], seeds=[0, 1], runner=runner)


def test_the_command_line_passes_the_dynamic_arms_on(monkeypatch):
    """`python -m scripts.experiments.benchmark ... --dynamic_arms "[...]"` (docs/dynamic_pruning.md) reaches
    run_benchmark as dynamic_arms, not as its runner."""
    import scripts.experiments.benchmark as benchmark
    from scripts.utils.cli import unknown_options

    seen = {}
    monkeypatch.setattr(benchmark, "run_benchmark", lambda *args, **kwargs: seen.update(args=args, kwargs=kwargs))
    assert unknown_options(benchmark.main, ["--dynamic_arms", "['dynamic']"]) == []
    benchmark.main(work_dir="w", dynamic_arms=["dynamic", "infobatch"])
    assert seen["kwargs"] == {"dynamic_arms": ["dynamic", "infobatch"]}
    assert seen["args"][0] == "w" and len(seen["args"]) == 9
