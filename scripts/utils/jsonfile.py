"""Reading a JSON file the bundle is given (a data list, an exported subset): with or without the UTF-8
byte-order mark that Windows editors write, and a file cut mid-write or not JSON refused in one line
naming the file, where its JSON stops and the fix, instead of a ``JSONDecodeError`` traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from scripts.utils.errors import InputError

__all__ = ["read_json"]

DATA_LIST_FIX = "repair the file (one JSON object, as a Decathlon dataset.json) or give another"


def read_json(path: str | os.PathLike, fix: str = DATA_LIST_FIX) -> Any:
    """The content of the JSON file ``path`` (UTF-8, a leading byte-order mark skipped). A missing or
    unreadable file, or one that is not JSON, is an ``InputError``: the file, the problem (where the JSON
    stops, and whether the file ends there: cut mid-write) and ``fix``."""
    path = Path(os.path.abspath(path))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; fix: {fix}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot be read ({type(e).__name__}: {e}); fix: {fix}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        # a string left open runs to the end of the file, and JSON never ends without its closing brace
        ends = e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")
        cut = "; the file ends there: it was cut mid-write" if ends else ""
        raise InputError(f"{path}: not valid JSON ({e.msg}, line {e.lineno} column {e.colno}{cut}); fix: {fix}") from e
