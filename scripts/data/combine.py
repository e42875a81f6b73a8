"""Combine labelled data sets (centers) into one seeded Decathlon-style datalist.

Each source is a Decathlon-style folder (``dataset.json`` beside ``imagesTr/`` ...) or a datalist
JSON. Its labelled cases (the "training" list plus labelled entries of any other list) are tagged with
``center`` = the source name, get case ids ``{source}_{stem}`` (unique across sources), are checked
(files exist, image and label shapes agree: NIfTI headers only) and are split per source: test part
first (``test_fraction``), then a validation part out of the rest (``val_fraction``). One JSON with
absolute paths and lists ``training``, ``validation``, ``test`` is written atomically.

CLI (fire)::

    python -m scripts.data.combine --out combined/datalist.json \\
        --sources "{'msd': 'data/Task07_Pancreas', 'nih': 'data/nih/datalist.json'}" \\
        [--test_fraction 0.2 --val_fraction 0.1 --seed 0 --max_cases "{'msd': 100}" --nocheck]
    python -m scripts.data.combine --out combined/datalist.json --sources msd=data/Task07_Pancreas,nih=...

    # pair converted images with labels into a datalist JSON (e.g. NIH Pancreas-CT)
    python -m scripts.data.combine datalist --images_dir nih/images --labels_dir nih/labels --out nih/datalist.json

A source's split depends only on (seed, source name, its set of case ids): adding or removing another
source never reshuffles it.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import warnings
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scripts.data.case_ids import case_id_of
from scripts.data.sources import merged_labels, shared_images
from scripts.utils.atomic import write_json_atomic
from scripts.utils.errors import InputError
from scripts.utils.jsonfile import read_json

__all__ = [
    "CombineError",
    "check_cases",
    "combine_sources",
    "ensure_combined",
    "make_datalist",
    "parse_sources",
    "read_source",
    "split_counts",
]

DATASET_JSON = "dataset.json"
NIFTI_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".img", ".hdr")
FORMAT = "scripts.data.combine/1"
_MAX_LISTED = 20  # problems listed in one error message


class CombineError(InputError):
    """A source cannot be combined: missing files, shape mismatches, duplicate ids, an image in two sources,
    bad arguments (an ``InputError``: a config that combines its sources shows it as one last line)."""


# --------------------------------------------------------------------------- arguments


def parse_sources(sources: Mapping[str, Any] | str) -> dict[str, str]:
    """``{'msd': path}``, or the string forms ``"msd=path,nih=path"`` / ``"{'msd': 'path'}"``."""
    if isinstance(sources, str):
        text = sources.strip()
        if text.startswith("{"):
            import ast

            sources = ast.literal_eval(text)
        else:
            pairs = [p for p in text.split(",") if p.strip()]
            parsed = {}
            for pair in pairs:
                name, sep, path = pair.partition("=")
                if not sep or not name.strip() or not path.strip():
                    raise CombineError(f"sources: expected name=path, got {pair!r}")
                parsed[name.strip()] = path.strip()
            sources = parsed
    if not isinstance(sources, Mapping) or not sources:
        raise CombineError(f"sources must be a non-empty mapping of name -> path, got {sources!r}")
    out = {}
    for name, path in sources.items():
        name = str(name)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise CombineError(f"source name {name!r}: use letters, digits, '_', '-', '.' (it prefixes case ids)")
        out[name] = str(path)
    return out


def _per_source(value: Any, names: list[str], what: str) -> dict[str, int | None]:
    """An int/None for every source, from one value or a per-source mapping (missing -> None)."""
    if value is None or isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return {n: None if value is None else int(value) for n in names}
    if isinstance(value, str):
        import ast

        value = ast.literal_eval(value)
    if not isinstance(value, Mapping):
        raise CombineError(f"{what} must be an int, a mapping of source -> int, or None; got {value!r}")
    unknown = sorted(set(map(str, value)) - set(names))
    if unknown:  # e.g. a preset's {'msd': 100, 'word': 100} when only msd and nih are combined
        warnings.warn(f"{what}: ignoring sources that are not combined: {unknown}", stacklevel=3)
    return {n: None if value.get(n) is None else int(value[n]) for n in names}


def _check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise CombineError(f"{name} must be in [0, 1), got {value}")
    return value


# --------------------------------------------------------------------------- reading


def _abs(base: Path, value: str) -> str:
    return os.path.abspath(os.path.join(base, value))


def read_source(name: str, path: str | os.PathLike) -> list[dict]:
    """The labelled cases of one source, with absolute paths, ``case_id`` and ``center``.

    ``path`` is a Decathlon folder (with ``dataset.json``) or a datalist JSON; relative paths in it are
    relative to the JSON's folder (as in MONAI's ``load_decathlon_datalist``). Every list of the JSON is
    read; entries without a label (e.g. Decathlon "test" lists of image paths) are skipped.
    """
    path = Path(path)
    if path.is_dir():
        json_path = path / DATASET_JSON
        if not json_path.is_file():
            raise CombineError(f"source {name!r}: folder {path} has no {DATASET_JSON}")
    elif path.is_file():
        json_path = path
    else:
        raise CombineError(f"source {name!r}: no such folder or datalist JSON: {path}")
    try:
        content = read_json(json_path)
    except InputError as e:
        raise CombineError(f"source {name!r}: {e}") from e
    if not isinstance(content, dict):
        raise CombineError(f"source {name!r}: {json_path} is not a Decathlon-style JSON object")
    base = json_path.parent
    keys = ["training"] + [k for k in content if k != "training"]
    cases: list[dict] = []
    seen_pairs: set[tuple[str, str]] = set()
    ids: dict[str, str] = {}
    for key in keys:
        items = content.get(key)
        if not isinstance(items, list):
            continue
        for item in items:
            if not isinstance(item, dict) or "image" not in item or item.get("label") in (None, ""):
                continue  # unlabelled
            if not isinstance(item["image"], str) or not isinstance(item["label"], str):
                raise CombineError(f"source {name!r}: list {key!r}: only one image file per case is supported")
            image, label = _abs(base, item["image"]), _abs(base, item["label"])
            if (image, label) in seen_pairs:
                continue  # the same case listed twice (e.g. in training and validation)
            seen_pairs.add((image, label))
            stem = str(item.get("case_id") or case_id_of(image))
            if stem in ids:
                raise CombineError(
                    f"source {name!r}: duplicate case id {stem!r} ({ids[stem]} and {image}); give entries unique "
                    "'case_id' values or unique file names"
                )
            ids[stem] = image
            entry = {k: v for k, v in item.items() if k not in ("image", "label", "case_id", "center")}
            if "center" in item and item["center"] != name:
                entry["source_center"] = item["center"]
            entry.update(
                image=image, label=label, case_id=f"{name}_{stem}", center=name, source_case_id=stem, source_list=key
            )
            cases.append(entry)
    if not cases:
        raise CombineError(f"source {name!r}: no labelled cases in {json_path}")
    return cases


def spatial_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The first three axes; a trailing singleton (x, y, z, 1) counts as 3D."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape[:3]


def check_cases(name: str, cases: list[dict], affine_atol: float = 1e-3) -> list[str]:
    """Problems of one source's cases: missing files, image/label shapes that disagree.

    Reads NIfTI headers only (nibabel loads lazily). Other formats are checked for existence only.
    Affines that disagree are warned about (the arrays would be misaligned), not errors.
    """
    import nibabel as nib

    problems = []
    for case in cases:
        cid = case["source_case_id"]
        missing = [f"{k} file not found: {case[k]}" for k in ("image", "label") if not Path(case[k]).is_file()]
        if missing:
            problems += [f"source {name!r}, case {cid!r}: {m}" for m in missing]
            continue
        if not all(case[k].endswith(NIFTI_SUFFIXES) for k in ("image", "label")):
            continue
        try:
            img, lab = nib.load(case["image"]), nib.load(case["label"])
        except Exception as e:  # a corrupt or non-NIfTI file
            problems.append(f"source {name!r}, case {cid!r}: unreadable header: {e}")
            continue
        if spatial_shape(img.shape) != spatial_shape(lab.shape):
            problems.append(
                f"source {name!r}, case {cid!r}: image shape {tuple(img.shape)} != label shape {tuple(lab.shape)}"
            )
        elif not np.allclose(img.affine, lab.affine, atol=affine_atol, rtol=1e-4):
            warnings.warn(
                f"source {name!r}, case {cid!r}: image and label affines differ; check the orientation of the "
                f"converted files\nimage:\n{img.affine}\nlabel:\n{lab.affine}",
                stacklevel=2,
            )
    return problems


# --------------------------------------------------------------------------- splitting


def split_counts(n: int, test_fraction: float, val_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) case counts for a source of ``n`` cases.

    test = round(test_fraction * n); val = round(val_fraction * (n - test)), at least 1 when n >= 5 and
    val_fraction > 0; training always keeps at least one case. Rounding is half-up.
    """
    test = min(math.floor(test_fraction * n + 0.5), max(n - 1, 0))
    rest = n - test
    val = math.floor(val_fraction * rest + 0.5)
    if val_fraction > 0 and n >= 5:
        val = max(val, 1)
    val = min(val, max(rest - 1, 0))
    return rest - val, val, test


