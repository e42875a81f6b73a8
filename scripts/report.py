"""Audit report of a DAD data-pruning run: matplotlib PNGs plus a Markdown summary that links them.

Figures (each written atomically into ``out_dir``):

- ``data_map.png``: variability (x) vs DAD (y), the data map of dataset cartography (paper Fig. 5),
  coloured by region, marker by center, planted label faults circled.
- ``moving_distance.png``: the moving distance L of the data map per window (paper Fig. 6b), both the
  absolute and the signed form, with the stop threshold and the prune epoch.
- ``center_counts.png``: per center, kept vs dropped cases, stacked by region.
- ``montage.png``: a slice through the target of the easiest and hardest cases (paper Fig. 3), with
  the label outline.

Usage: ``python -m scripts.report --selection_csv SEL --out_dir DIR [--curve_csv ...]``
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from scripts.atomic import atomic_output, write_text_atomic

__all__ = [
    "REGIONS",
    "center_table",
    "fault_summary",
    "make_report",
    "montage_picks",
    "read_curve",
    "read_faults",
    "read_selection",
    "robust_window",
    "target_slice",
]

REGIONS: tuple[str, ...] = ("hard", "ambiguous", "easy")
REGION_COLORS: dict[str, str] = {
    "hard": "#d62728",
    "ambiguous": "#1f77b4",
    "easy": "#2ca02c",
    "unassigned": "#7f7f7f",
}
CENTER_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
SELECTION_FIELDS: tuple[str, ...] = ("case_id", "center", "dad", "variability", "region", "rank", "kept")
DPI = 110
FIGURES: dict[str, str] = {
    "data_map": "data_map.png",
    "moving_distance": "moving_distance.png",
    "center_counts": "center_counts.png",
    "montage": "montage.png",
}


# ----------------------------------------------------------------------------------------------- reading
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


def _read_datalist(path: Path) -> dict[str, dict]:
    """{case_id: entry} of the training list, through MONAI's Decathlon reader (paths made absolute)."""
    from monai.data import load_decathlon_datalist

    entries = load_decathlon_datalist(str(path), is_segmentation=True, data_list_key="training")
    out = {}
    for entry in entries:
        cid = entry.get("case_id")
        if not cid:
            name = Path(str(entry["image"])).name
            cid = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem
        out[str(cid)] = entry
    return out


def _optional(path: Any, what: str, notes: list[str]) -> Path | None:
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


# ------------------------------------------------------------------------------------------ pure helpers
def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text))]


def _measured(rows: Sequence[Mapping]) -> list[Mapping]:
    """Rows with a finite DAD, hardest first (DAD ascending; ties by rank, then case id)."""
    finite = [r for r in rows if not math.isnan(_float(r.get("dad")))]

    def key(r: Mapping) -> tuple:
        rank = r.get("rank")
        rank = math.inf if rank is None or (isinstance(rank, float) and math.isnan(rank)) else float(rank)
        return (_float(r.get("dad")), rank, _natural_key(r.get("case_id", "")))

    return sorted(finite, key=key)


def montage_picks(selection_rows: Sequence[Mapping], n: int) -> tuple[list[str], list[str]]:
    """The ``n`` easiest (highest DAD, easiest first) and ``n`` hardest (lowest DAD, hardest first) case ids.

    Cases with a missing DAD are ignored. When there are fewer than ``2n`` measured cases the hardest
    list is filled first and the easiest list takes only cases not already in it.
    """
    n = max(int(n), 0)
    ordered = [str(r["case_id"]) for r in _measured(selection_rows)]
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


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# ------------------------------------------------------------------------------------------------ figures
def _save_png(fig: Figure, path: Path) -> Path:
    """Save a figure as PNG to a temp name beside ``path`` and rename it over ``path``."""
    FigureCanvasAgg(fig)  # make sure the figure renders with Agg, whatever pyplot's backend is
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=DPI, format="png")
    finally:
        fig.clf()  # figures made without pyplot are not registered; clearing frees them
    return path


def _center_markers(centers: Sequence[str]) -> dict[str, str]:
    ordered = sorted(set(centers), key=_natural_key)
    return {c: CENTER_MARKERS[i % len(CENTER_MARKERS)] for i, c in enumerate(ordered)}


