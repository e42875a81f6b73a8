"""How python-fire reads a command line (the bundle's tools and ``python -m monai.bundle`` alike), for the
checks that refuse an option before the command runs (``scripts.utils.cli``, ``scripts.utils.bundle_keys``)."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["FLAG", "fire_options"]

FLAG = re.compile(r"--|-[A-Za-z]")  # what fire takes for an option (a negative number is a value)


def fire_options(args: Sequence[str]) -> tuple[list[tuple[str, str, str | None]], list[str]]:
    """``args`` as fire reads them, up to its ``--`` separator: (each option as (the token as typed, its name,
    its value: after ``=``, else the next token when that is not an option, else None), the positional values).
    """
    options: list[tuple[str, str, str | None]] = []
    positional: list[str] = []
    tokens = list(args[: list(args).index("--")] if "--" in args else args)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not FLAG.match(token):
            positional.append(token)
            continue
        name, eq, value = token.lstrip("-").partition("=")
        if not eq:
            value = None
            if i < len(tokens) and not FLAG.match(tokens[i]):
                value, i = tokens[i], i + 1
        options.append((token, name, value))
    return options, positional
