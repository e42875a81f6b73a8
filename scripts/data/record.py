"""The per-case dynamics record: one tidy row per (case, center, epoch), as in dataset cartography.

Every later statistic (DAD windows, moving distance, selection, plots) is a function of this table,
and more score columns (EL2N, VoG, ...) join it on (epoch, case_id) through ``add_scores``: they are
written after the ``dice_class*`` columns, in the order first added, and a record without any is
written exactly as before.

In memory the epochs are columns of arrays that grow by doubling, so recording an epoch and reading the
matrix of all epochs cost the same at epoch 1000 as at epoch 10. On disk (``scripts.data.record_io``)
``write`` appends the epochs changed since its last write and rewrites the file only when an earlier epoch
or the columns changed; ``save`` writes the whole file.
"""

from __future__ import annotations

import bisect
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from scripts.core.dynamics import case_dice, pooled_dice
from scripts.data.record_io import append_rows, prefix_through_epoch, read_table, write_table

__all__ = ["DynamicsRecord", "read_dynamics"]

BASE_FIELDS = ("epoch", "case_id", "center", "source", "n_items", "dice")
# what happened to a case in an epoch of a dynamic-pruning run (scripts/core/dynamic_rule.py STATUSES);
# written after the dice_class columns only when some epoch has it, so other records read and write as before
VISIT_FIELD = "visit"


def _fmt_column(values: np.ndarray) -> list[str]:
    """Cells of 8 significant digits; missing values are empty cells, which csv readers, numpy and pandas
    read as missing."""
    return ["" if v != v else f"{v:.8g}" for v in values.tolist()]  # v != v: NaN


def read_dynamics(path: str | os.PathLike, data: bytes | None = None) -> Mapping[str, np.ndarray]:
    """Read a dynamics CSV into columns: strings for ids, floats (NaN for empty cells) otherwise.

    A row cut short or cut inside a number, a cell that is not a number, a second row of one (case, epoch)
    or an epoch short of cases is a ``DataError`` naming the file and the line. ``data``: its bytes, when
    only a part of the file is to be read."""
    return read_table(path, required=BASE_FIELDS, data=data)


