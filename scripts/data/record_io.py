"""The dynamics record on disk: a plain CSV a user can open, written a whole file at a time or one epoch's
rows at a time, and read back with pandas under checks that refuse a file cut anywhere.

Writing: ``write_table`` replaces the file atomically; ``append_rows`` adds rows at its end (a training run
appends each epoch once, so its cost does not grow with the epochs recorded);
``prefix_through_epoch`` finds where a resumed run cuts the file (the epochs after its checkpoint go).

Reading (``read_table``): every line must end with a newline and hold the header's number of fields, every
numeric cell must be a number or empty, and no (case, epoch) may come twice. A file cut inside a number
ends without a newline, so it is refused too, with the line named.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from scripts.data.checks import DataError
from scripts.utils.atomic import atomic_output

__all__ = ["RecordFileError", "TEXT_FIELDS", "append_rows", "prefix_through_epoch", "read_table", "write_table"]

# the record's text columns; every other column is numeric (an empty cell is missing)
TEXT_FIELDS = ("case_id", "center", "source", "visit")
NEWLINE, COMMA, QUOTE = ord("\n"), ord(","), ord('"')


class RecordFileError(DataError):
    """A dynamics record file that cannot be read as one: the message names the file, the line and the fix."""


def _csv_text(rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def write_table(path: str | os.PathLike, header: Sequence[str], blocks: Iterable[Iterable[Sequence[str]]]) -> Path:
    """The whole file: the header, then the rows of each block (e.g. an epoch's), streamed to a temporary
    file that replaces ``path`` once synced to disk (a reader sees the old file or the new one)."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        f.write(_csv_text([header]))
        for rows in blocks:
            f.write(_csv_text(rows))
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def append_rows(path: str | os.PathLike, rows: Iterable[Sequence[str]]) -> None:
    """Add ``rows`` at the end of the file, handed to the operating system before returning: a killed
    process loses none of them, as it loses none of its checkpoint (neither is synced to the disk itself
    every epoch; after a power cut the reader's checks find a torn last epoch)."""
    with open(path, "a", newline="") as f:
        f.write(_csv_text(rows))


def _line_ends(data: bytes) -> np.ndarray:
    return np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == NEWLINE)


def prefix_through_epoch(data: bytes, epoch: int) -> int | None:
    """The length in bytes of the header and the leading rows of epochs <= ``epoch``, read from the epoch
    field of the complete lines only (a torn last line, from a run killed mid-write, is after them). None
    when the rows are not in ascending epoch order, as ``append_rows`` leaves them: then only a full read
    can tell which rows to keep."""
    import pandas as pd

    ends = _line_ends(data)
    if len(ends) == 0 or QUOTE in data or not data.startswith(b"epoch,"):
        return None
    try:
        column = pd.read_csv(io.BytesIO(data[: ends[-1] + 1]), usecols=["epoch"], dtype=str, na_filter=False)
    except ValueError:
        return None
    epochs = pd.to_numeric(column["epoch"], errors="coerce").to_numpy(dtype=np.float64)
    if len(epochs) != len(ends) - 1 or np.isnan(epochs).any() or np.any(np.diff(epochs) < 0):
        return None
    return int(ends[np.searchsorted(epochs, epoch, side="right")]) + 1


def _refuse(path: Path, line: int, problem: str, fix: str = "") -> RecordFileError:
    fix = fix or "delete that line (a run killed mid-write?), or rerun with --resume True to record it again"
    return RecordFileError(f"{path}, line {line}: {problem}; fix: {fix}")


def _check_lines(path: Path, data: bytes, header: Sequence[str]) -> None:
    """Every line ends with a newline and holds the header's fields (vectorised; through the csv module
    when a field is quoted, as a case id with a comma would be)."""
    if not data.endswith(b"\n"):
        line = data.count(b"\n") + 1
        raise _refuse(path, line, "the row ends without its newline: the file was cut inside it")
    if QUOTE in data:
        per_line = np.array([len(row) for row in csv.reader(io.StringIO(data.decode("utf-8"), newline=""))])
    else:
        commas = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == COMMA)
        per_line = np.diff(np.concatenate([[0], np.searchsorted(commas, _line_ends(data))])) + 1
    bad = np.flatnonzero(per_line != len(header))
    if bad.size:
        line, fields = int(bad[0]) + 1, int(per_line[bad[0]])
        if fields < len(header):
            raise _refuse(path, line, f"the row ends before column {header[fields]!r} (a file cut mid-line?)")
        raise _refuse(path, line, f"{fields} fields where the header has {len(header)}", "delete that line")


