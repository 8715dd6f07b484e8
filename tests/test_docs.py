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
