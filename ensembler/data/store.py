"""Prediction sets (DESIGN.md §4) and the folder that keeps them.

A prediction set is one source's probabilities on one split: ``predictions/<source>/<split>.csv``
(loadable with pandas alone) plus ``<split>.json`` (provenance, and the CSV's sha256). CSV
columns: ``ImageID``; ``label`` (the joint class, labelled splits only); ``<task>_<k>`` for each
task the source covers (``mask_0..2``, ``gender_0..1``, ``age_0..2``); ``joint_0..17`` when the
source has the 18-way joint. The JSON is written last and names the CSV's hash, so a set whose
files disagree (an interrupted replace, a hand edit) is refused rather than half-read.

Beside each CSV, ``<split>.npz`` holds the same arrays in binary (a cache, rebuilt when missing):
it records the CSV's sha256 and its size and modification time, and is used only while the
JSON names that hash and the CSV's size and time are unchanged; otherwise the CSV is read (and
checked against the JSON) as the source of truth. The CSV stays what teammates exchange.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from ..errors import EnsError, preview, unknown
from .io import atomic_write, csv_rows, sha256_bytes, write_json
from .labels import MASK_SPACE, LabelSpace, Task

if TYPE_CHECKING:  # pandas is imported where it is used: compose and report start faster
    import pandas as pd

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class Split(StrEnum):
    """Which images a set covers: eval images, or labelled train images (validation / out-of-fold)."""

    EVAL = "eval"
    VAL = "val"
    OOF = "oof"


LABELLED_SPLITS = (Split.OOF, Split.VAL)  # preference order when a source has both


def check_name(name: str) -> str:
    """A source name usable in recipes: letters, digits, ``_ . -``; starts with a letter or digit."""
    if not NAME_PATTERN.fullmatch(name or ""):
        raise EnsError(f"invalid name {name!r}: use letters, digits, '_', '.' and '-' (no spaces, '+', '*', ':' or ',')")
    return name


def kind_of(meta: Mapping[str, Any]) -> str:
    """A source's origin from its provenance: ``model``, ``import`` or ``ensemble``."""
    return str(meta.get("origin", {}).get("type", "model"))


