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
from .calibration import Calibrator
from .priors import Priors, parse_priors
from .tuning import TuneF1
from .voting import Geo, Hard, Method, Rank, Soft, Tie

STEPS: tuple[type[Step], ...] = (Soft, Geo, Hard, Rank, Stack, Select, Pool, Auto, Priors, TuneF1, ByPerson)
BY_NAME = {step.name: step for step in STEPS}


def combining(method: Method | str, *, per_task: bool = False, tie: Tie | str | None = None, balanced: bool = False, all_tasks: bool = False) -> Step:
    """The combining step a ``--method`` names, with the options that belong to it: `per_task`
    (the votes), `tie` (a hard vote's rule), `balanced` and `all_tasks` (the stack). An option
    the method does not use is an error, never silently dropped."""
    if str(method) in BY_NAME and BY_NAME[str(method)].combines and str(method) not in {m.value for m in Method}:
        if per_task or tie is not None or balanced or all_tasks:
            raise EnsError(f"--method {method} takes no --per-task, --tie, --balanced or --all-task-features")
        return BY_NAME[str(method)]()  # a combining step without a Method member (the pool on the 18-way joint)
    method = Method(method)
    if tie is not None and method is not Method.HARD:
        raise EnsError(f"--tie breaks the ties of a hard vote; --method {method} has none (use --method hard)")
    unused = [flag for flag, on in (("--balanced", balanced), ("--all-task-features", all_tasks)) if on]
    if unused and method is not Method.STACK:
        raise EnsError(f"{' and '.join(unused)} shape{'s' if len(unused) == 1 else ''} a stack's meta-model; --method {method} has none (use --method stack)")
    if per_task and method.learned:
        raise EnsError(f"--per-task makes a vote vote each task on its marginals; --method {method} learns per task already (drop --per-task)")
    if method is Method.HARD:
        return Hard(per_task, Tie(tie or Tie.MASS))
    if method in (Method.SOFT, Method.GEO, Method.RANK):
        return BY_NAME[method.value](per_task)
    if method is Method.STACK:
        return Stack(balanced, all_tasks)
    return BY_NAME[method.value]()


def refining(prior: Sequence[str] = (), calibrate: Calibrator | str | None = None, force_prior: bool = False, tune_f1: bool = False, by_person: bool = False, force_by_person: bool = False) -> list[Step]:
    """The steps after the combining one that the command line's flags ask for, in order: a
    prior correction (`prior`: ``--prior`` values; `calibrate` and `force_prior` belong to it,
    and without it are an error), F1 offsets, decoding by person (`force_by_person` asks for it
    too)."""
    spec = parse_priors(list(prior))
    if not spec.active:
        unused = [flag for flag, on in (("--calibrate", calibrate is not None), ("--force-prior", force_prior)) if on]
        if unused:
            raise EnsError(f"{' and '.join(unused)} belong{'s' if len(unused) == 1 else ''} to a prior correction; add --prior em (or TASK:P,P,…)")
    steps: list[Step] = [Priors(spec, calibrate or Calibrator.AUTO, force_prior)] if spec.active else []
    steps += [TuneF1()] if tune_f1 else []
    steps += [ByPerson(force=force_by_person)] if by_person or force_by_person else []
    return steps


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
