"""Simulated teams: the evidence a composition method must hold on, without images.

`simulate_team` draws a competition's people (seven images each: five masks worn, one worn
incorrectly, one without) for train and for an eval set whose mix may differ (older, or fewer
masks worn), and a team of members of one kind whose probabilities behave like trained models'.
Every member predicts the labelled train images out of fold and the eval images; the eval
answers are kept apart for scoring. A member's logits are, per task, a skill margin on the true
class (half of it on the neighbouring age bands: age errors are between neighbours), noise per
image and per person (a face that looks older looks older in all seven photos), and, on the 18
classes, noise of their own (errors that live on the joint). Kinds:

- ``specialists``: one model per task, each predicting its task only;
- ``classifiers18``: 18-class classifiers of different skills;
- ``overconfident``: 18-class classifiers whose logits are scaled up (2.5x to 4x);
- ``near-copies``: 18-class classifiers sharing most of their noise (k-fold copies, re-runs);
- ``mixed``: specialists beside over-confident 18-class members.

The kinds come with an eval mix: ``shift="age"`` (eval older: 60 and over three times as
common), ``"mask"`` (a quarter of the masked photos dropped from eval), or ``"none"``.

`simulate_declared_team` does the same for a declared single-task competition (any classes,
images in groups such as patients), for `bench/declared.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax

from .competition import Competition
from .labels import N_CLASSES, TASKS, Task, decode, encode, joint_from_tasks, marginals
from .project import Project, load_project, update_project
from .store import PredictionSet, Split

KINDS = ("specialists", "classifiers18", "overconfident", "near-copies", "mixed")
SHIFTS = ("none", "age", "mask")
TRAIN_AGE = np.array([0.47, 0.46, 0.07])  # the competition's train mix (1,281 / 1,227 / 192)
OLDER_AGE = np.array([0.36, 0.43, 0.21])


@dataclass(frozen=True)
class Member:
    """One simulated model: `tasks` it predicts; probabilities on labelled and eval images
    (``{task: (n, k)}``, and the joint ``(n, 18)`` for 18-class members, else None)."""

    name: str
    tasks: tuple[Task, ...]
    labelled: dict[Task, np.ndarray]
    labelled_joint: np.ndarray | None
    eval: dict[Task, np.ndarray]
    eval_joint: np.ndarray | None


@dataclass(frozen=True)
class Team:
    """A simulated competition: labelled ImageIDs and joint labels ``(n,)``, eval ImageIDs and
    hidden answers ``(m,)``, and the members."""

    kind: str
    shift: str
    labelled_ids: np.ndarray
    labels: np.ndarray
    eval_ids: np.ndarray
    answers: np.ndarray
    members: tuple[Member, ...]

    def sets(self, meta: Mapping[str, Any] | None = None) -> tuple[dict[str, PredictionSet], dict[str, PredictionSet]]:
        """Every member's labelled (out-of-fold) and eval prediction sets, with provenance `meta`
        (`write_team` stores them)."""
        meta = dict(meta or {})
        labelled = {m.name: PredictionSet(m.name, Split.OOF, self.labelled_ids, m.labelled, m.labelled_joint, self.labels, meta) for m in self.members}
        evaluated = {m.name: PredictionSet(m.name, Split.EVAL, self.eval_ids, m.eval, m.eval_joint, None, meta) for m in self.members}
        return labelled, evaluated


def _people(rng: np.random.Generator, n: int, age_mix: np.ndarray, prefix: str, drop_masked: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image ids ``(m,)``, joint labels ``(m,)`` and person index ``(m,)`` for `n` people."""
    gender = (rng.random(n) < 0.61).astype(int)  # 1,658 of 2,700 are female
    age = rng.choice(3, size=n, p=age_mix)
    masks = np.array([0, 0, 0, 0, 0, 1, 2])
    person = np.repeat(np.arange(n), 7)
    mask = np.tile(masks, n)
    keep = ~((mask == 0) & (rng.random(len(mask)) < drop_masked))
    person, mask = person[keep], mask[keep]
    labels = encode(mask, gender[person], age[person])
    slot = np.tile(np.arange(7), n)[keep]
    ids = np.array([f"{prefix}{p:06d}_x_Asian_30/img{s}.jpg" for p, s in zip(person, slot)], dtype=object)
    return ids, labels, person


