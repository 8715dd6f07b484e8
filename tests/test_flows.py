"""The flows a team runs, walked at random (issue 33; DESIGN.md §7): a Hypothesis state machine
drives the public API through sequences of split, import (each file layout, out of fold or
not), compose (every method and the flags that go with it, some that do not), audit and accept,
edit and undo label fixes, and report, on a small project of each competition kind: the mask
competition, a single-task declared one (leaves by plant, answered by class name), Plant
Pathology's layout (one-hot train labels, a probability column per class), a multi-label
declared one (four findings, a probability column each), and one for each metric that decides
otherwise (ordered grades by quadratic kappa, imbalanced lesions by balanced accuracy, whales
answered by their three likeliest names, MAP@3).

Audit and accept, and fixes edited by hand, run on every kind (a declared competition's fix
file is ``image,group,task,label``). After every step: each call succeeded or raised one
`EnsError`; a stored set carries the data folder's labels as given, never a fix; the labels every score is taken on are the data folder's
with the fix file in force (computed here, apart from the code under test); a report run again
on the same sources, folds and fixes gives the same numbers (so undoing a fix restores them);
`report`'s score of a recipe and method equals `compose`'s; every submission is the sample
submission's rows, columns and order, and each probability column holds its own task's
probability.

Bounded for CI (derandomized; ``ENS_FLOW_EXAMPLES`` sequences of up to ``ENS_FLOW_STEPS`` steps
per kind); a longer walk: ``ENS_FLOW_EXAMPLES=200 ENS_FLOW_STEPS=25 pytest tests/test_flows.py``.
"""

from __future__ import annotations

import atexit
import csv
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DISEASES, PLANTS, chest, touch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

import ensembler as ens
from ensembler.data.dataset import read_train
from ensembler.data.labels import CLASS_NAMES, TASKS, Task, decode, encode, marginals
from ensembler.data.project import load_project, update_project
from ensembler.data.stable import top_classes
from ensembler.data.toy import make_toy_competition, teammate_csv
from ensembler.pipeline.steps import combining, decision_steps, refining

EXAMPLES = int(os.environ.get("ENS_FLOW_EXAMPLES", "10"))
STEPS = int(os.environ.get("ENS_FLOW_STEPS", "10"))

LEAVES = {
    "tasks": {"label": ["healthy", "rust", "spot", "blight"]},
    "metric": "accuracy",
    "train": {"csv": "train.csv", "id": "image_id", "images": "train", "labels": {"label": "label"}, "group": "plant"},
    "eval": {"csv": "sample_submission.csv", "id": "image_id", "images": "test"},
    "submission": {"answer": "label", "as": "name"},
}
GRADES = {  # APTOS-like: ordered grades, scored by quadratic kappa, the answer the grade's index
    **LEAVES,
    "tasks": {"diagnosis": ["none", "mild", "moderate", "severe", "proliferative"]},
    "metric": "quadratic_kappa",
    "train": {**LEAVES["train"], "labels": {"diagnosis": "diagnosis"}},
    "submission": {"answer": "diagnosis"},
}
LESIONS = {  # ISIC 2019-like: imbalanced classes, scored by balanced accuracy
    **LEAVES,
    "tasks": {"label": ["MEL", "NV", "BCC", "AK", "BKL", "DF"]},
    "metric": "balanced_accuracy",
}
WHALES = {  # Humpback Whale-like: the answer names the three likeliest, scored by MAP@3
    **LEAVES,
    "tasks": {"Id": [f"w_{i:02d}" for i in range(8)]},
    "metric": "map@3",
    "train": {**LEAVES["train"], "labels": {"Id": "Id"}},
    "submission": {"answer": "Id", "as": "name"},
}
SINGLE = {"leaves": LEAVES, "grades": GRADES, "lesions": LESIONS, "whales": WHALES}  # one task, a class answer
FINDINGS = ("ett", "ngt", "cvc", "swan")
CHEST = chest(FINDINGS)