def _window_text(stop_rule: Mapping | None) -> str:
    if not stop_rule:
        return ""
    dt = stop_rule.get("delta_t")
    if stop_rule.get("fired") and stop_rule.get("prune_epoch") is not None:
        end, why = int(stop_rule["prune_epoch"]), "prune epoch"
    elif stop_rule.get("last_window_end") is not None:
        end, why = int(stop_rule["last_window_end"]), "last window, stop rule not fired"
    else:
        return ""
    span = f"epochs {end - int(dt) + 1}–{end}" if dt else f"window ending at epoch {end}"
    return f"{span} ({why})"


def _annotate_faults(ax, fault_pts: Sequence[Mapping], faults: Mapping[str, str]) -> None:
    """Label circled faults with id and kind; points that coincide on screen share one stacked label."""
    ax.margins(0.06)
    ax.autoscale_view()
    xy = ax.transData.transform([(r["variability"], r["dad"]) for r in fault_pts])
    clusters: list[list[int]] = []
    for i in np.argsort(xy[:, 1], kind="stable"):
        for cl in clusters:
            if np.hypot(*(xy[i] - xy[cl[0]])) < 14.0:  # pixels at the figure dpi: visually the same spot
                cl.append(int(i))
                break
        else:
            clusters.append([int(i)])
    x_lo, x_hi = ax.get_xlim()
    for cl in clusters:
        anchor = fault_pts[cl[0]]
        text = "\n".join(f"{fault_pts[i]['case_id']}: {faults[fault_pts[i]['case_id']]}" for i in cl)
        right = (anchor["variability"] - x_lo) > 0.75 * (x_hi - x_lo)
        ax.annotate(
            text,
            (anchor["variability"], anchor["dad"]),
            xytext=(-11, 6) if right else (11, 6),
            textcoords="offset points",
            ha="right" if right else "left",
            va="bottom",
            fontsize=8,
            zorder=5,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.75},
        )


def plot_data_map(rows: Sequence[Mapping], faults: Mapping[str, str], stop_rule: Mapping | None, path: Path) -> Path:
    measured = [r for r in rows if not math.isnan(r["dad"]) and not math.isnan(r["variability"])]
    markers = _center_markers([r["center"] for r in rows])
    fig = Figure(figsize=(10, 6.4))
    ax = fig.add_subplot(1, 1, 1)
    regions_present = []
    for region in (*REGIONS, "unassigned"):
        for center, marker in markers.items():
            for kept in (1, 0):
                pts = [r for r in measured if r["region"] == region and r["center"] == center and r["kept"] == kept]
                if not pts:
                    continue
                if region not in regions_present:
                    regions_present.append(region)
                color = REGION_COLORS.get(region, REGION_COLORS["unassigned"])
                ax.scatter(  # kept: filled; dropped: hollow, edge in the region colour
                    [r["variability"] for r in pts],
                    [r["dad"] for r in pts],
                    marker=marker,
                    s=44,
                    facecolors=color if kept else "none",
                    edgecolors="white" if kept else color,
                    linewidths=0.5 if kept else 1.4,
                    alpha=0.9,
                    zorder=3,
                )
    fault_pts = [r for r in measured if r["case_id"] in faults]
    if fault_pts:
        ax.scatter(
            [r["variability"] for r in fault_pts],
            [r["dad"] for r in fault_pts],
            s=230,
            facecolors="none",
            edgecolors="black",
            linewidths=1.4,
            zorder=4,
        )
        _annotate_faults(ax, fault_pts, faults)
    if not measured:
        ax.text(
            0.5, 0.5, "no case has a measured DAD and variability", ha="center", va="center", transform=ax.transAxes
        )
    ax.set_xlabel("variability σ (population std of per-case Dice in the window)", fontsize=10)
    ax.set_ylabel("DAD (mean per-case Dice in the window)", fontsize=10)
    ax.grid(True, alpha=0.3, zorder=0)
    window = _window_text(stop_rule)
    n_missing = len(rows) - len(measured)
    title = "Data map" + (f": {window}" if window else "")
    sub = f"{len(measured)} cases plotted" + (
        f", {n_missing} without DAD/variability (not plotted)" if n_missing else ""
    )
    ax.set_title(f"{title}\n{sub}", fontsize=11)

    region_handles = [
        Line2D([], [], marker="o", ls="", color=REGION_COLORS[g], markersize=8, label=g) for g in regions_present
    ]
    region_handles += [
        Line2D([], [], marker="o", ls="", color="#555555", markersize=8, label="kept (filled)"),
        Line2D(
            [],
            [],
            marker="o",
            ls="",
            markerfacecolor="none",
            markeredgecolor="#555555",
            markeredgewidth=1.4,
            markersize=8,
            label="dropped (hollow)",
        ),
    ]
    leg1 = ax.legend(
        handles=region_handles,
        title="region",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=9,
        title_fontsize=9,
        frameon=False,
    )
    ax.add_artist(leg1)
    center_handles = [
        Line2D([], [], marker=m, ls="", color="#444444", markersize=8, label=c) for c, m in markers.items()
    ]
    if faults:
        center_handles.append(
            Line2D(
                [], [], marker="o", ls="", markerfacecolor="none", markeredgecolor="black", markersize=13,
                label="planted fault",
            )
        )  # fmt: skip
    ax.legend(
        handles=center_handles,
        title="center",
        loc="lower left",
        bbox_to_anchor=(1.01, 0.0),
        fontsize=9,
        title_fontsize=9,
        frameon=False,
    )
    fig.subplots_adjust(left=0.08, right=0.80, top=0.88, bottom=0.1)
    return _save_png(fig, path)