def _logits(rng, labels, person, n_people, skill, person_noise, joint_noise, shared=None):
    """Per-task logits ``{task: (n, k)}`` and an 18-class interaction term ``(n, 18)``."""
    truth = decode(labels)
    out = {}
    for task in TASKS:
        k = N_CLASSES[task]
        margin = np.zeros((len(labels), k))
        margin[np.arange(len(labels)), truth[task]] = skill[task]
        if task is Task.AGE:  # half the margin on the neighbouring bands
            for step in (-1, 1):
                near = np.clip(truth[task] + step, 0, 2)
                margin[np.arange(len(labels)), near] += np.where(near != truth[task], 0.5 * skill[task], 0)
        noise = rng.normal(0, 1, (len(labels), k))
        faces = rng.normal(0, person_noise[task], (n_people, k))[person]
        if shared is not None:  # near-copies: most of the noise is the shared one
            noise, faces = 0.3 * noise + 0.95 * shared[task][0], 0.3 * faces + 0.95 * shared[task][1]
        out[task] = margin + noise + faces
    return out, rng.normal(0, joint_noise, (len(labels), 18))


def simulate_team(kind: str, shift: str = "age", n_train_people: int = 600, n_eval_people: int = 400, seed: int = 0) -> Team:
    """A simulated competition and team of `kind` (`KINDS`) with eval mix `shift` (`SHIFTS`)."""
    if kind not in KINDS or shift not in SHIFTS:
        raise ValueError(f"kind in {KINDS}, shift in {SHIFTS}")
    rng = np.random.default_rng(seed)
    l_ids, labels, l_person = _people(rng, n_train_people, TRAIN_AGE, "", 0.0)
    e_ids, answers, e_person = _people(rng, n_eval_people, OLDER_AGE if shift == "age" else TRAIN_AGE, "e", 0.25 if shift == "mask" else 0.0)
    e_ids = np.array([i.replace("/", "_") for i in e_ids], dtype=object)  # eval names are flat

    plans = {
        "specialists": [("mask", (Task.MASK,), 1.0, 3.0), ("gender", (Task.GENDER,), 1.0, 2.0), ("age", (Task.AGE,), 1.0, 1.2), ("age2", (Task.AGE,), 1.0, 1.0)],
        "classifiers18": [(f"c{i}", TASKS, 1.0, s) for i, s in enumerate((1.6, 1.3, 1.1, 1.0))],
        "overconfident": [(f"o{i}", TASKS, scale, s) for i, (scale, s) in enumerate(((1.0, 1.3), (2.5, 1.2), (4.0, 1.1), (3.0, 1.0)))],
        "near-copies": [(f"k{i}", TASKS, 1.5, 1.2) for i in range(4)] + [("other", TASKS, 1.0, 1.0)],
        "mixed": [("mask", (Task.MASK,), 1.0, 3.0), ("age", (Task.AGE,), 1.0, 1.3), ("o1", TASKS, 3.0, 1.1), ("o2", TASKS, 1.0, 1.0)],
    }[kind]
    shared = None
    if kind == "near-copies":
        shared = {
            split: {t: (rng.normal(0, 1, (len(l), N_CLASSES[t])), rng.normal(0, 0.8, (n, N_CLASSES[t]))[p]) for t in TASKS}
            for split, l, n, p in (("labelled", labels, n_train_people, l_person), ("eval", answers, n_eval_people, e_person))
        }
    members = []
    for name, tasks, scale, strength in plans:
        skill = {Task.MASK: 3.0 * strength, Task.GENDER: 2.0 * strength, Task.AGE: 1.2 * strength}
        person_noise = {Task.MASK: 0.2, Task.GENDER: 0.6, Task.AGE: 0.9}
        sets = []
        for split, y, person, n in (("labelled", labels, l_person, n_train_people), ("eval", answers, e_person, n_eval_people)):
            logits, interaction = _logits(rng, y, person, n, skill, person_noise, 0.6, None if shared is None or not name.startswith("k") else shared[split])
            if len(tasks) == 3:  # an 18-class model: one softmax over the joint logits
                joint_logits = np.log(joint_from_tasks({t: softmax(logits[t], axis=1) for t in TASKS})) + interaction
                joint = softmax(scale * joint_logits, axis=1)
                sets.append((marginals(joint), joint))
            else:
                sets.append(({t: softmax(scale * logits[t], axis=1) for t in tasks}, None))
        (lp, lj), (ep, ej) = sets
        members.append(Member(name, tasks, {t: lp[t] for t in tasks}, lj, {t: ep[t] for t in tasks}, ej))
    return Team(kind, shift, l_ids, labels, e_ids, answers, tuple(members))


