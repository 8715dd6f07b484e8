"""The competition's data folder (DESIGN.md §2) read into tables, and the team's fold file.

Tables (pandas, one row per image):

- `read_train`: ``ImageID`` (path under ``train/images/``, e.g. ``000001_female_Asian_45/mask1.jpg``),
  ``path``, ``profile`` (the folder), ``person`` (id without its ``-N`` suffix), ``mask``,
  ``gender``, ``age``, ``age_years``, ``label`` (the joint class).
- `read_eval`: ``ImageID`` and ``path``, rows in ``info.csv`` order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import EnsError, preview
from .fixes import LabelFixes, apply_fixes
from .io import atomic_write, read_table, sha256_file
from .labels import GENDERS, MASK_STEMS, age_band, decode, encode

if TYPE_CHECKING:  # pandas is imported where it is used: compose and report start faster
    import pandas as pd

TRAIN_CSV = Path("train") / "train.csv"
TRAIN_IMAGES = Path("train") / "images"
EVAL_CSV = Path("eval") / "info.csv"
EVAL_IMAGES = Path("eval") / "images"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
IMAGES_PER_PERSON = len(MASK_STEMS)


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise EnsError(f"{path}: {what} not found (is --data the competition's data folder?)")
    return path


def parse_profile(name: str) -> dict[str, object]:
    """``000001_female_Asian_45`` -> id, person, gender (0/1), race, age_years, age (class)."""
    parts = name.split("_")
    if len(parts) != 4 or parts[1] not in GENDERS or not parts[3].isdigit():
        raise EnsError(
            f"{TRAIN_IMAGES / name}: folder name must be <id>_<male|female>_<race>_<age>, "
            "e.g. 000001_female_Asian_45"
        )
    years = int(parts[3])
    return {
        "profile": name,
        "id": parts[0],
        "person": parts[0].split("-")[0],
        "gender": GENDERS[parts[1]],
        "race": parts[2],
        "age_years": years,
        "age": int(age_band(years)),
    }


def read_people(data: Path, fixes: LabelFixes | None = None) -> pd.DataFrame:
    """One row per train person folder: profile, id, person, gender, race, age_years, age.

    Folders come from ``train/images`` (names starting with ``.`` skipped) and must match the
    ``path`` column of ``train/train.csv`` one to one. `fixes`: the team's label fixes, whose
    gender and age fixes are applied (`fixes.apply_fixes`).
    """
    import pandas as pd

    data = Path(data)
    listed = read_table(_require(data / TRAIN_CSV, "train.csv"), ("path",))["path"]
    images = data / TRAIN_IMAGES
    if not images.is_dir():
        raise EnsError(f"{images}: train image folder not found")
    folders = sorted(e.name for e in os.scandir(images) if e.is_dir() and not e.name.startswith("."))
    dupes = listed[listed.duplicated()]
    if len(dupes):
        raise EnsError(f"{data / TRAIN_CSV}: path listed twice: {preview(dupes)}")
    missing, extra = sorted(set(listed) - set(folders)), sorted(set(folders) - set(listed))
    if missing or extra:
        raise EnsError(
            f"{data / TRAIN_CSV} and {images} disagree: {len(missing)} listed folder(s) missing "
            f"({preview(missing)}), {len(extra)} folder(s) not listed ({preview(extra)})"
        )
    people = pd.DataFrame([parse_profile(name) for name in folders])
    if fixes is not None:
        for (profile, _, task), value in fixes.fixes.items():
            if task.value in ("gender", "age"):
                people.loc[people["profile"] == profile, task.value] = value
    return people


def _person_images(folder: Path) -> list[tuple[str, int]]:
    """(file name, mask class) for the seven images of one person folder, checked."""
    found: dict[str, str] = {}
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        stem, ext = os.path.splitext(entry.name)
        if ext.lower() not in IMAGE_EXTENSIONS or stem not in MASK_STEMS:
            raise EnsError(
                f"{folder / entry.name}: unexpected file; a person folder holds "
                f"{', '.join(MASK_STEMS)} as .jpg, .jpeg or .png"
            )
        if stem in found:
            raise EnsError(f"{folder}: two images for {stem!r}: {found[stem]}, {entry.name}")
        found[stem] = entry.name
    absent = [s for s in MASK_STEMS if s not in found]
    if absent:
        raise EnsError(f"{folder}: missing image(s) {', '.join(absent)}")
    return [(found[s], MASK_STEMS[s]) for s in MASK_STEMS]


def read_train(data: Path, fixes: LabelFixes | None = None) -> pd.DataFrame:
    """One row per train image (see the module doc for the columns), person folders sorted;
    `fixes`: the team's label fixes, applied to every label column (and checked: a fix naming a
    person or image that is not there is an error)."""
    import pandas as pd

    data = Path(data)
    people = read_people(data)
    rows = []
    for person in people.itertuples(index=False):
        for file_name, mask in _person_images(data / TRAIN_IMAGES / person.profile):
            rows.append((f"{person.profile}/{file_name}", person.profile, mask))
    images = pd.DataFrame(rows, columns=["ImageID", "profile", "mask"])
    table = images.merge(people, on="profile", how="left", validate="many_to_one")
    folder = f"{data / TRAIN_IMAGES}{os.sep}"
    table["path"] = [folder + i for i in table["ImageID"]]
    table["label"] = encode(table["mask"], table["gender"], table["age"])
    if fixes is not None:
        fixes.check(table["ImageID"])
        table["label"] = apply_fixes(table["ImageID"].to_numpy(object), table["label"].to_numpy(), fixes)
        fixed = decode(table["label"].to_numpy())
        for task, values in fixed.items():
            table[task.value] = values
    columns = ["ImageID", "path", "profile", "person", "mask", "gender", "age", "age_years", "label"]
    return table[columns]


def checked_fixes(project) -> LabelFixes | None:
    """The project's label fixes (`project.Project.fixes`), checked against its train images when
    the data folder has them: a fix naming a person or image that is not there is an error, also
    where only some of the people are read (the labelled scope of a composition)."""
    fixes = project.fixes
    if fixes is not None and project.data is not None and (project.data / TRAIN_CSV).is_file():
        fixes.check(read_train(project.data)["ImageID"])
    return fixes


def read_eval(data: Path) -> pd.DataFrame:
    """``eval/info.csv`` as ImageID and path, in file order (`read_eval_ids`, with its checks)."""
    import pandas as pd

    ids = read_eval_ids(data)
    folder = f"{Path(data) / EVAL_IMAGES}{os.sep}"  # string joins: pathlib costs ~15 us an image
    return pd.DataFrame({"ImageID": ids, "path": [folder + i for i in ids]})


def read_eval_ids(data: Path) -> np.ndarray:
    """The ImageIDs of ``eval/info.csv`` ``(n,)`` object, in file order, read with the csv
    module (compose needs nothing else, and pandas costs a third of a second to import).
    A missing ImageID column or a duplicate ImageID (the first, in file order) is an error."""
    import csv

    path = _require(Path(data) / EVAL_CSV, "info.csv")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = csv.reader(handle)
            header = [c.strip() for c in next(rows, [])]
            if "ImageID" not in header:
                raise EnsError(f"{path}: missing column(s) ImageID; found {', '.join(header)}")
            column = header.index("ImageID")
            ids = np.array([row[column] if len(row) > column else "" for row in rows if row], dtype=object)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise EnsError(f"{path}: not a readable CSV ({exc})") from None
    seen: set[str] = set()
    for row, image_id in enumerate(ids):
        if image_id in seen:
            raise EnsError(f"{path}: row {row + 2}: ImageID {image_id!r} appears twice")
        seen.add(image_id)
    return ids


def images_fingerprint(image_ids: Sequence[str], paths: Sequence[str]) -> str:
    """sha256 over (ImageID, size, mtime) of every image file: a changed or replaced file shows."""
    import hashlib

    digest = hashlib.sha256()
    for image_id, path in zip(image_ids, paths):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise EnsError(f"{path}: image not found") from None
        digest.update(f"{image_id}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def data_fingerprint(data: Path) -> dict[str, str]:
    """sha256 of ``train.csv`` and ``info.csv`` (those present): what a prediction was made on."""
    data = Path(data)
    return {str(rel): sha256_file(data / rel) for rel in (TRAIN_CSV, EVAL_CSV) if (data / rel).is_file()}


# --- folds -----------------------------------------------------------------------------------


def make_folds(people: pd.DataFrame, n_folds: int = 5, seed: int = 42) -> pd.DataFrame:
    """Person-grouped folds stratified by gender x age (scikit-learn's StratifiedGroupKFold).

    people: one row per profile with ``profile``, ``person``, ``gender``, ``age``.
    Returns ``profile, fold`` (fold in 0..n_folds-1), one row per profile; profiles sharing a
    person id (``001498`` and ``001498-1``) always share a fold.
    """
    import pandas as pd

    from .people import grouped_folds

    strata = people["gender"].to_numpy() * 3 + people["age"].to_numpy()
    fold = grouped_folds(strata, people["person"].to_numpy(), n_folds, seed, "people")
    return pd.DataFrame({"profile": people["profile"].to_numpy(), "fold": fold})


def write_folds(path: Path, folds: pd.DataFrame, *, overwrite: bool = False) -> None:
    """Write the fold file (``profile,fold``; a declared competition's ``group,fold``)
    atomically (`FileExistsError` if it exists, unless `overwrite`)."""
    key = "profile" if "profile" in folds.columns else "group"
    with atomic_write(Path(path), overwrite=overwrite) as handle:
        folds[[key, "fold"]].to_csv(handle, index=False)


def read_folds(path: Path, groups: Sequence[str] | None = None, unit: str = "group") -> pd.Series:
    """The fold file as a Series profile (a declared competition's group) -> fold (int), checked
    whenever it is read, not only when written: each key once, each fold a whole number, the
    folds 0..k-1 each present (k >= 2). `groups`: every labelled group (the data folder's
    profiles, a declared competition's groups), each of which the file must list, and nothing
    else. A hand-edited file that breaks this is one error naming the first offending row."""
    import pandas as pd

    path = _require(Path(path), "fold file")
    head = read_table(path)
    key = "group" if "group" in head.columns else "profile"
    table = read_table(path, (key, "fold"))
    table[key] = table[key].str.strip()
    row_of = lambda bad: int(np.flatnonzero(np.asarray(bad))[0])  # noqa: E731
    bad = ~table["fold"].str.strip().str.fullmatch(r"\d+")
    if bad.any():
        row = row_of(bad)
        raise EnsError(f"{path}: row {row + 2}: fold {table['fold'][row]!r} is not a whole number")
    twice = table[key].duplicated()
    if twice.any():
        row = row_of(twice)
        raise EnsError(f"{path}: row {row + 2}: {key} {table[key][row]!r} listed twice; each {unit} is in one fold")
    fold = table["fold"].astype(int).to_numpy()
    present = np.unique(fold)
    if len(present) < 2 or present[-1] != len(present) - 1:
        gap = next((f for f in range(int(present[-1]) + 1) if f not in set(present.tolist())), None)
        row = row_of(fold == present[-1])
        why = f"fold {gap} has no {unit}" if gap is not None else "one fold only"
        raise EnsError(f"{path}: row {row + 2}: fold {present[-1]}: folds must be numbered 0..k-1 with k >= 2, each holding a {unit} ({why}); run ens split --force to remake the file")
    if groups is not None:
        known = pd.Index(pd.unique(np.asarray(groups, dtype=object)))
        extra = ~table[key].isin(known).to_numpy()
        if extra.any():
            row = row_of(extra)
            raise EnsError(f"{path}: row {row + 2}: {key} {table[key][row]!r} is not a labelled {unit} of the data folder (made on other data? run ens split --force)")
        missing = known.difference(pd.Index(table[key]), sort=False)
        if len(missing):
            raise EnsError(f"{path}: {len(missing)} labelled {unit}(s) have no fold, e.g. {missing[0]!r}: the file lists every {unit} once (run ens split --force to remake it)")
    return pd.Series(fold, index=table[key].to_numpy(), name="fold")


def folds_of(folds: pd.Series, keys: Sequence[str], path: Path, unit: str = "group") -> np.ndarray:
    """The fold ``(n,)`` int64 of each of `keys` ``(n,)`` (profiles or groups) in `folds`
    (`read_folds`); a key the file lacks is an error naming it (never silently no fold)."""
    import pandas as pd

    found = folds.reindex(pd.Index(np.asarray(keys, dtype=object))).to_numpy()
    absent = pd.isna(found)
    if absent.any():
        first = np.asarray(keys, dtype=object)[absent][0]
        raise EnsError(f"{path}: {unit} {first!r} has no fold ({int(absent.sum())} image(s) lack one; was the fold file made on other data? run ens split --force)")
    return found.astype(np.int64)


def split_project(project, n_folds: int = 5, seed: int = 42, val_fold: int = 0, force: bool = False) -> pd.DataFrame:
    """`ens split`: write the project's fold file and name it (and the validation fold) in the
    zoo file, and the data folder when the file names none (`project.unnamed_data`).

    project: an `ensembler.data.project.Project`. Returns ``profile, fold`` as written (a
    declared competition: ``group, fold``, grouped by its declared group, stratified by label).
    """
    from .project import unnamed_data, update_project

    if not 0 <= val_fold < n_folds:
        raise EnsError(f"--val-fold must lie in 0..{n_folds - 1}, got {val_fold}")
    if project.folds.exists() and not force:
        raise EnsError(f"{project.folds}: fold file exists; the team's models are trained against it (use --force to replace it)")
    if project.competition.is_preset:
        folds = make_folds(read_people(project.require_data(), checked_fixes(project)), n_folds, seed)
    else:
        from .declared import make_group_folds, read_labelled
        from .fixes import declared_in_force

        table = read_labelled(project.competition, project.require_data(declared=True))
        if project.fixes is not None:  # stratified by the labels in force
            table["label"] = declared_in_force(project.fixes, table, table["ImageID"], table["group"], table["label"], project.competition.space)
        folds = make_group_folds(table, n_folds, seed)
    write_folds(project.folds, folds, overwrite=force)
    update_project(project.zoo, folds=project.folds, val_fold=val_fold, **unnamed_data(project))
    return folds
