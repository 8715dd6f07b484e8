"""The recipe grammar (DESIGN.md §4): which sources feed which task, with what weights.

```
recipe := part (" " part)*
part   := tasks ":" term ("+" term)*
tasks  := "*" | task ("," task)*          task in mask, gender, age; "*" = every task not named
term   := source ("*" weight)?            weight a positive number (default 1)
```

Example: ``age:peter*2+ken mask,gender:polar``. Every task must end up with sources: a task
left unnamed is an error, never a silent default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..data.labels import TASKS, Task, parse_task
from ..data.store import check_name
from ..errors import EnsError

EXAMPLE = "e.g. age:peter mask,gender:polar, or *:polar for every task"


@dataclass(frozen=True)
class Term:
    """One source in a task's vote, with its weight."""

    source: str
    weight: float = 1.0

    def __str__(self) -> str:
        return self.source if self.weight == 1 else f"{self.source}*{self.weight:g}"


@dataclass(frozen=True)
class Recipe:
    """``{task: terms}`` for all three tasks, in `TASKS` order."""

    tasks: Mapping[Task, tuple[Term, ...]]

    @property
    def sources(self) -> tuple[str, ...]:
        """Every source named, in first-seen order."""
        return tuple(dict.fromkeys(term.source for terms in self.tasks.values() for term in terms))

    @property
    def uniform(self) -> bool:
        """True when every task takes the same sources with the same weights."""
        first = self.tasks[TASKS[0]]
        return all(sorted(self.tasks[t], key=str) == sorted(first, key=str) for t in TASKS)

    def __str__(self) -> str:
        if self.uniform:
            return "*:" + "+".join(map(str, self.tasks[TASKS[0]]))
        groups: dict[str, list[str]] = {}  # tasks sharing their terms are written together
        for task, terms in self.tasks.items():
            groups.setdefault("+".join(map(str, terms)), []).append(task.value)
        return " ".join(f"{','.join(tasks)}:{terms}" for terms, tasks in groups.items())


def _weight(text: str, part: str) -> float:
    try:
        weight = float(text)
    except ValueError:
        weight = math.nan
    if not math.isfinite(weight) or weight <= 0:
        raise EnsError(f"recipe part {part!r}: weight {text!r} must be a positive number")
    return weight


def _terms(text: str, part: str) -> tuple[Term, ...]:
    terms: list[Term] = []
    for raw in text.split("+"):
        source, star, weight = raw.strip().partition("*")
        if not source:
            raise EnsError(f"recipe part {part!r}: empty source name ({EXAMPLE})")
        try:
            check_name(source)
        except EnsError as exc:
            raise EnsError(f"recipe part {part!r}: {exc}") from None
        if any(t.source == source for t in terms):
            raise EnsError(f"recipe part {part!r}: source {source!r} appears twice; give it a weight instead ({source}*2)")
        terms.append(Term(source, _weight(weight, part) if star else 1.0))
    return tuple(terms)


def parse_recipe(parts: Sequence[str] | str) -> Recipe:
    """Parse recipe parts (``["age:peter", "mask,gender:polar"]``, or one string with spaces)."""
    if isinstance(parts, str):
        parts = [parts]
    tokens = [tok for part in parts for tok in part.split()]
    if not tokens:
        raise EnsError(f"empty recipe ({EXAMPLE})")
    named: dict[Task, tuple[Term, ...]] = {}
    default: tuple[Term, ...] | None = None
    for tok in tokens:
        head, colon, body = tok.partition(":")
        if not colon or not head or not body:
            raise EnsError(f"recipe part {tok!r}: expected TASK:SOURCE ({EXAMPLE})")
        terms = _terms(body, tok)
        if head == "*":
            if default is not None:
                raise EnsError(f"recipe part {tok!r}: '*' is given twice")
            default = terms
            continue
        for name in head.split(","):
            task = parse_task(name)
            if task in named:
                raise EnsError(f"recipe part {tok!r}: task {task} is given twice")
            named[task] = terms
    missing = [t for t in TASKS if t not in named]
    if missing and default is None:
        example = next(iter(named.values()))[0].source
        raise EnsError(
            f"no source for {', '.join(map(str, missing))}: name it ({missing[0]}:{example}) "
            f"or give a default for every task not named (*:{example})"
        )
    return Recipe({t: named.get(t, default) for t in TASKS})  # type: ignore[misc]
