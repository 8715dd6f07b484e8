"""Every step a composition may take, in one list, and pipelines built from names.

A step is a small frozen config (`engine.Step`); each lives beside what it computes. To add a
step, write it in a module of its own and add it to `STEPS`: `compose`, the engine and the
manifest need no change.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import EnsError
from .auto import Auto
from .engine import Pipeline, Step
from .learned import Pool, Select, Stack
from .persons import ByPerson
from .priors import Priors
from .tuning import TuneF1
from .voting import Geo, Hard, Method, Rank, Soft, Tie

STEPS: tuple[type[Step], ...] = (Soft, Geo, Hard, Rank, Stack, Select, Pool, Auto, Priors, TuneF1, ByPerson)
BY_NAME = {step.name: step for step in STEPS}


def combining(method: Method | str, *, per_task: bool = False, tie: Tie | str | None = None, balanced: bool = False, all_tasks: bool = False) -> Step:
    """The combining step a ``--method`` names, with the options that belong to it: `per_task`
    (the votes), `tie` (a hard vote's rule; an error with any other), `balanced` and `all_tasks`
    (the stack)."""
    method = Method(method)
    if tie is not None and method is not Method.HARD:
        raise EnsError(f"--tie breaks the ties of a hard vote; --method {method} has none (use --method hard)")
    if method is Method.HARD:
        return Hard(per_task, Tie(tie or Tie.MASS))
    if method in (Method.SOFT, Method.GEO, Method.RANK):
        return BY_NAME[method.value](per_task)
    if method is Method.STACK:
        return Stack(balanced, all_tasks)
    return BY_NAME[method.value]()


def pipeline_of(steps: Pipeline | Step | Method | str | Sequence[Step | Method | str] | None) -> Pipeline:
    """A `Pipeline` from what a caller gives: a pipeline; a step; a method name (``"soft"``,
    ``"auto"``; that combining step alone); a list of steps or names; None (the soft vote)."""
    if isinstance(steps, Pipeline):
        return steps
    if steps is None:
        return Pipeline((Soft(),))
    if isinstance(steps, (Step, str)):
        steps = [steps]
    built = []
    for step in steps:
        if isinstance(step, Step):
            built.append(step)
        elif isinstance(step, str) and step in BY_NAME:
            built.append(BY_NAME[step]())
        else:
            raise EnsError(f"{step!r} is not a step: give steps (ens.Soft(), ens.Priors('em'), …) or their names ({', '.join(BY_NAME)})")
    return Pipeline(tuple(built))