def _check_complete_epochs(path: Path, case: np.ndarray, epoch: np.ndarray) -> None:
    """Every epoch has a row for every case (the record writes whole epochs): an epoch short of cases is a
    file cut between two rows, or rows deleted by hand."""
    n_cases = len(np.unique(case))
    epochs, first, counts = np.unique(epoch, return_index=True, return_counts=True)
    short = np.flatnonzero(counts != n_cases)
    if short.size:
        k = short[0]
        raise _refuse(path, int(first[k]) + 2, f"epoch {epochs[k]:g} has rows for {counts[k]} of the {n_cases} "
                      "cases (the file was cut, or rows were deleted)",
                      "delete that epoch's rows, or rerun with --resume True to record it again")  # fmt: skip


def _check_unique(path: Path, case: np.ndarray, epoch: np.ndarray) -> None:
    import pandas as pd

    again = pd.DataFrame({"case": case, "epoch": epoch}).duplicated(keep="first").to_numpy()
    if again.any():
        second = int(np.flatnonzero(again)[0])
        first = int(np.flatnonzero((case == case[second]) & (epoch == epoch[second]))[0])
        raise _refuse(path, second + 2, f"a second row for case {case[second]} at epoch {epoch[second]:g} (the "
                      f"first is line {first + 2})", "keep one of them")  # fmt: skip


def _parse(path: Path, data: bytes, header: Sequence[str]) -> dict[str, np.ndarray]:
    """The columns: text as text (no NA guessing: a case id "NA" stays one), numbers as float64 with an
    empty cell NaN. A cell that is not a number is found column by column and named with its line."""
    import pandas as pd

    numeric = [k for k in header if k not in TEXT_FIELDS]
    options = {"keep_default_na": False, "na_values": {k: [""] for k in numeric}, "engine": "c"}
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype={k: (str if k in TEXT_FIELDS else np.float64) for k in header},
                            **options)  # fmt: skip
        return {k: frame[k].to_numpy(dtype=str if k in TEXT_FIELDS else np.float64) for k in header}
    except ValueError:
        pass
    frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_filter=False, engine="c")
    for k in numeric:
        cells = frame[k].to_numpy(dtype=object)
        values = pd.to_numeric(frame[k].replace("", np.nan), errors="coerce").to_numpy(dtype=np.float64)
        bad = [j for j in np.flatnonzero(np.isnan(values) & (cells != "")) if str(cells[j]).strip().lower() != "nan"]
        if bad:
            raise _refuse(path, int(bad[0]) + 2, f"column {k!r}: {cells[bad[0]]!r} is not a number", "delete that line")
    raise RecordFileError(f"{path}: cannot be read as a dynamics record; fix: restore it from a run's output")


def read_table(
    path: str | os.PathLike, required: Sequence[str] = (), data: bytes | None = None
) -> dict[str, np.ndarray]:
    """The record's columns: strings for ``TEXT_FIELDS``, float64 (NaN for an empty cell) otherwise.

    Raises ``FileNotFoundError`` for a missing file and ``RecordFileError`` naming the line for a line cut
    short, a line with too many fields, a cell that is not a number, a second row of one (case, epoch), or
    an epoch without a row for every case. ``data``: the file's bytes when already read (a part of it)."""
    path = Path(path)
    if data is None and not path.is_file():
        raise FileNotFoundError(f"dynamics record not found: {path}")
    data = path.read_bytes() if data is None else data
    header = next(csv.reader(io.StringIO(data[: data.find(b"\n") + 1].decode("utf-8"))), [])
    missing = [k for k in required if k not in header]
    if missing:
        raise RecordFileError(f"{path}: not a dynamics record, missing columns {missing}")
    if data.count(b"\n") < 2:
        raise RecordFileError(f"{path}: the dynamics record is empty")
    _check_lines(path, data, header)
    columns = _parse(path, data, header)
    if "case_id" in columns and "epoch" in columns:
        _check_unique(path, columns["case_id"], columns["epoch"])
        _check_complete_epochs(path, columns["case_id"], columns["epoch"])
    return columns
