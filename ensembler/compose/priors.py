"""Prior correction for a test set whose class mix differs from train's.

`em_priors` estimates the test priors from unlabelled posteriors by EM (Saerens, Latinne and
Decaestecker 2002, "Adjusting the outputs of a classifier to new a priori probabilities"):
repeat ``p'(c|x) ∝ p(c|x) · π'(c) / π(c)`` and ``π'(c) = mean_x p'(c|x)`` until the priors settle.
`adjust` re-weights posteriors from the train priors π to new priors π' (the same formula).
A team that knows a task's eval priors (from the leaderboard, or the organisers) gives them
instead (`PriorSpec.given`); the other tasks are then EM-estimated or left as they are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..data.labels import N_CLASSES, TASKS, Task, decode, parse_task
from ..errors import EnsError

FLOOR = 1e-6  # no prior is allowed to reach 0: a class could never come back


def adjust(probs: np.ndarray, train_priors: np.ndarray, new_priors: np.ndarray) -> np.ndarray:
    """Posteriors ``(n, k)`` under `train_priors` ``(k,)`` -> posteriors under `new_priors` ``(k,)``."""
    weights = np.maximum(new_priors, FLOOR) / np.maximum(train_priors, FLOOR)
    out = np.asarray(probs, dtype=np.float64) * weights
    return out / out.sum(axis=1, keepdims=True)


def em_priors(probs: np.ndarray, train_priors: np.ndarray, max_iter: int = 1000, tol: float = 1e-8) -> tuple[np.ndarray, int]:
    """EM estimate of the priors of the images behind `probs` ``(n, k)``.

    Returns the priors ``(k,)`` and the number of iterations used.
    """
    train_priors = np.asarray(train_priors, dtype=np.float64)
    priors = train_priors.copy()
    for iteration in range(1, max_iter + 1):
        new = adjust(probs, train_priors, priors).mean(axis=0)
        new = np.maximum(new, FLOOR) / np.maximum(new, FLOOR).sum()
        if np.abs(new - priors).max() < tol:
            return new, iteration
        priors = new
    return priors, max_iter


def implied_priors(probs: np.ndarray) -> np.ndarray:
    """The priors posteriors ``(n, k)`` stand for: their mean, normalised ``(k,)``."""
    mean = np.asarray(probs, dtype=np.float64).mean(axis=0)
    return mean / mean.sum()


def train_priors(labels: np.ndarray) -> dict[Task, np.ndarray]:
    """Per-task class frequencies ``{task: (k,)}`` of joint labels ``(n,)``."""
    if not len(labels):
        raise EnsError("no labelled images to take the train priors from")
    parts = decode(labels)
    return {t: np.bincount(parts[t], minlength=N_CLASSES[t]) / len(labels) for t in TASKS}


PRIOR_EXAMPLE = "em, or TASK:P,P,… in class order, e.g. age:0.3,0.5,0.2"


@dataclass(frozen=True)
class PriorSpec:
    """Which eval priors to re-weight to: `given` ones per task ``{task: (k,)}`` (normalised),
    EM estimates for the other tasks when `em`; nothing at all by default."""

    em: bool = False
    given: Mapping[Task, tuple[float, ...]] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.em or bool(self.given)

    def __str__(self) -> str:
        parts = [f"{t}:{','.join(f'{v:.4g}' for v in self.given[t])}" for t in TASKS if t in self.given]
        return " ".join(parts + (["em"] if self.em else [])) or "none"


def parse_priors(values: Sequence[str] | str) -> PriorSpec:
    """``["em"]``, ``["age:0.3,0.5,0.2", "em"]``, ``["none"]`` … -> a `PriorSpec` (values may also be space-separated)."""
    tokens = [tok for value in ([values] if isinstance(values, str) else values) for tok in value.split()]
    em, given = False, {}
    for tok in tokens:
        if tok in ("em", "none"):
            em = em or tok == "em"
            continue
        head, colon, body = tok.partition(":")
        if not colon:
            raise EnsError(f"--prior {tok!r}: expected {PRIOR_EXAMPLE}")
        task = parse_task(head)
        if task in given:
            raise EnsError(f"--prior {tok!r}: the {task} priors are given twice")
        try:
            values_ = [float(v) for v in body.split(",")]
        except ValueError:
            raise EnsError(f"--prior {tok!r}: priors are numbers ({PRIOR_EXAMPLE})") from None
        if len(values_) != N_CLASSES[task]:
            raise EnsError(f"--prior {tok!r}: {task} has {N_CLASSES[task]} classes, so {N_CLASSES[task]} priors, not {len(values_)}")
        if not all(math.isfinite(v) and v >= 0 for v in values_) or sum(values_) <= 0:
            raise EnsError(f"--prior {tok!r}: priors are non-negative numbers with a positive sum")
        given[task] = tuple(v / sum(values_) for v in values_)
    return PriorSpec(em, given)


def reweight(
    probs: Mapping[Task, np.ndarray], ratios: Mapping[Task, np.ndarray], joint: np.ndarray | None = None
) -> tuple[dict[Task, np.ndarray], np.ndarray | None]:
    """Multiply each task's probabilities ``(n, k)`` by its class weights ``(k,)`` and renormalise;
    the joint ``(n, 18)`` by the product of the tasks' weights (a task without weights keeps 1)."""
    out = {}
    for task, p in probs.items():
        w = np.asarray(ratios.get(task, np.ones(p.shape[1])), dtype=np.float64)
        out[task] = np.asarray(p, dtype=np.float64) * w
        out[task] /= out[task].sum(axis=1, keepdims=True)
    new_joint = None
    if joint is not None:
        m, g, a = (np.asarray(ratios.get(t, np.ones(N_CLASSES[t])), dtype=np.float64) for t in TASKS)
        new_joint = joint * np.einsum("i,j,k->ijk", m, g, a).reshape(-1)
        new_joint /= new_joint.sum(axis=1, keepdims=True)
    return out, new_joint


def correct(
    probs: Mapping[Task, np.ndarray],
    priors_train: Mapping[Task, np.ndarray],
    joint: np.ndarray | None = None,
    spec: PriorSpec = PriorSpec(em=True),
) -> tuple[dict[Task, np.ndarray], np.ndarray | None, dict[str, dict[str, object]]]:
    """Re-weight each task's posteriors ``{task: (n, k)}`` (and the joint ``(n, 18)``) from
    `priors_train` to the priors of `spec`: given, or EM-estimated. Returns the new posteriors,
    the new joint, and per corrected task its train and new priors and where they came from."""
    record, ratios = {}, {}
    for task, p in probs.items():
        if task in spec.given:
            target, how = np.asarray(spec.given[task]), "given"
        elif spec.em:
            target, how = em_priors(p, priors_train[task])[0], "em"
        else:
            continue
        ratios[task] = np.maximum(target, FLOOR) / np.maximum(priors_train[task], FLOOR)
        record[task.value] = {"train": priors_train[task].round(4).tolist(), "eval": target.round(4).tolist(), "from": how}
    new_probs, new_joint = reweight(probs, ratios, joint)
    return new_probs, new_joint, record

