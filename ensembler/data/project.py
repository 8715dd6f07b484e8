"""The project file: the ``project:`` section of ``model_zoo.yaml``, and the paths it settles.

```yaml
project:
  data: data            # the competition's data folder (DESIGN.md §2)
  folds: folds.csv      # the team's fold file, written by `ens split`
  val_fold: 0           # the fold held out for validation
  predictions: predictions
  submissions: submissions
  label_fixes: label_fixes.csv  # optional: the team's label fixes (ensembler.data.fixes)
models: [...]           # zoo entries (ensembler.data.zoo)
```

Relative paths are relative to the folder holding ``model_zoo.yaml``. Precedence, written down
once here: CLI flag > ``model_zoo.yaml`` > default. A folder with no ``model_zoo.yaml`` works: the
defaults are ``predictions/``, ``submissions/`` and ``folds.csv`` beside where it would be.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import EnsError, unknown
from .competition import MASK, Competition, parse_competition
from .fixes import LabelFixes, read_fixes
from .io import write_bytes
from .labels import Task
from .zoo import ZooEntry, parse_models

if TYPE_CHECKING:
    from .store import Store

DEFAULT_ZOO = Path("model_zoo.yaml")
TOP_KEYS = ("project", "competition", "models")


@dataclass(frozen=True)
class ProjectSettings:
    """The ``project:`` section as written in the file (unset keys are None)."""

    data: str | None = None
    folds: str | None = None
    val_fold: int | None = None
    predictions: str | None = None
    submissions: str | None = None
    label_fixes: str | None = None

    @classmethod
    def from_mapping(cls, raw: Any, source: Path) -> ProjectSettings:
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise EnsError(f"{source}: 'project' must be a mapping of settings")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in raw.items():
            if key not in fields:
                raise EnsError(f"{source}: project: unknown key {key!r} (known: {', '.join(fields)})")
            want = int if key == "val_fold" else str
            if value is not None and (not isinstance(value, want) or isinstance(value, bool)):
                raise EnsError(f"{source}: project.{key}: expected {want.__name__}, got {value!r}")
            if key == "val_fold" and value is not None and value < 0:
                raise EnsError(f"{source}: project.val_fold: must be 0 or more, got {value}")
        return cls(**dict(raw))


@dataclass(frozen=True)
class Project:
    """Resolved paths and settings for one run of `ens` (absolute paths)."""

    zoo: Path
    data: Path | None
    folds: Path
    val_fold: int
    predictions: Path
    submissions: Path
    models: tuple[ZooEntry, ...] = ()
    label_fixes: Path | None = None
    competition: Competition = MASK  # the declared competition (`competition:`), the mask one by default

    @cached_property
    def fixes(self) -> LabelFixes | None:
        """The label fixes of `label_fixes` (read once), or None when none is named. Checked
        against the train images by the readers that apply them (`dataset.read_train`,
        `scope.labelled_scope`)."""
        return None if self.label_fixes is None else read_fixes(self.label_fixes, self.competition)

    @property
    def root(self) -> Path:
        return self.zoo.parent

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    def model(self, name: str) -> ZooEntry:
        """The zoo entry called `name`; an unknown name suggests the close ones."""
        for entry in self.models:
            if entry.name == name:
                return entry
        raise unknown(f"model in {self.zoo.name}", name, self.model_names)

    @property
    def store(self) -> Store:
        """The prediction store (`store.Store`), in the competition's label space."""
        from .store import Store

        return Store(self.predictions, self.competition.space)

    def coverage(self) -> dict[str, tuple[Task, ...]]:
        """``{source: tasks it predicts}`` for every source a recipe can name: the zoo's models
        (by their layout) and the prediction store's sources (by their sets' metadata; no
        prediction CSV is read)."""
        store = self.store
        found = {m.name: m.layout.tasks for m in self.models}
        for name in store.sources():
            meta = store.read_meta(name, store.splits(name)[0])
            found[name] = tuple(store.space.task(t) for t in meta.get("tasks", ()))
        return found

    def require_data(self, declared: bool = False) -> Path:
        """The data folder, or an error that says how to name it. `declared`: the caller reads a
        declared competition's files too (`data.declared`); the others refuse one in one line
        rather than read its layout as the mask competition's."""
        if not self.competition.is_preset and not declared:
            tasks = ", ".join(f"{t.name} {t.n_classes}" for t in self.competition.tasks)
            raise EnsError(f"{self.zoo}: declares its own competition (tasks {tasks}; {self.competition.metric}); this version splits, predicts, imports, composes, reports and audits it (ens split, predict, import, compose, report, audit); the other commands run the mask competition only (remove competition: to run it)")
        if self.data is None:
            raise EnsError(f"no data folder: pass --data DIR (or set project.data in {self.zoo.name})")
        if not self.data.is_dir():
            raise EnsError(f"{self.data}: data folder not found")
        return self.data


