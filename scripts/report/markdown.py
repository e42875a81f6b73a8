"""Audit report of a DAD data-pruning run: matplotlib PNGs (``scripts.report.figures``) plus a Markdown
summary that links them (here); the inputs and summaries are in ``scripts.report.inputs``.

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

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scripts.report.figures import (
    plot_center_counts,
    plot_data_map,
    plot_montage,
    plot_moving_distance,
    robust_window,
    target_slice,
)
from scripts.report.inputs import (
    REGIONS,
    center_table,
    fault_summary,
    fmt,
    measured,
    montage_picks,
    natural_key,
    optional_input,
    read_curve,
    read_datalist,
    read_faults,
    read_selection,
)
from scripts.utils.atomic import write_text_atomic

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

FIGURES: dict[str, str] = {
    "data_map": "data_map.png",
    "moving_distance": "moving_distance.png",
    "center_counts": "center_counts.png",
    "montage": "montage.png",
}


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


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
    center_text = ", ".join(f"{centers[c]} from {c}" for c in sorted(centers, key=natural_key))
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
                    f"| {_md_cell(cid)} | {_md_cell(r['center'])} | {_md_cell(faults[cid])} | {fmt(r['dad'])} | "
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

    hardest = measured(rows)[:10]
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
                f"| {rank} | {_md_cell(r['case_id'])} | {_md_cell(r['center'])} | {fmt(r['dad'])} | "
                f"{fmt(r['variability'])} | {r['region']} | {'yes' if r['kept'] else 'no'} | "
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

    curve_path = optional_input(curve_csv, "curve_csv", notes)
    stop_path = optional_input(stop_rule_json, "stop_rule_json", notes)
    faults_path = optional_input(faults_csv, "faults_csv", notes)
    datalist_path = optional_input(datalist_json, "datalist_json", notes)

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
    elif not measured(rows):
        skipped["montage"] = "no case has a measured DAD"
    else:
        datalist = read_datalist(datalist_path)
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
