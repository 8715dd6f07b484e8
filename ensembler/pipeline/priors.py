"""Prior correction for a test set whose class mix differs from train's (label shift).

`em_priors` estimates the test priors from unlabelled posteriors by EM (Saerens, Latinne and
Decaestecker 2002, "Adjusting the outputs of a classifier to new a priori probabilities"):
repeat ``p'(c|x) ∝ p(c|x) · π'(c) / π(c)`` and ``π'(c) = mean_x p'(c|x)`` until the priors settle.
EM assumes calibrated posteriors and the true train priors: on an over-confident soft vote, fed
its own mean posterior as "train priors", it runs away (every eval image into one age band).
`bbse_priors` is black-box shift estimation (Lipton, Wang and Smola 2018), from the labelled
confusion matrix of the hard decisions, which needs no calibration.
`adjust` re-weights posteriors from the train priors π to new priors π' (the same formula).
A team that knows a task's eval priors (from the leaderboard, or the organisers) gives them
instead (`PriorSpec.given`); the other tasks are then estimated or left as they are.

`Priors` is the step `ens compose --prior` adds (`fit_correction`): calibrate the composition on
its labelled images (`calibration.choose`; the 18-way joint as a whole, or each task on its own
where a gender x age class of the joint is too thin for a bias per class), estimate each task's
eval priors against the labelled images' true class mix, drop estimates that take a class below
a quarter of its labelled share and EM estimates whose premise fails where the mix is known
(`self_check`: EM on the labelled images' calibrated out-of-fold probabilities must give back
their mix), then check the correction where the answers are known: the labelled images
(calibrated out of fold, person-grouped) resampled by person and weighted to the estimated eval
mix, corrected against uncorrected 18-class macro F1. It is applied only where it wins there, in
at least `CHECK_WINS` of the resamples (or when forced); the record says which and why. The
check measures the correction as if the estimate were right: it guards against corrections and
calibrations that hurt, not against an estimate that is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from ..data.labels import N_CLASSES, N_JOINT, TASKS, Task, decode, marginals, parse_task
from ..data.people import MIN_PEOPLE, person_of, thin_classes, thin_pairs, thin_text
from ..data.stable import decide
from ..errors import EnsError
from ..scoring.evidence import f1_replicates, person_draws
from .calibration import Calibration, Calibrator, choose
from .engine import Composed, Context, Fit, Fitted, Scoring, Step, Words, register

FLOOR = 1e-6  # no prior is allowed to reach 0: a class could never come back
# An estimated correction is applied when it wins in this share of the labelled check's person
# resamples: on simulated teams (bench/quality.py, 120 team x method x estimator cases) "gain > 0"
# alone applied 82 corrections of which 12 lowered the hidden F1; this rule applied 52, 3 lower,
# for the same total gain.
CHECK_WINS = 0.9
COLLAPSE = 0.25  # an estimated prior under this share of the labelled one is taken for a run-away (`degenerate`)
# EM's estimate on the labelled images' own calibrated out-of-fold probabilities may miss their
# true mix by this much in all (L1) before EM is taken for unfit there (`self_check`).
SELF_CHECK = 0.05


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


PRIOR_EXAMPLE = "em, bbse, or TASK:P,P,… in class order, e.g. age:0.3,0.5,0.2"


ESTIMATORS = ("em", "bbse")


@dataclass(frozen=True)
class PriorSpec:
    """Which eval priors to re-weight to: `given` ones per task ``{task: (k,)}`` (normalised),
    estimates (`estimator`: em or bbse) for the other tasks; nothing at all by default."""

    estimator: str | None = None
    given: Mapping[Task, tuple[float, ...]] = field(default_factory=dict)

    @property
    def em(self) -> bool:
        return self.estimator == "em"

    @property
    def active(self) -> bool:
        return self.estimator is not None or bool(self.given)

    def __str__(self) -> str:
        parts = [f"{t}:{','.join(f'{v:.4g}' for v in self.given[t])}" for t in TASKS if t in self.given]
        return " ".join(parts + ([self.estimator] if self.estimator else [])) or "none"


def parse_priors(values: Sequence[str] | str) -> PriorSpec:
    """``["em"]``, ``["age:0.3,0.5,0.2", "em"]``, ``["none"]`` … -> a `PriorSpec` (values may also be space-separated)."""
    tokens = [tok for value in ([values] if isinstance(values, str) else values) for tok in value.split()]
    estimator, given = None, {}
    for tok in tokens:
        if tok in (*ESTIMATORS, "none"):
            if tok != "none" and estimator not in (None, tok):
                raise EnsError(f"--prior {tok!r}: one estimator at a time ({estimator} is given too)")
            estimator = tok if tok != "none" else estimator
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
    return PriorSpec(estimator, given)


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


def shift_ratios(
    probs: Mapping[Task, np.ndarray], priors_train: Mapping[Task, np.ndarray], spec: PriorSpec = PriorSpec("em")
) -> tuple[dict[Task, np.ndarray], dict[str, dict[str, object]]]:
    """Each task's class weights ``(k,)`` (new over train priors) to re-weight posteriors
    ``{task: (n, k)}`` from `priors_train` to the priors of `spec` (given, or EM-estimated), and
    per corrected task its train and new priors and where they came from."""
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
    return ratios, record


def correct(
    probs: Mapping[Task, np.ndarray],
    priors_train: Mapping[Task, np.ndarray],
    joint: np.ndarray | None = None,
    spec: PriorSpec = PriorSpec("em"),
) -> tuple[dict[Task, np.ndarray], np.ndarray | None, dict[str, dict[str, object]]]:
    """Re-weight each task's posteriors ``{task: (n, k)}`` (and the joint ``(n, 18)``) from
    `priors_train` to the priors of `spec` (`shift_ratios`). Returns the new posteriors, the new
    joint, and per corrected task its train and new priors and where they came from."""
    ratios, record = shift_ratios(probs, priors_train, spec)
    new_probs, new_joint = reweight(probs, ratios, joint)
    return new_probs, new_joint, record


def bbse_priors(val_decided: np.ndarray, val_labels: np.ndarray, eval_decided: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Black-box shift estimation (Lipton, Wang and Smola 2018) of a task's eval priors ``(k,)``.

    With ``C[i, j] = P(decided i, true j)`` on the labelled images and ``mu[i]`` the share of eval
    images decided ``i``, the class weights ``w = pi'/pi`` solve ``C w = mu`` (least squares,
    clipped at 0); ``pi' = w * pi`` (`train` ``(k,)``, the labelled mix), normalised.
    Decisions ``(n,)`` are class indices.
    """
    k = len(train)
    confusion = np.zeros((k, k))
    np.add.at(confusion, (val_decided, val_labels), 1.0)
    confusion /= len(val_labels)
    mu = np.bincount(eval_decided, minlength=k) / len(eval_decided)
    weights = np.clip(np.linalg.lstsq(confusion, mu, rcond=None)[0], 0, None)
    target = weights * train
    if target.sum() <= 0:
        return np.asarray(train, dtype=np.float64)
    target = np.maximum(target / target.sum(), FLOOR)
    return target / target.sum()


