"""The one error class of `ens`: everything a user can get wrong raises `EnsError`.

The CLI catches only this class, prints ``Error: <message>`` on one line and exits 1; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EnsError(Exception):
    """Bad input or a refused action, with a one-line message that names the file, row or key."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean: a, b?)`` for the close matches of `name` in `choices`, else ``""``."""
    close = difflib.get_close_matches(name, sorted(set(choices)), n=3, cutoff=0.5)
    return f" (did you mean: {', '.join(close)}?)" if close else ""


def unknown(what: str, name: str, choices: Iterable[str]) -> EnsError:
    """The error for an unknown name: suggests close matches, else lists what exists."""
    choices = sorted(set(choices))
    hint = did_you_mean(name, choices)
    if not hint:
        shown = ", ".join(choices[:8]) + (", …" if len(choices) > 8 else "")
        hint = f" (known: {shown})" if choices else " (none exist yet)"
    return EnsError(f"unknown {what} {name!r}{hint}")


def preview(items: Iterable[object], n: int = 3) -> str:
    """The first `n` items for an error message: ``'a', 'b', 'c', …``."""
    items = list(items)
    text = ", ".join(repr(str(x)) for x in items[:n])
    return text + (", …" if len(items) > n else "")