def _source_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def _split(
    name: str,
    cases: list[dict],
    test_fraction: float,
    val_fraction: float,
    seed: int,
    max_cases: int | None,
    keep_test: bool = False,
) -> dict[str, list[dict]]:
    given_test = [c for c in cases if c.get("source_list") == "test"] if keep_test else []
    if given_test:  # the source's own labelled test list stays its test set; the rest gives training and validation
        rest = _split(name, [c for c in cases if c.get("source_list") != "test"], 0.0, val_fraction, seed, max_cases)
        return {**rest, "test": sorted(given_test, key=lambda c: c["case_id"])}
    ordered = sorted(cases, key=lambda c: c["case_id"])
    order = _source_rng(seed, name).permutation(len(ordered))
    if max_cases is not None:
        if max_cases < 1:
            raise CombineError(f"source {name!r}: max_cases must be >= 1, got {max_cases}")
        order = order[:max_cases]
    picked = [ordered[i] for i in order]
    n_train, n_val, n_test = split_counts(len(picked), test_fraction, val_fraction)
    parts = {
        "test": picked[:n_test],
        "validation": picked[n_test : n_test + n_val],
        "training": picked[n_test + n_val :],
    }
    return {k: sorted(v, key=lambda c: c["case_id"]) for k, v in parts.items()}