@dataclass(frozen=True)
class Template:
    """A data folder and the members' predictions for one competition kind, made once: `root`
    (copied afresh for every sequence), the members' probabilities per task on `ids` (labelled
    then eval rows), the layouts a member's file can take, and the methods that compose it."""

    kind: str
    root: Path
    declared: dict | None
    ids: np.ndarray
    n_labelled: int
    members: dict[str, dict[str, np.ndarray]]  # member -> task -> (n, k) probabilities
    layouts: tuple[str, ...]
    methods: tuple[str, ...]


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def methods_for(declared: dict | None) -> tuple[str, ...]:
    """Every registered combining step that composes the competition (`Step.declared`, its
    `Step.metrics`, a class-only answer where the submission is a class): a step registered
    tomorrow walks here too."""
    from ensembler.pipeline.steps import combining_steps

    from ensembler.data.competition import Metric

    metric = Metric("macro_f1" if declared is None else declared["metric"])
    classes = (declared is None or "answer" in declared["submission"]) and metric.top is None  # one class an image answers it
    return tuple(
        name for name, step in combining_steps().items()
        if (declared is None or step.declared) and (step.metrics is None or metric in step.metrics) and (step.probabilities or classes)
    )  # fmt: skip


def _mask_template(root: Path) -> Template:
    toy = make_toy_competition(root / "comp", n_people=24, n_eval_people=4, seed=5)
    flip = read_train(toy.data)["profile"].iloc[2]  # its photos show the other gender: what the audit finds
    truth = pd.concat([toy.train, toy.eval[["ImageID", "label"]]], ignore_index=True)
    t = decode(truth["label"].to_numpy())
    rows = truth["ImageID"].str.startswith(flip + "/").to_numpy()
    t[Task.GENDER][rows] = 1 - t[Task.GENDER][rows]
    shown = truth.assign(label=encode(t[Task.MASK], t[Task.GENDER], t[Task.AGE]))
    members = {}
    for i, skill in enumerate((3.0, 2.0, 1.5)):
        joint = teammate_csv(shown, {Task.MASK: skill + 1, Task.GENDER: skill + 2, Task.AGE: skill}, seed=i).iloc[:, 1:].to_numpy()
        members[f"m{i}"] = {"joint": joint}
    (root / "zoo").mkdir()
    update_project(root / "zoo" / "model_zoo.yaml", data=toy.data)
    return Template("mask", root, None, truth["ImageID"].to_numpy(object), len(toy.train), members, ("joint", "per-task", "hard", "age", "logits"), methods_for(None))


