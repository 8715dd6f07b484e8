"""The demo's figures in docs/demo.md, written from a run, never typed.

    python docs/demo_figures.py [--seed 0]

Runs `ens demo` (seed 0 by default) in a scratch folder, timing the whole command, and rewrites
the paragraph between the ``<!-- demo figures -->`` and ``<!-- end of demo figures -->`` marks
of docs/demo.md from what it printed: the time, the train grouping against the true persons,
the by-person checks, the hidden answers of the fold group with and without it, and EM's age
estimate. Needs torch (``pip install -e ".[predict]"``); takes the demo's three minutes.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAGE = Path(__file__).resolve().parent / "demo.md"
START, END = "<!-- demo figures -->", "<!-- end of demo figures -->"
NUMBER = r"([+-]?\d+\.\d+)"


def run_demo(seed: int) -> tuple[str, float]:
    """What `ens demo --seed SEED` printed, and its wall time in seconds (start-up included)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "ensembler", "demo", "--dir", str(Path(tmp) / "d"), "--seed", str(seed)], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    return done.stdout, seconds


def find(pattern: str, text: str) -> tuple[str, ...]:
    found = re.search(pattern, text)
    if found is None:
        raise SystemExit(f"the demo's output no longer says {pattern!r}: update docs/demo_figures.py")
    return found.groups()


def paragraph(out: str, seconds: float, seed: int) -> str:
    flat = " ".join(out.split())
    precision, _, ari, whole = find(rf"pairwise precision {NUMBER}, recall {NUMBER}, adjusted Rand index {NUMBER}; {NUMBER}% of \d+ people recovered whole", flat)
    checks = {}
    for name in ("soft-vote", "ben-heads"):
        applied, images, gain, low, high = find(rf"{name}-by-person\.csv \(--by-person (applied|not applied); labelled check on (\d+) images: {NUMBER} \(90% CI {NUMBER} to {NUMBER}\)", flat)
        checks[name] = (applied == "applied", int(images) // 7, float(gain), float(low), float(high))
    before, after = (find(rf"\b{name} +[\d.]+ +[\d.]+ +[\d.]+ +{NUMBER}\b", out)[0] for name in ("ben-heads", "ben-heads-by-person"))
    em_applied, middle = find(r"soft-vote-em\.csv \(soft of [^,]+, --prior em \((applied|not applied)\); age priors \[[^\]]*\] -> \[[\d.]+, ([\d.]+),", flat)
    em = "are applied" if em_applied == "applied" else f"run away (30-59 to {float(middle) * 100:.0f} %) and are dropped"
    sign = lambda v: f"{v:+.3f}".replace("-", "−")  # noqa: E731
    said = lambda name: "applied to" if checks[name][0] else "kept off for"  # noqa: E731
    soft, group = checks["soft-vote"], checks["ben-heads"]
    return (
        f"On seed {seed} ({seconds:.0f} s, start-up included, on {os.cpu_count()} cores, {platform.machine()}; "
        f"written by `python docs/demo_figures.py`): the train grouping has pairwise precision {precision} and "
        f"ARI {ari} ({whole} % of people whole); `--by-person` is {said('soft-vote')} the soft vote (its check on "
        f"{soft[1]} validation people: {sign(soft[2])}, interval {sign(soft[3])} to {sign(soft[4])}) and {said('ben-heads')} "
        f"the fold group (check on all {group[1]} people: {sign(group[2])}, interval {sign(group[3])} to {sign(group[4])}; "
        f"hidden answers {before} → {after}); EM's age estimates {em}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out, seconds = run_demo(args.seed)
    text = PAGE.read_text()
    head, rest = text.split(START)
    _, tail = rest.split(END)
    PAGE.write_text(f"{head}{START}\n{paragraph(out, seconds, args.seed)}\n{END}{tail}")
    print(f"wrote {PAGE}: {seconds:.0f} s")


if __name__ == "__main__":
    main()
