"""Seven photos, one person: group a split's images into people, and decode each person once.

Every person of the competition has seven photos: five with the mask worn, one worn incorrectly,
one without a mask, all of one face (one gender, one age). The eval set keeps that structure with
hashed names. This module holds the torch-free half:

- `group_images`: a partition of the images into groups of at most seven from per-image
  descriptors (`predictors.group` computes them from the decoded images): a k-nearest-neighbour
  graph, its edges merged shortest first as long as the merged group stays within seven images
  (Kruskal's algorithm with a size cap; a union-find), and only below a distance threshold, so a
  doubtful image stays alone (a wrong merge costs more than a missed one). An image's confidence
  is how far below the threshold its closest tie to its group was.
- `agreement`: a grouping against the true persons: pairwise precision and recall (pairs put
  together that belong together), scikit-learn's adjusted Rand index, and the share of people
  recovered whole.
- `decode_by_person`: within a group, gender and age decided once from the members' combined
  log-probabilities (the sum over members of log p(gender, age): the members are independent
  looks at one face), and the mask states assigned jointly: a group of seven gets exactly one
  "incorrect" and one "not wear", the assignment of highest joint log-probability; a smaller
  group at most one of each. On the 18-way joint when the composition has one (the mask scored
  given the decided gender and age). A group of one keeps its plain decision.
- `ByPerson`: the step of a composition (``compose --by-person``): decode where the
  labelled images, decoded with the estimated train grouping, gain beyond the noise;
- the groups file: ``groups/<split>.csv`` (``ImageID,group,confidence``) and its JSON
  (provenance, the images' fingerprint, the train-side agreement), read back by `read_groups`,
  which refuses a file for other images or for images that changed since.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..data.labels import N_CLASSES, Task, encode
from ..errors import EnsError
from .engine import Composed, Context, Fit, Fitted, Step, Words, register

GROUP_SIZE = 7  # photos per person: mask1..mask5, incorrect_mask, normal
SPREAD = 1.5  # the default merge threshold, in medians of the distance to the 6th nearest neighbour
EPS = 1e-6


# --- grouping -----------------------------------------------------------------------------------


class GroupSplit(StrEnum):
    """What `ens group` groups: the eval images, or the labelled train images (to measure it)."""

    EVAL = "eval"
    TRAIN = "train"


class _Sets:
    """Union-find with group sizes."""

    def __init__(self, n: int):
        self.parent = np.arange(n)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        if self.size[a] < self.size[b]:
            a, b = b, a
        self.parent[b] = a
        self.size[a] += self.size[b]


@dataclass(frozen=True)
class Grouping:
    """Group ids ``(n,)`` (0..G-1, in order of first appearance) and each image's confidence ``(n,)``
    in [0, 1] (0: alone, or tied to its group at the threshold)."""

    groups: np.ndarray
    confidence: np.ndarray
    threshold: float = 0.0  # the merge threshold used (descriptor distance)

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.groups)


def check_threshold(threshold: float | None) -> None:
    """A merge threshold is a positive, finite distance (None: the default); anything else is an
    error that says what the option means, before any image is decoded."""
    if threshold is not None and not (math.isfinite(threshold) and threshold > 0):
        raise EnsError(
            f"--threshold {threshold:g}: it is the largest descriptor distance at which two images may join one group, "
            f"a positive number (leave it out for the default, {SPREAD:g} x the median distance to the 6th nearest neighbour)"
        )


def group_images(descriptors: np.ndarray, threshold: float | None = None, neighbours: int = 12, cap: int = GROUP_SIZE) -> Grouping:
    """Partition images ``(n, d)`` descriptors into groups of at most `cap` (see the module doc).

    threshold: the largest descriptor distance at which two images may be merged; default:
    `SPREAD` times the median distance of an image to its ``cap - 1``-th nearest neighbour, a
    scale that adapts to the descriptors (within a person the six others are the closest; past
    them come strangers), with room for a person whose photos vary more than most; the size cap
    keeps the merging from running on.
    """
    from sklearn.neighbors import NearestNeighbors

    check_threshold(threshold)
    x = np.asarray(descriptors, dtype=np.float64)
    n = len(x)
    if n == 0:
        return Grouping(np.zeros(0, dtype=np.int64), np.zeros(0))
    k = min(neighbours, n - 1)
    if k < 1:
        return Grouping(np.zeros(n, dtype=np.int64), np.zeros(n))
    _, index = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    index = index[:, 1:]
    # the neighbours' distances again, each a plain sum over the descriptor's dimensions: the
    # search's own come from a BLAS product, whose last bits (and so the merge order of nearly
    # equal edges) hinge on the machine's kernel
    distance = np.stack([np.sqrt(((x - x[index[:, j]]) ** 2).sum(axis=1)) for j in range(k)], axis=1)
    by_distance = np.lexsort((index, distance), axis=1)  # each row's neighbours by (distance, image)
    distance, index = np.take_along_axis(distance, by_distance, 1), np.take_along_axis(index, by_distance, 1)
    if threshold is None:
        threshold = SPREAD * float(np.median(distance[:, min(cap - 2, k - 1)]))
    order = np.argsort(distance, axis=None, kind="stable")
    sets = _Sets(n)
    tie = np.full(n, np.inf)  # the distance of the closest edge that joined each image to its group
    for flat in order:
        i, j = divmod(int(flat), k)
        d = distance[i, j]
        if d > threshold:
            break
        a, b = sets.find(i), sets.find(int(index[i, j]))
        if a != b and sets.size[a] + sets.size[b] <= cap:
            sets.union(a, b)
        if sets.find(i) == sets.find(int(index[i, j])):
            tie[i] = min(tie[i], d)
            tie[int(index[i, j])] = min(tie[int(index[i, j])], d)
    roots = np.array([sets.find(i) for i in range(n)])
    _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
    relabel = np.argsort(np.argsort(first))  # group ids in order of first appearance
    ids = relabel[inverse]
    alone = np.bincount(ids)[ids] == 1
    confidence = np.where(alone | ~np.isfinite(tie), 0.0, np.clip(1 - tie / max(threshold, 1e-12), 0, 1))
    return Grouping(ids.astype(np.int64), confidence, float(threshold))


@dataclass(frozen=True)
class Agreement:
    """A grouping against the true persons (`agreement`)."""

    precision: float  # of the pairs put together, the share that are one person
    recall: float  # of one person's pairs, the share put together
    ari: float  # scikit-learn's adjusted Rand index
    whole: float  # the share of people whose images form exactly one group
    people: int
    groups: int

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}

    def line(self) -> str:
        return (
            f"pairwise precision {self.precision:.3f}, recall {self.recall:.3f}, adjusted Rand index {self.ari:.3f}; "
            f"{self.whole:.1%} of {self.people} people recovered whole, in {self.groups} groups"
        )


def agreement(groups: np.ndarray, persons: np.ndarray) -> Agreement:
    """Compare `groups` ``(n,)`` with the true `persons` ``(n,)`` (any labels)."""
    from sklearn.metrics import adjusted_rand_score
    from sklearn.metrics.cluster import pair_confusion_matrix

    (_, fp), (fn, tp) = pair_confusion_matrix(persons, groups)  # ordered pairs: counts are doubled alike
    _, person_ids = np.unique(persons, return_inverse=True)
    _, group_ids = np.unique(groups, return_inverse=True)
    whole = 0
    for p in range(person_ids.max() + 1):
        members = group_ids[person_ids == p]
        whole += len(set(members.tolist())) == 1 and np.sum(group_ids == members[0]) == len(members)
    return Agreement(
        float(tp / (tp + fp)) if tp + fp else 0.0,
        float(tp / (tp + fn)) if tp + fn else 0.0,
        float(adjusted_rand_score(persons, groups)),
        whole / (person_ids.max() + 1),
        int(person_ids.max() + 1),
        int(group_ids.max() + 1),
    )


# --- decoding -----------------------------------------------------------------------------------


def _mask_assignment(scores: np.ndarray, exact: bool) -> np.ndarray:
    """Mask classes ``(s,)`` for one group from log-scores ``(s, 3)``: everyone "wear" (0) but one
    "incorrect" (1) and one "not wear" (2), chosen to maximise the total score; with `exact`
    those two must be present (a full group of seven), else each is at most one (or none)."""
    s = len(scores)
    gain_incorrect, gain_not = scores[:, 1] - scores[:, 0], scores[:, 2] - scores[:, 0]
    pair = gain_incorrect[:, None] + gain_not[None, :]
    np.fill_diagonal(pair, -np.inf)
    # candidates: (i, j) both; and without `exact`, i alone, j alone, or neither (index s: none)
    table = np.full((s + 1, s + 1), -np.inf)
    table[:s, :s] = pair
    if not exact:
        table[:s, s] = gain_incorrect
        table[s, :s] = gain_not
        table[s, s] = 0.0
    i, j = np.unravel_index(int(np.argmax(table)), table.shape)
    out = np.zeros(s, dtype=np.int64)
    if i < s:
        out[i] = 1
    if j < s:
        out[j] = 2
    return out


def decode_by_person(probs: Mapping[Task, np.ndarray], joint: np.ndarray | None, groups: np.ndarray, plain: np.ndarray) -> np.ndarray:
    """Joint classes ``(n,)`` decided one person at a time (see the module doc).

    probs: ``{task: (n, k)}``; joint: ``(n, 18)`` or None; groups: ``(n,)`` group ids;
    plain: ``(n,)`` the composition's own decisions, kept for groups of one.
    """
    groups = np.asarray(groups)
    out = np.asarray(plain, dtype=np.int64).copy()
    log = lambda p: np.log(np.clip(np.asarray(p, dtype=np.float64), EPS, None))  # noqa: E731
    if joint is not None:
        cube = log(joint).reshape(-1, N_CLASSES[Task.MASK], N_CLASSES[Task.GENDER] * N_CLASSES[Task.AGE])
        gender_age = log(np.asarray(joint, dtype=np.float64).reshape(cube.shape).sum(axis=1))  # (n, 6)
    else:
        g, a = log(probs[Task.GENDER]), log(probs[Task.AGE])
        gender_age = (g[:, :, None] + a[:, None, :]).reshape(len(out), -1)
        mask_log = log(probs[Task.MASK])
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    for members in np.split(order, bounds):
        if len(members) < 2:
            continue
        if len(members) > GROUP_SIZE:
            raise EnsError(f"a group of {len(members)} images: groups hold at most {GROUP_SIZE} (one person's photos)")
        best = int(np.argmax(gender_age[members].sum(axis=0)))
        gender, age = divmod(best, N_CLASSES[Task.AGE])
        scores = cube[members, :, best] if joint is not None else mask_log[members]
        masks = _mask_assignment(scores, exact=len(members) == GROUP_SIZE)
        out[members] = encode(masks, np.full(len(members), gender), np.full(len(members), age))
    return out


# --- the step in a composition ------------------------------------------------------------------


@dataclass(frozen=True)
class Decoded(Fitted):
    """Decoding by person with a grouping of the images it is applied to: `groups`, ImageID ->
    group, for the eval images (``groups/eval.csv``) and the labelled ones (the estimated train
    grouping it was checked with); None: not applied, the composition passes unchanged.
    `record`: the check, for the manifest."""

    groups: Mapping[str, int] | None
    record: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def apply(self, x: Composed) -> Composed:
        if self.groups is None or not all(i in self.groups for i in x.image_ids):
            return x  # not applied; or labelled images it could not be checked on (no train grouping): as they were
        groups = np.array([self.groups[i] for i in x.image_ids], dtype=np.int64)
        return Composed(x.image_ids, decode_by_person(x.probs, x.joint, groups, x.labels), x.probs, x.joint, x.mode)

    def describe(self) -> dict[str, Any]:
        return {"by_person": dict(self.record)}


@register
@dataclass(frozen=True)
class ByPerson(Step):
    """Decide each person once (`decode_by_person`) with the eval grouping (``groups/eval.csv``),
    where the labelled images show it helps: decoded with the *estimated* train grouping against
    plain, paired by person, applied when the gain's 90 % interval is above 0 (or `force`); the
    true persons give the ceiling. Cross-fitted by the engine as any step: a fold's labelled
    images are decoded (with the estimated train grouping) where the check on the other folds
    says so. `optional` (auto trying it by itself): a grouping that cannot be used is a reason in
    the record, not an error."""

    force: bool = False
    optional: bool = False
    name: ClassVar[str] = "by_person"
    help: ClassVar[str] = "decoding by person"
    flag: ClassVar[str] = "--by-person"
    declared: ClassVar[bool] = False
    last: ClassVar[bool] = True

    def summary(self, record: Mapping[str, Any], words: Words) -> list[str]:
        """Whether it was applied and why, with the labelled check's figures."""
        persons = record.get("by_person")
        if not persons:
            return []
        check = persons.get("check")
        evidence = (
            f"; labelled check ({check['images']} images, estimated train grouping): 18-class F1 {check['f1_18_plain']:.4f} -> {check['f1_18_by_person']:.4f} "
            f"({check['gain']:+.4f}, 90% CI {check['interval'][0]:+.4f} to {check['interval'][1]:+.4f}; with the true persons {check['ceiling_gain']:+.4f})"
            if check else ""
        )
        return [f"by person {'applied' if persons['applied'] else 'NOT applied'}: {persons['reason']}{evidence}"]

    def fit(self, x: Composed, labels: np.ndarray, ctx: Context) -> Decoded:
        return self._guarded(lambda: self._check(x, labels, ctx.target, ctx))

    def fit_blind(self, target: Composed | None, ctx: Context) -> Fit:
        return Fit(self._guarded(lambda: self._check(None, None, target, ctx)))

    def _guarded(self, check: Any) -> Decoded:
        try:
            return check()
        except EnsError as exc:
            if not self.optional:
                raise
            return Decoded(None, {"applied": False, "reason": f"auto did not try it: {exc}"})  # asked for nothing: say why, go on

    def _check(self, x: Composed | None, labels: np.ndarray | None, target: Composed | None, ctx: Context) -> Decoded:
        from ..data.dataset import images_fingerprint, read_eval, read_train
        from ..data.io import sha256_file
        from ..data.people import person_codes
        from ..scoring.evidence import bootstrap

        if ctx.project is None or target is None:
            raise EnsError("decoding by person needs the project's grouping files and an eval composition")
        project = ctx.project
        data = project.require_data()
        table = read_eval(data)
        eval_groups, eval_meta = read_groups(project.root, "eval", target.image_ids, images_fingerprint(table["ImageID"], table["path"]))
        csv_path = groups_paths(project.root, "eval")[0]
        record: dict[str, Any] = {"groups": {"file": str(csv_path), "sha256": sha256_file(csv_path), "groups": eval_meta.get("groups"), "train_agreement": None}}
        reason, grouping = None, dict(zip(target.image_ids, eval_groups.tolist()))
        if x is None or labels is None:
            reason = "no labelled composition to check it on"
        else:
            train = read_train(data)
            every = train["ImageID"].to_numpy(object)
            try:
                all_groups, train_meta = read_groups(project.root, "train", every, images_fingerprint(train["ImageID"], train["path"]), subset=True)
            except EnsError as exc:
                all_groups, reason = None, f"it cannot be checked: {exc}"
            if all_groups is not None:
                grouping.update(zip(every, all_groups.tolist()))  # every train image: the engine decodes each fold's with what the others decided
                train_groups = np.array([grouping[i] for i in x.image_ids], dtype=np.int64)
                record["groups"]["train_agreement"] = train_meta.get("agreement")
                persons = person_codes(x.image_ids)
                plain = x.labels
                estimated = decode_by_person(x.probs, x.joint, train_groups, plain)
                ceiling = decode_by_person(x.probs, x.joint, persons, plain)
                found = bootstrap(labels, np.stack([plain, estimated, ceiling]), persons, reference=0)
                record["check"] = {
                    "images": int(len(plain)),
                    "f1_18_plain": round(float(found.f1[0]), 4),
                    "f1_18_by_person": round(float(found.f1[1]), 4),
                    "gain": round(float(found.f1[1] - found.f1[0]), 4),
                    "interval": [round(float(found.gain_low[1]), 4), round(float(found.gain_high[1]), 4)],
                    "positive": round(float(found.positive[1]), 3),
                    "ceiling_gain": round(float(found.f1[2] - found.f1[0]), 4),
                }
                if found.gain_low[1] > 0:
                    record.update(applied=True, reason="by person raises the out-of-fold 18-class F1 beyond the noise (its 90 % interval is above 0) with the estimated train grouping")
                else:
                    reason = "with the estimated train grouping it does not raise the out-of-fold 18-class F1 beyond the noise"
        if reason is not None:
            record.update(applied=self.force, reason=reason + ("; applied as asked (--force-by-person)" if self.force else "; the plain decisions are kept (--force-by-person insists)"))
        return Decoded(grouping if record["applied"] else None, record)


