"""Zoo entries (DESIGN.md §4): the ``models:`` list of ``model_zoo.yaml`` as frozen, validated configs.

Torch-free, so that ``ens zoo list`` and the composer read the zoo without torch.

```yaml
models:
  - name: polar-effb0            # unique; the source name in recipes
    owner: polar
    architecture: efficientnet_b0  # timm name, torchvision name ("torchvision:resnet18"),
                                   # "package.module:Class", or a TorchScript file (.pt/.ts)
    kwargs: {}                     # constructor keyword arguments (import paths only)
    code: ../polar/src             # folder put on sys.path for an import path
    checkpoint: models/polar/best.pth   # or folds: {0: f0.pth, 1: f1.pth, ...} (a fold group)
    sha256: null                   # checked when given
    trusted: false                 # true allows checkpoints that need full unpickling
    layout: classes18              # or heads: {mask: 3, gender: 2, age: 3}; age may be
                                   # 3, a list of bin lower edges in years, or "years";
                                   # a declared competition's: {classes: K} (its answer's
                                   # K classes) or heads: {task: k, ...} for its tasks
    preprocess: {resize: [384, 512], crop: null, mean: [...], std: [...], interpolation: bilinear}
    tta: hflip                     # a preset (none, hflip, vflip, flip, d4) or
                                   # {transforms: [hflip, {scale: [0.9, 1.1]}], merge: mean}
    fold: 0                        # the fold this checkpoint held out (leakage checks)
    notes: ""
```

Every error names the file, the entry and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EnsError
from .labels import MASK_SPACE, N_CLASSES, LabelSpace, Task

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
MERGE_MODES = ("mean", "gmean", "max", "min", "sum", "tsharpen")
TTA_PRESETS: dict[str, tuple[Any, ...]] = {
    "none": (),
    "hflip": ("hflip",),
    "vflip": ("vflip",),
    "flip": ("hflip", "vflip"),
    "d4": ("hflip", {"rotate90": [0, 90, 180, 270]}),
}
TTA_TRANSFORMS = ("hflip", "vflip", "rotate90", "scale", "five_crop", "add", "multiply")
AGE_BOUNDS = (30, 60)


class _Where:
    """Builds error messages that name the file, the entry and the key."""

    def __init__(self, source: Path, index: int, name: str | None):
        self.prefix = f"{source}: models[{index}]" + (f" ({name})" if name else "")

    def error(self, key: str, problem: str) -> EnsError:
        return EnsError(f"{self.prefix}: {key}: {problem}")

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(key, f"expected a mapping, got {value!r}")
        for k in value:
            if k not in allowed:
                raise self.error(f"{key}.{k}", f"unknown key (known: {', '.join(allowed)})")
        return value

    def typed(self, value: Any, key: str, kind: type | tuple[type, ...], what: str) -> Any:
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
            raise self.error(key, f"expected {what}, got {value!r}")
        return value

    def numbers(self, value: Any, key: str, n: int | None, what: str) -> tuple[float, ...]:
        if not isinstance(value, (list, tuple)) or (n is not None and len(value) != n):
            raise self.error(key, f"expected {what}, got {value!r}")
        return tuple(self.typed(v, key, (int, float), what) for v in value)


@dataclass(frozen=True)
class Preprocess:
    """Resize to width x height (None: keep the image's size), optional centre crop, normalise."""

    resize: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    @classmethod
    def parse(cls, raw: Any, where: _Where) -> Preprocess:
        if raw is None:
            return cls()
        raw = where.mapping(raw, "preprocess", ("resize", "crop", "mean", "std", "interpolation"))
        sizes = {}
        for key in ("resize", "crop"):
            value = raw.get(key)
            if value is not None:
                w, h = where.numbers(value, f"preprocess.{key}", 2, "[width, height] in pixels")
                if w != int(w) or h != int(h) or w < 1 or h < 1:
                    raise where.error(f"preprocess.{key}", f"expected positive whole pixels, got {value!r}")
                sizes[key] = (int(w), int(h))
        interpolation = raw.get("interpolation", "bilinear")
        if interpolation not in INTERPOLATIONS:
            raise where.error("preprocess.interpolation", f"choose one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
        stats = {k: where.numbers(raw[k], f"preprocess.{k}", 3, "three numbers (R, G, B)") for k in ("mean", "std") if k in raw}
        if any(s <= 0 for s in stats.get("std", (1,))):
            raise where.error("preprocess.std", "must be positive")
        return cls(sizes.get("resize"), sizes.get("crop"), stats.get("mean", IMAGENET_MEAN), stats.get("std", IMAGENET_STD), interpolation)


@dataclass(frozen=True)
class TTAPolicy:
    """ttach transforms (as plain data) and the merge mode; ``over`` is what is merged."""

    transforms: tuple[Any, ...] = ()
    merge: str = "mean"
    over: str = "probs"

    @property
    def label(self) -> str:
        for name, transforms in TTA_PRESETS.items():
            if transforms == self.transforms:
                return name if self.merge == "mean" or name == "none" else f"{name}/{self.merge}"
        return f"custom/{self.merge}"

    @classmethod
    def parse(cls, raw: Any, where: _Where | None = None) -> TTAPolicy:
        """A preset name, or ``{transforms: [...], merge: mean, over: probs|logits}``."""

        def error(key: str, problem: str) -> EnsError:
            return where.error(key, problem) if where else EnsError(f"--tta: {problem}")

        if raw is None:
            return cls()
        if isinstance(raw, str):
            if raw not in TTA_PRESETS:
                raise error("tta", f"unknown preset {raw!r} (known: {', '.join(TTA_PRESETS)})")
            return cls(TTA_PRESETS[raw])
        if where is None or not isinstance(raw, Mapping):
            raise error("tta", f"expected a preset name or a mapping, got {raw!r}")
        raw = where.mapping(raw, "tta", ("transforms", "merge", "over"))
        transforms = raw.get("transforms", [])
        if not isinstance(transforms, list):
            raise error("tta.transforms", f"expected a list, got {transforms!r}")
        for t in transforms:
            name = t if isinstance(t, str) else (next(iter(t)) if isinstance(t, Mapping) and len(t) == 1 else None)
            if name not in TTA_TRANSFORMS:
                raise error("tta.transforms", f"unknown transform {t!r} (known: {', '.join(TTA_TRANSFORMS)})")
        merge = raw.get("merge", "mean")
        if merge not in MERGE_MODES:
            raise error("tta.merge", f"choose one of {', '.join(MERGE_MODES)}, got {merge!r}")
        over = raw.get("over", "probs")
        if over not in ("probs", "logits"):
            raise error("tta.over", f"choose probs or logits, got {over!r}")
        return cls(tuple(_freeze(t) for t in transforms), merge, over)


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Head:
    """One task's output: ``classes`` logits, age bins (lower edges in years), or age in years."""

    task: Task | str
    classes: int | None = None
    bins: tuple[float, ...] | None = None
    years: bool = False

    @property
    def width(self) -> int:
        if self.bins is not None:
            return len(self.bins)
        return 1 if self.years else int(self.classes or 0)


@dataclass(frozen=True)
class Layout:
    """How a model's output maps to tasks: the joint classes (the mask competition's 18; a
    declared competition's answer classes), or one head per task, in the label `space`."""

    joint: bool = False
    heads: tuple[Head, ...] = ()
    space: LabelSpace = field(default=MASK_SPACE, compare=False)

    @property
    def width(self) -> int:
        return self.space.n_joint if self.joint else sum(h.width for h in self.heads)

    @property
    def tasks(self) -> tuple[Task | str, ...]:
        return self.space.tasks if self.joint else tuple(h.task for h in self.heads)

    @property
    def label(self) -> str:
        if self.joint:
            return "classes18" if self.space is MASK_SPACE else f"classes {self.space.n_joint}"
        parts = [f"{h.task}:{'years' if h.years else (f'{len(h.bins)} bins' if h.bins else h.classes)}" for h in self.heads]
        return "heads " + ",".join(parts)

    @classmethod
    def parse(cls, raw: Any, where: _Where, space: LabelSpace = MASK_SPACE) -> Layout:
        if space is not MASK_SPACE:
            return cls._parse_declared(raw, where, space)
        if raw == "classes18":
            return cls(joint=True)
        if not isinstance(raw, Mapping) or set(raw) != {"heads"}:
            raise where.error("layout", f"expected classes18 or heads: {{mask: 3, gender: 2, age: 3}}, got {raw!r}")
        heads_raw = where.mapping(raw["heads"], "layout.heads", tuple(t.value for t in MASK_SPACE.tasks))
        if not heads_raw:
            raise where.error("layout.heads", "name at least one task")
        heads = []
        for name, spec in heads_raw.items():
            task, key = Task(name), f"layout.heads.{name}"
            if task is Task.AGE and spec == "years":
                heads.append(Head(task, years=True))
            elif task is Task.AGE and isinstance(spec, list):
                edges = where.numbers(spec, key, None, "a list of bin lower edges in years")
                if list(edges) != sorted(set(edges)) or len(edges) < 2:
                    raise where.error(key, f"bin edges must increase, got {spec!r}")
                if any(b not in edges for b in AGE_BOUNDS if edges[0] < b):
                    raise where.error(key, f"bins must start at 30 and 60 so that each falls in one age class, got {spec!r}")
                heads.append(Head(task, bins=edges))
            elif spec == N_CLASSES[task] and not isinstance(spec, bool):
                heads.append(Head(task, classes=spec))
            else:
                extra = ", a list of bin edges or 'years'" if task is Task.AGE else ""
                raise where.error(key, f"expected {N_CLASSES[task]}{extra}, got {spec!r}")
        return cls(heads=tuple(heads))

    @classmethod
    def _parse_declared(cls, raw: Any, where: _Where, space: LabelSpace) -> Layout:
        """A declared competition's layouts: ``{classes: K}`` (the answer's K classes: the one
        task's, or the product of the tasks') or ``heads: {task: k, ...}``."""
        shapes = ", ".join(f"{t}: {k}" for t, k in space.n_classes.items())
        expected = f"{{classes: {space.n_joint}}} or heads: {{{shapes}}}"
        if not isinstance(raw, Mapping) or len(raw) != 1 or next(iter(raw)) not in ("classes", "heads"):
            raise where.error("layout", f"expected {expected} (this project declares its competition), got {raw!r}")
        if "classes" in raw:
            if raw["classes"] != space.n_joint or isinstance(raw["classes"], bool):
                raise where.error("layout.classes", f"expected {space.n_joint} (the declared answer's classes), got {raw['classes']!r}")
            return cls(joint=True, space=space)
        heads_raw = where.mapping(raw["heads"], "layout.heads", tuple(space.tasks))
        if not heads_raw:
            raise where.error("layout.heads", "name at least one task")
        heads = []
        for name, spec in heads_raw.items():
            if spec != space.n_classes[name] or isinstance(spec, bool):
                raise where.error(f"layout.heads.{name}", f"expected {space.n_classes[name]}, got {spec!r}")
            heads.append(Head(name, classes=spec))
        return cls(heads=tuple(heads), space=space)


ENTRY_KEYS = (
    "name", "owner", "architecture", "kwargs", "code", "checkpoint", "folds", "sha256", "trusted",
    "layout", "preprocess", "tta", "fold", "notes",
)


@dataclass(frozen=True)
class ZooEntry:
    """One registered model (paths absolute). A fold group has `folds` instead of `checkpoint`."""

    name: str
    architecture: str
    layout: Layout
    checkpoint: Path | None = None
    folds: Mapping[int, Path] = field(default_factory=dict)
    owner: str = ""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    code: Path | None = None
    sha256: str | None = None
    trusted: bool = False
    preprocess: Preprocess = Preprocess()
    tta: TTAPolicy = TTAPolicy()
    fold: int | None = None
    notes: str = ""

    @property
    def is_fold_group(self) -> bool:
        return bool(self.folds)

    @classmethod
    def parse(cls, raw: Mapping[str, Any], source: Path, index: int, space: LabelSpace = MASK_SPACE) -> ZooEntry:
        name = raw.get("name") if isinstance(raw, Mapping) else None
        where = _Where(source, index, name if isinstance(name, str) else None)
        if not isinstance(raw, Mapping):
            raise where.error("entry", "expected a mapping")
        for key in raw:
            if key not in ENTRY_KEYS:
                raise where.error(key, f"unknown key (known: {', '.join(ENTRY_KEYS)})")
        for key in ("name", "architecture", "layout"):
            if key not in raw:
                raise where.error(key, "required")
        root = source.parent

        def text(key: str, default: str | None = None) -> str | None:
            value = raw.get(key, default)
            return None if value is None else where.typed(value, key, str, "text")

        from .store import check_name

        try:
            check_name(where.typed(raw["name"], "name", str, "text"))
        except EnsError as exc:
            raise where.error("name", str(exc)) from None
        if ("checkpoint" in raw) == ("folds" in raw):
            raise where.error("checkpoint", "give either checkpoint (one model) or folds (a fold group), not both or neither")
        folds: dict[int, Path] = {}
        if "folds" in raw:
            if not isinstance(raw["folds"], Mapping):
                raise where.error("folds", f"expected a mapping fold -> checkpoint, got {raw['folds']!r}")
            for k, path in raw["folds"].items():
                fold = k if isinstance(k, int) and not isinstance(k, bool) else None
                if fold is None or fold < 0:
                    raise where.error("folds", f"keys are fold numbers, got {k!r}")
                folds[fold] = root / where.typed(path, f"folds.{k}", str, "a checkpoint path")
            if len(folds) < 2:
                raise where.error("folds", "a fold group needs at least two folds")
            if "fold" in raw or "sha256" in raw:
                raise where.error("fold" if "fold" in raw else "sha256", "not allowed for a fold group (each checkpoint holds out its own fold)")
        fold = raw.get("fold")
        if fold is not None and (where.typed(fold, "fold", int, "a fold number") < 0):
            raise where.error("fold", f"expected 0 or more, got {fold}")
        sha = text("sha256")
        if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower())):
            raise where.error("sha256", "expected 64 hex digits")
        kwargs = raw.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise where.error("kwargs", f"expected a mapping, got {kwargs!r}")
        return cls(
            name=raw["name"],
            architecture=text("architecture"),
            layout=Layout.parse(raw["layout"], where, space),
            checkpoint=root / text("checkpoint") if "checkpoint" in raw else None,
            folds=folds,
            owner=text("owner", "") or "",
            kwargs=dict(kwargs),
            code=root / text("code") if raw.get("code") is not None else None,
            sha256=sha.lower() if sha else None,
            trusted=where.typed(raw.get("trusted", False), "trusted", bool, "true or false"),
            preprocess=Preprocess.parse(raw.get("preprocess"), where),
            tta=TTAPolicy.parse(raw.get("tta"), where),
            fold=fold,
            notes=text("notes", "") or "",
        )


def parse_models(raw: Any, source: Path, space: LabelSpace = MASK_SPACE) -> tuple[ZooEntry, ...]:
    """The ``models:`` list (layouts in the competition's label `space`); duplicate names are an
    error naming both positions."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise EnsError(f"{source}: 'models' must be a list of entries")
    entries: list[ZooEntry] = []
    for i, item in enumerate(raw):
        entry = ZooEntry.parse(item, source, i, space)
        for j, other in enumerate(entries):
            if other.name == entry.name:
                raise EnsError(f"{source}: models[{i}] ({entry.name}): name: duplicate of models[{j}]")
        entries.append(entry)
    return tuple(entries)
