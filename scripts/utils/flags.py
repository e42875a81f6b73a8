"""Command-line values: `--early_prune true` reaches a config as the string "true" (fire only parses
Python literals), so settings that must be booleans go through ``as_bool``."""

from __future__ import annotations

from typing import Any

__all__ = ["as_bool"]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", "none", "null", ""}


def as_bool(value: Any, name: str = "flag") -> bool:
    """``True``/``False`` and their usual spellings ("true", "False", "1", "no", ...); anything else is an error."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")