class _Columns:
    """Per-epoch columns of one kind, shape (n_epochs, *item_shape) in epoch order, grown by doubling."""

    def __init__(self, item_shape: tuple[int, ...], fill: float | int, dtype: type) -> None:
        self.fill, self.data = fill, np.full((0, *item_shape), fill, dtype=dtype)

    def reserve(self, n: int) -> None:
        if n > len(self.data):
            grown = np.full((max(16, 2 * len(self.data), n), *self.data.shape[1:]), self.fill, dtype=self.data.dtype)
            grown[: len(self.data)] = self.data
            self.data = grown

    def insert(self, position: int, used: int) -> None:
        """Open a column at ``position`` among the ``used`` ones (the later ones move up by one)."""
        self.reserve(used + 1)
        self.data[position + 1 : used + 1] = self.data[position:used].copy()
        self.data[position] = self.fill


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
        n = len(self.case_ids)
        self._epoch_list: list[int] = []  # sorted; position j holds column j of every array below
        self._source: list[str] = []
        self._class_dice = _Columns((n, num_classes - 1), np.nan, np.float64)
        self._case_dice = _Columns((n,), np.nan, np.float64)
        self._n_items = _Columns((n,), 0, np.int64)
        self._scores: dict[str, _Columns] = {}
        self._visits: dict[int, np.ndarray] = {}
        self._stamp = _Columns((), 0, np.int64)  # when each epoch last changed (``version``)
        self._clock = 0
        # the file ``write`` keeps up to date: its path, columns, last epoch; the epochs changed since
        self._file: tuple[Path, list[str], int] | None = None
        self._changed: set[int] = set()
        self._in_write_order = False  # a loaded file's rows are in the order ``write`` gives (``restore``)

    @classmethod
    def from_datalist(cls, datalist: Sequence[Mapping], num_classes: int) -> DynamicsRecord:
        """A record for the cases of a data list (entries with ``case_id`` and ``center``)."""
        return cls([d["case_id"] for d in datalist], [d.get("center", "") for d in datalist], num_classes)

    # ---- the epochs ----
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
        return list(self._epoch_list)

    def _position(self, epoch: int) -> int:
        """The column of ``epoch``, opened (with missing values) when it is not recorded yet."""
        epoch = int(epoch)
        j = bisect.bisect_left(self._epoch_list, epoch)
        if j < len(self._epoch_list) and self._epoch_list[j] == epoch:
            return j
        used = len(self._epoch_list)
        for columns in (self._class_dice, self._case_dice, self._n_items, self._stamp, *self._scores.values()):
            columns.insert(j, used)
        self._epoch_list.insert(j, epoch)
        self._source.insert(j, "")
        return j

    def _touch(self, epoch: int, j: int) -> None:
        self._clock += 1
        self._stamp.data[j] = self._clock
        self._changed.add(int(epoch))

    def _span(self, start: int, end: int) -> slice:
        """The columns of the epochs in (start, end]."""
        return slice(bisect.bisect_right(self._epoch_list, start), bisect.bisect_right(self._epoch_list, end))

    def version(self, start: int, end: int) -> tuple[int, int]:
        """Changes whenever an epoch in (start, end] is recorded or changed: (epochs there, last change)."""
        span = self._span(start, end)
        stamps = self._stamp.data[span]
        return len(stamps), int(stamps.max()) if len(stamps) else 0

    def rows_of(self, case_ids: Sequence[str]) -> np.ndarray:
        """The record row of each case id (int64, same order); unknown ids raise ``ValueError``."""
        try:
            return np.array([self._index[c] for c in case_ids], dtype=np.int64)
        except KeyError:
            unknown = sorted({c for c in case_ids if c not in self._index})
            raise ValueError(f"cases not in the training list: {unknown[:5]}") from None

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
        self._set_dice(epoch, source, class_dice, n_items)

    def _set_dice(self, epoch: int, source: str, class_dice: np.ndarray, n_items: np.ndarray) -> None:
        j = self._position(epoch)
        self._source[j] = source
        self._class_dice.data[j] = class_dice
        self._case_dice.data[j] = case_dice(class_dice)
        self._n_items.data[j] = n_items
        self._touch(epoch, j)

    def set_visits(self, epoch: int, status: Sequence[str]) -> None:
        """What happened to every case (record order) in ``epoch`` of a dynamic-pruning run ("visited",
        "thinned", "cropped", "dropped", "measured"); setting an epoch again replaces it."""
        status = np.asarray(status, dtype=object)
        if status.shape != (len(self.case_ids),):
            raise ValueError(f"epoch {epoch}: {status.size} visit statuses for {len(self.case_ids)} cases")
        self._touch(epoch, self._position(epoch))
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
        if int(epoch) not in self._epoch_list:
            raise ValueError(f"epoch {epoch} is not recorded yet; record it before merging cases into it")
        rows = np.asarray(rows, dtype=np.int64)
        pooled = np.asarray(pooled, dtype=np.float64)
        n_items = np.asarray(n_items, dtype=np.int64)
        if pooled.shape != (len(rows), 3, self.num_classes - 1) or n_items.shape != (len(rows),):
            raise ValueError(f"epoch {epoch}: counts {pooled.shape} / n_items {n_items.shape} for {len(rows)} cases")
        j = self._position(epoch)
        class_dice, items = self._class_dice.data[j].copy(), self._n_items.data[j].copy()
        dice = pooled_dice(pooled)
        dice[n_items == 0] = np.nan
        class_dice[rows], items[rows] = dice, n_items
        self._set_dice(epoch, self._source[j], class_dice, items)

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
            try:
                rows = self.rows_of(ids)
            except ValueError as err:
                raise ValueError(f"epoch {epoch}: {err}") from None
            full = np.full(len(self.case_ids), np.nan)
            full[rows] = column
            j = self._position(epoch)
            if name not in self._scores:
                self._scores[name] = _Columns((len(self.case_ids),), np.nan, np.float64)
                self._scores[name].reserve(len(self._class_dice.data))
            self._scores[name].data[j] = full
            self._touch(epoch, j)

    # ---- reading: views of the columns (read-only), costing nothing however many epochs there are ----
    def _view(self, columns: _Columns, span: slice | None = None) -> np.ndarray:
        view = columns.data[: len(self._epoch_list)] if span is None else columns.data[span]
        view = np.moveaxis(view, 0, 1)  # (n_cases, n_epochs, ...)
        view.flags.writeable = False
        return view

    def dice_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, dice): the recorded epochs and case Dice of shape (n_cases, n_epochs) (a read-only view)."""
        return np.asarray(self._epoch_list, dtype=np.int64), self._view(self._case_dice)

    def dice_window(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, dice) of the recorded epochs in (start, end] only (a read-only view)."""
        span = self._span(start, end)
        return np.asarray(self._epoch_list[span], dtype=np.int64), self._view(self._case_dice, span)

    def case_dice(self, epoch: int) -> np.ndarray:
        """Every case's Dice at ``epoch`` (n_cases,)."""
        return self._case_dice.data[self._require(epoch)].copy()

    def score_matrix(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, values): a score column over the recorded epochs, shape (n_cases, n_epochs), NaN where absent."""
        if name not in self._scores:
            raise KeyError(f"no score column {name!r} in the record; it has {self.score_names}")
        return np.asarray(self._epoch_list, dtype=np.int64), self._view(self._scores[name])

    def _require(self, epoch: int) -> int:
        j = bisect.bisect_left(self._epoch_list, int(epoch))
        if j == len(self._epoch_list) or self._epoch_list[j] != int(epoch):
            raise KeyError(f"no epoch {epoch} in the record; it has {self.epochs}")
        return j

    def class_dice(self, epoch: int) -> np.ndarray:
        """The per-class Dice of every case at ``epoch``, shape (n_cases, num_classes - 1)."""
        return self._class_dice.data[self._require(epoch)].copy()

    # ---- the table ----
    def rows(self, epochs: Sequence[int] | None = None) -> list[list[str]]:
        """The CSV rows of ``epochs`` (default all), one per case per epoch, in epoch then case order."""
        return [list(row) for block in self._blocks(epochs) for row in block]

    def _blocks(self, epochs: Sequence[int] | None = None) -> Iterator[list[tuple[str, ...]]]:
        """The rows of each epoch in turn (a whole file is written block by block, never all in memory);
        each column is formatted at once, from plain floats (numpy scalars format several times slower)."""
        visits, n = bool(self._visits), len(self.case_ids)
        for e in self.epochs if epochs is None else sorted(int(e) for e in epochs):
            j = self._require(e)
            columns = [[str(e)] * n, self.case_ids, self.centers, [self._source[j]] * n,
                       [str(k) for k in self._n_items.data[j].tolist()], _fmt_column(self._case_dice.data[j]),
                       *(_fmt_column(c) for c in self._class_dice.data[j].T)]  # fmt: skip
            if visits:
                columns.append(self._visits[e].tolist() if e in self._visits else [""] * n)
            columns.extend(_fmt_column(col.data[j]) for col in self._scores.values())
            yield list(zip(*columns))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the whole record atomically; a later ``write`` to the same path appends to it."""
        path = write_table(path, self.fields, self._blocks())
        self._file = (Path(path), self.fields, self._epoch_list[-1] if self._epoch_list else 0)
        self._changed.clear()
        return path

    def write(self, path: str | os.PathLike) -> Path:
        """Bring the file at ``path`` up to date with what changed since the last ``write`` or ``save``: the
        changed epochs' rows appended when all come after the file's last epoch and the columns are the
        same (one write per epoch, whatever the epochs recorded), else the whole file rewritten."""
        path = Path(path)
        changed = sorted(self._changed)
        if self._file is not None and self._file[0] == path and not changed:
            return path
        if self._file is None or self._file[0] != path or self._file[1] != self.fields or changed[0] <= self._file[2]:
            return self.save(path)
        append_rows(path, self.rows(changed))
        self._file = (path, self._file[1], changed[-1])
        self._changed.clear()
        return path

    def restore(self, path: str | os.PathLike, up_to_epoch: int, cut_file: bool = False) -> list[int]:
        """Take the epochs <= ``up_to_epoch`` from a saved record of the same cases (a resumed run);
        later epochs are dropped, to be recorded again, and a last line torn by a kill is never read. With
        ``cut_file`` the file itself is cut back to those epochs (in place), and the next ``write`` appends
        to it. Returns the epochs kept."""
        path = Path(path)
        data = path.read_bytes()
        keep_bytes = prefix_through_epoch(data, up_to_epoch)
        if keep_bytes is not None and data[:keep_bytes].count(b"\n") < 2:  # no epoch recorded by then
            fresh = DynamicsRecord(self.case_ids, self.centers, self.num_classes)
            self.__dict__.update(fresh.__dict__)  # the next ``write`` replaces the file
            return []
        saved = DynamicsRecord.load(path, data=data if keep_bytes is None else data[:keep_bytes])
        if saved.case_ids != self.case_ids or saved.num_classes != self.num_classes:
            raise ValueError(
                f"{path}: the saved record's cases or classes differ from this run's training list; "
                "it belongs to another data set or run"
            )
        keep = bisect.bisect_right(saved._epoch_list, up_to_epoch)
        for name in ("_epoch_list", "_source", "_class_dice", "_case_dice", "_n_items", "_scores", "_stamp"):
            setattr(self, name, getattr(saved, name))
        del self._epoch_list[keep:], self._source[keep:]
        self._visits = {e: v for e, v in saved._visits.items() if e <= up_to_epoch}
        self._changed, self._file = set(), None
        if cut_file and keep_bytes is not None and saved._in_write_order:  # the kept epochs: the file's first rows
            os.truncate(path, keep_bytes)
            self._file = (path, self.fields, self._epoch_list[-1] if self._epoch_list else 0)
        elif cut_file:
            self.save(path)
        return self.epochs

    @classmethod
    def load(cls, path: str | os.PathLike, data: bytes | None = None) -> DynamicsRecord:
        """Read a record written by ``save`` or ``write`` (for resuming a run, pruning, reports); ``data``: a
        part of the file's bytes to read instead of the whole file."""
        table = read_dynamics(path, data)
        class_cols = sorted((k for k in table if k.startswith("dice_class")), key=lambda k: int(k[10:]))
        score_cols = [k for k in table if k not in BASE_FIELDS and k != VISIT_FIELD and not k.startswith("dice_class")]
        ids, first = np.unique(table["case_id"], return_index=True)
        order = np.argsort(first, kind="stable")  # the cases in the order they first appear
        case_ids, centers = ids[order].tolist(), table["center"][first[order]].tolist()
        record = cls(case_ids, centers, num_classes=len(class_cols) + 1)
        epochs = table["epoch"].astype(np.int64)
        epoch_list, epoch_first, col = np.unique(epochs, return_index=True, return_inverse=True)
        row = np.empty(len(ids), dtype=np.int64)
        row[order] = np.arange(len(ids))
        row = row[np.searchsorted(ids, table["case_id"])]
        n_epochs, n = len(epoch_list), len(case_ids)
        record._epoch_list = epoch_list.tolist()
        record._source = [str(s) for s in table["source"][epoch_first]]
        for columns in (record._class_dice, record._case_dice, record._n_items, record._stamp):
            columns.reserve(n_epochs)
        record._class_dice.data[col, row] = np.stack([table[k] for k in class_cols], axis=1)
        record._case_dice.data[:n_epochs] = case_dice(record._class_dice.data[:n_epochs])
        record._n_items.data[col, row] = table["n_items"].astype(np.int64)
        for k in score_cols:
            record._scores[k] = _Columns((n,), np.nan, np.float64)
            record._scores[k].reserve(n_epochs)
            record._scores[k].data[col, row] = table[k]
        if VISIT_FIELD in table and np.any(table[VISIT_FIELD] != ""):
            visits = np.full((n_epochs, n), "", dtype=object)
            visits[col, row] = table[VISIT_FIELD]
            for j in np.flatnonzero(np.any(visits != "", axis=1)):
                record._visits[int(epoch_list[j])] = visits[j].astype(str)
        # rows in epoch order, cases in record order within each: the layout ``save`` and ``write`` give
        record._in_write_order = bool(np.all(np.diff(epochs) >= 0) and np.array_equal(
            row, np.tile(np.arange(n), n_epochs)))  # fmt: skip
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
            for j, e in enumerate(part._epoch_list):
                new = e not in merged._epoch_list
                m = merged._position(e)
                if new:  # an epoch takes the source of the first part that has it
                    merged._source[m] = part._source[j]
                class_dice, items = merged._class_dice.data[m].copy(), merged._n_items.data[m].copy()
                class_dice[rows], items[rows] = part._class_dice.data[j], part._n_items.data[j]
                merged._set_dice(e, merged._source[m], class_dice, items)
            for name, col in part._scores.items():
                for j, e in enumerate(part._epoch_list):
                    values = np.full(len(order), np.nan)
                    if name in merged._scores:
                        values = merged._scores[name].data[merged._position(e)].copy()
                    values[rows] = col.data[j]
                    merged.add_scores(e, {name: values})
        return merged
