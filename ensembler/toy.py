"""A toy competition in the real layout, and toy teammates' CSVs: the core's own example.

`make_toy_competition` writes ``train/train.csv``, ``train/images/<profile>/`` (seven files per
person, mixed .jpg/.jpeg/.png, some ids with a ``-1`` suffix, a dot-folder to skip) and
``eval/info.csv`` + ``eval/images/``, with the competition's imbalance and an eval set shifted
towards older people. Image files are empty placeholders: composing and scoring never decode an
image. The eval answers go to ``answers.csv`` beside the data folder, which `ens` never reads.

`teammate_csv` simulates what a teammate shares: per-task scores with a given skill (the
margin of the true class's logit over noise), as probabilities or as a hard-label submission.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import EVAL_CSV, EVAL_IMAGES, TRAIN_CSV, TRAIN_IMAGES
from .labels import MASK_STEMS, N_CLASSES, TASKS, Task, decode, encode, joint_from_tasks

# The real train set: 1,042 male / 1,658 female; ages 1,281 / 1,227 / 192.
TRAIN_GENDER = np.array([1042, 1658]) / 2700
TRAIN_AGE = np.array([1281, 1227, 192]) / 2700
EVAL_AGE = np.array([0.40, 0.40, 0.20])  # teams found the hidden test set older than train
AGE_RANGES = ((18, 30), (30, 60), (60, 61))  # the real data's oldest band is all 60


@dataclass(frozen=True)
class ToyCompetition:
    """Where the toy data lies, and its truth: ``train`` (ImageID, label), ``eval`` (ImageID, label)."""

    data: Path
    answers: Path
    train: pd.DataFrame
    eval: pd.DataFrame


def _people(rng: np.random.Generator, n: int, age_mix: np.ndarray) -> pd.DataFrame:
    gender = rng.choice(2, size=n, p=TRAIN_GENDER)
    age = rng.choice(3, size=n, p=age_mix)
    years = np.array([rng.integers(*AGE_RANGES[a]) for a in age])
    return pd.DataFrame({"gender": gender, "age": age, "years": years})


def make_toy_competition(root: Path, n_people: int = 300, n_eval_people: int = 200, seed: int = 0) -> ToyCompetition:
    """Write a toy competition under ``root/data`` (see the module doc); returns its truth."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    data = root / "data"
    people = _people(rng, n_people, TRAIN_AGE)
    people["id"] = [f"{i + 1:06d}" + ("-1" if i % 37 == 36 else "") for i in range(n_people)]
    people["profile"] = [
        f"{p.id}_{('male', 'female')[p.gender]}_Asian_{p.years}" for p in people.itertuples()
    ]
    images = data / TRAIN_IMAGES
    (images / ".ipynb_checkpoints").mkdir(parents=True, exist_ok=True)
    train_rows = []
    for p in people.itertuples():
        (images / p.profile).mkdir()
        for stem, mask in MASK_STEMS.items():
            name = f"{stem}{rng.choice(['.jpg', '.jpeg', '.png'], p=[0.8, 0.1, 0.1])}"
            (images / p.profile / name).touch()
            train_rows.append((f"{p.profile}/{name}", int(encode(mask, p.gender, p.age))))
    pd.DataFrame(
        {"id": people["id"], "gender": np.where(people["gender"] == 1, "female", "male"),
         "race": "Asian", "age": people["years"], "path": people["profile"]}
    ).to_csv(data / TRAIN_CSV, index=False)

    eval_people = _people(rng, n_eval_people, EVAL_AGE)
    (data / EVAL_IMAGES).mkdir(parents=True)
    eval_rows = []
    for p in eval_people.itertuples():
        for mask in MASK_STEMS.values():
            image_id = f"{rng.integers(1 << 62):016x}{rng.integers(1 << 62):016x}.jpg"
            (data / EVAL_IMAGES / image_id).touch()
            eval_rows.append((image_id, int(encode(mask, p.gender, p.age))))
    order = rng.permutation(len(eval_rows))
    truth_eval = pd.DataFrame(eval_rows, columns=["ImageID", "label"]).iloc[order].reset_index(drop=True)
    truth_eval[["ImageID"]].assign(ans=0).to_csv(data / EVAL_CSV, index=False)
    answers = root / "answers.csv"
    truth_eval.rename(columns={"label": "ans"}).to_csv(answers, index=False)
    truth_train = pd.DataFrame(train_rows, columns=["ImageID", "label"])
    return ToyCompetition(data, answers, truth_train, truth_eval)


def teammate_csv(
    truth: pd.DataFrame,
    skill: Mapping[Task, float],
    seed: int,
    hard: bool = False,
    task: Task | None = None,
) -> pd.DataFrame:
    """A teammate's predictions for the images of `truth` (ImageID, label).

    skill: per task, the logit margin given to the true class before unit Gaussian noise
    (0 is chance, 3 is good). Returns ``ImageID,0..17`` probabilities, ``ImageID,ans`` with
    ``hard``, or with `task` only that task (``ImageID,0..k-1`` or ``ImageID,ans``).
    """
    rng = np.random.default_rng(seed)
    true = decode(truth["label"].to_numpy())
    probs = {}
    for t in TASKS:
        logits = rng.normal(size=(len(truth), N_CLASSES[t]))
        logits[np.arange(len(truth)), true[t]] += skill[t]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs[t] = e / e.sum(axis=1, keepdims=True)
    table = probs[task] if task is not None else joint_from_tasks(probs)
    frame = pd.DataFrame({"ImageID": truth["ImageID"].to_numpy()})
    if hard:
        return frame.assign(ans=table.argmax(axis=1))
    return pd.concat([frame, pd.DataFrame(table, columns=[str(k) for k in range(table.shape[1])])], axis=1)


def eval_f1(answers: Path, submission: Path) -> float:
    """18-class macro F1 of a submission against the toy answer file."""
    from .metrics import macro_f1

    truth = pd.read_csv(answers).set_index("ImageID")["ans"]
    sub = pd.read_csv(submission).set_index("ImageID")["ans"]
    return macro_f1(truth.to_numpy(), sub.reindex(truth.index).to_numpy(), 18)
