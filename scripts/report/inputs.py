"""Inputs of the audit report: the selection, moving-distance curve, fault manifest and data list it
reads, and the summaries both its figures and its text use (which cases to show, faults caught, per
center counts). No plotting here (``scripts.report.figures``), no Markdown (``scripts.report``)."""

from __future__ import annotations

import csv
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "REGIONS",
    "SELECTION_FIELDS",
    "center_table",
    "fault_summary",
    "fmt",
    "measured",
    "montage_picks",
    "natural_key",
    "optional_input",
    "read_curve",
    "read_datalist",
    "read_faults",
    "read_selection",
]

REGIONS: tuple[str, ...] = ("hard", "ambiguous", "easy")

SELECTION_FIELDS: tuple[str, ...] = ("case_id", "center", "dad", "variability", "region", "rank", "kept")


def _float(cell: Any) -> float:
    """A CSV cell as float; empty or unparsable cells are NaN."""
    if cell is None:
        return math.nan
    text = str(cell).strip()
    if text == "" or text.lower() in {"nan", "none", "null"}:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan


def _int_or_none(cell: Any) -> int | None:
    value = _float(cell)
    return None if math.isnan(value) else int(value)


def _flag(cell: Any) -> int:
    text = str(cell if cell is not None else "").strip().lower()
    if text in {"1", "true", "yes", "y", "kept"}:
        return 1
    value = _float(text)
    return int(not math.isnan(value) and value != 0)


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def read_selection(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read selection.csv; dad/variability become floats (NaN when missing), rank int|None, kept 0/1.

    Raises ValueError naming the file when it has no rows or lacks the case_id/dad columns.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"selection file not found: {path}")
    fields, raw = _read_rows(path)
    if not raw:
        raise ValueError(f"{path}: the selection file has no cases")
    missing = [k for k in ("case_id", "dad") if k not in fields]
    if missing:
        raise ValueError(f"{path}: not a selection file, missing columns {missing}")
    rows = []
    for r in raw:
        dad = _float(r.get("dad"))
        region = (r.get("region") or "").strip()
        if not region and not math.isnan(dad):
            region = "unassigned"
        rows.append(
            {
                "case_id": (r.get("case_id") or "").strip(),
                "center": (r.get("center") or "").strip() or "(none)",
                "dad": dad,
                "variability": _float(r.get("variability")),
                "region": region if not math.isnan(dad) else "",
                "rank": _int_or_none(r.get("rank")),
                "kept": _flag(r.get("kept")),
            }
        )
    return rows


def read_curve(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read moving_distance.csv: ints for window/epochs, floats (NaN when empty) for distances, stop 0/1."""
    _, raw = _read_rows(Path(path))
    rows = []
    for r in raw:
        rows.append(
            {
                "window": _int_or_none(r.get("window")),
                "epoch_start": _int_or_none(r.get("epoch_start")),
                "epoch_end": _int_or_none(r.get("epoch_end")),
                **{
                    k: _float(r.get(k))
                    for k in ("distance_abs", "distance_signed", "distance", "max_distance", "ratio")
                },
                "stop": _flag(r.get("stop")),
            }
        )
    return rows


def read_faults(path: str | os.PathLike) -> dict[str, str]:
    """Read the fault manifest (case_id,center,kind) into {case_id: kind}."""
    _, raw = _read_rows(Path(path))
    return {(r.get("case_id") or "").strip(): (r.get("kind") or "").strip() or "fault" for r in raw if r.get("case_id")}


def read_datalist(path: Path) -> dict[str, dict]:
    """{case_id: entry} of the training list, as the bundle reads a data list (MONAI's path rules, case ids
    from the file names where none are given)."""
    from scripts.data.lists import load_datalist

    return {str(entry["case_id"]): entry for entry in load_datalist(path, "training", check_files=False)}


def optional_input(path: Any, what: str, notes: list[str]) -> Path | None:
    """An optional input: None stays None; a path that does not exist is noted and treated as absent."""
    if path is None or str(path).strip() in {"", "None"}:
        return None
    p = Path(path)
    if not p.is_file():
        msg = f"{what} `{p}` was given but not found; its part of the report is skipped."
        warnings.warn(msg, stacklevel=3)
        notes.append(msg)
        return None
    return p


def natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text))]


def measured(rows: Sequence[Mapping]) -> list[Mapping]:
    """Rows with a finite DAD, hardest first (DAD ascending; ties by rank, then case id)."""
    finite = [r for r in rows if not math.isnan(_float(r.get("dad")))]

    def key(r: Mapping) -> tuple:
        rank = r.get("rank")
        rank = math.inf if rank is None or (isinstance(rank, float) and math.isnan(rank)) else float(rank)
        return (_float(r.get("dad")), rank, natural_key(r.get("case_id", "")))

    return sorted(finite, key=key)


def montage_picks(selection_rows: Sequence[Mapping], n: int) -> tuple[list[str], list[str]]:
    """The ``n`` easiest (highest DAD, easiest first) and ``n`` hardest (lowest DAD, hardest first) case ids.

    Cases with a missing DAD are ignored. When there are fewer than ``2n`` measured cases the hardest
    list is filled first and the easiest list takes only cases not already in it.
    """
    n = max(int(n), 0)
    ordered = [str(r["case_id"]) for r in measured(selection_rows)]
    hardest = ordered[:n]
    taken = set(hardest)
    easiest = [c for c in reversed(ordered) if c not in taken][:n]
    return easiest, hardest


def fault_summary(selection_rows: Sequence[Mapping], faults: Mapping[str, str]) -> dict[str, Any]:
    """Where the planted faults fell: counts in the hard region, dropped, unmeasured, not selected at all."""
    by_id = {r["case_id"]: r for r in selection_rows}
    present = [c for c in faults if c in by_id]
    n_cases = len(selection_rows)
    n_hard = sum(1 for r in selection_rows if r.get("region") == "hard")
    in_hard = [c for c in present if by_id[c].get("region") == "hard"]
    dropped = [c for c in present if not by_id[c].get("kept")]
    unmeasured = [c for c in present if math.isnan(_float(by_id[c].get("dad")))]
    return {
        "m": len(present),
        "n_hard": n_hard,
        "n_cases": n_cases,
        "k_hard": len(in_hard),
        "in_hard": in_hard,
        "k_dropped": len(dropped),
        "n_dropped": sum(1 for r in selection_rows if not r.get("kept")),
        "dropped": dropped,
        "unmeasured": unmeasured,
        "not_in_selection": [c for c in faults if c not in by_id],
        "chance_hard": len(present) * n_hard / n_cases if n_cases else math.nan,
    }


def center_table(rows: Sequence[Mapping]) -> list[dict[str, Any]]:
    """Per center: cases, kept, dropped, counts per region, missing DAD."""
    out = []
    for center in sorted({r["center"] for r in rows}, key=natural_key):
        sub = [r for r in rows if r["center"] == center]
        regions = Counter(r["region"] or "missing" for r in sub)
        out.append(
            {
                "center": center,
                "cases": len(sub),
                "kept": sum(r["kept"] for r in sub),
                "dropped": sum(1 - r["kept"] for r in sub),
                **{g: regions.get(g, 0) for g in (*REGIONS, "unassigned", "missing")},
                "kept_by_region": Counter(r["region"] or "missing" for r in sub if r["kept"]),
                "dropped_by_region": Counter(r["region"] or "missing" for r in sub if not r["kept"]),
            }
        )
    return out


def fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"
