"""The bundle's command-line tools: python-fire, but an option the command does not take is refused first.

Fire calls the function with the options it recognises and only afterwards complains about the rest, so
``python -m scripts.workflows.pipeline --dataset_dir data/Mine`` trained a whole pipeline on the embedded
data set before it printed ``Cannot find key: --dataset_dir``. ``fire_strict`` checks every ``--option``
against the function's signature before anything runs and refuses an unknown one in one line (an
``InputError``, printed last by ``errors.install_hook``), naming the close matches and, for the tools that
pass bundle settings on, where those settings go. ``--help`` anywhere shows the help and runs nothing
(fire itself runs the command when ``--help`` follows other options).

Fire also takes ``-name value`` (one dash) and ``-n`` (the one option starting with n): both are checked
the same way, so ``-dataset_dirr mine`` is refused instead of running the defaults. A tool taking
``**settings`` (bundle settings passed on to its runs: the audit, the review) checks those itself against
the bundle's configs (``scripts.utils.bundle_keys.check_bundle_settings``) before it runs anything. A
required option left out is named in one line too (fire prints its usage text instead).
"""

from __future__ import annotations

import difflib
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from scripts.utils.errors import InputError, install_hook
from scripts.utils.fire_args import FLAG, fire_options

__all__ = ["fire_strict", "missing_options", "unknown_options"]

_FIRE_OWN = {"help", "h"}  # fire's flags before the "--" separator


def _accepted(fn: Callable[..., Any]) -> tuple[list[str], bool]:
    """(option names the callable takes, whether it takes any **kwargs)."""
    params = inspect.signature(fn).parameters.values()
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def unknown_options(fn: Callable[..., Any], args: Sequence[str]) -> list[str]:
    """The options in ``args`` (up to fire's ``--`` separator) that ``fn`` does not take, as typed.

    Every token fire reads as an option is checked: ``--name value``, ``--name=value``, ``-name value``,
    ``--name-with-dashes``, fire's ``--noname`` for a boolean, and fire's shortcut ``-n`` for the one option
    starting with n (a letter that starts several options, or none, is refused). Positional values and
    negative numbers are left to fire. A callable taking ``**kwargs`` takes any name: it checks them itself.
    """
    names, any_kwargs = _accepted(fn)
    if any_kwargs:
        return []
    known = set(names)
    unknown = []
    for token, name, _ in fire_options(args)[0]:
        name = name.replace("-", "_")
        if name in known or name in _FIRE_OWN or (name.startswith("no") and name[2:] in known):
            continue
        if len(name) == 1 and sum(n.startswith(name) for n in names) == 1:
            continue  # fire's shortcut: -w for the one option starting with w
        unknown.append(token.split("=", 1)[0])
    return unknown


def missing_options(fn: Callable[..., Any], args: Sequence[str]) -> list[str]:
    """The options without a default that ``args`` does not name; none when any value is given by position
    (fire then fills the parameters in order)."""
    params = inspect.signature(fn).parameters.values()
    required = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD,
                p.KEYWORD_ONLY)]  # fmt: skip
    options, positional = fire_options(args)
    if positional:
        return []
    named = {name.replace("-", "_") for _, name, _ in options}
    return [n for n in required if n not in named]


def _refusal(command: str, fn: Callable[..., Any], option: str) -> str:
    names, _ = _accepted(fn)
    name = option.lstrip("-").replace("-", "_")
    close = difflib.get_close_matches(name, names, n=2)
    if len(name) == 1:
        close = [n for n in names if n.startswith(name)] or close
    hint = f"did you mean {' or '.join('--' + c for c in close)}? " if close else ""
    if "overrides" in names:
        from scripts.utils.bundle_keys import config_ids

        setting = (difflib.get_close_matches(name, sorted(config_ids(["configs/train.yaml"])[0]), n=1) or [name])[0]
        hint += f"bundle settings go in --overrides, e.g. --overrides \"{{'{setting}': ...}}\"; "
    return (
        f"{command}: unknown option {option} ({hint}its options are "
        f"{', '.join('--' + n for n in names)}; see {command} --help)"
    )


def fire_strict(
    component: Callable[..., Any] | Mapping[str, Callable[..., Any]],
    command: Sequence[str] | None = None,
    name: str | None = None,
    **fire_kwargs: Any,
) -> Any:
    """``fire.Fire(component, command, name, **fire_kwargs)``, after refusing unknown options.

    ``component`` is a function, or a mapping of sub-command names to functions (the first argument picks
    one). The refusal is an ``InputError``: with the hook installed here, its message is the last line
    printed and the exit status is 1.
    """
    import fire

    argv = list(sys.argv[1:] if command is None else command)
    args, tool = argv, name or f"python -m {_main_module()}"
    fn: Any = component
    if isinstance(component, Mapping):
        fn = component.get(args[0]) if args else None
        if fn is not None:
            tool, args = f"{tool} {args[0]}", args[1:]
    install_hook()
    head = args[: args.index("--")] if "--" in args else args
    if "--help" in head or "-h" in head:
        # fire shows help only for a leading --help: after other options it would run the command first
        return fire.Fire(component, command=[*argv[: len(argv) - len(args)], "--help"], name=name, **fire_kwargs)
    if callable(fn):
        unknown = unknown_options(fn, args)
        if unknown:
            raise InputError(_refusal(tool, fn, unknown[0]))
        missing = missing_options(fn, args)
        if missing:
            given = ", ".join(a for a in args if FLAG.match(a)) or "none"
            raise InputError(
                f"{tool}: {', '.join('--' + m for m in missing)} must be given (options given: {given}); fix: "
                f"{tool} {' '.join(f'--{m} ...' for m in missing)} (see {tool} --help)"
            )
    return fire.Fire(component, command=argv, name=name, **fire_kwargs)


def _main_module() -> str:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name.removesuffix(".__main__") if spec is not None else sys.argv[0]
