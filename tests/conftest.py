"""Shared fixtures: a small toy competition in the real layout, made fresh per test."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ensembler.project import Project, load_project, update_project
from ensembler.toy import ToyCompetition, make_toy_competition


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


def fill_images(data: Path, size: tuple[int, int] = (24, 32), seed: int = 0, truth: pd.DataFrame | None = None) -> None:
    """Replace the toy's placeholder files with small real images in their own formats: noise,
    tinted by the image's class when `truth` (ImageID, label) is given, so a model can learn."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    labels = {} if truth is None else dict(zip(truth["ImageID"], truth["label"]))
    for folder, pattern in ((data / "train" / "images", "*/*"), (data / "eval" / "images", "*")):
        for path in sorted(folder.glob(pattern)):
            pixels = rng.integers(0, 256, size=(size[1], size[0], 3)).astype(np.float64)
            label = labels.get(path.relative_to(folder).as_posix())
            if label is not None:
                pixels = 0.4 * pixels + 0.6 * np.array([label * 14, (label % 6) * 40, (label % 3) * 120])
            Image.fromarray(pixels.astype(np.uint8)).save(path, format="PNG" if path.suffix == ".png" else "JPEG")
