"""Shared fixtures: a small toy competition in the real layout, made fresh per test."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from ensembler.data.project import Project, load_project, update_project
from ensembler.data.toy import ToyCompetition, make_toy_competition


@pytest.fixture
def toy(tmp_path: Path) -> ToyCompetition:
    """40 train people (280 images) and 70 eval images."""
    return make_toy_competition(tmp_path / "comp", n_people=40, n_eval_people=10, seed=1)


@pytest.fixture
def project(tmp_path: Path, toy: ToyCompetition) -> Project:
    """A project folder whose model_zoo.yaml names the toy data."""
    zoo = tmp_path / "team" / "model_zoo.yaml"
    update_project(zoo, data=toy.data)
    return load_project(zoo)


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def hard_csv(path: Path, truth: pd.DataFrame, labels) -> Path:
    """``ImageID,ans`` for the images of `truth` with the given joint labels."""
    return write_csv(path, pd.DataFrame({"ImageID": truth["ImageID"].to_numpy(), "ans": labels}))


ASSETS = Path(__file__).parent / "assets"


@pytest.fixture(scope="session")
def _drawn_faces(tmp_path_factory: pytest.TempPathFactory) -> ToyCompetition:
    pytest.importorskip("PIL")
    return make_toy_competition(tmp_path_factory.mktemp("faces") / "comp", n_people=40, n_eval_people=10, seed=1, image_size=(48, 64))


@pytest.fixture
def faces(tmp_path: Path, _drawn_faces: ToyCompetition) -> ToyCompetition:
    """The toy competition with drawn faces at 48 x 64 (the same generator as the demo's): drawn
    once per session, copied afresh for each test (tests damage images and write beside them)."""
    root = _drawn_faces.data.parent
    shutil.copytree(root, tmp_path / "comp")
    moved = lambda path: tmp_path / "comp" / path.relative_to(root)  # noqa: E731
    return dataclasses.replace(_drawn_faces, data=moved(_drawn_faces.data), answers=moved(_drawn_faces.answers), train=_drawn_faces.train.copy(), eval=_drawn_faces.eval.copy())


# --- headless Chromium (the pages of ens report --html and ens audit --html) ---------------------

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--log-level=0",
]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium (the test set-up installs it: tests/install-chromium), else skipped with the reason."""
    found = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if not found:
        pytest.skip("headless Chromium is not installed: run tests/install-chromium (apt-get install chromium, as root)")
    return found


def render(chromium: str, page, tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )


def console_errors(stderr: str) -> list[str]:
    """Console messages and failed loads that Chromium logs for the page."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line or "Failed to load" in line]


# --- declared competitions (issue 24): three real layouts, shared by test_competition and test_declared

CASSAVA = {
    "tasks": {"label": ["cbb", "cbsd", "cgm", "cmd", "healthy"]},
    "metric": "accuracy",
    "train": {"csv": "train.csv", "id": "image_id", "images": "train_images", "labels": {"label": "label"}},
    "eval": {"csv": "sample_submission.csv", "id": "image_id", "images": "test_images"},
    "submission": {"answer": "label"},
}
MELANOMA = {
    "tasks": {"target": ["benign", "malignant"]},
    "metric": "auc",
    "train": {"csv": "train.csv", "id": "image_name", "images": "jpeg/train/{}.jpg", "labels": {"target": "target"}, "group": "patient_id"},
    "eval": {"csv": "sample_submission.csv", "id": "image_name", "images": "jpeg/test/{}.jpg"},
    "submission": {"proba": {"target": "malignant"}},
}
WORDS = [str(i) for i in range(2, 12)] + [f"w{i}" for i in range(300)]  # "2" before "10": the declared order, not sorted()
DISEASES = ["healthy", "multiple_diseases", "rust", "scab"]
PLANTS = {  # Plant Pathology 2020: one-hot train labels, a probability column per class
    "tasks": {"label": DISEASES},
    "metric": "auc",
    "train": {"csv": "train.csv", "id": "image_id", "images": "images/{}.jpg", "labels": {"label": DISEASES}},
    "eval": {"csv": "sample_submission.csv", "id": "image_id", "images": "images/{}.jpg"},
    "submission": {"proba": {c: c for c in DISEASES}},
}


def chest(findings) -> dict:
    """A multi-label declaration (RANZCR-CLiP-like): each finding a task [no, yes], one
    probability column each, named ``F - Abnormal`` and holding ``f.yes``, scored by mean AUC."""
    return {
        "tasks": {f: ["no", "yes"] for f in findings},
        "metric": "auc",
        "train": {"csv": "train.csv", "id": "StudyUID", "images": "train", "labels": {f: f for f in findings}, "group": "PatientID"},
        "eval": {"csv": "sample_submission.csv", "id": "StudyUID", "images": "test"},
        "submission": {"proba": {f"{f.upper()} - Abnormal": f"{f}.yes" for f in findings}},
    }


SKETCH = {
    "tasks": {"word": WORDS},
    "metric": "macro_f1",
    "train": {"folders": "train"},
    "eval": {"csv": "sample_submission.csv", "id": "key_id", "images": "test"},
    "submission": {"answer": "word", "as": "name"},
}


def touch(path: Path) -> None:
    """A stand-in image file (composing and scoring never decode one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8 an image")


def declared_project(root: Path, declared: dict) -> Project:
    """A project in `root` whose data folder is `root` and whose competition is `declared`."""
    import yaml

    (root / "model_zoo.yaml").write_text(yaml.safe_dump({"project": {"data": "."}, "competition": declared}, sort_keys=False))
    return load_project(root / "model_zoo.yaml")


def team_recipe(team):
    """The recipe of every member of a simulated team (`ensembler.data.teams`), each task from
    the members that predict it."""
    from ensembler.data.labels import TASKS
    from ensembler.pipeline.recipe import Recipe, Term

    return Recipe({t: tuple(Term(m.name) for m in team.members if t in m.tasks) for t in TASKS})
