"""The documentation cannot rot unnoticed: the site builds in strict mode (a broken link, a
missing page or an API name that no longer exists fails), and the README stays a front door
whose links resolve."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_docs_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "ens compose" in cli and "--tta" in cli  # the command line's own help, generated
    assert "load_project" in (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    shots = sorted((ROOT / "docs" / "img").glob("*.png"))  # made by docs/screenshots.py from a demo run
    assert [p.name for p in shots] == ["audit.png", "report.png"] and all(p.stat().st_size < 300_000 for p in shots)


def test_the_readme_is_a_front_door_whose_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert local and all((ROOT / link).exists() for link in local), [link for link in local if not (ROOT / link).exists()]
    assert readme.count("```bash") >= 2  # the two set-up commands


def test_the_readme_quickstart_runs_as_printed(toy, tmp_path, monkeypatch):
    import shlex

    import pandas as pd
    from typer.testing import CliRunner

    from ensembler.cli import app
    from conftest import write_csv

    from ensembler.data.labels import Task
    from ensembler.data.toy import teammate_csv

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```bash\n(.*?)```", readme, re.S).group(1)
    lines = [shlex.split(line, comments=True) for line in block.splitlines()]
    folder = tmp_path / "work"
    folder.mkdir()
    os.symlink(toy.data, folder / "DATA")
    truth = pd.concat([toy.eval, toy.train])
    write_csv(folder / "polar.csv", teammate_csv(truth, {Task.MASK: 3.0, Task.GENDER: 3.0, Task.AGE: 1.0}, seed=0))
    write_csv(folder / "peter_sub.csv", teammate_csv(truth, {Task.MASK: 1.0, Task.GENDER: 1.0, Task.AGE: 3.0}, seed=1, hard=True))
    write_csv(folder / "k5_oof.csv", teammate_csv(truth, {Task.MASK: 2.0, Task.GENDER: 2.0, Task.AGE: 2.0}, seed=2))
    monkeypatch.chdir(folder)
    runner = CliRunner()
    for args in lines:
        assert args[0] == "ens", args
        result = runner.invoke(app, args[1:])
        assert result.exit_code == 0, (shlex.join(args), result.output)
    assert (folder / "submissions" / "v1.csv").is_file() and (folder / "report.html").is_file()
    assert "pick 1:" in result.output  # the last line proposes the final submissions


def test_every_import_of_the_teammate_files_page_runs_as_printed(toy, tmp_path, monkeypatch):
    import shlex

    import numpy as np
    import pandas as pd
    from conftest import write_csv
    from typer.testing import CliRunner

    from ensembler.cli import app
    from ensembler.data.labels import Task
    from ensembler.data.toy import teammate_csv

    page = (ROOT / "docs" / "how-to" / "teammate-files.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| ")]
    commands = [shlex.split(c) for row in rows for c in re.findall(r"`(ens import [^`]+)`", row)]
    truth = pd.concat([toy.eval, toy.train])
    skill = {Task.MASK: 2.0, Task.GENDER: 2.0, Task.AGE: 2.0}
    probs = teammate_csv(truth, skill, seed=0)
    per_task = pd.DataFrame({"ImageID": probs["ImageID"]})
    for task in (Task.MASK, Task.GENDER, Task.AGE):
        per_task = per_task.join(teammate_csv(truth, skill, seed=1, task=task).drop(columns="ImageID").add_prefix(f"{task}_"))
    files = {
        "sub.csv": teammate_csv(truth, skill, seed=2, hard=True),
        "p.csv": probs,
        "l.csv": probs.assign(**{str(c): np.log(probs[str(c)]) for c in range(18)}),
        "t.csv": per_task,
        "ages.csv": teammate_csv(truth, skill, seed=3, hard=True, task=Task.AGE),
        "ages_p.csv": teammate_csv(truth, skill, seed=4, task=Task.AGE),
        "f.csv": probs.rename(columns={str(c): f"score_{c}_p" for c in range(18)}),
        "k5_oof.csv": teammate_csv(truth, skill, seed=5),
    }
    monkeypatch.chdir(tmp_path)
    for name, frame in files.items():
        write_csv(tmp_path / name, frame)
    runner = CliRunner()
    assert runner.invoke(app, ["--data", str(toy.data), "split"]).exit_code == 0  # --oof is checked against the fold file
    assert {c[2] for c in commands} == set(files)  # every file the page names is made here, and imported
    for args in commands:
        result = runner.invoke(app, args[1:])
        assert result.exit_code == 0, (shlex.join(args), result.output)


def test_the_tutorial_prints_what_a_fresh_run_prints(tmp_path):
    """Every `$ ens …` line of docs/tutorial.md run in a fresh project prints exactly the output
    the page shows (`python docs/tutorial.py` writes them)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tutorial", ROOT / "docs" / "tutorial.py")
    tutorial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tutorial)
    page = tutorial.PAGE.read_text()
    assert page.count("$ ens ") >= 8  # split, imports, report, pick, compose
    tutorial.make_project(tmp_path)
    assert tutorial.run_page(page, tmp_path) == page


CODE = re.compile(r"^```(bash|console|python|yaml)$")


def test_every_code_block_of_the_docs_names_the_test_that_runs_it_or_why_none_does():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    blocks = 0
    for page in pages:
        lines = page.read_text().splitlines()
        inside = False
        for i, line in enumerate(lines):
            if not line.startswith("```"):
                continue
            if not inside and CODE.match(line):
                blocks += 1
                mark = re.fullmatch(r"<!-- (run|not run): (\S+)(.*) -->", lines[i - 1] if i else "")
                where = f"{page.relative_to(ROOT)}:{i + 1}"
                assert mark, f"{where}: say which test runs the block (<!-- run: tests/…::test_… -->) or why none does (<!-- not run: … -->)"
                if mark.group(1) == "run":
                    path, _, test = mark.group(2).partition("::")
                    assert (ROOT / path).is_file(), where
                    assert not test or f"def {test}(" in (ROOT / path).read_text(), f"{where}: no {test} in {path}"
            inside = not inside
    assert blocks >= 15


def test_the_declaration_of_the_how_to_reads_as_written():
    import yaml

    from ensembler.data.competition import parse_competition

    page = (ROOT / "docs" / "how-to" / "declare-a-competition.md").read_text()
    raw = yaml.safe_load(re.search(r"```yaml\n(.*?)```", page, re.S).group(1))
    competition = parse_competition(raw["competition"], ROOT / "model_zoo.yaml")
    assert [t.name for t in competition.tasks] == ["label"] and str(competition.metric) == "accuracy"