def _declared_template(root: Path, kind: str) -> Template:
    import yaml

    declared = {**SINGLE, "plants": PLANTS, "chest": CHEST}[kind]
    rng = np.random.default_rng(11)
    spec, ev = declared["train"], declared["eval"]
    n_groups, per, n_eval = 24, 3, 18
    ids = np.array([f"i{i:04d}.jpg" for i in range(n_groups * per)] + [f"t{i:04d}.jpg" for i in range(n_eval)], dtype=object)
    n = n_groups * per
    data = root / "data"
    if kind == "plants":
        ids = np.array([i.removesuffix(".jpg") for i in ids], dtype=object)
        truth = rng.choice(4, len(ids), p=[0.3, 0.1, 0.35, 0.25])
        train = pd.DataFrame({spec["id"]: ids[:n], **{c: (truth[:n] == j).astype(int) for j, c in enumerate(DISEASES)}})
        members = {f"m{i}": {"label": _softmax(rng.normal(size=(len(ids), 4)) + skill * np.eye(4)[truth])} for i, skill in enumerate((2.0, 1.5, 1.0))}
        layouts, methods = ("submission", "numbered", "logits"), methods_for(declared)
    elif kind in SINGLE:
        (task, classes), = declared["tasks"].items()
        k = len(classes)
        truth = rng.choice(k, len(ids), p=0.5 ** np.arange(k) / (0.5 ** np.arange(k)).sum())  # imbalanced, the first class the commonest
        train = pd.DataFrame({spec["id"]: ids[:n], task: [classes[c] for c in truth[:n]], "plant": [f"p{i // per}" for i in range(n)]})
        members = {f"m{i}": {task: _softmax(rng.normal(size=(len(ids), k)) + skill * np.eye(k)[truth])} for i, skill in enumerate((2.5, 1.5, 1.0))}
        layouts, methods = ("names", "numbered", "hard", "logits"), methods_for(declared)
    else:
        truth = rng.random((len(ids), len(FINDINGS))) < np.array([0.3, 0.4, 0.5, 0.2])
        train = pd.DataFrame({spec["id"]: ids[:n], **{f: truth[:n, j].astype(int) for j, f in enumerate(FINDINGS)}, "PatientID": [f"p{i // per}" for i in range(n)]})
        members = {}
        for i, skill in enumerate((2.0, 1.2, 0.8)):
            p = 1 / (1 + np.exp(-(rng.normal(size=truth.shape) + skill * (2 * truth - 1))))
            members[f"m{i}"] = {f: np.stack([1 - p[:, j], p[:, j]], 1) for j, f in enumerate(FINDINGS)}
        layouts, methods = ("submission", "per-task"), methods_for(declared)
    data.mkdir(parents=True)
    train.to_csv(data / spec["csv"], index=False)
    answers = [declared["submission"].get("answer")] if "answer" in declared["submission"] else list(declared["submission"]["proba"])
    pd.DataFrame({ev["id"]: ids[n:], **{a: 0 for a in answers}}).to_csv(data / ev["csv"], index=False)
    for folder, chosen in ((spec["images"], ids[:n]), (ev["images"], ids[n:])):
        for i in chosen:
            touch(data / (folder.replace("{}", i) if "{}" in folder else f"{folder}/{i}"))
    (root / "zoo").mkdir()
    (root / "zoo" / "model_zoo.yaml").write_text(yaml.safe_dump({"project": {"data": str(data)}, "competition": declared}, sort_keys=False))
    return Template(kind, root, declared, ids, n, members, layouts, methods)


_TEMPLATES: dict[str, Template] = {}


def template(kind: str) -> Template:
    """The kind's template, made once per test session."""
    if kind not in _TEMPLATES:
        root = Path(tempfile.mkdtemp(prefix=f"ens-flow-{kind}-"))
        atexit.register(shutil.rmtree, root, True)  # made once a session, gone with it
        _TEMPLATES[kind] = _mask_template(root) if kind == "mask" else _declared_template(root, kind)
    return _TEMPLATES[kind]