def plot_moving_distance(curve: Sequence[Mapping], stop_rule: Mapping | None, path: Path) -> Path:
    fig = Figure(figsize=(9, 5.4))
    ax = fig.add_subplot(1, 1, 1)
    ends = np.array([np.nan if r["epoch_end"] is None else r["epoch_end"] for r in curve], dtype=float)
    d_abs = np.array([r["distance_abs"] for r in curve], dtype=float)
    d_sig = np.array([r["distance_signed"] for r in curve], dtype=float)
    d_used = np.array([r["distance"] for r in curve], dtype=float)
    rule = (stop_rule or {}).get("rule", "moving_distance")
    used_name = (stop_rule or {}).get("distance", "")
    if str(used_name).startswith("abs"):
        d_used = np.where(np.isnan(d_used), d_abs, d_used)
    elif str(used_name).startswith("sig"):
        d_used = np.where(np.isnan(d_used), d_sig, d_used)

    plotted = False
    for values, label, style in (
        (d_abs, "L absolute  Σ(|Δμ|+|Δσ|)", {"color": "#1f77b4", "marker": "o"}),
        (d_sig, "L signed  Σ(Δμ+Δσ)  (paper's code)", {"color": "#ff7f0e", "marker": "s"}),
    ):
        ok = ~np.isnan(values) & ~np.isnan(ends)
        if ok.any():
            ax.plot(ends[ok], values[ok], label=label, lw=1.8, markersize=6, **style)
            plotted = True
    if not plotted:
        first = curve[0] if curve else {}
        ax.text(
            0.5,
            0.5,
            "no moving distance yet: L needs two windows"
            + (f"\n(one window, epochs {first.get('epoch_start')}–{first.get('epoch_end')})" if curve else ""),
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=11,
        )
        if not np.isnan(ends).all():
            lo, hi = np.nanmin(ends), np.nanmax(ends)
            ax.set_xlim(lo - 5, hi + 5)
    if np.nanmin(np.append(d_sig, np.inf)) < 0:
        ax.axhline(0.0, color="grey", lw=0.8)

    fired = bool(stop_rule.get("fired")) if stop_rule else any(r["stop"] for r in curve)
    prune_epoch = (stop_rule or {}).get("prune_epoch")
    if prune_epoch is None:
        stopped = [r["epoch_end"] for r in curve if r["stop"] and r["epoch_end"] is not None]
        prune_epoch = stopped[0] if stopped else None

    fraction = (stop_rule or {}).get("stop_fraction")
    if stop_rule and fraction is not None and rule == "moving_distance" and not np.isnan(d_used).all():
        if fired and prune_epoch is not None:
            at = [
                r["max_distance"] for r in curve if r["epoch_end"] == prune_epoch and not math.isnan(r["max_distance"])
            ]
            max_d = at[0] if at else float(np.nanmax(d_used))
        else:
            max_d = float(np.nanmax(d_used))
        threshold = float(fraction) * max_d
        ax.axhline(
            threshold,
            color="black",
            ls="--",
            lw=1.2,
            label=f"stop threshold {float(fraction):g} × max L ({used_name or 'rule'}) = {threshold:.3g}",
        )
    if fired and prune_epoch is not None:
        ax.axvline(float(prune_epoch), color="#d62728", ls="-", lw=1.5, label=f"prune epoch {prune_epoch}")
        at_stop = [i for i, e in enumerate(ends) if e == float(prune_epoch) and not math.isnan(d_used[i])]
        if at_stop:  # the deciding value is often too small to read off a linear axis: print it
            i = at_stop[0]
            ax.annotate(
                f"L = {d_used[i]:.3g} at epoch {prune_epoch}",
                (ends[i], d_used[i]),
                xytext=(8, 18),
                textcoords="offset points",
                fontsize=9,
                color="#d62728",
                arrowprops={"arrowstyle": "-", "color": "#d62728", "lw": 0.8},
            )

    tick_ends = sorted({int(e) for e in ends[~np.isnan(ends)]})
    if 0 < len(tick_ends) <= 15:
        ax.set_xticks(tick_ends)  # one tick per window end
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("window end epoch", fontsize=10)
    ax.set_ylabel("moving distance L between consecutive windows", fontsize=10)
    ax.grid(True, alpha=0.3)
    dt = (stop_rule or {}).get("delta_t")
    title = "Moving distance of the data map" + (f" (Δt = {dt} epochs)" if dt else "")
    if stop_rule is None:
        title += "\nno stop_rule.json given"
    elif fired:
        title += f"\nstop rule '{rule}' fired: prune at epoch {prune_epoch}"
    else:
        end = stop_rule.get("last_window_end")
        title += f"\nstop rule '{rule}' did NOT fire" + (f" by epoch {end}" if end is not None else "")
    ax.set_title(title, fontsize=11)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=9, loc="best", framealpha=0.9)
    fig.tight_layout()
    return _save_png(fig, path)


