"""Zoo entries: parsed into frozen configs; every error names the file, the entry and the key."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from ensembler.data.labels import Task
from ensembler.data.project import load_project
from ensembler.data.zoo import IMAGENET_MEAN, TTA_PRESETS, TTAPolicy
from ensembler.errors import EnsError

BASE = {"name": "m", "architecture": "resnet18", "checkpoint": "m.pth", "layout": "classes18"}


def load(tmp_path, *entries):
    zoo = tmp_path / "model_zoo.yaml"
    zoo.write_text(yaml.safe_dump({"models": list(entries)}, sort_keys=False))
    return load_project(zoo)


def test_minimal_entry_gets_defaults(tmp_path):
    entry = load(tmp_path, BASE).model("m")
    assert entry.checkpoint == tmp_path / "m.pth" and not entry.is_fold_group
    assert entry.layout.joint and entry.layout.width == 18
    assert entry.preprocess.mean == IMAGENET_MEAN and entry.preprocess.resize is None
    assert entry.tta.transforms == () and entry.tta.label == "none" and entry.tta.over == "probs"


def test_full_entry(tmp_path):
    entry = load(
        tmp_path,
        {
            **BASE,
            "owner": "polar",
            "layout": {"heads": {"mask": 3, "gender": 2, "age": [0, 20, 30, 45, 60, 70]}},
            "preprocess": {"resize": [96, 128], "crop": [80, 112], "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2], "interpolation": "bicubic"},
            "tta": {"transforms": ["hflip", {"scale": [0.9, 1.1]}], "merge": "gmean"},
            "fold": 2,
            "sha256": "A" * 64,
            "notes": "best run",
        },
    ).model("m")
    assert entry.layout.tasks == (Task.MASK, Task.GENDER, Task.AGE) and entry.layout.width == 3 + 2 + 6
    assert entry.layout.heads[2].bins == (0, 20, 30, 45, 60, 70)
    assert entry.preprocess.resize == (96, 128) and entry.preprocess.crop == (80, 112)
    assert entry.tta.merge == "gmean" and entry.tta.transforms[1] == {"scale": (0.9, 1.1)}
    assert entry.fold == 2 and entry.sha256 == "a" * 64


def test_fold_group_and_single_task(tmp_path):
    group = {k: v for k, v in BASE.items() if k != "checkpoint"} | {"folds": {0: "f0.pth", 1: "f1.pth"}, "layout": {"heads": {"age": "years"}}}
    entry = load(tmp_path, group).model("m")
    assert entry.is_fold_group and entry.folds[1] == tmp_path / "f1.pth"
    assert entry.layout.tasks == (Task.AGE,) and entry.layout.width == 1


@pytest.mark.parametrize("preset", list(TTA_PRESETS))
def test_tta_presets(preset):
    assert TTAPolicy.parse(preset).label == preset


@pytest.mark.parametrize(
    "change, match",
    [
        ({"colour": 1}, r"models\[0\] \(m\): colour: unknown key"),
        ({"architecture": 5}, r"\(m\): architecture: expected text"),
        ({"layout": "classes19"}, r"\(m\): layout: expected classes18 or heads"),
        ({"layout": {"heads": {"mask": 3, "age": 4}}}, r"layout.heads.age: expected 3, a list of bin edges or 'years'"),
        ({"layout": {"heads": {"mask": 2}}}, r"layout.heads.mask: expected 3, got 2"),
        ({"layout": {"heads": {"hair": 2}}}, r"layout.heads.hair: unknown key"),
        ({"layout": {"heads": {"age": [0, 25, 35, 60]}}}, r"layout.heads.age: bins must start at 30 and 60"),
        ({"layout": {"heads": {"age": [0, 60, 30]}}}, r"bin edges must increase"),
        ({"preprocess": {"resize": [96]}}, r"preprocess.resize: expected \[width, height\]"),
        ({"preprocess": {"resize": [96.5, 128]}}, r"preprocess.resize: expected positive whole pixels"),
        ({"preprocess": {"interpolation": "lanczos"}}, r"preprocess.interpolation: choose one of nearest, bilinear, bicubic"),
        ({"preprocess": {"std": [0.2, 0, 0.2]}}, r"preprocess.std: must be positive"),
        ({"preprocess": {"size": [1, 1]}}, r"preprocess.size: unknown key"),
        ({"tta": "hflips"}, r"tta: unknown preset 'hflips'"),
        ({"tta": {"transforms": ["spin"]}}, r"tta.transforms: unknown transform 'spin'"),
        ({"tta": {"merge": "median"}}, r"tta.merge: choose one of mean"),
        ({"fold": -1}, r"fold: expected 0 or more"),
        ({"fold": "one"}, r"fold: expected a fold number"),
        ({"sha256": "abc"}, r"sha256: expected 64 hex digits"),
        ({"trusted": "yes"}, r"trusted: expected true or false"),
        ({"folds": {0: "a.pth", 1: "b.pth"}}, r"checkpoint: give either checkpoint .* or folds"),
        ({"name": "a b"}, r"name: invalid name 'a b'"),
        ({"kwargs": [1]}, r"kwargs: expected a mapping"),
    ],
)
def test_entry_errors_name_file_entry_and_key(tmp_path, change, match):
    with pytest.raises(EnsError, match=match) as info:
        load(tmp_path, {**BASE, **change})
    assert str(tmp_path / "model_zoo.yaml") in str(info.value) and "\n" not in str(info.value)


def test_fold_group_errors(tmp_path):
    group = {k: v for k, v in BASE.items() if k != "checkpoint"}
    with pytest.raises(EnsError, match=r"folds: a fold group needs at least two folds"):
        load(tmp_path, group | {"folds": {0: "f0.pth"}})
    with pytest.raises(EnsError, match=r"fold: not allowed for a fold group"):
        load(tmp_path, group | {"folds": {0: "f0.pth", 1: "f1.pth"}, "fold": 0})
    with pytest.raises(EnsError, match=r"folds: keys are fold numbers"):
        load(tmp_path, group | {"folds": {"a": "f0.pth", 1: "f1.pth"}})


def test_unknown_model_suggests(tmp_path):
    project = load(tmp_path, BASE, {**BASE, "name": "polar-effb0"})
    with pytest.raises(EnsError, match=r"unknown model in model_zoo.yaml 'polar-efb0' \(did you mean: polar-effb0"):
        project.model("polar-efb0")


def test_the_shipped_example_registry_reads_as_it_is_and_shows_every_key():
    """The top-level model_zoo.yaml is what a team copies: it must stay readable as the format
    changes, and show every key of an entry and of the project section at least once."""
    from typer.testing import CliRunner

    from ensembler.cli import app
    from ensembler.data.project import ProjectSettings
    from ensembler.data.zoo import ENTRY_KEYS

    path = Path(__file__).resolve().parents[1] / "model_zoo.yaml"
    project = load_project(path)
    raw = yaml.safe_load(path.read_text())
    assert set(raw["project"]) == {f.name for f in dataclasses.fields(ProjectSettings)}
    assert set().union(*(entry.keys() for entry in raw["models"])) == set(ENTRY_KEYS)
    assert {"resize", "crop", "mean", "std", "interpolation"} <= set().union(*(e.get("preprocess", {}).keys() for e in raw["models"]))
    by_name = {m.name: m for m in project.models}
    kinds = {
        "timm": any(":" not in m.architecture for m in project.models),
        "own class": any(m.architecture.count(":") == 1 and "." in m.architecture.split(":")[0] for m in project.models),
        "fold group": any(m.is_fold_group for m in project.models),
        "three heads": any(not m.layout.joint and len(m.layout.heads) == 3 for m in project.models),
        "age only": any(m.layout.tasks == (Task.AGE,) for m in project.models),
    }
    assert all(kinds.values()), kinds
    assert project.val_fold == 0 and project.folds == path.parent / "folds.csv"
    result = CliRunner().invoke(app, ["--zoo", str(path), "zoo", "list"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in by_name)
