"""Which ``--key value`` settings the bundle's configs take, so that a tool passing settings on to its
bundle runs refuses a misspelt one before it runs anything.

``monai.bundle run`` adds a key it does not know to the config, where nothing reads it: ``python -m
scripts.workflows.audit --fold 3 --epoch 8`` trained 5 folds of 40 epochs. A setting is known when the
configs define its id (``epochs``, ``synthetic#num_train``, ``train#random_transforms#0#pos``; ``::`` and
``#`` alike), when it is a new argument of a component (``network_def#dropout``: a dict with
``_target_`` takes any argument of its class, which MONAI checks when it builds it), or one of
``monai.bundle run``'s own options (``tracking``). ``check_command_line`` applies the same check to the
bundle's own command (``python -m monai.bundle run training --config_file ... --dataset_dirr mine`` trained
the embedded set without a word): the workflow configs call it first thing in ``initialize``.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from scripts.utils.errors import InputError
from scripts.utils.fire_args import fire_options

__all__ = ["RUN_OPTIONS", "check_bundle_settings", "check_command_line", "command_line_settings", "config_ids",
           "unknown_settings"]  # fmt: skip

ROOT = Path(__file__).resolve().parents[2]
RUN_OPTIONS = ("tracking", "logging_file", "meta_file", "args_file")  # monai.bundle run's, not the config's
# monai.bundle run's options that name what to run rather than set anything
COMMAND_OPTIONS = ("config_file", "run_id", "init_id", "final_id")


def _path(name: str | os.PathLike) -> Path:
    """A config file as given: absolute, from the working directory, else from the bundle root."""
    path = Path(name)
    return path if path.is_absolute() or path.is_file() else ROOT / path


def _walk(node: Any, prefix: str, ids: set[str], components: set[str]) -> None:
    if isinstance(node, Mapping):
        if "_target_" in node:
            components.add(prefix)
        children: Iterable[tuple[Any, Any]] = node.items()
    elif isinstance(node, list):
        children = enumerate(node)
    else:
        return
    for key, value in children:
        name = str(key).lstrip("+").replace("::", "#")  # "+imports" merges onto the same id
        child = f"{prefix}#{name}" if prefix else name
        ids.add(child)
        _walk(value, child, ids, components)


def config_ids(config_files: Sequence[str | os.PathLike]) -> tuple[set[str], set[str]]:
    """(every id the config files define, the ids of their components: dicts with ``_target_``)."""
    from monai.bundle import ConfigParser

    ids: set[str] = set()
    components: set[str] = set()
    for name in config_files:
        _walk(ConfigParser.load_config_file(str(_path(name))), "", ids, components)
    return ids, components


def unknown_settings(settings: Iterable[str], config_files: Sequence[str | os.PathLike]) -> list[str]:
    """The settings (ids, as given) that none of ``config_files`` takes."""
    ids, components = config_ids(config_files)
    unknown = []
    for setting in settings:
        key = str(setting).replace("::", "#")
        parent = key.rpartition("#")[0]
        if key in ids or key in RUN_OPTIONS or (parent and parent in components):
            continue
        unknown.append(str(setting))
    return unknown


def check_bundle_settings(
    settings: Mapping[str, Any] | Iterable[str],
    config_files: Sequence[str | os.PathLike],
    tool: str,
    options: Sequence[str] = (),
    given_as: str = "--{}",
) -> None:
    """Refuse, in one line (``InputError``), the settings none of the bundle's ``config_files`` takes, each
    with its close matches among the tool's own ``options`` and the configs' ids. ``given_as`` shows a
    setting as the user typed it (``--{}`` for an option of its own, ``'{}'`` for a key of a dict)."""
    unknown = unknown_settings(list(settings), config_files)
    if not unknown:
        return
    ids, _ = config_ids(config_files)
    named = []
    for name in unknown:
        close = difflib.get_close_matches(name, [*options, *sorted(ids)], n=2)
        hint = f" (did you mean {' or '.join(given_as.format(c) for c in close)}?)" if close else ""
        named.append(given_as.format(name) + hint)
    files = ", ".join(_shown(f) for f in config_files)
    own = f"neither one of its options ({', '.join('--' + o for o in options)}) nor" if options else "not"
    raise InputError(
        f"{tool}: unknown setting{'s' * (len(named) > 1)} {', '.join(named)}: {own} a setting of the "
        f"bundle configs it runs ({files}), so nothing would read {'them' if len(named) > 1 else 'it'}; fix: "
        f"correct the name ({f'`{tool} --help` lists its options, ' if options else ''}the configs list the settings)"
    )


def _shown(name: str | os.PathLike) -> str:
    path = _path(name).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def command_line_settings(argv: Sequence[str]) -> tuple[list[str], list[str]] | None:
    """(the config files, the settings given as ``--key value``, ``--key=value`` or fire's ``-key value``) of
    a ``python -m monai.bundle run ...`` command line; None for any other program (a test, the pipeline's
    own process, ``monai.bundle.run`` called from Python)."""
    if len(argv) < 2 or not str(argv[0]).replace(os.sep, "/").endswith("monai/bundle/__main__.py") or argv[1] != "run":
        return None
    config_files: list[str] = []
    settings: list[str] = []
    for _, name, value in fire_options(argv[2:])[0]:  # monai.bundle's command line is fire's too
        if name.replace("-", "_") == "config_file":
            config_files += _file_list(value or "")
        elif name.replace("-", "_") not in COMMAND_OPTIONS:
            settings.append(name)
    return config_files, settings


def _file_list(value: str) -> list[str]:
    """``--config_file``'s value: one file, or a list as Python or JSON writes it."""
    for parse in (json.loads, ast.literal_eval):
        try:
            parsed = parse(value)
        except (ValueError, SyntaxError):
            continue
        if isinstance(parsed, (list, tuple)):
            return [str(f) for f in parsed]
    return [value] if value else []


def check_command_line(argv: Sequence[str] | None = None) -> None:
    """Refuse (``InputError``, one line) a ``python -m monai.bundle run`` command that sets something none
    of its config files takes; MONAI would add it to the config, where nothing reads it."""
    parsed = command_line_settings(sys.argv if argv is None else argv)
    if parsed is None or not parsed[0]:
        return
    config_files, settings = parsed
    if any(not _path(f).is_file() for f in config_files):
        return  # MONAI itself names a config file it cannot read
    if "tracking" in settings:  # --tracking mlflow merges MONAI's tracking settings (tracking_uri, run_name, ...)
        from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

        tracking = {key for entry in DEFAULT_EXP_MGMT_SETTINGS.values() for key in entry.get("configs", {})}
        settings = [s for s in settings if s.split("#")[0] not in tracking | {"handlers_id"}]
    check_bundle_settings(settings, config_files, "python -m monai.bundle run", given_as="--{}")
