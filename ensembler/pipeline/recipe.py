"""The recipe grammar (DESIGN.md §4): which sources feed which task, with what weights.

```
recipe := part (" " part)*
part   := tasks ":" term ("+" term)*
tasks  := "*" | task ("," task)*          task in mask, gender, age; "*" = every task not named
term   := source ("*" weight)?            weight a positive number (default 1)
```

Example: ``age:peter*2+ken mask,gender:polar``. A task the recipe does not name (and no ``*:``
covers) takes the recipe's sources that predict it (`complete_recipe`): one such source, that
one; several, their vote. ``age:peter mask:polar`` is how people say "age from peter, mask (and
gender) from polar". Every filled task is said in one line (`Recipe.filled`); a task that no
named source predicts is an error listing the project's sources that do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..data.labels import MASK_SPACE, LabelSpace, Task
from ..data.store import check_name
from ..errors import EnsError, preview, unknown

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
    """``{task: terms}`` in the label space's task order: every task once complete
    (`complete_recipe`); as parsed, the tasks the text named. `filled`: ``{task: line}`` for
    each task the text did not name, saying where it came from. `space`: the competition's
    label space (`labels.LabelSpace`; the mask competition's by default)."""

    tasks: Mapping[Task | str, tuple[Term, ...]]
    filled: Mapping[Task | str, str] = field(default_factory=dict, compare=False)
    space: LabelSpace = field(default=MASK_SPACE, compare=False)

    @property
    def sources(self) -> tuple[str, ...]:
        """Every source named, in first-seen order."""
        return tuple(dict.fromkeys(term.source for terms in self.tasks.values() for term in terms))

    @property
    def unnamed(self) -> tuple[Task, ...]:
        """The tasks still without sources (none once complete)."""
        return tuple(t for t in self.space.tasks if t not in self.tasks)

    @property
    def uniform(self) -> bool:
        """True when every task takes the same sources with the same weights."""
        if self.unnamed:
            return False
        first = self.tasks[self.space.tasks[0]]
        return all(sorted(self.tasks[t], key=str) == sorted(first, key=str) for t in self.space.tasks)

    def __str__(self) -> str:
        if self.uniform:
            return "*:" + "+".join(map(str, self.tasks[self.space.tasks[0]]))
        groups: dict[str, list[str]] = {}  # tasks sharing their terms are written together
        for task, terms in self.tasks.items():
            groups.setdefault("+".join(map(str, terms)), []).append(str(task))
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


def parse_recipe(parts: Sequence[str] | str, space: LabelSpace = MASK_SPACE) -> Recipe:
    """Parse recipe parts (``["age:peter", "mask,gender:polar"]``, or one string with spaces),
    the tasks those of `space` (the project's: `Project.competition.space`)."""
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
            task = space.task(name)
            if task in named:
                raise EnsError(f"recipe part {tok!r}: task {task} is given twice")
            named[task] = terms
    if default is not None:
        named = {t: named.get(t, default) for t in space.tasks}
    return Recipe({t: named[t] for t in space.tasks if t in named}, space=space)


def complete_recipe(recipe: Recipe, coverage: Mapping[str, Sequence[Task]]) -> Recipe:
    """Give each task the recipe does not name the recipe's sources that predict it.

    coverage: ``{source: tasks it predicts}`` for every source of the project (unknown names in
    the recipe are an error that suggests close ones). One such source: that one; several: all
    of them, weight 1, composed as the named tasks are. None: an error listing the project's
    sources that predict the task, never one that lacks it.
    """
    for source in recipe.sources:
        if source not in coverage:
            raise unknown("source", source, coverage)
    if not recipe.unnamed:
        return recipe
    tasks, filled = dict(recipe.tasks), {}
    for task in recipe.unnamed:
        having = [s for s in recipe.sources if task in coverage[s]]
        if not having:
            others = [s for s, covered in coverage.items() if task in covered]
            offer = f"sources that do: {preview(others, 5)}; name one ({task}:{others[0]})" if others else "no source of the project predicts it"
            named = ", ".join(recipe.sources)
            raise EnsError(f"no source for {task}: the recipe's {'source' if len(recipe.sources) == 1 else 'sources'} {named} do{'es' if len(recipe.sources) == 1 else ''} not predict it; {offer}")
        tasks[task] = tuple(Term(s) for s in having)
        if len(having) == 1:
            filled[task] = f"{task}: not named; from {having[0]}, the recipe's only source with {task}"
        else:
            filled[task] = f"{task}: not named; from {'+'.join(having)}, the recipe's sources with {task}"
    return Recipe({t: tasks[t] for t in recipe.space.tasks}, filled, recipe.space)