def degenerate(target: np.ndarray, train: np.ndarray) -> list[int]:
    """Classes the labelled data has (>= 1 %) that an estimate drives to under `COLLAPSE` (a
    quarter) of their labelled share: the signature of EM running away. A real shift of this
    competition's mix moves a class by a factor of two or three, and mostly up (the old band);
    on the demo EM took age 30-59 from 50 % to 2 % (and, after stacking, to 6 %), the labelled
    check, which takes the estimate as right, passed it, and the hidden F1 fell from 0.452 to
    0.301 (0.396 to 0.292)."""
    return [c for c in range(len(train)) if train[c] >= 0.01 and target[c] < COLLAPSE * train[c]]


def self_check(calibrated: np.ndarray, train: np.ndarray) -> np.ndarray | None:
    """EM's premise tested where the mix is known: EM run on the labelled images' calibrated
    out-of-fold probabilities `calibrated` ``(n, k)`` should give back their true mix `train`
    ``(k,)`` (with calibrated posteriors their mean is the mix, and EM stops where it starts).
    Returns EM's estimate there when it misses by more than `SELF_CHECK` in all, else None.

    A calibration that cannot move a class's mean (temperature scaling alone, chosen where a
    joint class is too thin for a bias per class) leaves probabilities that believe in a flatter
    mix than the labels hold; EM reads that belief as a shift and runs away upward, which
    `degenerate` does not see. On `bench/evidence.py`'s 480 teams of seeds 100-107 EM's age
    estimate on the labelled images missed their mix by more than 0.05 on 140 teams (36 of the
    96 of each kind whose members are all 18-class, 17 specialists, 15 mixed), by up to 1.97,
    and its estimate on eval missed the true eval mix by up to 1.30 (60+ at 55-91 % where 7 %
    are); with estimates that fail this check dropped (checked there on the calibration's
    in-sample probabilities), the mean error (L1) of the age estimate fell from 0.164 to 0.126
    (keeping the labelled mix: 0.156) and the worst from 1.30 to 0.49; auto's worst trail behind
    the hindsight-best at 150 labelled people, seeds 108-112, from 0.109 to 0.067
    (`docs/explanation/auto.md`)."""
    estimate = em_priors(calibrated, train)[0]
    return estimate if np.abs(estimate - train).sum() > SELF_CHECK else None