def write_team(team: Team, root: str | Path) -> Project:
    """A project folder for `team`: ``data/eval/info.csv`` (its eval ImageIDs), and every member
    as a source with its eval set and its out-of-fold labelled set. Returns the project."""
    root = Path(root)
    (root / "data" / "eval").mkdir(parents=True, exist_ok=True)
    (root / "data" / "eval" / "info.csv").write_text("ImageID,ans\n" + "".join(f"{i},0\n" for i in team.eval_ids))
    zoo = root / "model_zoo.yaml"
    update_project(zoo, data=root / "data")
    project = load_project(zoo)
    store = project.store
    labelled, evaluated = team.sets({"kind": "proba", "origin": {"type": "import", "file": f"simulated {team.kind}"}})
    for m in team.members:
        store.write(evaluated[m.name])
        store.write(labelled[m.name])
    return project


# --- a declared competition's teams (issue 24): one task, any classes, images in groups ----------

DECLARED_KINDS = ("classifiers", "overconfident", "near-copies", "one-strong", "biased", "graded", "imbalanced")


@dataclass(frozen=True)
class DeclaredTeam:
    """A simulated team of a declared single-task `competition`: labelled ImageIDs, answer
    classes and groups ``(n,)``, eval ImageIDs and hidden answers ``(m,)``, and each member's
    probabilities ``{name: (labelled (n, k), eval (m, k))}``, all out of fold."""

    kind: str
    competition: Competition
    labelled_ids: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    eval_ids: np.ndarray
    answers: np.ndarray
    members: dict[str, tuple[np.ndarray, np.ndarray]]

    def sets(self) -> tuple[dict[str, PredictionSet], dict[str, PredictionSet]]:
        """Every member's labelled (out-of-fold) and eval prediction sets, in the competition's space."""
        space, task = self.competition.space, self.competition.space.tasks[0]
        labelled = {n: PredictionSet(n, Split.OOF, self.labelled_ids, {task: p}, None, self.labels, {}, space) for n, (p, _) in self.members.items()}
        evaluated = {n: PredictionSet(n, Split.EVAL, self.eval_ids, {task: q}, None, None, {}, space) for n, (_, q) in self.members.items()}
        return labelled, evaluated


