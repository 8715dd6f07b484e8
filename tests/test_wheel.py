"""The distribution as a user installs it: the wheel `python -m build` makes, installed apart
from the checkout, runs `ens --version`, `ens demo --help` and a composition whose report page
needs the package's templates (package data a wheel can silently lose)."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import hard_csv

from ensembler.data.labels import Task, decode, encode

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built wheel installed into a folder of its own (its dependencies are this venv's)."""
    pytest.importorskip("build")
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(work / "dist"), str(ROOT)], check=True, capture_output=True)
    (wheel,) = (work / "dist").glob("image_ensembler-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target", str(work / "site"), str(wheel)], check=True, capture_output=True)
    return work / "site"


def run(site: Path, *args: object, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "100"}
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_wheel_installs_by_its_name_and_runs_apart_from_the_checkout(installed, tmp_path, toy):
    where = run(installed, sys.executable, "-c", "import ensembler, predictors; print(ensembler.__file__); print(predictors.__file__)", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert all(Path(line).is_relative_to(installed) for line in where.stdout.split()), where.stdout  # not the checkout
    ens = installed / "bin" / "ens"
    version = run(installed, ens, "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("ens "), version.stderr
    helped = run(installed, ens, "demo", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "Example:" in helped.stdout, helped.stderr

    truth = pd.concat([toy.eval, toy.train])
    t = decode(truth["label"].to_numpy())
    base = ("--zoo", tmp_path / "team" / "model_zoo.yaml", "--data", toy.data)
    for name, labels in (("A", encode(t[Task.MASK], t[Task.GENDER], (t[Task.AGE] + 2) % 3)), ("B", truth["label"].to_numpy())):
        done = run(installed, ens, *base, "import", hard_csv(tmp_path / f"{name}.csv", truth, labels), "--name", name, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    assert run(installed, ens, *base, "split", "--folds", "4", cwd=tmp_path).returncode == 0
    composed = run(installed, ens, *base, "compose", "--recipe", "mask,gender:A", "age:B", "--name", "v1", cwd=tmp_path)
    assert composed.returncode == 0, composed.stderr
    assert (tmp_path / "team" / "submissions" / "v1.csv").is_file()
    reported = run(installed, ens, *base, "report", "--recipe", "mask,gender:A age:B", "--html", tmp_path / "report.html", cwd=tmp_path)
    assert reported.returncode == 0, reported.stderr
    assert "<html" in (tmp_path / "report.html").read_text()[:500].lower()  # the page from the wheel's own templates
