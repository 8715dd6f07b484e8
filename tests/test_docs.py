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
