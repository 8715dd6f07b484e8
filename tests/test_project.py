from pathlib import Path

import pytest
import yaml

from ensembler.data.project import load_project, update_project
from ensembler.errors import EnsError


def test_no_zoo_file_gives_defaults(tmp_path):
    project = load_project(tmp_path / "model_zoo.yaml")
    assert project.predictions == tmp_path / "predictions"
    assert project.submissions == tmp_path / "submissions"
    assert project.folds == tmp_path / "folds.csv"
    assert project.val_fold == 0 and project.data is None and project.models == ()
    with pytest.raises(EnsError, match="no data folder: pass --data"):
        project.require_data()


def test_precedence_flag_over_file_over_default(tmp_path):
    zoo = tmp_path / "model_zoo.yaml"
    zoo.write_text("project:\n  data: from-file\n  submissions: out\n")
    project = load_project(zoo)
    assert project.data == tmp_path / "from-file"  # file over default, relative to the zoo file
    assert project.submissions == tmp_path / "out"
    assert load_project(zoo, data=Path("/elsewhere")).data == Path("/elsewhere")  # flag over file


@pytest.mark.parametrize(
    "text, match",
    [
        ("project:\n  dta: x\n", "project: unknown key 'dta'"),
        ("project:\n  val_fold: one\n", "project.val_fold: expected int"),
        ("project:\n  val_fold: -1\n", "must be 0 or more"),
        ("project:\n  data: 3\n", "project.data: expected str"),
        ("projects: {}\n", "unknown top-level key 'projects'"),
        ("models:\n  - {name: a, architecture: x, checkpoint: c, layout: classes18}\n  - {name: a, architecture: x, checkpoint: c, layout: classes18}\n", r"models\[1\] \(a\): name: duplicate of models\[0\]"),
        ("models:\n  - owner: x\n", r"models\[0\]: name: required"),
        ("project: [\n", "not valid YAML"),
    ],
)
def test_bad_zoo_file_names_file_and_key(tmp_path, text, match):
    zoo = tmp_path / "model_zoo.yaml"
    zoo.write_text(text)
    with pytest.raises(EnsError, match=match) as info:
        load_project(zoo)
    assert str(zoo) in str(info.value)


def test_update_project_creates_then_keeps_other_keys(tmp_path):
    zoo = tmp_path / "sub" / "model_zoo.yaml"
    update_project(zoo, data=tmp_path / "sub" / "data")
    assert yaml.safe_load(zoo.read_text()) == {"project": {"data": "data"}}
    zoo.write_text(zoo.read_text() + "models:\n  - name: m1\n")
    update_project(zoo, val_fold=3)
    raw = yaml.safe_load(zoo.read_text())
    assert raw == {"project": {"data": "data", "val_fold": 3}, "models": [{"name": "m1"}]}
    with pytest.raises(EnsError, match="expected int"):
        update_project(zoo, val_fold="x")
    assert yaml.safe_load(zoo.read_text())["project"]["val_fold"] == 3