# --------------------------------------------------------------------------- combining


def _settings(
    sources: dict[str, str], test_fraction: float, val_fraction: float, seed: int, max_cases: dict
) -> dict[str, Any]:
    return {
        "sources": {n: os.path.abspath(p) for n, p in sources.items()},
        "seed": int(seed),
        "test_fraction": test_fraction,
        "val_fraction": val_fraction,
        "max_cases": {n: m for n, m in max_cases.items() if m is not None} or None,
    }


def _build(
    sources: Mapping[str, Any] | str,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    check: bool,
    max_cases: Any,
    keep_test: bool = False,
) -> dict[str, Any]:
    """The combined datalist as a dict (nothing written)."""
    sources = parse_sources(sources)
    names = list(sources)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    val_fraction = _check_fraction("val_fraction", val_fraction)
    limits = _per_source(max_cases, names, "max_cases")

    lists: dict[str, list[dict]] = {"training": [], "validation": [], "test": []}
    counts: dict[str, dict[str, int]] = {}
    source_labels: dict[str, Any] = {}
    problems: list[str] = []
    read: dict[str, list[dict]] = {}
    for name in names:
        cases = read[name] = read_source(name, sources[name])
        parts = _split(name, cases, test_fraction, val_fraction, seed, limits[name], keep_test)
        if check:  # only the cases actually used (max_cases may leave some out)
            problems += check_cases(name, [c for part in parts.values() for c in part])
        for key, part in parts.items():
            lists[key] += part
        counts[name] = {"available": len(cases), **{k: len(v) for k, v in parts.items()}}
        meta_json = Path(sources[name]) / DATASET_JSON if Path(sources[name]).is_dir() else Path(sources[name])
        labels = read_json(meta_json).get("labels")
        if labels is not None:
            source_labels[name] = labels
    problems = shared_images(read) + problems
    combined_labels, cautions = merged_labels(source_labels, names)
    for caution in cautions:
        warnings.warn(caution, stacklevel=3)
    if problems:
        shown = "\n  ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise CombineError(f"{len(problems)} problem(s) found, nothing written:\n  {shown}{more}")
    return {
        "name": "+".join(names),
        **({"labels": combined_labels} if combined_labels else {}),
        "description": f"combined by {FORMAT}: per-source seeded split, center = source name",
        "tensorImageSize": "3D",
        "format": FORMAT,
        **_settings(sources, test_fraction, val_fraction, seed, limits),
        "keep_test": bool(keep_test),
        "checked": bool(check),
        "source_labels": source_labels,
        "counts": counts,
        "numTraining": len(lists["training"]),
        "numValidation": len(lists["validation"]),
        "numTest": len(lists["test"]),
        **lists,
    }