def id_mismatch(expected: np.ndarray, actual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ImageIDs in `expected` but not `actual` (missing), and the reverse (extra); hashed, O(n)."""
    import pandas as pd

    want, have = pd.Index(expected), pd.Index(actual)
    return want.difference(have).to_numpy(object), have.difference(want).to_numpy(object)


def _columns(task: Task | str, n: int) -> list[str]:
    return [f"{task}_{k}" for k in range(n)]


@dataclass(frozen=True, eq=False)
class PredictionSet:
    """One source's predictions on one split.

    image_ids: ``(n,)`` ImageIDs (eval) or paths under ``train/images`` (labelled splits).
    probs: ``{task: (n, n_classes(task))}`` float32 for the tasks the source covers; filled from
        `joint` when only the joint is given.
    joint: ``(n, n_joint)`` float32 or None (the mask competition's 18 classes).
    labels: ``(n,)`` int64 joint classes for labelled splits, else None.
    meta: provenance (kind, origin file and hash, data fingerprint, tool version, time, ...).
    space: the competition's label space (`labels.LabelSpace`), whose tasks and classes these are.
    """

    source: str
    split: Split
    image_ids: np.ndarray
    probs: Mapping[Task, np.ndarray] = field(default_factory=dict)
    joint: np.ndarray | None = None
    labels: np.ndarray | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    space: LabelSpace = MASK_SPACE

    def __post_init__(self) -> None:
        n = len(self.image_ids)
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        set_("image_ids", np.asarray(self.image_ids, dtype=object))
        set_("split", Split(self.split))
        space = self.space
        probs = {space.task(t): np.asarray(p, dtype=np.float32) for t, p in self.probs.items()}
        if self.joint is not None:
            set_("joint", np.asarray(self.joint, dtype=np.float32))
            if self.joint.shape != (n, space.n_joint):
                raise ValueError(f"joint must be ({n}, {space.n_joint}), got {self.joint.shape}")
            if any(t not in probs for t in space.tasks):
                for task, p in space.marginals(self.joint).items():
                    probs.setdefault(task, p.astype(np.float32))
        for task, p in probs.items():
            if p.shape != (n, space.n_classes[task]):
                raise ValueError(f"{task} probabilities must be ({n}, {space.n_classes[task]}), got {p.shape}")
        if not probs:
            raise ValueError("a prediction set needs at least one task")
        set_("probs", {t: probs[t] for t in space.tasks if t in probs})
        if self.labels is not None:
            set_("labels", np.asarray(self.labels, dtype=np.int64))
            if self.labels.shape != (n,):
                raise ValueError(f"labels must be ({n},), got {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def tasks(self) -> tuple[Task | str, ...]:
        return tuple(self.probs)

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind", "proba"))

    def take(self, image_ids: np.ndarray) -> PredictionSet:
        """The rows for `image_ids` ``(m,)``, in that order; an id the set lacks is an error."""
        import pandas as pd

        index = pd.Index(self.image_ids)
        pos = index.get_indexer(np.asarray(image_ids, dtype=object))
        if (pos < 0).any():
            lacking = np.asarray(image_ids, dtype=object)[pos < 0]
            raise EnsError(f"source {self.source!r} ({self.split}) lacks {len(lacking)} image(s): {preview(lacking)}")
        return self.rows(pos)

    def rows(self, positions: np.ndarray) -> PredictionSet:
        """The rows at `positions` ``(m,)``, in that order."""
        return replace(
            self,
            image_ids=self.image_ids[positions],
            probs={t: p[positions] for t, p in self.probs.items()},
            joint=None if self.joint is None else self.joint[positions],
            labels=None if self.labels is None else self.labels[positions],
        )

    def _columns(self) -> tuple[list[str], np.ndarray]:
        """The CSV's probability columns and their values ``(n, k)`` float32, in the module doc's order."""
        names = [c for task, p in self.probs.items() for c in _columns(task, p.shape[1])]
        blocks = list(self.probs.values())
        if self.joint is not None:
            names += _columns("joint", self.space.n_joint)
            blocks.append(self.joint)
        return names, np.concatenate(blocks, axis=1).astype(np.float32, copy=False)

    def to_frame(self) -> pd.DataFrame:
        """The CSV layout of the module doc."""
        import pandas as pd

        names, values = self._columns()
        cols: dict[str, Any] = {"ImageID": self.image_ids}
        if self.labels is not None:
            cols["label"] = self.labels
        cols.update(zip(names, values.T))
        return pd.DataFrame(cols)

    def to_csv(self) -> bytes:
        """The CSV bytes of `to_frame`: probabilities as nine-digit decimals that read back as
        the same float32 (`io.format_float32`, 5x faster than pandas); anything else (ids that
        need quoting, values outside [0, inf)) through ``DataFrame.to_csv``."""
        names, values = self._columns()
        ids = self.image_ids.astype(str)
        plain = not any(c in "".join(ids) for c in ',"\n\r') and np.isfinite(values).all() and (values >= 0).all()
        if not plain:
            buffer = io.StringIO()
            self.to_frame().to_csv(buffer, index=False)
            return buffer.getvalue().encode()
        lead = [f"{i}," for i in ids] if self.labels is None else [f"{i},{y}," for i, y in zip(ids, self.labels.tolist())]
        header = ",".join(["ImageID", *(["label"] if self.labels is not None else []), *names]) + "\n"
        return header.encode() + csv_rows(lead, values)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, source: str, split: Split, meta: Mapping[str, Any], space: LabelSpace = MASK_SPACE) -> PredictionSet:
        """Inverse of `to_frame`."""
        probs = {
            task: frame[_columns(task, space.n_classes[task])].to_numpy(np.float32)
            for task in space.tasks
            if f"{task}_0" in frame.columns
        }
        joint = frame[_columns("joint", space.n_joint)].to_numpy(np.float32) if "joint_0" in frame.columns else None
        labels = frame["label"].to_numpy(np.int64) if "label" in frame.columns else None
        return cls(source, split, frame["ImageID"].to_numpy(object), probs, joint, labels, meta, space)


class Store:
    """The prediction folder: ``<root>/<source>/<split>.csv`` + ``.json``, its sets in the
    competition's label space `space` (a set made for other tasks or class counts is refused)."""

    def __init__(self, root: Path, space: LabelSpace = MASK_SPACE):
        self.root = Path(root)
        self.space = space

    def _paths(self, source: str, split: Split) -> tuple[Path, Path]:
        folder = self.root / source
        return folder / f"{Split(split).value}.csv", folder / f"{Split(split).value}.json"

    def _sidecar(self, source: str, split: Split) -> Path:
        return self.root / source / f"{Split(split).value}.npz"

    def sources(self) -> list[str]:
        """Names of the sources that have at least one complete prediction set."""
        if not self.root.is_dir():
            return []
        return sorted(d.name for d in self.root.iterdir() if d.is_dir() and self.splits(d.name))

    def splits(self, source: str) -> list[Split]:
        return [s for s in Split if self._paths(source, s)[1].is_file()]

    def has(self, source: str, split: Split | None = None) -> bool:
        return bool(self.splits(source)) if split is None else self._paths(source, split)[1].is_file()

    def read_meta(self, source: str, split: Split) -> dict[str, Any]:
        meta_path = self._paths(source, split)[1]
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise EnsError(f"source {source!r} has no {split} predictions ({meta_path} not found)") from None
        except json.JSONDecodeError as exc:
            raise EnsError(f"{meta_path}: not valid JSON ({exc})") from None
        self._check_space(meta, meta_path)
        return meta

    def _check_space(self, meta: Mapping[str, Any], path: Path) -> None:
        """A set's tasks and class counts (its JSON's ``tasks`` and ``classes``) are the space's."""
        space = self.space
        tasks = [str(t) for t in meta.get("tasks", ())]
        counts = meta.get("classes", {t: space.n_classes.get(t) for t in tasks})  # sets written before 'classes' was kept: the mask space's
        wrong = [t for t in tasks if t not in space.n_classes or counts.get(t) != space.n_classes[t]]
        if wrong:
            have = ", ".join(f"{t} {counts.get(t)}" for t in tasks)
            want = ", ".join(f"{t} {k}" for t, k in space.n_classes.items())
            raise EnsError(f"{path}: predicts {have}; this project's competition has {want} (a set made for another competition?)")

    def read(self, source: str, split: Split) -> PredictionSet:
        """Load one set (from its binary sidecar while that is current); a CSV whose hash differs
        from its JSON is an error."""
        csv_path, meta_path = self._paths(source, split)
        meta = self.read_meta(source, split)
        cached = self._read_sidecar(source, Split(split), meta, csv_path)
        if cached is not None:
            return cached
        data = csv_path.read_bytes() if csv_path.is_file() else b""
        if sha256_bytes(data) != meta.get("csv_sha256"):
            raise EnsError(f"{csv_path}: does not match {meta_path.name} (changed or half-written); re-create the source")
        import pandas as pd

        frame = pd.read_csv(io.BytesIO(data), dtype={"ImageID": str}, keep_default_na=False)
        pset = PredictionSet.from_frame(frame, source, split, meta, self.space)
        self._write_sidecar(pset, csv_path, meta["csv_sha256"])
        return pset

    def _read_sidecar(self, source: str, split: Split, meta: Mapping[str, Any], csv_path: Path) -> PredictionSet | None:
        """The set from ``<split>.npz`` when it was made from the CSV the JSON names, as it is now."""
        path = self._sidecar(source, split)
        try:
            stat = csv_path.stat()
            with np.load(path, allow_pickle=False) as z:
                stamp = (str(z["csv_sha256"]), int(z["csv_size"]), int(z["csv_mtime_ns"]))
                if stamp != (meta.get("csv_sha256"), stat.st_size, stat.st_mtime_ns):
                    return None
                probs = {t: z[f"probs_{t}"] for t in self.space.tasks if f"probs_{t}" in z.files}
                joint = z["joint"] if "joint" in z.files else None
                labels = z["labels"] if "labels" in z.files else None
                return PredictionSet(source, split, z["image_ids"].astype(object), probs, joint, labels, meta, self.space)
        except (OSError, ValueError, KeyError):  # missing, unreadable or foreign: the CSV decides
            return None

    def _write_sidecar(self, pset: PredictionSet, csv_path: Path, csv_sha256: str) -> None:
        """Cache `pset`'s arrays beside its CSV (best effort: a read-only folder just stays slow)."""
        stat = csv_path.stat()
        arrays: dict[str, np.ndarray] = {
            "csv_sha256": np.array(csv_sha256),
            "csv_size": np.array(stat.st_size),
            "csv_mtime_ns": np.array(stat.st_mtime_ns),
            "image_ids": pset.image_ids.astype(str),
            **{f"probs_{t}": p for t, p in pset.probs.items()},
        }
        if pset.joint is not None:
            arrays["joint"] = pset.joint
        if pset.labels is not None:
            arrays["labels"] = pset.labels
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        try:
            with atomic_write(self._sidecar(pset.source, pset.split)) as handle:
                handle.write(buffer.getvalue())
        except OSError:
            pass

    def labelled(self, source: str) -> PredictionSet | None:
        """The source's labelled predictions (out-of-fold preferred over validation), or None."""
        for split in LABELLED_SPLITS:
            if self.has(source, split):
                return self.read(source, split)
        return None

    def write(self, pset: PredictionSet, *, overwrite: bool = False) -> dict[str, Any]:
        """Write `pset` (CSV first, then its JSON); returns the JSON's content."""
        check_name(pset.source)
        csv_path, meta_path = self._paths(pset.source, pset.split)
        if meta_path.exists() and not overwrite:
            raise EnsError(f"source {pset.source!r} already has {pset.split} predictions ({meta_path})")
        data = pset.to_csv()
        meta = {
            **pset.meta,
            "source": pset.source,
            "split": pset.split.value,
            "kind": pset.kind,
            "tasks": [str(t) for t in pset.tasks],
            **({} if pset.space is MASK_SPACE else {"classes": {str(t): int(p.shape[1]) for t, p in pset.probs.items()}}),
            "joint": pset.joint is not None,
            "labelled": pset.labels is not None,
            "rows": len(pset),
            "csv_sha256": sha256_bytes(data),
            "tool_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        with atomic_write(csv_path) as handle:
            handle.write(data)
        self._write_sidecar(pset, csv_path, meta["csv_sha256"])
        write_json(meta_path, meta)
        return meta

    def require(self, source: str, split: Split, known: list[str] | None = None) -> PredictionSet:
        """`read`, with an unknown-source error that suggests close names."""
        if not self.has(source):
            raise unknown("source", source, known if known is not None else self.sources())
        if not self.has(source, split):
            have = ", ".join(s.value for s in self.splits(source))
            raise EnsError(f"source {source!r} has no {split} predictions (it has: {have})")
        return self.read(source, split)
