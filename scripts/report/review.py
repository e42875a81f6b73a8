"""What a reviewer looks at for one suspicious case (issue 17, item 3): the slices where the label and the
model's prediction disagree most, both outlined per class in their own colours, and a suspected problem
from simple rules on the two masks. Pure functions over arrays of class indices, plus the figure.

Masks are class-index volumes of one shape (x, y, z); slices are taken along the last axis, shown as the
audit report's montage shows them (``imshow(slice.T, origin="lower")``: x to the right, y up).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scripts.report.figures import _save_png, robust_window

__all__ = [
    "LABEL_COLORS",
    "PRED_COLORS",
    "PROBLEMS",
    "class_problem",
    "disagreement_slices",
    "outline",
    "plot_review",
    "suspected_problem",
]

LABEL_COLORS = ("#ffd400", "#ff7f0e", "#ff1f1f", "#a6ff00")  # label, class 1, 2, ...: warm
PRED_COLORS = ("#00e5ff", "#ff3df2", "#3d7bff", "#ffffff")  # prediction, class 1, 2, ...: cold
PROBLEMS = ("missing structure", "extra structure", "shift", "boundary")


def outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of a 2-D mask on its outline, shape (m, 2) of (x, y) indices in row-major order: the mask
    pixels with a 4-neighbour outside the mask (the image edge counts as outside)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"outline takes a 2-D mask, got shape {mask.shape}")
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return np.argwhere(mask & ~inner)


def disagreement_slices(label: np.ndarray, pred: np.ndarray, n: int = 3) -> list[int]:
    """The ``n`` slices (last axis) with the most voxels where label and prediction differ, most first
    (ties: the lower index); only slices that disagree at all. When none does, the slice with the most
    label voxels (the middle one for an empty label)."""
    label, pred = np.asarray(label), np.asarray(pred)
    if label.shape != pred.shape or label.ndim != 3:
        raise ValueError(f"label {label.shape} and prediction {pred.shape} must be 3-D volumes of one shape")
    differ = (label != pred).reshape(-1, label.shape[-1]).sum(axis=0)
    order = np.argsort(-differ, kind="stable")
    picked = [int(z) for z in order[:n] if differ[z] > 0]
    if picked:
        return picked
    counts = (label > 0).reshape(-1, label.shape[-1]).sum(axis=0)
    return [int(np.argmax(counts)) if counts.any() else label.shape[-1] // 2]


def class_problem(
    label: np.ndarray, pred: np.ndarray, agree: float = 0.8, ratio: float = 0.6, shift: float = 0.3
) -> str:
    """The suspected problem of one class's label mask against the prediction's mask; "" when they agree.

    - both empty, or Dice >= ``agree``: "" (nothing to flag);
    - the label holds less than ``ratio`` of the predicted volume: "missing structure" (the label lacks
      what the model finds: a dropped or eroded part);
    - the prediction holds less than ``ratio`` of the label's volume: "extra structure" (the label has
      what the model does not find);
    - similar volumes whose centroids lie more than ``shift`` x the structure's size (cube root of the
      label volume) apart: "shift";
    - otherwise: "boundary" (same place and size, different outline).
    """
    lab, prd = np.asarray(label, dtype=bool), np.asarray(pred, dtype=bool)
    v_lab, v_pred = int(lab.sum()), int(prd.sum())
    if v_lab == 0 and v_pred == 0:
        return ""
    if 2.0 * np.logical_and(lab, prd).sum() / (v_lab + v_pred) >= agree:
        return ""
    if v_lab < ratio * v_pred:
        return "missing structure"
    if v_pred < ratio * v_lab:
        return "extra structure"
    distance = float(np.linalg.norm(np.argwhere(lab).mean(axis=0) - np.argwhere(prd).mean(axis=0)))
    return "shift" if distance > shift * v_lab ** (1.0 / lab.ndim) else "boundary"


def suspected_problem(label: np.ndarray, pred: np.ndarray, num_classes: int, **rules: float) -> str:
    """The suspected problem of a case, class by class (``class_problem``): "" when every class agrees;
    the problem itself with one foreground class; "class c: problem; ..." with several."""
    label, pred = np.asarray(label), np.asarray(pred)
    if label.shape != pred.shape:
        raise ValueError(f"label {label.shape} and prediction {pred.shape} differ in shape")
    found = [(c, class_problem(label == c, pred == c, **rules)) for c in range(1, num_classes)]
    found = [(c, p) for c, p in found if p]
    if num_classes == 2:
        return found[0][1] if found else ""
    return "; ".join(f"class {c}: {p}" for c, p in found)


def plot_review(
    image: np.ndarray,
    label: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    title: str,
    path: str | Path,
    slices: Sequence[int] | None = None,
) -> dict[tuple[str, int, int], np.ndarray]:
    """One figure of a case: a panel per slice (default ``disagreement_slices``), the label's outline
    (warm colours) and the prediction's (cold colours) drawn per class, pixel by pixel, over the image.

    Returns what was drawn: {(source "label"/"prediction", class, slice): outline pixels (m, 2) as (x, y)}.
    """
    image, label, pred = np.asarray(image, dtype=np.float32), np.asarray(label), np.asarray(pred)
    if not image.shape == label.shape == pred.shape:
        raise ValueError(f"image {image.shape}, label {label.shape} and prediction {pred.shape} must share a shape")
    slices = list(slices) if slices is not None else disagreement_slices(label, pred)
    fig = Figure(figsize=(3.2 * len(slices) + 0.4, 4.2))
    axes = fig.subplots(1, len(slices), squeeze=False)[0]
    drawn: dict[tuple[str, int, int], np.ndarray] = {}
    for ax, z in zip(axes, slices):
        lo, hi = robust_window(image[..., z])
        ax.imshow(image[..., z].T, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
        for source, volume, colors, marker in (
            ("label", label, LABEL_COLORS, "s"),
            ("prediction", pred, PRED_COLORS, "o"),
        ):
            for c in range(1, num_classes):
                pts = outline(volume[..., z] == c)
                drawn[(source, c, z)] = pts
                if len(pts):
                    ax.scatter(pts[:, 0], pts[:, 1], s=5 if marker == "s" else 3, marker=marker, linewidths=0,
                               color=colors[(c - 1) % len(colors)])  # fmt: skip
        n_diff = int((label[..., z] != pred[..., z]).sum())
        ax.set_title(f"z={z}: {n_diff} voxels differ", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [
        Line2D([], [], ls="", marker=m, color=colors[(c - 1) % len(colors)], label=f"{source} class {c}")
        for source, colors, m in (("label", LABEL_COLORS, "s"), ("prediction", PRED_COLORS, "o"))
        for c in range(1, num_classes)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=8)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.78, bottom=0.12, wspace=0.05)
    _save_png(fig, Path(path))
    return drawn