def combine_sources(
    sources: Mapping[str, Any] | str,
    out: str | os.PathLike,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    check: bool = True,
    max_cases: int | Mapping[str, int] | None = None,
    keep_test: bool = False,
) -> Path:
    """Combine ``sources`` (name -> Decathlon folder or datalist JSON) into one datalist at ``out``.

    Args:
        sources: ``{'msd': 'path/to/Task07_Pancreas', 'nih': 'path/to/nih_datalist.json'}``.
        out: the combined JSON (written atomically; parents created).
        test_fraction: part of each source held out as "test" (default 0.2: the paper's 80/20 split).
        val_fraction: part of each source's remaining cases put in "validation" (at least 1 case when
            the source has >= 5 cases and val_fraction > 0).
        seed: the split seed.
        check: check that every image and label exists and that their shapes agree (NIfTI headers).
        max_cases: use a seeded random subset of at most this many cases of a source, before splitting
            (an int for every source or ``{'msd': 100}``; the paper used 100 MSD and 100 WORD cases).
        keep_test: a source whose JSON has a labelled ``test`` list keeps it as its test set instead of
            re-splitting all its cases (its other cases give training and validation).

    Raises:
        CombineError: naming the source, case and problem; nothing is written then.
    """
    combined = _build(sources, test_fraction, val_fraction, seed, check, max_cases, keep_test)
    return write_json_atomic(out, combined)


def ensure_combined(
    out_json: str | os.PathLike,
    sources: Mapping[str, Any] | str,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    check: bool = True,
    max_cases: int | Mapping[str, int] | None = None,
    keep_test: bool = False,
) -> str:
    """The path of ``out_json``, combining the sources into it only when it does not exist yet.

    An existing file is reused as is (the split of a run never changes under it), but it must have been
    made with the same source names, seed, fractions and max_cases: otherwise ``CombineError`` (delete
    the file or choose another path). Different source folders only warn (data moved or mounted elsewhere).
    """
    out_json = Path(out_json)
    if not out_json.is_file():
        return str(combine_sources(sources, out_json, test_fraction, val_fraction, seed, check, max_cases, keep_test))
    parsed = parse_sources(sources)
    wanted = _settings(
        parsed,
        _check_fraction("test_fraction", test_fraction),
        _check_fraction("val_fraction", val_fraction),
        seed,
        _per_source(max_cases, list(parsed), "max_cases"),
    )
    try:
        have = read_json(out_json, fix="delete it to rebuild")
    except InputError as e:
        raise CombineError(str(e)) from e
    if not isinstance(have, dict) or have.get("format") != FORMAT:
        raise CombineError(f"{out_json} exists but was not written by scripts.data.combine; choose another path")
    wanted["keep_test"] = bool(keep_test)
    diffs = [k for k in ("seed", "test_fraction", "val_fraction", "max_cases") if have.get(k) != wanted[k]]
    if bool(have.get("keep_test", False)) != wanted["keep_test"]:
        diffs.append("keep_test")
    if sorted(have.get("sources", {})) != sorted(wanted["sources"]):
        diffs.insert(0, "sources")
    if diffs:
        detail = ", ".join(f"{k}: file has {have.get(k)!r}, asked {wanted[k]!r}" for k in diffs)
        raise CombineError(f"{out_json} exists with other settings ({detail}); delete it or use another output dir")
    moved = {n: p for n, p in wanted["sources"].items() if have["sources"].get(n) != p}
    if moved:
        warnings.warn(f"{out_json}: reusing the existing split; source paths differ now: {moved}", stacklevel=2)
    return str(out_json)