def simulate_declared_team(kind: str, competition: Competition, n_groups: int = 180, per_group: int = 3, n_eval: int = 2000, seed: int = 0) -> DeclaredTeam:
    """A team of `kind` (`DECLARED_KINDS`) for the single-task `competition` (K classes, a
    skewed class mix as real ones have: class c drawn with weight 1/(c+1)^0.8), `n_groups`
    labelled groups (patients) of `per_group` images. A member's logits are a skill margin on the
    true class, noise per image and per group (a patient's images look alike), and by kind:
    ``classifiers`` of different skills; ``overconfident`` ones (logits x2.5 to x4);
    ``near-copies`` sharing most of their noise (k-fold copies) beside one other; ``one-strong``
    beside three weak (a vote dilutes it, a selection need not); ``biased`` members each
    over-calling some classes (a per-class bias a stack can undo); ``graded`` classifiers of
    ordered grades whose errors are mostly one grade off (the margin falls with the squared
    distance to the true grade; quadratic kappa's teams); ``imbalanced`` classifiers on a steep
    class mix (weight 1/(c+1)^1.5; balanced accuracy's teams). The last two are calibrated, as a
    model trained on the mix is: their logits carry the log of the class mix, so that their
    argmax under-calls the rare classes (and the extreme grades)."""
    if kind not in DECLARED_KINDS:
        raise ValueError(f"kind in {DECLARED_KINDS}")
    rng = np.random.default_rng(seed)
    k = competition.space.n_joint
    mix = 1.0 / np.arange(1, k + 1) ** (1.5 if kind == "imbalanced" else 0.8)
    mix /= mix.sum()
    prior = np.log(mix) if kind in ("graded", "imbalanced") else np.zeros(k)
    n = n_groups * per_group
    groups = np.repeat(np.arange(n_groups), per_group)
    labels = rng.choice(k, size=n, p=mix)
    eval_groups = np.arange(n_eval) // per_group
    answers = rng.choice(k, size=n_eval, p=mix)
    plans = {
        "classifiers": [(f"c{i}", 1.0, s, 0.0) for i, s in enumerate((1.6, 1.3, 1.1, 1.0))],
        "overconfident": [(f"o{i}", scale, s, 0.0) for i, (scale, s) in enumerate(((1.0, 1.3), (2.5, 1.2), (4.0, 1.1), (3.0, 1.0)))],
        "near-copies": [(f"k{i}", 1.5, 1.2, 0.0) for i in range(4)] + [("other", 1.0, 1.0, 0.0)],
        "one-strong": [("strong", 1.0, 2.0, 0.0)] + [(f"weak{i}", 1.0, 0.8, 0.0) for i in range(3)],
        "biased": [(f"b{i}", 1.0, 1.3, 1.0) for i in range(4)],
        "graded": [(f"g{i}", 1.0, s, 0.0) for i, s in enumerate((1.6, 1.3, 1.1, 1.0))],
        "imbalanced": [(f"c{i}", 1.0, s, 0.0) for i, s in enumerate((1.6, 1.3, 1.1, 1.0))],
    }[kind]
    shared = {split: (rng.normal(0, 1, (len(y), k)), rng.normal(0, 0.8, (g.max() + 1, k))[g]) for split, y, g in (("labelled", labels, groups), ("eval", answers, eval_groups))}
    members = {}
    for name, scale, strength, bias in plans:
        offsets = rng.normal(0, bias, k)  # the same over-calls on labelled and eval images
        probs = []
        for split, y, g in (("labelled", labels, groups), ("eval", answers, eval_groups)):
            margin = np.zeros((len(y), k))
            if kind == "graded":  # a grade's neighbours score close to it, far grades far below
                margin = strength * (1.0 - (np.arange(k)[None, :] - y[:, None]) ** 2 / 2.0)
            else:
                margin[np.arange(len(y)), y] = strength
            noise, faces = rng.normal(0, 1, (len(y), k)), rng.normal(0, 0.6, (g.max() + 1, k))[g]
            if name.startswith("k"):
                noise, faces = 0.3 * noise + 0.95 * shared[split][0], 0.3 * faces + 0.95 * shared[split][1]
            probs.append(softmax(scale * (margin + noise + faces + offsets) + prior, axis=1))
        members[name] = (probs[0], probs[1])
    ids = np.array([f"img{i:06d}.jpg" for i in range(n)], dtype=object)
    eval_ids = np.array([f"test{i:06d}.jpg" for i in range(n_eval)], dtype=object)
    return DeclaredTeam(kind, competition, ids, labels, groups.astype(str).astype(object), eval_ids, answers, members)