def shift_check(
    labels: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    weights: np.ndarray,
    persons: np.ndarray,
    replicates: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """The gain of `after` over `before` (joint decisions ``(n,)``) in 18-class macro F1 on the
    labelled images weighted to the estimated eval mix (`weights` ``(n,)``), over `replicates`
    resamples of the people (a person's images are drawn together). Mean, spread and the share
    of resamples in which the correction wins."""
    _, person = np.unique(persons, return_inverse=True)
    values = f1_replicates(labels, np.stack([before, after]), person, person_draws(int(person.max()) + 1, replicates, seed), N_JOINT, weights)
    gains = values[:, 1] - values[:, 0]
    return {"gain": float(gains.mean()), "spread": float(gains.std()), "wins": float((gains > 0).mean()), "replicates": replicates}


@dataclass(frozen=True)
class Correction(Fitted):
    """A fitted prior correction: calibrate (the joint, or each task) and re-weight each
    corrected task by `ratios` ``{task: (k,)}`` (new over train priors); when not `applied`,
    the composition passes unchanged. Without a labelled composition, nothing is calibrated."""

    ratios: Mapping[Task, np.ndarray]
    applied: bool
    joint: Calibration | None = None
    tasks: Mapping[Task, Calibration] = field(default_factory=dict)
    record: Mapping[str, object] = field(default_factory=dict, compare=False)
    described: bool = True  # the manifest's steps record it (`describe`); not when only scoring

    def describe(self) -> dict[str, object]:
        return {"prior": dict(self.record)} if self.described else {}

    def calibrated(self, x: Composed) -> tuple[dict[Task, np.ndarray], np.ndarray | None]:
        """`x`'s probabilities and joint, calibrated as fitted."""
        if self.joint is not None and x.joint is not None:
            joint = self.joint.apply(x.joint)
            return marginals(joint), joint
        return {t: self.tasks[t].apply(p) if t in self.tasks else p for t, p in x.probs.items()}, x.joint if not self.tasks else None

    def apply(self, x: Composed) -> Composed:
        if not self.applied:
            return x
        probs, joint = self.calibrated(x)
        return Composed.decided(x.image_ids, *reweight(probs, self.ratios, joint), x.mode)


def _uncalibrated(eval_composed: Composed, spec: PriorSpec, fallback_train: Mapping[Task, np.ndarray]) -> Correction:
    """No labelled composition: EM on the uncalibrated eval probabilities against `fallback_train`
    (the data folder's train mix), unchecked, and said so."""
    if spec.estimator == "bbse":
        raise EnsError("--prior bbse estimates from the labelled confusion matrix; the recipe has no labelled predictions")
    ratios, tasks = shift_ratios(eval_composed.probs, fallback_train, spec)
    record = {"spec": str(spec), "tasks": tasks, "applied": True, "reason": "no labelled predictions: EM ran on uncalibrated probabilities, and the correction is unchecked"}
    return Correction(ratios, True, record=record)


def fit_correction(
    labelled: Composed,
    labels: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    eval_composed: Composed,
    spec: PriorSpec,
    calibrate: str = "auto",
    force: bool = False,
) -> Correction:
    """What `ens compose --prior` fits (see the module doc): calibration on the labelled
    composition (`labelled`, joint `labels` ``(m,)``, person-grouped `folds`), each task's eval
    priors estimated on the calibrated `eval_composed` against the labelled images' true mix,
    run-aways dropped, and the labelled check that decides whether the correction is applied."""
    record: dict[str, object] = {"spec": str(spec), "tasks": {}}
    truth = decode(labels)
    train = {t: np.bincount(truth[t], minlength=N_CLASSES[t]) / len(labels) for t in TASKS}
    joint_calibration, task_calibrations = None, {}
    thin = thin_classes(labels, labelled.image_ids)
    has_joint = eval_composed.joint is not None and labelled.joint is not None
    pairs = thin_pairs(labels, labelled.image_ids) if has_joint else []
    if has_joint and not pairs:
        choice = choose(labelled.joint, labels, folds, calibrate)
        joint_calibration, cal_val_joint = choice.calibration, choice.oof
        cal_val = marginals(cal_val_joint)
        record["calibration"] = {"joint": choice.as_dict()}
    else:
        if pairs:
            record["joint"] = (
                f"calibrated and corrected task by task: the 18-way joint's gender x age {', '.join(pairs)} has fewer than {MIN_PEOPLE} labelled people, "
                "too few for a bias per class, and a temperature alone cannot move a class's mean, which EM needs"
            )
        cal_val_joint, cal_val, calibrations = None, {}, {}
        for task in eval_composed.probs:
            choice = choose(labelled.probs[task], truth[task], folds, calibrate, thin_text(task, thin[task]) if task in thin else None)
            cal_val[task], task_calibrations[task] = choice.oof, choice.calibration
            calibrations[task.value] = choice.as_dict()
        record["calibration"] = calibrations
    unchecked = Correction({}, False, joint_calibration, task_calibrations)
    cal_eval, _ = unchecked.calibrated(eval_composed)

    ratios, notes = {}, []
    for task in eval_composed.probs:
        if task in spec.given:
            target, how = np.asarray(spec.given[task], dtype=np.float64), "given"
        elif spec.estimator == "em":
            target, how = em_priors(cal_eval[task], train[task])[0], "em"
        elif spec.estimator == "bbse":
            target, how = bbse_priors(decide(cal_val[task]), truth[task], decide(cal_eval[task]), train[task]), "bbse"
        else:
            continue
        entry = {"train": train[task].round(4).tolist(), "eval": target.round(4).tolist(), "from": how}
        lost = degenerate(target, train[task]) if how != "given" else []
        unfit = self_check(cal_val[task], train[task]) if how == "em" and not lost and not force else None
        if lost and not force:
            entry["dropped"] = f"takes class(es) {lost} below a quarter of their labelled share (EM running away)"
        elif unfit is not None:
            entry["dropped"] = f"EM on the labelled images' calibrated probabilities gives {unfit.round(4).tolist()} where their mix is {entry['train']}: the calibration does not hold for EM"
        if "dropped" in entry:
            notes.append(f"{task}: the {how} estimate {entry['eval']} {entry['dropped']}; {task} left uncorrected")
        else:
            ratios[task] = np.maximum(target, FLOOR) / np.maximum(train[task], FLOOR)
        record["tasks"][task.value] = entry

    if not ratios:
        record.update(applied=False, reason="; ".join(notes) or "nothing to correct")
        return replace(unchecked, record=record)
    ids = labelled.image_ids
    before = Composed.decided(ids, labelled.probs, labelled.joint, "").labels
    after = Composed.decided(ids, *reweight(cal_val, ratios, cal_val_joint), "").labels
    weights = np.ones(len(labels))
    for task, ratio in ratios.items():
        weights *= ratio[truth[task]]
    check = shift_check(labels, before, after, weights, person_of(ids))
    record["check"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in check.items()}
    given_only = all(t in spec.given for t in ratios)
    wins = check["gain"] > 0 and check["wins"] >= CHECK_WINS
    applied = force or given_only or wins
    if applied:
        reason = "given priors" if given_only else "forced (--force-prior)" if not wins else "it raises the 18-class F1 on the labelled images resampled to the estimated eval mix"
    else:
        reason = (
            f"it does not raise the 18-class F1 on the labelled images resampled to the estimated eval mix in {CHECK_WINS:.0%} "
            "of the person resamples (--force-prior applies it anyway)"
        )
    record.update(applied=applied, reason="; ".join([*notes, reason]))
    return Correction(ratios, applied, joint_calibration, task_calibrations, record)


@register
@dataclass(frozen=True)
class Priors(Step):
    """Re-weight the composition to other class priors (`spec`: given, or estimated by em or
    bbse; a `PriorSpec` or its text, ``"em"``, ``"age:0.3,0.5,0.2 em"``), for a test set whose
    mix differs from train's; calibrated first (`calibrate`: `calibration.Calibrator`), and
    applied only where the labelled check says it helps, unless `force`."""

    spec: PriorSpec | str = "em"
    calibrate: Calibrator | str = Calibrator.AUTO
    force: bool = False
    name: ClassVar[str] = "priors"
    help: ClassVar[str] = "prior correction: the composition re-weighted to the eval class mix (EM or BBSE on calibrated probabilities, or given), where the labelled check says it helps"
    flag: ClassVar[str] = "--prior"
    declared: ClassVar[bool] = False
    reweights: ClassVar[bool] = True
    scoring: ClassVar[Scoring] = Scoring.UNCHANGED  # the labelled images' mix is train's: nothing there to correct

    def __post_init__(self) -> None:
        object.__setattr__(self, "spec", self.spec if isinstance(self.spec, PriorSpec) else parse_priors(self.spec))
        object.__setattr__(self, "calibrate", Calibrator(self.calibrate))

    def summary(self, record: Mapping[str, object], words: Words) -> list[str]:
        """Each task's train and eval priors, the calibration, and whether it was applied and why."""
        prior = record.get("prior") or {}
        lines = []
        for task, entry in prior.get("tasks", {}).items():
            dropped = f" (dropped: {entry['dropped']})" if "dropped" in entry else ""
            lines.append(f"{task} priors ({entry['from']}): train {entry['train']} -> eval {entry['eval']}{dropped}")
        if prior.get("joint"):
            lines.append(prior["joint"])
        for where, cal in (prior.get("calibration") or {}).items():
            losses = ", ".join(f"{m} {v:.4f}" for m, v in cal["oof_nll"].items())
            temperature = f", T={cal['temperature']:.2f}" if "temperature" in cal else ""
            lines.append(f"calibrated ({where}): {cal['method']}{temperature}; out-of-fold log-loss {losses}" + (f"; {cal['note']}" if "note" in cal else ""))
        if prior:
            check = prior.get("check")
            evidence = f"; labelled check: 18-class F1 {check['gain']:+.4f} ±{check['spread']:.4f}, better in {check['wins']:.0%} of {check['replicates']} person resamples" if check else ""
            lines.append(f"prior correction {'applied' if prior['applied'] else 'NOT applied'}: {prior['reason']}{evidence}")
        return lines

    def fit(self, x: Composed, labels: np.ndarray, ctx: Context) -> Correction:
        """Calibrated on `x` with the engine's folds (`ctx.folds`), the eval priors estimated on
        the eval composition (`ctx.target`; none when only scoring: nothing to correct)."""
        if ctx.target is None:
            return Correction({}, False, record={"spec": str(self.spec), "applied": False, "reason": "no eval composition"}, described=False)
        return fit_correction(x, labels, ctx.folds, ctx.target, self.spec, self.calibrate, self.force)

    def fit_blind(self, target: Composed | None, ctx: Context) -> Fit:
        from ..data.dataset import read_train

        data = ctx.project.require_data() if ctx.project is not None else None
        if target is None or data is None:
            raise EnsError(f"--prior without labelled predictions needs the data folder's train mix ({ctx.skipped})")
        return Fit(_uncalibrated(target, self.spec, train_priors(read_train(data, ctx.project.fixes)["label"].to_numpy())))