class _UniqueKeys(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping (plain YAML keeps the
    last silently: two ``competition:`` sections, or ``metric:`` twice, would merge unseen)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice (line {key_node.start_mark.line + 1}); keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeys)  # noqa: S506  (a SafeLoader)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None)
        raise EnsError(f"{path}: {problem}" if problem and "appears twice" in problem else f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise EnsError(f"{path}: expected a mapping with 'project', 'competition' and 'models'")
    for key in raw:
        if key not in TOP_KEYS:
            raise EnsError(f"{path}: unknown top-level key {key!r} (known: {', '.join(TOP_KEYS)})")
    return raw


def load_project(zoo: Path | None = None, data: Path | None = None) -> Project:
    """Read ``model_zoo.yaml`` (absent is fine) and resolve every path; `data` overrides the file."""
    zoo = Path(zoo or DEFAULT_ZOO).absolute()
    raw = _read_yaml(zoo)
    settings = ProjectSettings.from_mapping(raw.get("project"), zoo)
    root = zoo.parent

    def resolve(value: str | None, default: str) -> Path:
        return (root / (value if value is not None else default)).absolute()

    data_dir = Path(data).absolute() if data is not None else (resolve(settings.data, "") if settings.data else None)
    competition = parse_competition(raw.get("competition"), zoo)
    return Project(
        zoo=zoo,
        data=data_dir,
        folds=resolve(settings.folds, "folds.csv"),
        val_fold=settings.val_fold if settings.val_fold is not None else 0,
        predictions=resolve(settings.predictions, "predictions"),
        submissions=resolve(settings.submissions, "submissions"),
        models=parse_models(raw.get("models"), zoo, competition.space),
        label_fixes=resolve(settings.label_fixes, "") if settings.label_fixes else None,
        competition=competition,
    )


def update_project(zoo: Path, **settings: Any) -> None:
    """Set keys of the ``project:`` section, creating ``model_zoo.yaml`` when there is none.

    The rest of the file is kept (its comments are not: PyYAML does not keep them).
    """
    zoo = Path(zoo).absolute()
    raw = _read_yaml(zoo)
    section = dict(raw.get("project") or {})
    for key, value in settings.items():
        if isinstance(value, Path):
            value = _relative(value, zoo.parent)
        section[key] = value
    ProjectSettings.from_mapping(section, zoo)  # validate before writing
    out = {"project": section, **{k: v for k, v in raw.items() if k != "project"}}
    write_bytes(zoo, yaml.safe_dump(out, sort_keys=False).encode())


def unnamed_data(project: Project) -> dict[str, Path]:
    """``{"data": project.data}`` when ``model_zoo.yaml`` names no data folder (else ``{}``), for
    `update_project`: a ``--data DIR`` given to the first command (``ens split``) holds for the
    commands after it."""
    named = (_read_yaml(Path(project.zoo).absolute()).get("project") or {}).get("data")
    return {"data": project.data} if project.data is not None and not named else {}


def add_model(zoo: Path, entry: dict[str, Any]) -> None:
    """Append one zoo entry to ``model_zoo.yaml`` (created when absent), validated first."""
    zoo = Path(zoo).absolute()
    raw = _read_yaml(zoo)
    models = list(raw.get("models") or [])
    parse_models([*models, entry], zoo, parse_competition(raw.get("competition"), zoo).space)  # the new entry, and no duplicate name
    write_bytes(zoo, yaml.safe_dump({**raw, "models": [*models, entry]}, sort_keys=False).encode())


def _relative(path: Path, root: Path) -> str:
    path = Path(path).absolute()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
