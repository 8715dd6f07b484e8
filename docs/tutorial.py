"""The tutorial's outputs are the commands' own: this runs every ``$ ens …`` line of
docs/tutorial.md in a fresh project and writes what each printed under it.

    python docs/tutorial.py            # rewrite the outputs in docs/tutorial.md
    python docs/tutorial.py --check    # exit 1 when the page and a fresh run differ

The project is made the same way each time (`make_project`: a drawn-free toy competition, seed 0,
and three teammates' CSV files), so the outputs repeat digit for digit; tests/test_docs.py runs
the check. Torch is not needed.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parent / "tutorial.md"
BLOCK = re.compile(r"(```console\n)(.*?)(```)", re.S)
WIDTH = 150  # the terminal the outputs are printed for


def make_project(folder: Path) -> None:
    """`folder` holds ``DATA`` (a toy face-mask competition: 80 train people, 20 eval people)
    and the files three teammates shared, each with eval and train rows: ``polar.csv`` (a
    k-fold team's out-of-fold probabilities), ``peter_sub.csv`` (hard labels, good at age) and
    ``ken_val.csv`` (probabilities, good at mask)."""
    import pandas as pd

    from ensembler.data.labels import Task
    from ensembler.data.toy import make_toy_competition, teammate_csv

    toy = make_toy_competition(folder / "comp", n_people=80, n_eval_people=20, seed=0)
    os.symlink(toy.data, folder / "DATA")
    truth = pd.concat([toy.eval, toy.train])
    files = {
        "polar.csv": teammate_csv(truth, {Task.MASK: 2.0, Task.GENDER: 2.0, Task.AGE: 1.0}, seed=1),
        "peter_sub.csv": teammate_csv(truth, {Task.MASK: 0.8, Task.GENDER: 0.8, Task.AGE: 2.2}, seed=2, hard=True),
        "ken_val.csv": teammate_csv(truth, {Task.MASK: 2.5, Task.GENDER: 1.2, Task.AGE: 1.0}, seed=3),
    }
    for name, frame in files.items():
        frame.to_csv(folder / name, index=False)


def run_page(text: str, folder: Path) -> str:
    """`text` with every console block's outputs replaced by what its ``$`` lines print when run
    in order in `folder` (made by `make_project`)."""
    from typer.testing import CliRunner

    from ensembler.cli import app

    runner = CliRunner()
    here = Path.cwd()
    os.chdir(folder)
    try:

        def block(match: re.Match) -> str:
            out = []
            for line in match.group(2).splitlines():
                if not line.startswith("$ "):
                    continue
                args = shlex.split(line[2:], comments=True)
                if args[0] != "ens":
                    raise SystemExit(f"not an ens command: {line}")
                result = runner.invoke(app, args[1:], env={"COLUMNS": str(WIDTH)}, terminal_width=WIDTH)
                if result.exit_code != 0:
                    raise SystemExit(f"{line}\n{result.output}")
                out += [line, *(f"{o}".rstrip() for o in result.output.rstrip("\n").splitlines())]
            return match.group(1) + "\n".join(out) + "\n" + match.group(3)

        return BLOCK.sub(block, text)
    finally:
        os.chdir(here)


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the page differs from a fresh run")
    args = parser.parse_args()
    text = PAGE.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        make_project(Path(tmp))
        fresh = run_page(text, Path(tmp))
    if args.check:
        sys.exit(0 if fresh == text else 1)
    PAGE.write_text(fresh)
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
