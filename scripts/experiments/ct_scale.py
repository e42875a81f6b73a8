"""Stage 1 on a CT-size set: peak memory of the whole process tree and the epoch times (issue 24).

    python -m scripts.experiments.ct_scale --work_dir /work/ctdata [--n_cases 40 --shape "[512,512,300]"
        --epochs 2 --overrides "{'num_workers': 0}" --limit_gb 10 --keep_data True --vary_spacing True]

Generates the set (``scripts.experiments.ct_data``, seeded; kept in ``work_dir/data_...`` for the next
call unless ``keep_data`` is False), then runs, as a user would,
``python -m monai.bundle run training --config_file configs/train.yaml --dataset_dir DATA --epochs E
--delta_t E --val_interval E`` (a run of E epochs needs one DAD window and one validation in it: the
only settings changed; none about memory) in a fresh output folder. While it runs, every 0.5 s, it sums
over the main process and all its descendants (the loader workers) the proportional set size (PSS, from
/proc/PID/smaps_rollup: a page shared by k processes counts 1/k in each, so the workers' copy-on-write
view of the cache is not counted twice) and, for comparison, the resident set size (RSS, which counts
shared pages in every process). ``limit_gb`` kills the run (its process group) when the PSS sum passes
it, so that a run that would exhaust a shared machine is reported rather than run to the end.
Returns (and prints) the peaks, what the run was doing at the peak (its last log line), each epoch's
seconds (Ignite's "Epoch[n] Complete" lines), the wall time and the data set kind the plan chose and why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["measure_ct_stage1", "process_tree", "run_measured", "tree_memory"]

ROOT = Path(__file__).resolve().parents[2]
EPOCH_LINE = re.compile(r"(\w+) - INFO - Epoch\[(\d+)\] Complete\. Time taken: (\d+):(\d+):(\d+(?:\.\d+)?)")
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) - ")
# what the run does, from the first log line of each part (the trainer's and the validator's first start)
PHASES = (
    ("checks and plan", None),
    ("caching", "memory - INFO - data cache:"),
    ("training", "SupervisedTrainer - INFO - Engine run resuming"),
    ("validation", "SupervisedEvaluator - INFO - Engine run resuming"),
)


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant (from /proc/*/stat's parent ids)."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, []))
    return tree


def _field_kb(path: str, name: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_memory(root: int) -> tuple[int, int, int]:
    """(PSS sum, RSS sum, processes) over ``root``'s tree, in bytes."""
    pids = process_tree(root)
    pss = sum(_field_kb(f"/proc/{p}/smaps_rollup", "Pss") for p in pids)
    rss = sum(_field_kb(f"/proc/{p}/status", "VmRSS") for p in pids)
    return pss * 1024, rss * 1024, len(pids)


def _last_line_before(log: Path, offset: int) -> str:
    """The last complete log line in the first ``offset`` bytes of ``log`` (what the run was doing then)."""
    with open(log, "rb") as f:
        head = f.read(offset)
    lines = [s for s in head.decode("utf-8", "replace").splitlines() if s.strip()]
    return lines[-1][:300] if lines else ""


