"""The demo's figures in docs/demo.md and README.md, written from runs, never typed.

    python docs/demo_figures.py [--seed 0] [--busy]

Runs `ens demo` (seed 0 by default) in a scratch folder, timing the whole command, and rewrites
the paragraph between the ``<!-- demo figures -->`` and ``<!-- end of demo figures -->`` marks
of docs/demo.md from what it printed: the time, the train grouping against the true persons,
the by-person checks, the hidden answers of the fold group with and without it, and EM's age
estimate. Then `ens demo --competition leaves`, for the paragraph between the ``<!-- leaves
figures -->`` marks: its time, the validation plants, auto's choice and the hidden answers.
`--busy` times the demo once more beside one CPU-bound process (started 10 s before it). The
README's table cell between ``<!-- demo time -->`` and ``<!-- end -->`` gets the times. Needs
torch (``pip install -e ".[predict]"``); takes the demos' four minutes (nine with `--busy`).
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
README = PAGE.parent.parent / "README.md"
START, END = "<!-- demo figures -->", "<!-- end of demo figures -->"
LEAVES_START, LEAVES_END = "<!-- leaves figures -->", "<!-- end of leaves figures -->"
CELL_START, CELL_END = "<!-- demo time -->", "<!-- end -->"
NUMBER = r"([+-]?\d+\.\d+)"


def run_demo(seed: int, *options: str) -> tuple[str, float]:
    """What `ens demo --seed SEED [OPTIONS]` printed, and its wall time in seconds (start-up included)."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "ensembler", "demo", "--dir", str(Path(tmp) / "d"), "--seed", str(seed), *options], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    return done.stdout, seconds


def beside_a_busy_process(seed: int) -> float:
    """The demo's wall time beside one CPU-bound process (started 10 s before it, so the load
    average shows it)."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(10)
        return run_demo(seed)[1]
    finally:
        busy.kill()


def rewrite(path: Path, start: str, end: str, text: str) -> None:
    """Replace what lies between the marks `start` and `end` of the file at `path`."""
    page = path.read_text()
    head, rest = page.split(start)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}{text}{end}{tail}")


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


def auto_choice(chose: str) -> str:
    """Auto's choice as the demo printed it, in words: ``moved 21 % of the way from the soft vote
    (toward the geo vote 20 %, the stack 1 %)`` for a blend (shares under half a percent left
    out), ``kept the soft vote``, else ``chose the stack``."""
    terms = re.findall(r"(\d(?:\.\d+)?) x (.+?)(?= \+ \d(?:\.\d+)? x |$)", chose)
    if len(terms) > 1 and terms[0][1].startswith("soft vote"):
        toward = ", ".join(f"the {name.split(' ana-')[0].removesuffix(' of')} {float(w):.0%}" for w, name in terms[1:] if float(w) >= 0.005)
        return f"moved {1 - float(terms[0][0]):.0%} of the way from the soft vote (toward {toward})".replace("%", " %")
    name = chose.split(" ana-")[0].removesuffix(" of")
    return "kept the soft vote" if name == "soft vote" else f"chose the {name}"


def leaves_paragraph(out: str, seconds: float, seed: int) -> str:
    flat = " ".join(out.split())
    images, plants = find(r"validation: validation fold 0 of folds\.csv: (\d+) images of (\d+) groups", flat)
    (chose,) = find(r"auto\.csv \(auto of [^:]+:[^:]+: chose (.+?)\)", flat)
    hidden = dict(re.findall(r"^ (\S+) +(\d\.\d{4}) *$", out.split("hidden eval answers", 1)[1], re.M))
    methods = ("soft", "geo", "select", "stack", "auto")
    models = {name: float(v) for name, v in hidden.items() if name not in methods}
    ranked = ", ".join(f"{name} {float(hidden[name]):.3f}" for name in sorted(methods, key=lambda m: -float(hidden[m])))
    best = max(models, key=models.get)
    return (
        f"On seed {seed} ({seconds:.0f} s on this machine, written by `python docs/demo_figures.py`): validation on "
        f"{images} images of {plants} plants; auto {auto_choice(chose)}; hidden answers: {ranked}; "
        f"the best model alone ({best}) {models[best]:.3f}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--busy", action="store_true", help="time the demo beside one CPU-bound process too")
    args = parser.parse_args()
    out, seconds = run_demo(args.seed)
    rewrite(PAGE, START, END, f"\n{paragraph(out, seconds, args.seed)}\n")
    leaves, leaves_seconds = run_demo(args.seed, "--competition", "leaves")
    rewrite(PAGE, LEAVES_START, LEAVES_END, f"\n{leaves_paragraph(leaves, leaves_seconds, args.seed)}\n")
    cell = f"{seconds:.0f} s idle"
    if args.busy:
        cell += f"; {beside_a_busy_process(args.seed):.0f} s beside one CPU-bound process"
    else:  # the busy figure of the last run with --busy stays
        cell += "".join(re.findall(r"; \d+ s beside one CPU-bound process", README.read_text().split(CELL_START)[1].split(CELL_END)[0]))
    rewrite(README, CELL_START, CELL_END, cell)
    print(f"wrote {PAGE} and {README.name}: the demo {cell}; the leaves demo {leaves_seconds:.0f} s")


if __name__ == "__main__":
    main()