def center_table(rows: Sequence[Mapping]) -> list[dict[str, Any]]:
    """Per center: cases, kept, dropped, counts per region, missing DAD."""
    out = []
    for center in sorted({r["center"] for r in rows}, key=_natural_key):
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


def plot_center_counts(rows: Sequence[Mapping], path: Path) -> Path:
    table = center_table(rows)
    groups = [*REGIONS, "unassigned", "missing"]
    colors = {**REGION_COLORS, "missing": "#d9d9d9"}
    present = [g for g in groups if any(t[g] for t in table)]
    fig = Figure(figsize=(max(6.5, 1.6 * len(table) + 3.5), 5.2))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(table), dtype=float)
    width = 0.38
    for offset, which, hatch in ((-width / 2 - 0.01, "kept", ""), (width / 2 + 0.01, "dropped", "//")):
        bottom = np.zeros(len(table))
        for g in present:
            h = np.array([t[f"{which}_by_region"].get(g, 0) for t in table], dtype=float)
            ax.bar(x + offset, h, width, bottom=bottom, color=colors[g], hatch=hatch, edgecolor="white", linewidth=0.8)
            bottom += h
        for xi, total in zip(x + offset, bottom):
            ax.text(xi, total, f"{which}\n{int(total)}", ha="center", va="bottom", fontsize=8.5)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{t['center']}\n(n={t['cases']})" for t in table], fontsize=10)
    ax.set_ylabel("cases", fontsize=10)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    top = max([t["kept"] for t in table] + [t["dropped"] for t in table] + [1])
    ax.set_ylim(0, top * 1.25 + 0.5)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    handles = [Patch(facecolor=colors[g], label="missing DAD" if g == "missing" else g) for g in present]
    handles += [
        Patch(facecolor="white", edgecolor="#444444", label="kept (solid)"),
        Patch(facecolor="white", edgecolor="#444444", hatch="//", label="dropped (hatched)"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    kept = sum(t["kept"] for t in table)
    ax.set_title(f"Kept vs dropped per center, by region ({kept} of {len(rows)} cases kept)", fontsize=11)
    fig.tight_layout()
    return _save_png(fig, path)


def _load_volume(path: Any) -> np.ndarray:
    import nibabel as nib

    data = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    data = np.squeeze(data)
    if data.ndim == 4:  # channel-last multi-channel image: show the first channel
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    return data


def target_slice(label: np.ndarray | None, depth: int) -> int:
    """Index along the last axis with the most label voxels; the middle slice when the label is empty."""
    if label is None or label.ndim < 1 or not np.any(label > 0):
        return depth // 2
    counts = (label > 0).reshape(-1, label.shape[-1]).sum(axis=0)
    return int(np.argmax(counts))


def robust_window(img: np.ndarray) -> tuple[float, float]:
    """Grey-level window. A slice with a sizeable dark background (>= 10% of voxels within 5% of the
    range above the darkest, e.g. air around a CT body) gets the 1st-99.5th percentile of its bright
    "body" (voxels above the midpoint of the 1st and 99th percentiles), so the background does not wash
    out soft-tissue contrast; other slices (e.g. an MRI crop that is all tissue) their 1st-99th."""
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [1, 99])
    if np.mean(finite <= lo + 0.05 * (hi - lo)) >= 0.1:
        body = finite[finite > 0.5 * (lo + hi)]
        if body.size >= 0.1 * finite.size:
            lo, hi = np.percentile(body, [1, 99.5])
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def _montage_panel(ax, entry: Mapping | None, row: Mapping, fault: str | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    title = f"{row['case_id']} · {row['center']}\nDAD {_fmt(row['dad'])}" + (f" · FAULT: {fault}" if fault else "")
    ax.set_title(title, fontsize=8.5, color="#b00000" if fault else "black")
    if entry is None:
        ax.text(0.5, 0.5, "not in datalist", ha="center", va="center", transform=ax.transAxes, fontsize=9)
        return
    try:
        image = _load_volume(entry["image"])
        label = _load_volume(entry["label"]) if entry.get("label") else None
    except Exception as err:  # a broken file must not sink the whole report
        ax.text(0.5, 0.5, f"cannot read:\n{type(err).__name__}", ha="center", va="center", transform=ax.transAxes)
        return
    if label is not None and label.shape != image.shape:
        label = None
    z = target_slice(label, image.shape[-1])
    img = image[..., z]
    lo, hi = robust_window(img)
    ax.imshow(img.T, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
    if label is not None:
        lab = (label[..., z] > 0).astype(float)
        if lab.any() and not lab.all():
            ax.contour(lab.T, levels=[0.5], colors=["#ffd400"], linewidths=1.4, origin="lower")
        elif not lab.any():
            ax.text(
                0.5, 0.95, "empty label", color="#ffd400", fontsize=8, ha="center", va="top", transform=ax.transAxes
            )
    ax.text(
        0.02, 0.02, f"z={z}", color="white", fontsize=7, transform=ax.transAxes, va="bottom", ha="left"
    )  # fmt: skip


def plot_montage(
    rows: Sequence[Mapping],
    datalist: Mapping[str, Mapping],
    faults: Mapping[str, str],
    n: int,
    path: Path,
) -> Path:
    easiest, hardest = montage_picks(rows, n)
    by_id = {r["case_id"]: r for r in rows}
    ncols = max(len(easiest), len(hardest), 1)
    fig = Figure(figsize=(2.6 * ncols + 0.6, 6.6))
    axes = fig.subplots(2, ncols, squeeze=False)
    for r_idx, (name, ids) in enumerate((("easiest (highest DAD)", easiest), ("hardest (lowest DAD)", hardest))):
        for c_idx in range(ncols):
            ax = axes[r_idx][c_idx]
            if c_idx < len(ids):
                cid = ids[c_idx]
                _montage_panel(ax, datalist.get(cid), by_id[cid], faults.get(cid))
            else:
                ax.axis("off")
            if c_idx == 0:
                ax.set_ylabel(name, fontsize=10, fontweight="bold")
    fig.suptitle(
        "Easiest and hardest cases: slice with the most label voxels (last axis), label outline in yellow",
        fontsize=11,
    )
    fig.subplots_adjust(left=0.6 / fig.get_figwidth(), right=0.99, top=0.86, bottom=0.02, wspace=0.08, hspace=0.3)
    return _save_png(fig, path)


# ----------------------------------------------------------------------------------------------- markdown
def _markdown(
    title: str,
    rows: Sequence[Mapping],
    faults: Mapping[str, str] | None,
    stop_rule: Mapping | None,
    figures: Mapping[str, Path | None],
    skipped: Mapping[str, str],
    notes: Sequence[str],
    inputs: Mapping[str, Any],
) -> str:
    n = len(rows)
    kept = sum(r["kept"] for r in rows)
    regions = Counter(r["region"] or "missing" for r in rows)
    centers = Counter(r["center"] for r in rows)
    missing = [r for r in rows if math.isnan(r["dad"])]
    lines = [f"# {title}", ""]
    region_text = ", ".join(f"{regions[g]} {g}" for g in (*REGIONS, "unassigned", "missing") if regions.get(g))
    center_text = ", ".join(f"{centers[c]} from {c}" for c in sorted(centers, key=_natural_key))
    lines += [
        f"The selection holds **{n} training cases**, of which **{kept} are kept** and {n - kept} dropped. "
        f"By region: {region_text}. By center: {center_text}.",
        "",
    ]

    lines += ["## Stop rule", ""]
    if stop_rule is None:
        lines += ["No stop_rule.json was given.", ""]
    else:
        rule = stop_rule.get("rule", "?")
        if stop_rule.get("fired"):
            lines.append(f"The stop rule (`{rule}`) **fired**: prune epoch **{stop_rule.get('prune_epoch')}**.")
        else:
            lines.append(
                f"The stop rule (`{rule}`) **did not fire** (last window ends at epoch "
                f"{stop_rule.get('last_window_end')})."
            )
        details = ", ".join(
            f"{k} = {stop_rule[k]}" for k in ("delta_t", "stop_fraction", "distance") if stop_rule.get(k) is not None
        )
        if details:
            lines.append(f"Parameters: {details}.")
        if stop_rule.get("note"):
            lines.append(f"Note: {stop_rule['note']}")
        lines.append("")

    if faults is not None:
        fs = fault_summary(rows, faults)
        lines += ["## Planted label faults", ""]
        lines.append(
            f"**{fs['k_hard']} of {fs['m']} planted faults are among the {fs['n_hard']} hardest cases** "
            f"(the hard-to-learn region; {fs['chance_hard']:.1f} expected by chance). "
            f"**{fs['k_dropped']} of {fs['m']} planted faults were dropped** "
            f"({fs['n_dropped']} of {fs['n_cases']} cases dropped in all)."
        )
        if fs["unmeasured"]:
            lines.append(f"Faulty cases with no DAD: {', '.join(fs['unmeasured'])}.")
        if fs["not_in_selection"]:
            lines.append(
                f"{len(fs['not_in_selection'])} manifest entries are not in the selection: "
                f"{', '.join(fs['not_in_selection'])}."
            )
        lines.append("")
        if fs["m"]:
            by_id = {r["case_id"]: r for r in rows}
            lines += ["| case | center | kind | DAD | rank | region | kept |", "|---|---|---|---|---|---|---|"]
            for cid in sorted((c for c in faults if c in by_id), key=lambda c: (by_id[c]["rank"] or 10**9, c)):
                r = by_id[cid]
                lines.append(
                    f"| {_md_cell(cid)} | {_md_cell(r['center'])} | {_md_cell(faults[cid])} | {_fmt(r['dad'])} | "
                    f"{r['rank'] if r['rank'] is not None else '–'} | {r['region'] or '–'} | "
                    f"{'yes' if r['kept'] else 'no'} |"
                )
            lines.append("")

    lines += ["## Per center", ""]
    table = center_table(rows)
    names = {"missing": "missing DAD"}
    cols = ["cases", "kept", "dropped", *REGIONS]
    cols += [g for g in ("unassigned", "missing") if any(t[g] for t in table)]
    lines += ["| center | " + " | ".join(names.get(c, c) for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for t in table:
        lines.append("| " + " | ".join([_md_cell(t["center"]), *(str(t[c]) for c in cols)]) + " |")
    lines += ["| **all** | " + " | ".join(str(sum(t[c] for t in table)) for c in cols) + " |", ""]

    hardest = _measured(rows)[:10]
    lines += [f"## The {len(hardest)} hardest cases (lowest DAD)", ""]
    if hardest:
        lines += [
            "| rank | case | center | DAD | variability | region | kept | fault |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in hardest:
            fault = (faults or {}).get(r["case_id"], "")
            rank = r["rank"] if r["rank"] is not None else "–"
            lines.append(
                f"| {rank} | {_md_cell(r['case_id'])} | {_md_cell(r['center'])} | {_fmt(r['dad'])} | "
                f"{_fmt(r['variability'])} | {r['region']} | {'yes' if r['kept'] else 'no'} | "
                f"{_md_cell(fault) or '–'} |"
            )
    else:
        lines.append("No case has a measured DAD.")
    lines.append("")

    lines += ["## Cases with missing DAD", ""]
    if missing:
        lines.append(
            f"{len(missing)} case(s) were never measured (no DAD; not plotted): "
            + ", ".join(f"{r['case_id']} ({r['center']}, {'kept' if r['kept'] else 'dropped'})" for r in missing)
            + "."
        )
    else:
        lines.append("None: every case has a DAD.")
    lines.append("")

    lines += ["## Figures", ""]
    captions = {
        "data_map": "data map",
        "moving_distance": "moving distance",
        "center_counts": "center counts",
        "montage": "montage",
    }
    for key, fig_path in figures.items():
        if fig_path is not None:
            lines += [f"### {captions[key].capitalize()}", "", f"![{captions[key]}]({fig_path.name})", ""]
        else:
            lines += [f"### {captions[key].capitalize()}", "", f"Skipped: {skipped.get(key, 'not produced')}.", ""]

    if notes:
        lines += ["## Warnings", "", *(f"- {m}" for m in notes), ""]
    lines += ["## Inputs", ""]
    lines += [f"- {k}: `{v}`" if v is not None else f"- {k}: (not given)" for k, v in inputs.items()]
    lines.append("")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- entry
def make_report(
    selection_csv,
    out_dir,
    curve_csv=None,
    stop_rule_json=None,
    faults_csv=None,
    datalist_json=None,
    montage_cases: int = 4,
    title: str = "DAD audit report",
) -> Path:
    """Writes PNGs + report.md into out_dir; returns the path of report.md.

    Args:
        selection_csv: ``case_id,center,dad,variability,region,rank,kept`` per training case.
        out_dir: folder for ``data_map.png``, ``moving_distance.png``, ``center_counts.png``,
            ``montage.png`` and ``report.md`` (created if needed).
        curve_csv: moving_distance.csv; absent -> no moving-distance figure.
        stop_rule_json: stop_rule.json; used for titles, the threshold line and the summary.
        faults_csv: manifest of planted label faults ``case_id,center,kind``; absent -> no fault audit.
        datalist_json: Decathlon-style data set JSON ("training" list); absent -> no montage.
        montage_cases: how many easiest and how many hardest cases the montage shows.
        title: the report's title.
    """
    notes: list[str] = []
    rows = read_selection(selection_csv)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    curve_path = _optional(curve_csv, "curve_csv", notes)
    stop_path = _optional(stop_rule_json, "stop_rule_json", notes)
    faults_path = _optional(faults_csv, "faults_csv", notes)
    datalist_path = _optional(datalist_json, "datalist_json", notes)

    stop_rule = json.loads(stop_path.read_text()) if stop_path else None
    faults = read_faults(faults_path) if faults_path else None
    figures: dict[str, Path | None] = dict.fromkeys(FIGURES)
    skipped: dict[str, str] = {}

    figures["data_map"] = plot_data_map(rows, faults or {}, stop_rule, out / FIGURES["data_map"])

    curve = read_curve(curve_path) if curve_path else []
    if curve:
        figures["moving_distance"] = plot_moving_distance(curve, stop_rule, out / FIGURES["moving_distance"])
    else:
        skipped["moving_distance"] = "no moving-distance curve given" if not curve_path else "the curve file is empty"

    figures["center_counts"] = plot_center_counts(rows, out / FIGURES["center_counts"])

    if datalist_path is None:
        skipped["montage"] = "no datalist_json given, so no images to show"
    elif int(montage_cases) <= 0:
        skipped["montage"] = "montage_cases is 0"
    elif not _measured(rows):
        skipped["montage"] = "no case has a measured DAD"
    else:
        datalist = _read_datalist(datalist_path)
        figures["montage"] = plot_montage(rows, datalist, faults or {}, int(montage_cases), out / FIGURES["montage"])

    for key, produced in figures.items():  # a stale figure from an earlier run must not pass for this one
        if produced is None:
            (out / FIGURES[key]).unlink(missing_ok=True)

    inputs = {
        "selection_csv": selection_csv,
        "curve_csv": curve_csv,
        "stop_rule_json": stop_rule_json,
        "faults_csv": faults_csv,
        "datalist_json": datalist_json,
    }
    text = _markdown(title, rows, faults, stop_rule, figures, skipped, notes, inputs)
    return write_text_atomic(out / "report.md", text)


if __name__ == "__main__":
    import fire

    fire.Fire(make_report)
