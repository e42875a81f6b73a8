"""The per-case dynamics record: one tidy row per (case, center, epoch), as in dataset cartography.

Every later statistic (DAD windows, moving distance, selection, plots) is a function of this table,
and more score columns (EL2N, VoG, ...) join it on (epoch, case_id) through ``add_scores``: they are
written after the ``dice_class*`` columns, in the order first added, and a record without any is
written exactly as before.
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scripts.core.dynamics import case_dice, pooled_dice
from scripts.data.checks import DataError
from scripts.utils.atomic import write_csv_atomic

__all__ = ["DynamicsRecord", "read_dynamics"]

BASE_FIELDS = ("epoch", "case_id", "center", "source", "n_items", "dice")
# what happened to a case in an epoch of a dynamic-pruning run (scripts/core/dynamic_rule.py STATUSES);
# written after the dice_class columns only when some epoch has it, so other records read and write as before
VISIT_FIELD = "visit"


def _fmt(value: float) -> str:
    """Missing values are empty cells, which csv readers, numpy and pandas read as missing."""
    return "" if math.isnan(value) else f"{value:.8g}"


class DynamicsRecord:
    """Per-case, per-epoch Dice of a fixed list of training cases.

    Args:
        case_ids: the training cases, in data-list order; every epoch gets a row for each.
        centers: the center of each case (same order).
        num_classes: classes including background; one ``dice_class{c}`` column per foreground class.
    """

    def __init__(self, case_ids: Sequence[str], centers: Sequence[str], num_classes: int) -> None:
        if len(case_ids) != len(centers):
            raise ValueError(f"{len(case_ids)} case ids but {len(centers)} centers")
        if len(set(case_ids)) != len(case_ids):
            dup = sorted(c for c, n in Counter(case_ids).items() if n > 1)
            raise ValueError(f"duplicate case ids in the training list: {dup[:5]}")
        if num_classes < 2:
            raise ValueError(f"num_classes must count background and >= 1 foreground class, got {num_classes}")
        self.case_ids = list(case_ids)
        self.centers = list(centers)
        self.num_classes = num_classes
        self._index = {c: i for i, c in enumerate(self.case_ids)}
        self._epochs: dict[int, tuple[str, np.ndarray, np.ndarray]] = {}
        self._scores: dict[str, dict[int, np.ndarray]] = {}
        self._visits: dict[int, np.ndarray] = {}

    @classmethod
    def from_datalist(cls, datalist: Sequence[Mapping], num_classes: int) -> DynamicsRecord:
        """A record for the cases of a data list (entries with ``case_id`` and ``center``)."""
        return cls([d["case_id"] for d in datalist], [d.get("center", "") for d in datalist], num_classes)

    @property
    def fields(self) -> list[str]:
        visit = [VISIT_FIELD] if self._visits else []
        return [*BASE_FIELDS, *(f"dice_class{c}" for c in range(1, self.num_classes)), *visit, *self._scores]

    @property
    def score_names(self) -> list[str]:
        """The extra score columns, in the order first added."""
        return list(self._scores)

    @property
    def epochs(self) -> list[int]:
        return sorted(self._epochs)

    def rows_of(self, case_ids: Sequence[str]) -> np.ndarray:
        """The record row of each case id (int64, same order); unknown ids raise ``ValueError``."""
        unknown = sorted({c for c in case_ids if c not in self._index})
        if unknown:
            raise ValueError(f"cases not in the training list: {unknown[:5]}")
        return np.array([self._index[c] for c in case_ids], dtype=np.int64)

    def add_epoch(self, epoch: int, source: str, case_ids: Sequence[str], counts: np.ndarray) -> None:
        """Pool the overlap counts of every item seen this epoch into one row per case.

        Args:
            epoch: the training epoch (from 1). Recording an epoch again replaces it, so a resumed
                run never duplicates rows.
            source: "patches" or "volumes", where the counts came from.
            case_ids: the case of each item (crop or volume), length N.
            counts: shape (N, 3, num_classes - 1), from ``dynamics.foreground_counts``.
        """
        counts = np.asarray(counts, dtype=np.float64)
        if counts.shape != (len(case_ids), 3, self.num_classes - 1):
            raise ValueError(f"counts of shape {counts.shape} do not fit {len(case_ids)} items")
        try:
            rows = self.rows_of(case_ids)
        except ValueError as err:
            raise ValueError(f"epoch {epoch}: {err}") from None
        pooled = np.zeros((len(self.case_ids), 3, self.num_classes - 1))
        np.add.at(pooled, rows, counts)
        self.add_pooled_epoch(epoch, source, pooled, np.bincount(rows, minlength=len(self.case_ids)))

    def add_pooled_epoch(self, epoch: int, source: str, pooled: np.ndarray, n_items: np.ndarray) -> None:
        """Record an epoch from counts already pooled per case (in record order).

        Args:
            epoch, source: as in ``add_epoch``.
            pooled: shape (n_cases, 3, num_classes - 1), each case's summed counts of the epoch.
            n_items: shape (n_cases,), how many items (crops or volumes) each case's counts pool.
        """
        pooled = np.asarray(pooled, dtype=np.float64)
        n_items = np.asarray(n_items, dtype=np.int64)
        if pooled.shape != (len(self.case_ids), 3, self.num_classes - 1) or n_items.shape != (len(self.case_ids),):
            raise ValueError(
                f"epoch {epoch}: pooled counts {pooled.shape} / n_items {n_items.shape} do not fit "
                f"{len(self.case_ids)} cases and {self.num_classes - 1} foreground classes"
            )
        class_dice = pooled_dice(pooled)
        class_dice[n_items == 0] = np.nan  # a case not seen this epoch was not measured
        self._epochs[int(epoch)] = (source, class_dice, n_items)

    def set_visits(self, epoch: int, status: Sequence[str]) -> None:
        """What happened to every case (record order) in ``epoch`` of a dynamic-pruning run ("visited",
        "thinned", "dropped", "measured"); setting an epoch again replaces it."""
        status = np.asarray(status, dtype=object)
        if status.shape != (len(self.case_ids),):
            raise ValueError(f"epoch {epoch}: {status.size} visit statuses for {len(self.case_ids)} cases")
        self._visits[int(epoch)] = status.astype(str)

    def visit_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, status): the recorded epochs and each case's visit status (n_cases, n_epochs), "" where unset."""
        epochs = self.epochs
        matrix = np.full((len(self.case_ids), len(epochs)), "", dtype=object)
        for j, e in enumerate(epochs):
            if e in self._visits:
                matrix[:, j] = self._visits[e]
        return np.asarray(epochs, dtype=np.int64), matrix.astype(str)

    def merge_cases(self, epoch: int, rows: Sequence[int], pooled: np.ndarray, n_items: np.ndarray) -> None:
        """Set the Dice of some cases (record ``rows``) in an already recorded ``epoch`` from their pooled
        counts (len(rows), 3, num_classes - 1), leaving the other cases as they are: the measurement
        pass over cases an epoch did not train on."""
        if int(epoch) not in self._epochs:
            raise ValueError(f"epoch {epoch} is not recorded yet; record it before merging cases into it")
        rows = np.asarray(rows, dtype=np.int64)
        pooled = np.asarray(pooled, dtype=np.float64)
        n_items = np.asarray(n_items, dtype=np.int64)
        if pooled.shape != (len(rows), 3, self.num_classes - 1) or n_items.shape != (len(rows),):
            raise ValueError(f"epoch {epoch}: counts {pooled.shape} / n_items {n_items.shape} for {len(rows)} cases")
        source, class_dice, items = self._epochs[int(epoch)]
        class_dice, items = class_dice.copy(), items.copy()
        dice = pooled_dice(pooled)
        dice[n_items == 0] = np.nan
        class_dice[rows], items[rows] = dice, n_items
        self._epochs[int(epoch)] = (source, class_dice, items)

    def add_scores(
        self, epoch: int, values: Mapping[str, Sequence[float]], case_ids: Sequence[str] | None = None
    ) -> None:
        """Join per-case score columns to the rows of ``epoch`` (replacing that epoch's earlier values).

        Args:
            epoch: the epoch the scores belong to; an epoch without Dice gets rows with empty Dice.
            values: {column name: one value per case (NaN where not measured)}.
            case_ids: the case of each value; None means the record's own case order.
        """
        reserved = set(BASE_FIELDS) | {f"dice_class{c}" for c in range(1, self.num_classes)}
        for name, column in values.items():
            if name in reserved or name.startswith("dice_class") or not name:
                raise ValueError(f"score column {name!r} clashes with the record's own columns")
            column = np.asarray(column, dtype=np.float64)
            ids = self.case_ids if case_ids is None else list(case_ids)
            if column.shape != (len(ids),):
                raise ValueError(f"score {name!r}: {column.shape[0] if column.ndim else 0} values for {len(ids)} cases")
            unknown = sorted({c for c in ids if c not in self._index})
            if unknown:
                raise ValueError(f"epoch {epoch}: cases not in the training list: {unknown[:5]}")
            full = np.full(len(self.case_ids), np.nan)
            full[[self._index[c] for c in ids]] = column
            self._scores.setdefault(name, {})[int(epoch)] = full
            if int(epoch) not in self._epochs:
                empty = np.full((len(self.case_ids), self.num_classes - 1), np.nan)
                self._epochs[int(epoch)] = ("", empty, np.zeros(len(self.case_ids), dtype=np.int64))

    def score_matrix(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, values): a score column over the recorded epochs, shape (n_cases, n_epochs), NaN where absent."""
        if name not in self._scores:
            raise KeyError(f"no score column {name!r} in the record; it has {self.score_names}")
        epochs = self.epochs
        matrix = np.full((len(self.case_ids), len(epochs)), np.nan)
        for j, e in enumerate(epochs):
            if e in self._scores[name]:
                matrix[:, j] = self._scores[name][e]
        return np.asarray(epochs, dtype=np.int64), matrix

    def dice_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, dice): the recorded epochs and case Dice of shape (n_cases, n_epochs)."""
        epochs = self.epochs
        matrix = np.full((len(self.case_ids), len(epochs)), np.nan)
        for j, e in enumerate(epochs):
            matrix[:, j] = case_dice(self._epochs[e][1])
        return np.asarray(epochs, dtype=np.int64), matrix

    def class_dice(self, epoch: int) -> np.ndarray:
        """The per-class Dice of every case at ``epoch``, shape (n_cases, num_classes - 1)."""
        if int(epoch) not in self._epochs:
            raise KeyError(f"no epoch {epoch} in the record; it has {self.epochs}")
        return self._epochs[int(epoch)][1].copy()

    def rows(self) -> list[list[str]]:
        out = []
        for e in self.epochs:
            source, class_dice, n_items = self._epochs[e]
            dice = case_dice(class_dice)
            for i, case in enumerate(self.case_ids):
                out.append(
                    [str(e), case, self.centers[i], source, str(int(n_items[i])), _fmt(dice[i])]
                    + [_fmt(v) for v in class_dice[i]]
                    + ([self._visits[e][i] if e in self._visits else ""] if self._visits else [])
                    + [_fmt(col[e][i]) if e in col else "" for col in self._scores.values()]
                )
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the whole record atomically (cheap: thousands of rows)."""
        return write_csv_atomic(path, self.fields, self.rows())

    def restore(self, path: str | os.PathLike, up_to_epoch: int) -> list[int]:
        """Take the epochs <= ``up_to_epoch`` from a saved record of the same cases (a resumed run);
        later epochs are dropped, to be recorded again. Returns the epochs kept."""
        saved = DynamicsRecord.load(path)
        if saved.case_ids != self.case_ids or saved.num_classes != self.num_classes:
            raise ValueError(
                f"{path}: the saved record's cases or classes differ from this run's training list; "
                "it belongs to another data set or run"
            )
        self._epochs = {e: v for e, v in saved._epochs.items() if e <= up_to_epoch}
        self._scores = {k: {e: v for e, v in col.items() if e <= up_to_epoch} for k, col in saved._scores.items()}
        self._visits = {e: v for e, v in saved._visits.items() if e <= up_to_epoch}
        return sorted(self._epochs)

    @classmethod
    def load(cls, path: str | os.PathLike) -> DynamicsRecord:
        """Read a record written by ``save`` (for resuming a run)."""
        table = read_dynamics(path)
        class_cols = sorted((k for k in table if k.startswith("dice_class")), key=lambda k: int(k[10:]))
        score_cols = [k for k in table if k not in BASE_FIELDS and k != VISIT_FIELD and not k.startswith("dice_class")]
        order: dict[str, str] = {}
        for case, center in zip(table["case_id"], table["center"]):
            order.setdefault(case, center)
        record = cls(list(order), list(order.values()), num_classes=len(class_cols) + 1)
        record._scores = {k: {} for k in score_cols}
        epochs = table["epoch"].astype(int)
        for e in np.unique(epochs):
            sel = epochs == e
            idx = np.array([record._index[c] for c in table["case_id"][sel]])
            class_dice = np.full((len(order), len(class_cols)), np.nan)
            class_dice[idx] = np.stack([table[k][sel] for k in class_cols], axis=1)
            n_items = np.zeros(len(order), dtype=np.int64)
            n_items[idx] = table["n_items"][sel].astype(int)
            record._epochs[int(e)] = (str(table["source"][sel][0]), class_dice, n_items)
            for k in score_cols:
                column = np.full(len(order), np.nan)
                column[idx] = table[k][sel]
                if not np.all(np.isnan(column)):
                    record._scores[k][int(e)] = column
            if VISIT_FIELD in table and any(table[VISIT_FIELD][sel]):
                visits = np.full(len(order), "", dtype=object)
                visits[idx] = table[VISIT_FIELD][sel]
                record._visits[int(e)] = visits.astype(str)
        return record

    @classmethod
    def merge(cls, records: Sequence[DynamicsRecord], order: Sequence[str] | None = None) -> DynamicsRecord:
        """One record of disjoint records of the same classes (e.g. the held-out folds of an audit), its
        cases in ``order`` (default: the records' cases one after the other); every epoch and score column
        of any part is kept, NaN for the cases of a part that lacks it."""
        if not records:
            raise ValueError("no record to merge")
        k = records[0].num_classes
        if any(r.num_classes != k for r in records):
            raise ValueError(f"records of different classes: {[r.num_classes for r in records]}")
        ids = [c for r in records for c in r.case_ids]
        centers = dict(zip(ids, (c for r in records for c in r.centers)))
        order = ids if order is None else list(order)
        if sorted(order) != sorted(ids):
            missing, extra = sorted(set(order) - set(ids)), sorted(set(ids) - set(order))
            raise ValueError(f"the merged order lists {missing[:5]} without a record, leaves out {extra[:5]}")
        merged = cls(order, [centers[c] for c in order], k)  # refuses a case in two records
        for part in records:
            rows = merged.rows_of(part.case_ids)
            for e, (source, class_dice, n_items) in part._epochs.items():
                if e not in merged._epochs:
                    merged._epochs[e] = (source, np.full((len(order), k - 1), np.nan), np.zeros(len(order), np.int64))
                merged._epochs[e][1][rows] = class_dice
                merged._epochs[e][2][rows] = n_items
            for name, col in part._scores.items():
                for e, values in col.items():
                    merged._scores.setdefault(name, {}).setdefault(e, np.full(len(order), np.nan))[rows] = values
        return merged


def _cell(path: Path, line: int, column: str, value: str | None) -> float:
    if value is None:
        raise DataError(
            f"{path}, line {line}: the row ends before column {column!r} (a file cut mid-line?); "
            "fix: delete that line, or rerun with --resume True to record it again"
        )
    try:
        return float(value) if value != "" else np.nan
    except ValueError:
        where = f"{path}, line {line}, column {column!r}"
        raise DataError(f"{where}: {value!r} is not a number; fix: delete that line") from None


def read_dynamics(path: str | os.PathLike) -> Mapping[str, np.ndarray]:
    """Read a dynamics CSV into columns: strings for ids, floats (NaN for empty cells) otherwise.

    A row cut short, a cell that is not a number or a second row of one (case, epoch) is a ``DataError``
    naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dynamics record not found: {path}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        fields = reader.fieldnames or []
    missing = [k for k in BASE_FIELDS if k not in fields]
    if missing:
        raise DataError(f"{path}: not a dynamics record, missing columns {missing}")
    if not rows:
        raise DataError(f"{path}: the dynamics record is empty")
    text_cols = {"case_id", "center", "source", VISIT_FIELD}
    columns: dict[str, list] = {k: [] for k in fields}
    seen: dict[tuple[str, float], int] = {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        for k in fields:
            columns[k].append(row[k] if k in text_cols and row[k] is not None else _cell(path, line, k, row[k]))
        key = (row["case_id"], columns["epoch"][-1])
        if key in seen:
            raise DataError(
                f"{path}, line {line}: a second row for case {key[0]} at epoch {key[1]:g} (the first is line "
                f"{seen[key]}); fix: keep one of them"
            )
        seen[key] = line
    return {k: np.array(v) for k, v in columns.items()}
