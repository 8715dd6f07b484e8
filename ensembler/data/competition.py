"""The competition, declared (DESIGN.md §4): its label space, metric, data layout and submission.

``model_zoo.yaml``'s ``competition:`` section; absent (or ``competition: mask``), the face-mask
competition, the built-in preset `MASK`, exactly as `labels` compiles it in::

    competition:
      tasks:                       # ordered class names per task (index = position)
        label: [cbb, cbsd, cgm, cmd, healthy]
      metric: accuracy             # macro_f1, accuracy, quadratic_kappa, balanced_accuracy, auc, log_loss, map@K
      train:                       # a CSV with one row per labelled image ...
        csv: train.csv
        id: image_id               # the column naming the image (its path under `images`)
        images: train_images       # a folder, or a pattern such as "jpeg/train/{}.jpg"
        labels: {label: label}     # task -> column; a class index or a class name
        # labels: {label: [healthy, rust, scab]}   one-hot: a 0/1 column per class, in class order
        group: patient_id          # optional: folds and intervals resample whole groups
        shared: [diagnosis]        # optional: tasks whose label every image of a group shares (the audit judges the group)
      # train: {folders: train}    # ... or a folder per class (single task; names as declared)
      eval:
        csv: sample_submission.csv # the sample submission: its rows and columns are the submission's
        id: image_id
        images: test_images
      submission:
        answer: label              # the column filled with the class (`as: name` for class names)
        # proba: {target: malignant}   or: columns holding each class's probability; a class name
        #   several tasks share (multi-label [no, yes]) is named with its task: {ett_abnormal: ett_abnormal.yes}
      joint: product               # several tasks, one answer: the product index in task order

Every key is checked when the file is read: an unknown key, a task with fewer than two
classes, an unknown metric, a pattern without ``{}``, a metric the submission cannot carry
(AUC or log-loss with ``answer:``) are one error naming the key and the file. Paths are relative
to the data folder. `Competition.space` is its `labels.LabelSpace`; `declared` reads its files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from math import prod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import EnsError, unknown
from .labels import CLASS_NAMES, MASK_SPACE, TASKS, LabelSpace

if TYPE_CHECKING:
    import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class Metric(str):
    """The competition's score, by its name in ``model_zoo.yaml`` (a `str`: it prints, compares
    and serialises as its name). On decisions: ``macro_f1``, ``accuracy``, ``quadratic_kappa``
    (Cohen's kappa with quadratic weights, the classes ordered as declared: a grade),
    ``balanced_accuracy`` (the mean recall over the classes present). On probabilities (a
    submission of probabilities): ``auc``, ``log_loss``. On a ranking: ``map@K`` (K a positive
    integer: the answer names the K likeliest classes, and an image scores 1/rank of its true
    class among them, 0 when it is not there; the mean over images, Humpback Whale's MAP@5).
    An unknown name raises ValueError listing `NAMES`."""

    NAMES: ClassVar[tuple[str, ...]] = ("macro_f1", "accuracy", "quadratic_kappa", "balanced_accuracy", "auc", "log_loss", "map@K")
    MACRO_F1: ClassVar[Metric]
    ACCURACY: ClassVar[Metric]
    QUADRATIC_KAPPA: ClassVar[Metric]
    BALANCED_ACCURACY: ClassVar[Metric]
    AUC: ClassVar[Metric]
    LOG_LOSS: ClassVar[Metric]

    def __new__(cls, value: object) -> Metric:
        text = str(value).strip()
        if text not in cls.NAMES[:-1] and not (text.startswith("map@") and text[4:].isdigit() and int(text[4:]) > 0 and text[4:] == str(int(text[4:]))):
            raise ValueError(f"{value!r} is not a metric: one of {', '.join(cls.NAMES)} (K a positive integer, e.g. map@5)")
        return super().__new__(cls, text)

    @property
    def top(self) -> int | None:
        """K of ``map@K`` (the answer's names per image); None for the other metrics."""
        return int(self[4:]) if self.startswith("map@") else None

    @property
    def on_probabilities(self) -> bool:
        """Scored on the submission's probabilities (AUC, log-loss)."""
        return self in ("auc", "log_loss")

    @property
    def ranks(self) -> bool:
        """Scored on the order of the classes' probabilities (AUC, log-loss and map@K): a step
        that gives classes alone (the hard vote) cannot serve it."""
        return self.on_probabilities or self.top is not None

    @property
    def higher_is_better(self) -> bool:
        return self != "log_loss"


for _name in Metric.NAMES[:-1]:
    setattr(Metric, _name.upper(), Metric(_name))


@dataclass(frozen=True)
class TaskSpec:
    """One task: its name (as recipes and files write it) and its ordered class names."""

    name: str
    classes: tuple[str, ...]

    @property
    def n_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class TrainSpec:
    """Where the labelled images and their labels are: a CSV (`csv`, `id`, `images`, `labels`
    task -> its column of class names or indices, or its classes' one-hot columns in class
    order; optional `group`, and `shared`: the tasks whose label every image of a group
    carries, judged by group in the audit) or a folder per class (`folders`)."""

    csv: str | None = None
    id: str | None = None
    images: str | None = None
    labels: Mapping[str, str | tuple[str, ...]] | None = None
    group: str | None = None
    folders: str | None = None
    shared: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvalSpec:
    """The eval images and the sample submission whose rows and columns the submission keeps."""

    csv: str
    id: str
    images: str


@dataclass(frozen=True)
class SubmissionSpec:
    """The submission's answer: `answer`, the column holding the class (as an index, or a name
    with ``as: name``), or `proba`, columns holding class probabilities (column -> (task, class
    index), resolved from the declaration's ``task.class`` or unambiguous class name)."""

    answer: str | None = None
    as_name: bool = False
    proba: Mapping[str, tuple[str, int]] | None = None


@dataclass(frozen=True)
class Competition:
    """A declared competition: `tasks` in order, the `metric`, whether the answer is the
    `joint` product of the tasks' classes (index ``sum_t c_t * prod(k_u, u after t)``), and its
    `train`, `eval` and `submission` layouts (None for the `MASK` preset, whose layout is the one
    of DESIGN.md §2: a folder per person of seven named photos, ``ImageID,ans``)."""

    name: str
    tasks: tuple[TaskSpec, ...]
    metric: Metric
    joint: bool
    train: TrainSpec | None = None
    eval: EvalSpec | None = None
    submission: SubmissionSpec | None = None

    @property
    def is_preset(self) -> bool:
        return self.train is None

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    @property
    def n_joint(self) -> int:
        """Classes of the answer: the product of the tasks' (joint), else the one task's."""
        return prod(t.n_classes for t in self.tasks) if self.joint or len(self.tasks) == 1 else 0

    @cached_property
    def space(self) -> LabelSpace:
        """The label space (`labels.LabelSpace`): the mask preset's is `labels.MASK_SPACE`."""
        if self is MASK or self == MASK:
            return MASK_SPACE
        return LabelSpace(self.task_names, {t.name: t.classes for t in self.tasks})

    @property
    def proba_columns(self) -> dict[str, tuple[str, int]]:
        """The submission's probability columns: ``{column: (task, class index)}``, each column
        its own task's (empty for a class answer)."""
        return dict((self.submission.proba or {}) if self.submission else {})

    def answer_probabilities(self, probs: Mapping[str, np.ndarray], joint: np.ndarray | None = None) -> np.ndarray:
        """The probabilities ``(n, n_joint)`` of the answer's classes from per-task `probs`
        ``{task: (n, k)}``: the one task's, else the `joint` or, without one, the product of
        the tasks' (``joint: product``)."""
        if len(self.tasks) == 1:
            return probs[self.tasks[0].name]
        return joint if joint is not None else self.space.joint_from_tasks(probs)

    def task(self, name: str) -> TaskSpec:
        """The task called `name`; an unknown one suggests the close ones."""
        for t in self.tasks:
            if t.name == name:
                return t
        raise unknown("task", name, self.task_names)

    def line(self) -> str:
        """``competition: mask (built in): tasks mask 3, gender 2, age 3; 18 joint classes; macro_f1``."""
        tasks = ", ".join(f"{t.name} {t.n_classes}" for t in self.tasks)
        joint = f"; {self.n_joint} joint classes" if self.joint else ""
        return f"competition: {self.name}{' (built in)' if self.is_preset else ''}: tasks {tasks}{joint}; {self.metric}"


MASK = Competition(
    name="mask",
    tasks=tuple(TaskSpec(t.value, CLASS_NAMES[t]) for t in TASKS),
    metric=Metric.MACRO_F1,
    joint=True,
)
PRESETS = {"mask": MASK}
SECTIONS = {"tasks", "metric", "train", "eval", "submission", "joint", "name"}
RESERVED = ("ImageID", "path", "group", "label")  # the labelled table's own columns (`declared.read_labelled`)


def _mapping(raw: Any, key: str, source: Path, keys: set[str]) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise EnsError(f"{source}: competition.{key}: expected a mapping, got {raw!r}")
    extra = sorted(set(map(str, raw)) - keys)
    if extra:
        raise EnsError(f"{source}: competition.{key}: unknown key {extra[0]!r} (known: {', '.join(sorted(keys))})")
    return {str(k): v for k, v in raw.items()}


def _text(raw: Mapping[str, Any], key: str, where: str, source: Path, required: bool = True) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise EnsError(f"{source}: {where}.{key}: required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise EnsError(f"{source}: {where}.{key}: expected a non-empty text, got {value!r}")
    return value.strip()


def _images(value: str, where: str, source: Path) -> str:
    """A folder, or a pattern with one ``{}`` where the id goes."""
    looks_like_file = value.lower().endswith(IMAGE_SUFFIXES) or "{" in value or "}" in value
    if looks_like_file and value.count("{}") != 1:
        raise EnsError(f"{source}: {where}.images: {value!r} is a pattern without one {{}} where the id goes (e.g. jpeg/train/{{}}.jpg), or name a folder")
    return value


def _tasks(raw: Any, source: Path) -> tuple[TaskSpec, ...]:
    if not isinstance(raw, Mapping) or not raw:
        raise EnsError(f"{source}: competition.tasks: expected task -> [class names], e.g. {{label: [cat, dog]}}")
    tasks = []
    for name, classes in raw.items():
        name = str(name).strip()
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise EnsError(f"{source}: competition.tasks: task name {name!r}: letters, digits, _ and - only")
        if not isinstance(classes, list) or len(classes) < 2:
            raise EnsError(f"{source}: competition.tasks.{name}: a task needs two classes or more, got {classes!r}")
        names = tuple(str(c).strip() for c in classes)
        twice = sorted({c for c in names if names.count(c) > 1})
        if twice or not all(names):
            raise EnsError(f"{source}: competition.tasks.{name}: class names must be distinct and non-empty ({', '.join(twice) or 'an empty one'})")
        if name in RESERVED and (len(raw) > 1 or name != "label"):
            raise EnsError(f"{source}: competition.tasks: a task may not be called {name!r} (the labelled table's {', '.join(RESERVED)} columns; a single task may be called label); rename it")
        tasks.append(TaskSpec(name, names))
    return tuple(tasks)


def _label_columns(value: Any, task: Any, tasks: tuple[TaskSpec, ...], source: Path) -> str | tuple[str, ...]:
    """A task's label column (one column of class names or indices), or its one-hot columns (a
    list, one 0/1 column per class in the declared order)."""
    where = f"{source}: competition.train.labels.{task}"
    if isinstance(value, list):
        spec = next((t for t in tasks if t.name == str(task)), None)
        columns = tuple(str(c).strip() for c in value)
        if spec is not None and len(columns) != spec.n_classes:
            raise EnsError(f"{where}: one-hot columns name each of the {spec.n_classes} classes in order ({', '.join(spec.classes)}); {len(columns)} given")
        if len(set(columns)) != len(columns) or not all(columns):
            raise EnsError(f"{where}: one-hot columns must be distinct and non-empty")
        return columns
    if not isinstance(value, (str, int)) or not str(value).strip():
        raise EnsError(f"{where}: a column name, or a list of one-hot columns (one per class), got {value!r}")
    return str(value).strip()


def _shared(raw: Any, group: str | None, names: set[str], source: Path) -> tuple[str, ...]:
    """The tasks whose label a group shares (``shared: [diagnosis]``): declared tasks, and a
    group column to share it by."""
    if raw is None:
        return ()
    where = f"{source}: competition.train.shared"
    if not isinstance(raw, list) or not raw:
        raise EnsError(f"{where}: a list of tasks whose label every image of a group carries, e.g. [{sorted(names)[0]}]")
    if group is None:
        raise EnsError(f"{where}: a shared label needs the group column it is shared by (competition.train.group)")
    shared = tuple(dict.fromkeys(str(t).strip() for t in raw))
    strange = [t for t in shared if t not in names]
    if strange:
        raise unknown(f"task in {source.name} competition.train.shared", strange[0], names)
    return shared


def _proba_class(name: str, column: str, tasks: tuple[TaskSpec, ...], source: Path) -> tuple[str, int]:
    """The (task, class index) a probability column holds: ``task.class``, or a class name one
    task alone has; a name several tasks share (multi-label ``[no, yes]``) is an error listing
    the qualified choices."""
    where = f"{source}: competition.submission.proba.{column}"
    head, dot, tail = name.partition(".")
    qualified = next((t for t in tasks if dot and t.name == head and tail in t.classes), None)
    if qualified is not None:
        return qualified.name, qualified.classes.index(tail)
    owners = [t for t in tasks if name in t.classes]
    if len(owners) > 1:
        raise EnsError(f"{where}: class {name!r} is a class of {len(owners)} tasks; name the task's: {', '.join(f'{t.name}.{name}' for t in owners)}")
    if not owners:
        every = [f"{t.name}.{c}" for t in tasks for c in t.classes] + [c for t in tasks for c in t.classes]
        raise unknown(f"class in {source.name} competition.submission.proba", name, every)
    return owners[0].name, owners[0].classes.index(name)


def parse_competition(raw: Any, source: Path) -> Competition:
    """The ``competition:`` section of `source`: absent (None) or a preset's name is that
    preset (`MASK`); a mapping is a declaration, checked here (module doc)."""
    if raw is None:
        return MASK
    if isinstance(raw, str):
        if raw not in PRESETS:
            raise unknown(f"competition preset in {source.name}", raw, PRESETS)
        return PRESETS[raw]
    section = _mapping(raw, "", source, SECTIONS) if isinstance(raw, Mapping) else None
    if section is None:
        raise EnsError(f"{source}: competition: expected a preset's name (mask) or a mapping with tasks, metric, train, eval, submission")
    if "tasks" not in section:
        raise EnsError(f"{source}: competition.tasks: required (task -> [class names])")
    tasks = _tasks(section["tasks"], source)
    try:
        metric = Metric(section.get("metric", ""))
    except ValueError as e:
        raise EnsError(f"{source}: competition.metric: {e}") from None
    joint_raw = section.get("joint")
    if joint_raw not in (None, "product"):
        raise EnsError(f"{source}: competition.joint: only 'product' (the answer is the product index in task order), got {joint_raw!r}")
    joint = joint_raw == "product"
    if joint and len(tasks) < 2:
        raise EnsError(f"{source}: competition.joint: product needs two tasks or more; one task is its own answer")
    for key in ("train", "eval", "submission"):
        if key not in section:
            raise EnsError(f"{source}: competition.{key}: required (see docs/how-to/declare-a-competition.md)")
    train_raw = _mapping(section["train"], "train", source, {"csv", "id", "images", "labels", "group", "folders", "shared"})
    names = {t.name for t in tasks}
    if "folders" in train_raw:
        if set(train_raw) - {"folders"}:
            raise EnsError(f"{source}: competition.train: folders (a folder per class) takes no other key; or declare csv, id, images and labels")
        if len(tasks) != 1:
            raise EnsError(f"{source}: competition.train.folders: a folder per class holds one task; {len(tasks)} are declared")
        train = TrainSpec(folders=_text(train_raw, "folders", "competition.train", source))
    else:
        labels = train_raw.get("labels")
        if not isinstance(labels, Mapping) or not labels:
            raise EnsError(f"{source}: competition.train.labels: required, task -> column (e.g. {{{tasks[0].name}: label}})")
        labels = {str(k): _label_columns(v, k, tasks, source) for k, v in labels.items()}
        strange = sorted(set(labels) - names)
        if strange:
            raise unknown(f"task in {source.name} competition.train.labels", strange[0], names)
        missing = sorted(names - set(labels))
        if missing:
            raise EnsError(f"{source}: competition.train.labels: no column for task {missing[0]!r}")
        group = _text(train_raw, "group", "competition.train", source, required=False)
        train = TrainSpec(
            csv=_text(train_raw, "csv", "competition.train", source),
            id=_text(train_raw, "id", "competition.train", source),
            images=_images(_text(train_raw, "images", "competition.train", source), "competition.train", source),
            labels=labels,
            group=group,
            shared=_shared(train_raw.get("shared"), group, names, source),
        )
    eval_raw = _mapping(section["eval"], "eval", source, {"csv", "id", "images"})
    eval_ = EvalSpec(
        _text(eval_raw, "csv", "competition.eval", source),
        _text(eval_raw, "id", "competition.eval", source),
        _images(_text(eval_raw, "images", "competition.eval", source), "competition.eval", source),
    )
    sub_raw = _mapping(section["submission"], "submission", source, {"answer", "as", "proba"})
    if ("answer" in sub_raw) == ("proba" in sub_raw):
        raise EnsError(f"{source}: competition.submission: declare answer (the class column) or proba (probability columns), one of them")
    if "answer" in sub_raw:
        if metric.on_probabilities:
            raise EnsError(f"{source}: competition.metric: {metric} is scored on probabilities, and submission.answer carries a class; declare submission.proba")
        if not joint and len(tasks) > 1:
            raise EnsError(f"{source}: competition.submission.answer: one answer column for {len(tasks)} tasks needs joint: product")
        as_ = sub_raw.get("as", "index")
        if as_ not in ("index", "name"):
            raise EnsError(f"{source}: competition.submission.as: index or name, got {as_!r}")
        if as_ == "name" and joint:
            raise EnsError(f"{source}: competition.submission.as: name writes one task's class names; the answer of joint: product is the product's index (drop as: name)")
        submission = SubmissionSpec(answer=_text(sub_raw, "answer", "competition.submission", source), as_name=as_ == "name")
    else:
        if metric.top is not None:
            raise EnsError(f"{source}: competition.metric: {metric} is scored on the {metric.top} class names the answer column lists; declare submission.answer (with as: name for names)")
        proba = sub_raw["proba"]
        if not isinstance(proba, Mapping) or not proba:
            raise EnsError(f"{source}: competition.submission.proba: column -> class (e.g. {{target: malignant}})")
        submission = SubmissionSpec(proba={str(col): _proba_class(str(cls).strip(), str(col), tasks, source) for col, cls in proba.items()})
    answers = [submission.answer] if submission.answer else list(submission.proba)
    if eval_.id in answers:
        raise EnsError(f"{source}: competition.submission: {eval_.id!r} is the sample submission's id column (competition.eval.id); the answer goes in another column")
    name = str(section.get("name") or "declared")
    return Competition(name, tasks, metric, joint, train, eval_, submission)
