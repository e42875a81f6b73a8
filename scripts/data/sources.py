"""What the sources of a combined data list (``scripts.data.combine``) must agree on.

- Each image file belongs to one case: the same file listed by two sources (or twice in one, with another
  label) would be split on its own in each, so it could train under one case id and be tested under the
  other. It is a problem naming both cases, found on the files themselves (a symlink or another path to
  the same file counts), before anything is written.
- One ``labels`` for the combined list, merged from the sources' own (MSD's ``{"0": "background"}`` or
  nnU-Net v2's ``{"background": 0}``): training without a preset counts its classes from it. A value the
  sources name differently is kept under both names and warned about.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["merged_labels", "shared_images"]


def _file_key(path: str) -> tuple[Any, ...]:
    """The same key for every path to one file: its device and inode, else its resolved path."""
    try:
        stat = os.stat(path)
        return ("inode", stat.st_dev, stat.st_ino)
    except OSError:  # a missing file: the combine checks name it
        return ("path", os.path.realpath(path))


def shared_images(cases: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """Problems: every image file of ``{source: cases}`` (``image``, ``source_case_id``) listed by a
    second case, naming both sources, cases and the fix."""
    first: dict[tuple[Any, ...], tuple[str, str]] = {}
    problems = []
    for source, entries in cases.items():
        for case in entries:
            key = _file_key(str(case["image"]))
            if key not in first:
                first[key] = (source, str(case["source_case_id"]))
                continue
            other_source, other_case = first[key]
            problems.append(
                f"source {source!r}, case {case['source_case_id']!r}: its image {case['image']} is also source "
                f"{other_source!r}'s case {other_case!r}: combined, one image could train under one case id and be "
                "tested under the other; fix: list each image in one source only (drop it from one data list)"
            )
    return problems


def _by_value(labels: Mapping[str, Any]) -> dict[int, str] | None:
    """``{value: name}`` from MSD's or nnU-Net v2's form; None for a form with other values (regions)."""
    try:
        if all(str(k).strip().isdigit() for k in labels):
            return {int(k): str(v) for k, v in labels.items()}
        return {int(v): str(k) for k, v in labels.items()}
    except (TypeError, ValueError):
        return None


def merged_labels(
    source_labels: Mapping[str, Mapping[str, Any] | None], names: Sequence[str]
) -> tuple[dict[str, str] | None, list[str]]:
    """(the combined list's ``labels`` in MSD's form, warnings): every value any source names, under its
    name (names joined with " / " where the sources disagree); None when no source gives usable labels."""
    warnings, values = [], {}
    for name in names:
        labels = source_labels.get(name)
        by_value = _by_value(labels) if isinstance(labels, Mapping) and labels else None
        if by_value is None:
            given = "gives no labels" if not labels else f"has labels {dict(labels)} that are not value -> name"
            warnings.append(f"source {name!r} {given}: its label values are checked against the other sources' labels")
            continue
        for value, label in by_value.items():
            values.setdefault(value, {}).setdefault(label, []).append(name)
    merged = {}
    for value in sorted(values):
        named = values[value]
        if len(named) > 1:
            told = ", ".join(f"{' and '.join(map(repr, srcs))}: {label!r}" for label, srcs in named.items())
            warnings.append(
                f"label {value} is named differently by the sources ({told}): check that it is the same structure "
                "in each, or map the labels with a preset's label_transforms"
            )
        merged[str(value)] = " / ".join(named)
    return (merged or None), warnings