# --- the groups file ----------------------------------------------------------------------------


def groups_paths(root: Path, split: str) -> tuple[Path, Path]:
    """``<root>/groups/<split>.csv`` and its ``.json``."""
    return root / "groups" / f"{split}.csv", root / "groups" / f"{split}.json"


def write_groups(root: Path, split: str, image_ids: np.ndarray, grouping: Grouping, meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write the groups file and its JSON (`meta`: provenance, ``images`` fingerprint, agreement), atomically."""
    from ..data.io import write_bytes, write_json

    csv_path, json_path = groups_paths(root, split)
    lines = ["ImageID,group,confidence", *(f"{i},{g},{c:.3f}" for i, g, c in zip(image_ids, grouping.groups.tolist(), grouping.confidence.tolist()))]
    write_bytes(csv_path, ("\n".join(lines) + "\n").encode(), overwrite=True)
    write_json(json_path, {**meta, "images": int(len(image_ids)), "groups": int(grouping.groups.max() + 1) if len(image_ids) else 0}, overwrite=True)
    return csv_path, json_path


def read_groups(root: Path, split: str, image_ids: np.ndarray, fingerprint: str | None = None, subset: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """The group of each of `image_ids` ``(n,)`` from ``groups/<split>.csv``, and its JSON.

    A file for other images (an ImageID missing, or one extra unless `subset`: `image_ids` are
    some of the file's), one whose images changed since it was made (`fingerprint`, when given,
    differs from the JSON's), or a group of more than seven is an error naming the fix."""
    import pandas as pd

    from ..errors import preview

    csv_path, json_path = groups_paths(root, split)
    if not csv_path.is_file() or not json_path.is_file():
        raise EnsError(f"no grouping of the {split} images ({csv_path}): run ens group --split {split}")
    meta = json.loads(json_path.read_text())
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        raise EnsError(f"{csv_path} was made for other images (the {split} images changed since): run ens group --split {split} again")
    table = pd.read_csv(csv_path, dtype={"ImageID": str})
    if list(table.columns[:2]) != ["ImageID", "group"]:
        raise EnsError(f"{csv_path}: expected the columns ImageID,group,confidence")
    found = pd.Index(table["ImageID"])
    missing = pd.Index(image_ids).difference(found)
    extra = found.difference(pd.Index(image_ids)) if not subset else found[:0]
    if len(missing) or len(extra):
        raise EnsError(f"{csv_path} groups other images: {len(missing)} missing ({preview(missing)}), {len(extra)} extra ({preview(extra)}); run ens group --split {split} again")
    if len(table) and np.bincount(table["group"].to_numpy(np.int64)).max() > GROUP_SIZE:
        raise EnsError(f"{csv_path}: a group holds more than {GROUP_SIZE} images")
    return table.set_index("ImageID")["group"].reindex(image_ids).to_numpy(np.int64), meta