# --------------------------------------------------------------------------- pairing files


def _number_key(path: Path) -> str:
    """Key pairing an image with its label: the last group of digits in the file name, as an int."""
    groups = re.findall(r"\d+", case_id_of(path))
    if not groups:
        raise CombineError(f"no number in the file name {path.name}; cannot pair it")
    return str(int(groups[-1]))


def _dirs(value: str | os.PathLike | list) -> list[Path]:
    if isinstance(value, (list, tuple)):
        return [Path(v) for v in value]
    return [Path(v) for v in str(value).split(",") if v.strip()]


def make_datalist(
    images_dir: str | list[str], labels_dir: str | list[str], out: str, pattern: str = "*.nii.gz", strict: bool = True
) -> str:
    """Pair images and labels by the last number in their file names into a datalist JSON.

    E.g. NIH Pancreas-CT converted to ``PANCREAS_0001.nii.gz`` pairs with ``label0001.nii.gz``. Several
    folders may be given (a list or comma-separated, e.g. WORD's imagesTr,imagesVal,imagesTs). Case ids
    come from the image names. With ``strict`` (default) an image without label (or the reverse) or two
    files with the same number is an error; otherwise unpaired files are skipped with a warning.
    """
    images = sorted(f for d in _dirs(images_dir) for f in d.glob(pattern))
    labels = sorted(f for d in _dirs(labels_dir) for f in d.glob(pattern))
    if not images:
        raise CombineError(f"no images matching {pattern!r} in {images_dir}")
    by_key: dict[str, dict[str, list[Path]]] = {}
    for kind, files in (("image", images), ("label", labels)):
        for f in files:
            by_key.setdefault(_number_key(f), {"image": [], "label": []})[kind].append(f)
    problems, entries = [], []
    for key in sorted(by_key, key=int):
        pair = by_key[key]
        if len(pair["image"]) == 1 and len(pair["label"]) == 1:
            image, label = pair["image"][0], pair["label"][0]
            entries.append({"image": str(image.resolve()), "label": str(label.resolve()), "case_id": case_id_of(image)})
        else:
            problems.append(
                f"number {key}: images {[p.name for p in pair['image']]}, labels {[p.name for p in pair['label']]}"
            )
    if problems and strict:
        raise CombineError("unpaired files, nothing written:\n  " + "\n  ".join(problems[:_MAX_LISTED]))
    for p in problems:
        warnings.warn(f"skipped {p}", stacklevel=2)
    name = _dirs(images_dir)[0].resolve().parent.name
    write_json_atomic(out, {"name": name, "training": entries, "numTraining": len(entries)})
    return str(out)


# --------------------------------------------------------------------------- CLI


def _cli(
    out: str,
    sources: Any,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    check: bool = True,
    max_cases: Any = None,
) -> str:
    """Combine labelled sources into one seeded Decathlon-style datalist (prints counts per source).

    Args:
        out: the combined datalist JSON to write (absolute paths; lists training, validation, test).
        sources: name -> Decathlon folder or datalist JSON, as "{'msd': 'dir', 'nih': 'list.json'}" or
            msd=dir,nih=list.json. The name becomes each case's center and case-id prefix.
        test_fraction: part of each source held out as test.
        val_fraction: part of each source's remaining cases used for validation (>= 1 case from 5 cases).
        seed: split seed (each source is split on its own).
        check: check files exist and image/label shapes agree (NIfTI headers); --nocheck skips it.
        max_cases: seeded subset per source before splitting: an int or "{'msd': 100}".
    """
    path = combine_sources(sources, out, test_fraction, val_fraction, seed, check, max_cases)
    combined = json.loads(path.read_text())
    for name, c in combined["counts"].items():
        print(
            f"{name}: {c['available']} labelled, training {c['training']}, validation {c['validation']}, "
            f"test {c['test']}",
            file=sys.stderr,
        )
    return str(path)


def main(argv: list[str] | None = None) -> None:
    from scripts.utils.cli import fire_strict

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "datalist":
        fire_strict(make_datalist, command=argv[1:], name="scripts.data.combine datalist")
    else:
        fire_strict(_cli, command=argv, name="scripts.data.combine")


if __name__ == "__main__":
    try:
        main()
    except CombineError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