def _write_member(t: Template, member: str, layout: str, path: Path) -> dict:
    """The member's predictions of every labelled and eval image as a CSV in `layout`; returns
    the `import_source` keywords that read it."""
    probs = t.members[member]
    if t.kind == "mask":
        joint = probs["joint"]
        frame = pd.DataFrame({"ImageID": t.ids})
        if layout in ("joint", "logits"):
            values = np.log(np.clip(joint, 1e-9, None)) + 3.0 if layout == "logits" else joint
            frame = pd.concat([frame, pd.DataFrame(values, columns=[str(c) for c in range(18)])], axis=1)
        elif layout == "per-task":
            parts = marginals(joint)
            for task in TASKS:
                for c in range(parts[task].shape[1]):
                    frame[f"{task}_{c}"] = parts[task][:, c]
        elif layout == "hard":
            frame["ans"] = joint.argmax(1)
        else:  # one task's labels (a teammate's age-only file)
            frame["ans"] = marginals(joint)[Task.AGE].argmax(1)
        frame.to_csv(path, index=False)
        return {"kind": {"logits": "logits", "hard": "hard", "age": "task"}.get(layout), "task": "age" if layout == "age" else None}
    declared = t.declared
    id_column = declared["eval"]["id"]
    frame = pd.DataFrame({id_column: t.ids})
    if t.kind in SINGLE or t.kind == "plants":
        (task, classes), = declared["tasks"].items()
        p = probs[task]
        if layout in ("names", "submission", "logits"):  # the class names: a plants submission's own layout
            values = np.log(p) + 1.0 if layout == "logits" else p
            frame = pd.concat([frame, pd.DataFrame(values, columns=classes)], axis=1)
        elif layout == "numbered":
            frame = pd.concat([frame, pd.DataFrame(p, columns=[str(c) for c in range(len(classes))])], axis=1)
        else:
            frame[task] = [classes[c] for c in p.argmax(1)]
        frame.to_csv(path, index=False)
        return {"kind": "logits" if layout == "logits" else None}
    for column, qualified in declared["submission"]["proba"].items():
        task = qualified.split(".")[0]
        if layout == "submission":
            frame[column] = probs[task][:, 1]
        else:
            frame[f"{task}_0"], frame[f"{task}_1"] = probs[task][:, 0], probs[task][:, 1]
    frame.to_csv(path, index=False)
    return {}


