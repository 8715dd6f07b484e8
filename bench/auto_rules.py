"""Rules of auto's final choice, replayed on `bench/auto_study.py capture`'s teams (see there)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ensembler.data.labels import MASK_SPACE, N_JOINT, TASKS
from ensembler.data.stable import decide
from ensembler.pipeline.auto import F1Judge, bagged, paired_gain
from ensembler.scoring.metrics import macro_f1

FIXED = ("soft", "hard", "geo", "select", "stack")
GRID = np.round(np.linspace(0, 1, 11), 1)  # 0.6, not 0.6000000000000001
MOVE_PENALTY = 1.0  # the rule of before the bagged move (`steadiest`): a move scored by its out-of-fold score less this many bootstrap standard deviations of its paired gain over the soft vote


def steadiest(scores: np.ndarray, replicates: np.ndarray, penalty: float | np.ndarray = MOVE_PENALTY) -> int:
    """The move of the rule of before (`Auto()` until the bagged move): the best by its
    out-of-fold score ``(m,)`` less `penalty` (a number, or one a move) standard deviations of
    its paired gain over the first move (the soft vote), read from the judge's `replicates`
    ``(r, m)``; ties: the first. The lower confidence bound in place of the point estimate
    (Breiman et al. 1984's one-standard-error rule)."""
    noise = np.nan_to_num(np.nanstd(replicates - replicates[:, :1], axis=0))
    return int(np.argmax(np.asarray(scores) - penalty * noise))


class Team:
    def __init__(self, path: Path) -> None:
        self.meta = json.loads(path.with_suffix(".json").read_text())
        z = np.load(path)
        self.z = {k: z[k] for k in z}
        self.y, self.persons, self.w, self.allowed = self.z["labels"], self.z["persons"], self.z["weights"], self.z["allowed"]
        self.answers = self.z["answers"]
        self.c = len(self.z["oof_labels"])
        self.oof_scores = np.array([macro_f1(self.y, d, N_JOINT, self.w) for d in self.z["oof_labels"]])
        self.hidden = np.array([macro_f1(self.answers, d, N_JOINT) for d in self.z["eval_labels"]])

    @property
    def best_fixed(self) -> float:
        return max(self.meta[m] for m in FIXED)

    def blend(self, split: str, other: int, lam: float) -> np.ndarray:
        """Joint decisions of (1 - lam) * soft + lam * candidate `other`, per task."""
        if lam <= 0:
            return self.z[f"{split}_labels"][0]
        if lam >= 1:
            return self.z[f"{split}_labels"][other]
        return MASK_SPACE.encode(*(decide((1 - lam) * self.z[f"{split}_{t}"][0] + lam * self.z[f"{split}_{t}"][other]) for t in TASKS))

    def mixed(self, split: str, shares: dict[int, float]) -> np.ndarray:
        """Joint decisions of the soft vote moved toward several candidates at once, per task:
        ``soft + sum_c shares[c] x (candidate c - soft)`` (`auto.blend`)."""
        if not shares:
            return self.z[f"{split}_labels"][0]
        return MASK_SPACE.encode(*(decide(self.z[f"{split}_{t}"][0] + sum(w * (self.z[f"{split}_{t}"][c] - self.z[f"{split}_{t}"][0]) for c, w in shares.items())) for t in TASKS))

    def best(self) -> int:
        return int(np.argmax(np.where(self.allowed, self.oof_scores, -np.inf)))

    def moves(self) -> tuple[int, list[tuple[int, float]], F1Judge]:
        """The moves `Auto()` chooses among: the candidate beyond the noise (its paired gain's 90 %
        interval above 0, and the best out of fold; 0: none), the moves ``(candidate, weight)``
        (the soft vote first; up to half-way toward each allowed candidate, all the way toward
        that one), and the judge of their out-of-fold decisions."""
        top = self.best()
        top = top if top != 0 and self.gain(top)[0] > 0 else 0
        moves = [(0, 0.0)] + [(int(c), float(lam)) for c in np.flatnonzero(self.allowed)[1:] for lam in GRID[(GRID > 0) & (GRID <= (1.0 if c == top else 0.5))]]
        return top, moves, F1Judge([self.blend("oof", c, lam) for c, lam in moves], self.y, N_JOINT, self.persons)

    def gain(self, other: int, oof: np.ndarray | None = None) -> tuple[float, float, float]:
        mine = self.z["oof_labels"][other] if oof is None else oof
        return paired_gain(self.y, self.z["oof_labels"][0], mine, self.persons, N_JOINT, self.w)


Rule = Callable[[Team], float]  # a team -> the hidden macro F1 of what the rule submits


def today(t: Team) -> float:
    b = t.best()
    return t.hidden[b] if b != 0 and t.gain(b)[0] > 0 else t.hidden[0]


def positive_at(q: float) -> Rule:
    def rule(t: Team) -> float:
        b = t.best()
        return t.hidden[b] if b != 0 and t.gain(b)[2] >= q else t.hidden[0]

    return rule


def plain(t: Team) -> float:
    return t.hidden[t.best()]


def fitted_weight(t: Team, c: int, weights: np.ndarray) -> tuple[float, float]:
    """The out-of-fold score and mixing weight of the best blend of soft with candidate `c`."""
    scores = [macro_f1(t.y, t.blend("oof", c, lam), N_JOINT, t.w) for lam in weights]
    best = int(np.argmax(scores))
    return scores[best], float(weights[best])


def blend_fitted(t: Team) -> float:
    """Toward the best candidate, the mixing weight (0 to 1) chosen on the out-of-fold score."""
    b = t.best()
    return t.hidden[0] if b == 0 else macro_f1(t.answers, t.blend("eval", b, fitted_weight(t, b, GRID)[1]), N_JOINT)


def blend_by_evidence(t: Team) -> float:
    """Move toward the best candidate by the share of resamples it wins, beyond a coin toss."""
    b = t.best()
    if b == 0:
        return t.hidden[0]
    lam = float(np.clip((t.gain(b)[2] - 0.5) / 0.45, 0, 1))
    return macro_f1(t.answers, t.blend("eval", b, lam), N_JOINT)


def blend_lifted(only_best: bool, whole: bool = False) -> Rule:
    """`blend_any(0.5)`, but the cap lifted to 1 toward a candidate whose paired gain's 90 %
    interval over the soft vote lies above 0 (last round's test; `only_best`: only when that
    candidate is the best out of fold, as last round's rule: `Auto()` with `only_best`); `whole`:
    where a blend toward it scores best, the candidate itself (tried and dropped: docs/explanation/auto.md)."""

    def rule(t: Team) -> float:
        best, choice, top = t.oof_scores[0], (0, 0.0), t.best()
        for c in np.flatnonzero(t.allowed)[1:]:
            sure = (not only_best or c == top) and t.gain(int(c))[0] > 0
            weights = GRID[(GRID > 0) & (GRID <= (1.0 if sure else 0.5))]
            score, lam = fitted_weight(t, int(c), weights)
            lam = 1.0 if sure and whole else lam
            if score > best:
                best, choice = score, (int(c), lam)
        return macro_f1(t.answers, t.blend("eval", *choice), N_JOINT)

    return rule


def steadiest_rule(anchored: float | None = None) -> Rule:
    """`blend_lifted(True)` (the lift toward the best candidate beyond the noise), each blend
    toward another candidate scored by its out-of-fold score less `MOVE_PENALTY` bootstrap
    standard deviations of its paired gain over the soft vote (`steadiest`): `Auto()` before the
    bagged move.
    `anchored` (tried, not kept: docs/explanation/auto.md): where a candidate is beyond the
    noise, every move is measured from that candidate whole instead (the all-or-nothing rule's
    choice): a blend short of it scored less `anchored` standard deviations of its paired gain
    over it, a blend toward another candidate less `MOVE_PENALTY` of its, the soft vote as it is."""

    def rule(t: Team) -> float:
        top, moves, judge = t.moves()
        every = np.arange(len(t.y))
        scores, replicates = judge.scores(every, t.w), judge.replicates(every, t.w, range(len(moves)))
        from_whole = anchored is not None and top != 0  # every move measured from the candidate whole (first: the reference, and ties)
        toward_top = anchored if from_whole else 0.0
        penalty = np.array([toward_top if c == top else 0.0 if c == 0 else MOVE_PENALTY for c, _ in moves])  # the soft vote: none
        order = list(range(len(moves)))
        if from_whole:
            whole = moves.index((top, 1.0))
            order = [whole, *(i for i in order if i != whole)]
        best = order[steadiest(scores[order], replicates[:, order], penalty[order])]
        return macro_f1(t.answers, t.blend("eval", *moves[best]), N_JOINT)

    return rule


blend_steadiest = steadiest_rule()


def bagged_rule(t: Team) -> float:
    """`Auto()`: the moves of `blend_lifted(True)` (up to half-way toward any allowed candidate,
    all the way toward the best one where its gain is beyond the noise), the one applied their
    bootstrap-smoothed choice (`auto.bagged`: the mean of each resample's best move)."""
    _, moves, judge = t.moves()
    shares = bagged(judge.replicates(np.arange(len(t.y)), t.w, range(len(moves))), moves)
    return macro_f1(t.answers, t.mixed("eval", shares), N_JOINT)


def sure_else_blend(t: Team) -> float:
    """Last round's rule where it moves (the best candidate, whole, where its paired gain's 90 %
    interval lies above 0), else `blend_any(0.5)`."""
    b = t.best()
    return t.hidden[b] if b != 0 and t.gain(b)[0] > 0 else blend_any(0.5)(t)


def blend_any(cap: float) -> Rule:
    """The pair (allowed candidate, mixing weight up to `cap`) with the best out-of-fold score
    (ties: soft, the earlier candidate, the smaller weight): the capped rule (before the lift) at cap 0.5, but for
    blending joint compositions per task here."""

    def rule(t: Team) -> float:
        best, choice = t.oof_scores[0], (0, 0.0)
        for c in np.flatnonzero(t.allowed)[1:]:
            score, lam = fitted_weight(t, int(c), GRID[(GRID > 0) & (GRID <= cap)])
            if score > best:
                best, choice = score, (int(c), lam)
        return macro_f1(t.answers, t.blend("eval", *choice), N_JOINT)

    return rule


ALL_OR_NOTHING = "all or nothing (90% interval above 0)"  # the last round's rule: `Auto(blends=False)`, `bench/quality.py`'s auto-before
RULES: dict[str, Rule] = {
    ALL_OR_NOTHING: today,
    "P(gain>0) >= 0.90": positive_at(0.90),
    "P(gain>0) >= 0.80": positive_at(0.80),
    "P(gain>0) >= 0.70": positive_at(0.70),
    "plain (best OOF)": plain,
    "blend toward the best, 0..1": blend_fitted,
    "blend by evidence": blend_by_evidence,
    "blend, any candidate, 0..1": blend_any(1.0),
    "blend, any candidate, 0..0.8": blend_any(0.8),
    "blend, any, 0..0.5 (capped)": blend_any(0.5),
    "0..0.5, 0..1 where sure": blend_lifted(False),
    "0..0.5, 0..1 where best, sure": blend_lifted(True),
    "... and there whole": blend_lifted(True, whole=True),
    "0..0.5 less 1 sd of the gain, 0..1 where best, sure": blend_steadiest,
    "... toward the sure one from it whole, less 0.5 sd": steadiest_rule(anchored=0.5),
    "... toward the sure one from it whole, less 1 sd": steadiest_rule(anchored=1.0),
    "the best whole where sure, else 0..0.5": sure_else_blend,
    "bagged: each resample's best move, averaged (Auto())": bagged_rule,
}


def table(teams: list[Team], results: dict[str, np.ndarray]) -> None:
    sizes = sorted({t.meta["people"] for t in teams})
    soft = np.array([t.meta["soft"] for t in teams])
    best = np.array([t.best_fixed for t in teams])
    people = np.array([t.meta["people"] for t in teams])
    before = results.get(ALL_OR_NOTHING)
    print(f"{'rule':32s} {'people':>6s} {'-soft mean':>10s} {'worst':>7s} {'<-.005':>6s} {'<-.02':>5s} {'-best mean':>10s} {'worst':>7s} {'>+.005':>6s} {'-aon mean':>9s} {'worst':>7s} {'<-.005':>6s}")
    for name, hidden in results.items():
        for n in [*sizes, 0]:
            m = people == n if n else np.ones(len(teams), bool)
            vs_soft, vs_best = hidden[m] - soft[m], hidden[m] - best[m]
            vs_before = hidden[m] - before[m] if before is not None else np.full(m.sum(), np.nan)
            print(
                f"{name if n == sizes[0] else '':32s} {n or 'all':>6} {vs_soft.mean():+10.4f} {vs_soft.min():+7.4f} {int((vs_soft < -0.005).sum()):6d} {int((vs_soft < -0.02).sum()):5d}"
                f" {vs_best.mean():+10.4f} {vs_best.min():+7.4f} {int((vs_soft > 0.005).sum()):6d} {vs_before.mean():+9.4f} {vs_before.min():+7.4f} {int((vs_before < -0.005).sum()):6d}"
            )


def main(folder: Path) -> None:
    teams = [Team(p) for p in sorted(folder.glob("*.npz"))]
    recorded = np.array([t.meta["auto"] for t in teams])
    results = {"auto as captured": recorded}
    for name, rule in RULES.items():
        results[name] = np.array([rule(t) for t in teams])
    same = {name: f"{np.mean(np.isclose(results[name], recorded)):.0%}" for name in ("blend, any, 0..0.5 (capped)", "0..0.5 less 1 sd of the gain, 0..1 where best, sure", "bagged: each resample's best move, averaged (Auto())")}
    print(f"{len(teams)} teams; the captured auto equals, replayed: " + ", ".join(f"{name} on {share}" for name, share in same.items()))
    table(teams, results)
