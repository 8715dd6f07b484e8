"""Simulated teams of declared competitions with noisy labels, for `bench/audit.py --declared`.

Each team's sources predict from the *true* labels, out of fold on every labelled image; the
labels the audit sees carry noise that falls the way real noise does, toward a confusable
class, not uniformly:

- ``single``: one task of `k` classes in a ring of look-alikes (class c is confused with c - 1
  and c + 1); 1-3 % of the images relabelled to a look-alike, the likelier the more the image
  looks like it;
- ``binary``: the same with two classes (each the other's look-alike), as a binary competition
  has them;
- ``multilabel``: several ``[no, yes]`` findings; positives left unmarked (missing positives, the
  common error of a radiologist's report) and a few false positives;
- ``shared``: a diagnosis shared by each patient's 1-8 images (``shared: [diagnosis]``), whole
  patients relabelled to a look-alike, the sources as sure of each image as in ``single``;
- ``shared-faint``: the same with each image saying little (the true class's logit up by 1.5
  instead of 2.5: a mean probability of about 0.3 for it), where a patient's few images decide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DECLARED_KINDS = ("single", "binary", "multilabel", "shared", "shared-faint")


@dataclass(frozen=True)
class NoisyTeam:
    """probs ``{source: {task: (n, k)}}``; given, truth ``{task: (n,)}``; ids ``(n,)``; groups
    ``(n,)`` or None; shared: tasks judged by group; classes ``{task: names}``; wrong ``{task:
    set of units}`` (image rows, or group codes for a shared task)."""

    kind: str
    probs: dict
    given: dict
    truth: dict
    ids: np.ndarray
    groups: np.ndarray | None
    shared: tuple[str, ...]
    classes: dict
    wrong: dict


def _sources(rng: np.random.Generator, truth: np.ndarray, k: int, look: np.ndarray, n_sources: int, strength: float = 2.5) -> list[np.ndarray]:
    """Each source's probabilities ``(n, k)``: the true class's logit up by `strength` (varying
    by source), the image's look-alike share `look` ``(n, k)`` shared by every source (the
    image itself is ambiguous), noise of the source's own; temperatures 0.5-2 (some
    over-confident)."""
    n = len(truth)
    out = []
    for s in range(n_sources):
        logits = rng.normal(0, 1.0, (n, k)) + 3.0 * look
        logits[np.arange(n), truth] += strength * (0.8 + 0.4 * s / max(n_sources - 1, 1))
        z = logits / rng.uniform(0.5, 2.0)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        out.append((p / p.sum(axis=1, keepdims=True)).astype(np.float32))
    return out


def _ring_look(rng: np.random.Generator, truth: np.ndarray, k: int) -> np.ndarray:
    """How much each image looks like each look-alike of its class ``(n, k)`` (ring neighbours;
    most images hardly, a few much)."""
    n = len(truth)
    look = np.zeros((n, k))
    side = np.where(rng.random(n) < 0.5, -1, 1)
    look[np.arange(n), (truth + side) % k] = rng.beta(0.6, 3.0, n)
    return look


def _flip_toward(rng: np.random.Generator, truth: np.ndarray, look: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Relabel about `rate` of the rows to their look-alike, the likelier the more they look
    like it. Returns the given labels and the rows changed."""
    n = len(truth)
    weight = look.max(axis=1) + 0.05
    chosen = rng.choice(n, size=max(1, int(round(rate * n))), replace=False, p=weight / weight.sum())
    given = truth.copy()
    given[chosen] = look[chosen].argmax(axis=1)
    return given, np.sort(chosen)


def noisy_team(kind: str, seed: int, n: int = 3000, k: int = 5, n_sources: int = 5, rate: float | None = None) -> NoisyTeam:
    """One simulated team of `kind` (module doc); `rate`: the share of labels (units) wrong
    (default: 1-3 %, drawn)."""
    rng = np.random.default_rng(seed)
    rate = rng.uniform(0.01, 0.03) if rate is None else rate
    ids = np.array([f"img{i:06d}.jpg" for i in range(n)], dtype=object)
    if kind in ("single", "binary"):
        k = 2 if kind == "binary" else k
        prior = rng.dirichlet(np.full(k, 4.0))
        truth = rng.choice(k, size=n, p=prior)
        look = _ring_look(rng, truth, k)
        given, changed = _flip_toward(rng, truth, look, rate)
        probs = {f"src{s}": {"label": p} for s, p in enumerate(_sources(rng, truth, k, look, n_sources))}
        classes = {"label": tuple(f"c{c}" for c in range(k))}
        return NoisyTeam(kind, probs, {"label": given}, {"label": truth}, ids, None, (), classes, {"label": set(changed.tolist())})
    if kind == "multilabel":
        tasks = [f"finding{t}" for t in range(4)]
        probs, given, truth, wrong = {f"src{s}": {} for s in range(n_sources)}, {}, {}, {}
        for t, task in enumerate(tasks):
            positive = rng.random(n) < rng.uniform(0.08, 0.3)
            y = positive.astype(np.int64)
            look = np.zeros((n, 2))
            look[np.arange(n), 1 - y] = rng.beta(0.6, 3.0, n)  # a faint finding, a look-alike shadow
            g = y.copy()
            pos = np.flatnonzero(y == 1)
            weight = look[pos, 0] + 0.05
            missing = rng.choice(pos, size=max(1, int(round(rate * len(pos) * 3))), replace=False, p=weight / weight.sum())  # unmarked positives
            neg = np.flatnonzero(y == 0)
            weight = look[neg, 1] + 0.05
            extra = rng.choice(neg, size=max(1, int(round(rate * len(neg) * 0.3))), replace=False, p=weight / weight.sum())
            g[missing], g[extra] = 0, 1
            for s, p in enumerate(_sources(rng, y, 2, look, n_sources)):
                probs[f"src{s}"][task] = p
            given[task], truth[task], wrong[task] = g, y, set(missing.tolist()) | set(extra.tolist())
        return NoisyTeam(kind, probs, given, truth, ids, None, (), {t: ("no", "yes") for t in tasks}, wrong)
    if kind in ("shared", "shared-faint"):
        sizes = rng.integers(1, 9, size=n)  # images per patient
        group_of = np.repeat(np.arange(n), sizes)[:n]
        n_groups = int(group_of.max()) + 1
        prior = rng.dirichlet(np.full(k, 4.0))
        per_group = rng.choice(k, size=n_groups, p=prior)
        look_group = _ring_look(rng, per_group, k)
        truth = per_group[group_of]
        look = look_group[group_of] * rng.uniform(0.5, 1.5, (n, 1))  # a patient looks alike in every image, some more
        g_given, changed = _flip_toward(rng, per_group, look_group, rate)
        given = g_given[group_of]
        probs = {f"src{s}": {"diagnosis": p} for s, p in enumerate(_sources(rng, truth, k, look, n_sources, strength=1.5 if kind == "shared-faint" else 2.5))}
        groups = np.array([f"patient{g:05d}" for g in group_of], dtype=object)
        classes = {"diagnosis": tuple(f"d{c}" for c in range(k))}
        return NoisyTeam(kind, probs, {"diagnosis": given}, {"diagnosis": truth}, ids, groups, ("diagnosis",), classes, {"diagnosis": set(changed.tolist())})
    raise ValueError(f"kind {kind!r}: one of {', '.join(DECLARED_KINDS)}")