class Flows(RuleBasedStateMachine):
    """One team's project, walked (module doc)."""

    def __init__(self, kind: str):
        super().__init__()
        self.t = template(kind)
        self.dir = Path(tempfile.mkdtemp(prefix=f"ens-walk-{kind}-"))
        shutil.copytree(self.t.root, self.dir / "root")
        self.zoo = self.dir / "root" / "zoo" / "model_zoo.yaml"
        if kind == "mask":  # the data folder sits elsewhere in the copy: point at it
            update_project(self.zoo, data=self.dir / "root" / "comp" / "data")
        else:
            import yaml

            raw = yaml.safe_load(self.zoo.read_text())
            raw["project"]["data"] = str(self.dir / "root" / "data")
            self.zoo.write_text(yaml.safe_dump(raw, sort_keys=False))
        self.sources: dict[str, bool] = {}  # name -> has eval predictions
        self.counter = 0
        self.fixes: dict[tuple[str, str, str], str] = {}  # the fix file's rows, as this test wrote or read them
        self.fix_named = False
        self.seen: dict[tuple, pd.DataFrame] = {}  # (folds, fixes, sources) -> the report's scores
        if kind == "mask":
            self.raw = read_train(self.project.data).set_index("ImageID")["label"]
        else:
            from ensembler.data.declared import read_labelled

            table = read_labelled(self.project.competition, self.project.data).set_index("ImageID")
            self.raw, self.groups = table["label"], table["group"]

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def project(self):
        return load_project(self.zoo)

    @property
    def mask(self) -> bool:
        return self.t.kind == "mask"

    # --- what the labels in force must be, computed here ------------------------------------------

    def expected_labels(self, ids: np.ndarray) -> np.ndarray:
        """The data folder's labels of `ids` with the fixes in force (this test's own account of them)."""
        fixes = self.fixes.items() if self.fix_named else ()
        if not self.mask:  # (group, image, task): an image's own label, or a shared task's group
            space = self.project.competition.space
            parts = space.decode(self.raw.reindex(ids).to_numpy())
            groups = self.groups.reindex(ids).to_numpy()
            for (group, image, task), label in fixes:
                classes = self.project.competition.task(task).classes
                parts[task][(ids == image) if image else (groups == group)] = classes.index(label) if label in classes else int(label)
            return space.encode(*(parts[t] for t in space.tasks))
        parts = decode(self.raw.reindex(ids).to_numpy())
        for (profile, image, task), label in fixes:
            rows = np.array([i.startswith(profile + "/") and (not image or i.endswith("/" + image)) for i in ids])
            value = CLASS_NAMES[Task(task)].index(label) if label in CLASS_NAMES[Task(task)] else int(label)
            parts[Task(task)][rows] = value
        return encode(parts[Task.MASK], parts[Task.GENDER], parts[Task.AGE])

    def given_labels(self, ids: np.ndarray) -> np.ndarray:
        return self.raw.reindex(ids).to_numpy()

    def _read_fix_file(self) -> None:
        path = self.zoo.parent / "label_fixes.csv"
        self.fixes = {}
        if path.is_file():
            with open(path, newline="") as handle:
                for row in csv.DictReader(handle):
                    key = (row["profile"], row["image"], row["task"]) if self.mask else (row.get("group") or "", row["image"], row["task"])
                    self.fixes.setdefault(key, row["label"])
        self.fix_named = self.project.label_fixes is not None

    # --- the rules -------------------------------------------------------------------------------

    @initialize(seed=st.integers(0, 2), split_first=st.booleans(), data=st.data())
    def start(self, seed, split_first, data):
        """A team that has split its folds (or not yet) and brought two members' files."""
        if split_first:
            ens.split(self.project, folds=3, seed=seed)
        for member in ("m0", "m1"):
            self.import_file(member, data, split_first and data.draw(st.booleans(), label="oof"))

    @rule(seed=st.integers(0, 2))
    def split(self, seed):
        ens.split(self.project, folds=3, seed=seed, force=True)

    @rule(member=st.sampled_from(["m0", "m1", "m2"]), data=st.data(), oof=st.booleans())
    def import_file(self, member, data, oof):
        layout = data.draw(st.sampled_from(self.t.layouts), label="layout")
        self.counter += 1
        name = f"{member}_{layout}_{self.counter}"
        path = self.dir / f"{name}.csv"
        options = _write_member(self.t, member, layout, path)
        try:
            written = ens.import_source(self.project, path, name, oof=oof, **options)
        except ens.EnsError as exc:
            assert oof and "--oof" in str(exc), exc  # out of fold needs the fold file; every other file here is good
            assert not self.project.store.has(name)  # nothing written
            return
        self.sources[name] = True
        assert {m["split"] for m in written} == {"eval", "oof" if oof else "val"}
        stored = self.project.store.labelled(name)
        assert np.array_equal(stored.labels, self.given_labels(stored.image_ids))  # the labels as given, never a fix

    @precondition(lambda self: self.sources)
    @rule(data=st.data(), write=st.booleans())
    def compose(self, data, write):
        names = data.draw(st.lists(st.sampled_from(sorted(self.sources)), min_size=1, max_size=3, unique=True), label="sources")
        method = data.draw(st.sampled_from(self.t.methods), label="method")
        flags = data.draw(st.fixed_dictionaries({
            "per_task": st.booleans(), "balanced": st.booleans(), "tie": st.sampled_from([None, "lower"]),
            "prior": st.sampled_from([(), ("em",)]) if self.mask else st.just(()), "tune_f1": st.booleans() if self.mask else st.just(False),
            "decide": st.sampled_from([None, *decision_steps()]) if not self.mask else st.just(None),
        }), label="flags")  # fmt: skip
        if not data.draw(st.integers(0, 4), label="a flag the method does not use") == 0:  # mostly the flags that fit the method
            flags["per_task"] &= method in ("soft", "geo", "hard", "rank")
            flags["balanced"] &= method == "stack"
            flags["tie"] = flags["tie"] if method == "hard" else None
            flags["decide"] = flags["decide"] if flags["decide"] and self.project.competition.metric in decision_steps()[flags["decide"]].metrics else None
        recipe = self._recipe(names)
        self.counter += 1
        name = f"c{self.counter}"
        try:
            steps = [combining(method, per_task=flags["per_task"], tie=flags["tie"], balanced=flags["balanced"])]
            steps += refining(flags["prior"], tune_f1=flags["tune_f1"], decide=flags["decide"])
            done = ens.compose(self.project, recipe, ens.Pipeline(tuple(steps)), name=name, write=write)
        except ens.EnsError:
            assert not (self.project.submissions / f"{name}.csv").exists() and not self.project.store.has(name)
            return
        self._check_submission(done)
        if done.val is not None:
            assert np.array_equal(done.val_labels, self.given_labels(done.val.image_ids))  # kept as given
        if write:
            self.sources[name] = True
        plain = len(steps) == 1 and not flags["balanced"]
        if plain and "recipe" in done.validation:
            self._report_equals_compose(done, recipe, names, method, flags)

    @rule()
    def report(self):
        try:
            tables = ens.report(self.project, replicates=0)
        except ens.EnsError:
            return
        result = tables.report
        ids = next(iter(result.sets.values())).image_ids
        assert np.array_equal(result.labels, self.expected_labels(ids))  # the data folder's, with the fixes in force
        store = self.project.store
        key = (
            self.project.folds.read_text() if self.project.folds.is_file() else "",
            frozenset(self.fixes.items()) if self.fix_named else frozenset(),
            tuple(sorted((n, store.read_meta(n, s)["csv_sha256"]) for n in store.sources() for s in store.splits(n))),
        )
        scores = tables.scores.sort_values(["name", "method"], na_position="first").reset_index(drop=True)
        if key in self.seen:  # the same sources, folds and fixes: the same numbers, digit for digit
            pd.testing.assert_frame_equal(scores, self.seen[key])
        self.seen[key] = scores

    @precondition(lambda self: self.sources)
    @rule(p=st.sampled_from([0.5, 0.9]))
    def audit_and_accept(self, p):
        try:
            found = ens.audit(self.project, accept=p).audit
        except ens.EnsError:
            return
        self._read_fix_file()
        if found.rates:  # a declared competition: a task is cautioned exactly where its evidence is faint
            from ensembler.evaluate.audit_declared import faint

            cautioned = {line.split(":")[0] for line in found.problems if "the evidence is faint" in line}
            assert cautioned == {t for t, rate in found.rates.items() if faint(found.disagree[t], rate)}
            assert set(found.disagree) == set(found.rates) and all(0 <= d <= 1 for d in found.disagree.values())
            # a two-class task judged image by image flags no more labels than confident learning counts wrong
            flagged = found.flagged()
            assert set(found.confident) <= set(found.rates)
            assert all((flagged["task"] == task).sum() <= round(count) for task, count in found.confident.items())
            if self.t.kind == "chest":  # four [no, yes] findings: every one is bounded
                assert len(found.confident) == len(found.rates)

    @rule(action=st.sampled_from(["add", "drop", "empty", "unname", "name"]), person=st.integers(0, 23), task=st.integers(0, 3))
    def edit_fixes(self, action, person, task):
        path = self.zoo.parent / "label_fixes.csv"
        if action == "add":
            key, label = self._a_fix(person, task)
            self.fixes.pop(key, None)
            self.fixes[key] = label
        elif action == "drop" and self.fixes:
            self.fixes.pop(next(reversed(self.fixes)))
        elif action == "empty":
            self.fixes = {}
        if action in ("add", "drop", "empty"):
            header = "profile,image,task,label" if self.mask else "image,group,task,label"
            rows = (f"{u},{i},{t},{lab}" if self.mask else f"{i},{u},{t},{lab}" for (u, i, t), lab in self.fixes.items())
            path.write_text(header + "\n" + "".join(f"{row}\n" for row in rows))
        if action == "unname":
            update_project(self.zoo, label_fixes=None)
        elif action == "name" or (action == "add" and not self.fix_named):
            if path.is_file():
                update_project(self.zoo, label_fixes="label_fixes.csv")
        self.fix_named = self.project.label_fixes is not None

    def _a_fix(self, person: int, task: int) -> tuple[tuple[str, str, str], str]:
        """A fix of the `person`-th person (group) or image: its key in the fix file and a label."""
        if self.mask:
            name = ("gender", "age", "mask")[task % 3]
            profile = sorted({i.split("/")[0] for i in self.raw.index})[person]
            image = next(i.split("/")[1] for i in self.raw.index if i.startswith(profile + "/") and "normal" in i) if name == "mask" else ""
            return (profile, image, name), {"gender": "female", "age": "60+", "mask": "incorrect"}[name]
        spec = self.project.competition.tasks[task % len(self.project.competition.tasks)]
        return ("", sorted(self.raw.index)[person], spec.name), spec.classes[-1]

    @invariant()
    def the_fix_file_in_force_is_what_this_test_thinks(self):
        if self.fix_named:
            fixes = self.project.fixes
            assert {(u, i, str(t)) for u, i, t in fixes.fixes} == set(self.fixes)

    # --- helpers -----------------------------------------------------------------------------------

    def _recipe(self, names: list[str]) -> str:
        store = self.project.store
        tasks = {n: store.read_meta(n, "eval")["tasks"] for n in names}
        parts = [f"{task}:{'+'.join(n for n in names if task in tasks[n])}" for task in self.project.competition.task_names if any(task in tasks[n] for n in names)]
        return " ".join(parts)

    def _check_submission(self, done) -> None:
        project = self.project
        frame = done.submission
        if self.mask:
            info = pd.read_csv(project.data / "eval" / "info.csv", dtype=str)
            assert frame["ImageID"].tolist() == info["ImageID"].tolist() and frame["ans"].between(0, 17).all()
            return
        sample = pd.read_csv(project.data / self.t.declared["eval"]["csv"], dtype=str, keep_default_na=False)
        assert list(frame.columns) == list(sample.columns) and frame.iloc[:, 0].tolist() == sample.iloc[:, 0].tolist()
        competition = project.competition
        position = {i: k for k, i in enumerate(done.eval.image_ids)}
        rows = [position[i] for i in sample.iloc[:, 0]]
        for column, (task, c) in competition.proba_columns.items():  # each column its own task's probability
            expected = [str(v) for v in np.asarray(done.eval.probs[task])[rows, c].astype(np.float32)]
            assert frame[column].tolist() == expected, column
        if competition.submission.answer:
            task = competition.tasks[0]
            written = task.classes if competition.submission.as_name else [str(c) for c in range(task.n_classes)]
            answers = frame[competition.submission.answer].tolist()
            top = competition.metric.top
            if top is not None:  # the likeliest classes of the composition's probabilities, likeliest first
                expected = top_classes(np.asarray(done.eval.probs[task.name])[rows], top)
                assert answers == [" ".join(written[c] for c in row) for row in expected]
            else:
                assert set(answers) <= set(written)

    def _report_equals_compose(self, done, recipe, names, method, flags) -> None:
        tables = ens.report(self.project, sources=names, recipes=[recipe], methods=[method], per_task=flags["per_task"], tie=flags["tie"], replicates=0)
        row = tables.scores[(tables.scores["kind"] == "recipe") & (tables.scores["method"] == method)].iloc[0]
        metric = "f1_18" if self.mask else str(self.project.competition.metric)
        assert row[metric] == done.validation["recipe"][metric], (row[metric], done.validation["recipe"][metric])


@pytest.mark.parametrize("kind", ["mask", *SINGLE, "plants", "chest"])
def test_the_flows_a_team_runs_keep_their_promises(kind):
    examples = EXAMPLES if kind in ("mask", "leaves", "plants", "chest") else max(1, EXAMPLES // 2)  # the metrics' kinds share the leaves' layout
    run_state_machine_as_test(
        lambda: Flows(kind),
        settings=settings(max_examples=examples, stateful_step_count=STEPS, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)),
    )
