"""Every step a composition may take, read from the one registry, and pipelines built from names.

A step is a small frozen config (`engine.Step`) that lives beside what it computes and registers
once (`engine.register`; the package imports every step module, `pipeline/__init__.py`). The
command line's ``--method`` choices and help (`Method`, `method_help`), the API's names, pipelines
by name (`pipeline_of`) and auto's candidates all read `engine.REGISTRY`: a new step is a new
module plus its import there; `compose`, the engine and the manifest need no change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from enum import StrEnum

from ..errors import EnsError
from .calibration import Calibrator
from .engine import REGISTRY, Pipeline, Step
from .persons import ByPerson
from .priors import Priors, parse_priors
from .tuning import TuneF1
from .voting import Soft, Tie

# a combining step's option -> its flag, and what it does
FLAGS = {
    "per_task": ("--per-task", "makes a vote vote each task on its marginals"),
    "tie": ("--tie", "breaks the ties of a hard vote"),
    "balanced": ("--balanced", "shapes a stack's meta-model"),
    "all_tasks": ("--all-task-features", "shapes a stack's meta-model"),
}


def combining_steps() -> dict[str, type[Step]]:
    """The registered steps that combine the sources (what ``--method`` names), in registry order."""
    return {name: step for name, step in REGISTRY.items() if step.combines}


Method = StrEnum("Method", {name.upper(): name for name in combining_steps()})  # --method's closed choice, from the registry
Method.__doc__ = "How a recipe's sources are combined: every registered combining step (`steps.combining_steps`)."


def decision_steps() -> dict[str, type[Step]]:
    """The registered decisions for the metric (``--decide NAME``: cut points, prior-divided), by their command-line names."""
    return {step.cli: step for step in REGISTRY.values() if step.flag == "--decide"}


Decision = StrEnum("Decision", {name.upper().replace("-", "_"): name for name in decision_steps()})  # --decide's closed choice
Decision.__doc__ = "How the answer's classes are decided for the metric: every registered decision step (`steps.decision_steps`)."


def decision_help() -> str:
    """``--decide``'s help: each decision's own line and the metric it serves."""
    return "; ".join(f"{name} ({', '.join(step.metrics or ())}): {step.help.split(': ', 1)[-1]}" for name, step in decision_steps().items())


def method_help() -> str:
    """``--method``'s help: each combining step's own line (`Step.help`)."""
    return "; ".join(f"{name}: {step.help}" for name, step in combining_steps().items())


def combining(method: Method | str, **options: object) -> Step:
    """The combining step a ``--method`` names, built with the options given (`FLAGS`: per_task,
    tie, balanced, all_tasks; None or False is not given). An option the step does not take is
    an error naming the steps that do, never silently dropped."""
    step = combining_steps().get(str(method))
    if step is None:
        raise EnsError(f"--method {method!r}: not one of {', '.join(combining_steps())}")
    given = {key: value for key, value in options.items() if value not in (None, False)}
    own = {f.name for f in fields(step)}
    for key in given:
        if key not in own:
            takers = [name for name, other in combining_steps().items() if key in {f.name for f in fields(other)}]
            flag, does = FLAGS.get(key, (key, "is an option"))
            raise EnsError(f"{flag} {does}; --method {step.name} has none (use --method {', '.join(takers)})")
    if "tie" in given:
        given["tie"] = Tie(given["tie"])
    return step(**given)


def refining(prior: Sequence[str] = (), calibrate: Calibrator | str | None = None, force_prior: bool = False, tune_f1: bool = False, by_person: bool = False, force_by_person: bool = False, decide: Decision | str | None = None) -> list[Step]:
    """The steps after the combining one that the command line's flags ask for, in order: a
    prior correction (`prior`: ``--prior`` values; `calibrate` and `force_prior` belong to it,
    and without it are an error), F1 offsets, decoding by person (`force_by_person` asks for it
    too), a decision for the metric (`decide`: ``--decide`` cut-points or prior-divided)."""
    spec = parse_priors(list(prior))
    if not spec.active:
        unused = [flag for flag, on in (("--calibrate", calibrate is not None), ("--force-prior", force_prior)) if on]
        if unused:
            raise EnsError(f"{' and '.join(unused)} belong{'s' if len(unused) == 1 else ''} to a prior correction; add --prior em (or TASK:P,P,…)")
    steps: list[Step] = [Priors(spec, calibrate or Calibrator.AUTO, force_prior)] if spec.active else []
    steps += [TuneF1()] if tune_f1 else []
    steps += [ByPerson(force=force_by_person)] if by_person or force_by_person else []
    if decide is not None:
        if str(decide) not in decision_steps():
            raise EnsError(f"--decide {decide!r}: not one of {', '.join(decision_steps())}")
        steps.append(decision_steps()[str(decide)]())
    return steps


def pipeline_of(steps: Pipeline | Step | str | Sequence[Step | str] | None) -> Pipeline:
    """A `Pipeline` from what a caller gives: a pipeline; a step; a step's name (``"soft"``,
    ``"auto"``, ``"tune_f1"``: that step with its defaults); a list of steps or names; None (the
    soft vote)."""
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
        elif isinstance(step, str) and step in REGISTRY:
            built.append(REGISTRY[step]())
        else:
            raise EnsError(f"{step!r} is not a step: give steps (ens.Soft(), ens.Priors('em'), …) or their names ({', '.join(REGISTRY)})")
    return Pipeline(tuple(built))