def run_measured(
    cmd: Sequence[str], cwd: str | os.PathLike, log: str | os.PathLike, limit_bytes: int | None = None,
    interval: float = 0.5, env: Mapping[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run ``cmd`` (output to ``log``), polling its process tree's memory; kill it past ``limit_bytes`` PSS."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    samples = open(log.with_suffix(".memory.csv"), "w")  # wall-clock time, PSS and RSS sums (bytes), processes
    samples.write("time,pss,rss,processes\n")
    peak: dict[str, Any] = {"pss": 0, "rss": 0, "processes": 0, "at_s": 0.0, "log_offset": 0}
    peak_rss, killed = 0, False
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(list(cmd), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})  # fmt: skip
        while proc.poll() is None:
            pss, rss, n = tree_memory(proc.pid)
            samples.write(f"{time.time():.2f},{pss},{rss},{n}\n")
            peak_rss = max(peak_rss, rss)
            if pss > peak["pss"]:
                out.flush()
                peak = {"pss": pss, "rss": rss, "processes": n, "at_s": time.perf_counter() - start,
                        "log_offset": log.stat().st_size}  # fmt: skip
            if limit_bytes is not None and pss > limit_bytes:
                os.killpg(proc.pid, signal.SIGKILL)  # the group this call started (start_new_session)
                killed = True
                proc.wait()
                break
            time.sleep(interval)
    samples.close()
    return {
        "returncode": proc.returncode,
        "killed_over_limit": killed,
        "wall_s": round(time.perf_counter() - start, 1),
        "peak_pss_bytes": peak["pss"],
        "rss_at_peak_bytes": peak["rss"],
        "peak_rss_sum_bytes": peak_rss,
        "processes_at_peak": peak["processes"],
        "peak_at_s": round(peak["at_s"], 1),
        "doing_at_peak": _last_line_before(log, peak["log_offset"]),
    }


def epoch_seconds(log: str | os.PathLike, engine: str = "SupervisedTrainer") -> list[float]:
    """Each epoch's seconds from ``engine``'s Ignite lines "Epoch[n] Complete. Time taken: HH:MM:SS.sss" (the
    trainer's include the validation run at that epoch's end; ``SupervisedEvaluator`` gives that alone)."""
    seen: dict[int, float] = {}
    for m in EPOCH_LINE.finditer(Path(log).read_text(errors="replace")):
        if m.group(1) == engine:
            seen.setdefault(int(m.group(2)), int(m.group(3)) * 3600 + int(m.group(4)) * 60 + float(m.group(5)))
    return [round(seen[k], 1) for k in sorted(seen)]


def phase_peaks(log: str | os.PathLike) -> dict[str, float]:
    """Peak PSS (bytes) of each part of the run (``PHASES``), from ``run_measured``'s samples beside the log."""
    import csv
    import datetime

    starts = []
    lines = Path(log).read_text(errors="replace").splitlines()
    for name, marker in PHASES:
        found = [ln for ln in lines if marker is None or marker in ln]
        stamp = next((STAMP.match(ln) for ln in found if STAMP.match(ln)), None)
        if stamp is not None:
            when = datetime.datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
            starts.append((when + int(stamp.group(2)) / 1000 if marker else 0.0, name))
    starts.sort()
    peaks: dict[str, float] = {}
    with open(Path(log).with_suffix(".memory.csv")) as f:
        for row in csv.DictReader(f):
            t = float(row["time"])
            phase = [name for start, name in starts if start <= t]
            if phase:
                peaks[phase[-1]] = max(peaks.get(phase[-1], 0), int(row["pss"]))
    return {name: peaks[name] for _, name in starts if name in peaks}


def measure_ct_stage1(
    work_dir: str | os.PathLike,
    n_cases: int = 40,
    shape: Sequence[int] = (512, 512, 300),
    epochs: int = 2,
    overrides: Mapping[str, Any] | None = None,
    limit_gb: float | None = 10.0,
    keep_data: bool = True,
    bundle_root: str | os.PathLike = ROOT,
    tag: str = "stage1",
    vary_spacing: bool = True,
) -> dict[str, Any]:
    """Stage 1 with the default settings (but ``epochs``, and ``delta_t``/``val_interval`` = ``epochs`` so a
    run that short is accepted; ``overrides`` add any other) on a generated CT-size set; see the module.
    ``vary_spacing`` False: every case at 0.8 x 0.8 x 1.25 mm, so nothing is resampled."""
    from scripts.experiments.ct_data import generate_ct_dataset

    work = Path(os.path.abspath(work_dir))
    data = work / f"data_{n_cases}x{'x'.join(str(int(s)) for s in shape)}{'' if vary_spacing else '_fixed'}"
    start = time.perf_counter()
    generate_ct_dataset(data, n_cases, shape, vary_spacing=vary_spacing)
    generated_s = time.perf_counter() - start
    run = work / tag
    shutil.rmtree(run, ignore_errors=True)  # a fresh run: its disk cache is written again and counted
    settings = {"dataset_dir": str(data), "output_dir": str(run / "out"), "ckpt_dir": str(run / "models"),
                "epochs": epochs, "delta_t": epochs, "val_interval": epochs, **dict(overrides or {})}  # fmt: skip
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.yaml"]
    for key, value in settings.items():
        cmd += [f"--{key}", json.dumps(value) if isinstance(value, (list, dict)) else str(value)]
    limit = None if limit_gb is None else int(float(limit_gb) * 1e9)
    result = run_measured(cmd, bundle_root, run / "stage1.log", limit, env={"PYTHONPATH": str(bundle_root)})
    plan = run / "out" / "plan.json"
    memory = json.loads(plan.read_text()).get("memory", {}) if plan.is_file() else {}
    result.update(
        n_cases=int(n_cases), shape=[int(s) for s in shape], epochs=int(epochs), overrides=dict(overrides or {}),
        vary_spacing=bool(vary_spacing),
        command=" ".join(cmd[1:]), generate_s=round(generated_s, 1), epoch_s=epoch_seconds(run / "stage1.log"),
        validation_s=epoch_seconds(run / "stage1.log", "SupervisedEvaluator"),
        phase_peak_pss_bytes=phase_peaks(run / "stage1.log"),
        datasets={k: v.get("dataset") for k, v in memory.get("datasets", {}).items()},
        reason=memory.get("reason"), estimated_bytes=memory.get("estimated_bytes", {}).get("total"),
        budget_bytes=memory.get("budget_bytes"), log=str(run / "stage1.log"),
    )  # fmt: skip
    if not keep_data:
        shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(run / "out" / "cache", ignore_errors=True)  # the disk cache (GBs); the log and plan.json stay
    return result


def _print(result: Mapping[str, Any]) -> str:
    gb, shape = 1e9, "x".join(map(str, result["shape"]))
    lines = [
        f"stage 1, {result['n_cases']} cases of {shape} int16 CT, {result['epochs']} epochs"
        f" (overrides {result['overrides'] or 'none'})",
        f"  peak PSS (main + workers) {result['peak_pss_bytes'] / gb:.2f} GB  (RSS sum then "
        f"{result['rss_at_peak_bytes'] / gb:.2f} GB, {result['processes_at_peak']} processes, "
        f"at {result['peak_at_s']} s)",
        f"  at the peak: {result['doing_at_peak']}",
        "  peak PSS by part: " + ", ".join(f"{k} {v / gb:.2f} GB" for k, v in result["phase_peak_pss_bytes"].items()),
        f"  epochs (s, each with its validation if any): {result['epoch_s']}  validations (s): {result['validation_s']}"
        f"  wall {result['wall_s']} s  exit {result['returncode']}"
        + ("  KILLED over the limit" if result["killed_over_limit"] else ""),
        f"  data sets: {result['datasets']}; {result['reason']}",
    ]  # fmt: skip
    return "\n".join(lines)


def main(
    work_dir: str = "/work/ctdata", n_cases: int = 40, shape: Sequence[int] = (512, 512, 300), epochs: int = 2,
    overrides: Mapping[str, Any] | None = None, limit_gb: float | None = 10.0, keep_data: bool = True,
    bundle_root: str | None = None, tag: str = "stage1", vary_spacing: bool = True,
) -> str:  # fmt: skip
    """The command: ``measure_ct_stage1``, its result also written to ``work_dir/<tag>.json``; returns the summary."""
    bundle_root = bundle_root or str(ROOT)
    result = measure_ct_stage1(
        work_dir, n_cases, shape, epochs, overrides, limit_gb, keep_data, bundle_root, tag, vary_spacing
    )
    Path(work_dir, f"{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    return _print(result)


if __name__ == "__main__":
    from scripts.utils.cli import fire_strict

    fire_strict(main)  # fire prints the returned text
