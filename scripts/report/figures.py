"""Figures of the audit report (matplotlib, each PNG written atomically): the data map, the moving
distance, kept vs dropped per center, and the montage of the easiest and hardest cases."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from scripts.report.inputs import REGIONS, center_table, fmt, montage_picks, natural_key
from scripts.utils.atomic import atomic_output

__all__ = [
    "plot_center_counts",
    "plot_data_map",
    "plot_montage",
    "plot_moving_distance",
    "robust_window",
    "target_slice",
]

REGION_COLORS: dict[str, str] = {"hard": "#d62728", "ambiguous": "#1f77b4", "easy": "#2ca02c", "unassigned": "#7f7f7f"}

CENTER_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")

DPI = 110


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
    ordered = sorted(set(centers), key=natural_key)
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
    title = f"{row['case_id']} · {row['center']}\nDAD {fmt(row['dad'])}" + (f" · FAULT: {fault}" if fault else "")
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
    rows: Sequence[Mapping], datalist: Mapping[str, Mapping], faults: Mapping[str, str], n: int, path: Path
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
        "Easiest and hardest cases: slice with the most label voxels (last axis), label outline in yellow", fontsize=11
    )
    fig.subplots_adjust(left=0.6 / fig.get_figwidth(), right=0.99, top=0.86, bottom=0.02, wspace=0.08, hspace=0.3)
    return _save_png(fig, path)
