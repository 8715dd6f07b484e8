"""The quality benchmark: every composition method on simulated teams of several kinds, scored on
held-out simulated answers, with and without each prior correction.

A method is kept only where it holds on every team kind (`ensembler.data.teams`: per-task
specialists, 18-class classifiers, over-confident members, near-copies, a mix), under eval mixes
shifted in age, in mask, or not at all. Rows: the best single source (chosen by its labelled
score, as a team would), the votes, selection, stacking and auto; columns: 18-class macro F1 on
the hidden eval answers, plain and with ``--prior em`` / ``--prior bbse`` (applied only where the
labelled check says so), and ``em-raw``, the uncalibrated EM against the composition's own mean
posterior that `ens` ran before (for comparison; never offered).

    python bench/quality.py [--kinds all] [--shifts age,mask,none] [--methods soft,hard,geo,select,stack,auto] [--priors none,em,bbse] [--seed 1] [--people 600] [--eval-people 400]

`--methods` also takes ``auto-before``: auto's all-or-nothing rule of the last round
(`Auto(blends=False)`), to hold today's auto against it team by team (the mean, the worst and
the teams below it by more than 0.005 are summed up at the end). `--eval-people`: the hidden
answers' size (400 people, as the teams were first drawn; 3,000 judges two close compositions
with about a third of the noise, on teams whose labelled people are the same and whose members'
outputs are drawn anew). `--people`: the labelled people (600, as the teams were first drawn;
at 300 and fewer a gender x age class of 60+ often has under five people, where `--prior em`
calibrates and corrects task by task).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import ensembler as ens
from ensembler.data.labels import TASKS, encode
from ensembler.data.teams import KINDS, SHIFTS, simulate_team, write_team
from ensembler.pipeline.priors import adjust, em_priors, implied_priors
from ensembler.pipeline.recipe import Recipe, Term
from ensembler.scoring.metrics import score

PRIORS = ("none", "em", "bbse")


def raw_em(composition) -> np.ndarray:
    """The old correction: EM on uncalibrated probabilities, its own mean posterior as train priors."""
    probs = {}
    for task in TASKS:
        train = implied_priors(composition.val.probs[task])
        target, _ = em_priors(composition.eval.probs[task], train)
        probs[task] = adjust(composition.eval.probs[task], train, target)
    return encode(*(probs[t].argmax(1) for t in TASKS))


STEPS = {"auto-before": lambda: ens.Auto(blends=False)}  # methods that are a step with options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="all")
    parser.add_argument("--shifts", default=",".join(SHIFTS))
    parser.add_argument("--methods", default="soft,hard,geo,select,stack,auto")
    parser.add_argument("--priors", default=",".join(PRIORS), help="the prior corrections to try (none: plain)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--people", type=int, default=600, help="labelled people in each team")
    parser.add_argument("--eval-people", type=int, default=400, help="people in each team's hidden eval set")
    args = parser.parse_args()
    priors = tuple(args.priors.split(","))
    kinds = KINDS if args.kinds == "all" else tuple(args.kinds.split(","))
    methods = args.methods.split(",")
    start = time.perf_counter()
    losses, behind, versus_before = [], [], []
    for shift in args.shifts.split(","):
        for kind in kinds:
            team = simulate_team(kind, shift, n_train_people=args.people, n_eval_people=args.eval_people, seed=args.seed)
            f1 = lambda labels: score(team.answers, labels).f1_18  # noqa: E731
            with tempfile.TemporaryDirectory() as tmp:
                project = write_team(team, Path(tmp))
                recipe = Recipe({t: tuple(Term(m.name) for m in team.members if t in m.tasks) for t in TASKS})
                print(f"\n== {kind}, eval shift: {shift} ({len(team.labels)} labelled images, {len(team.answers)} eval) ==")
                print(f"{'method':10s} {'plain':>7s} {'em':>7s} {'bbse':>7s} {'em-raw':>7s}   labelled check (em / bbse)")
                single = [m for m in team.members if len(m.tasks) == 3]
                if single:
                    best = max(single, key=lambda m: score(team.labels, m.labelled_joint.argmax(1)).f1_18)
                    print(f"{'best one':10s} {f1(best.eval_joint.argmax(1)):7.4f}   ({best.name}, by its labelled score)")
                soft_plain, plain = None, {}
                for method in methods:
                    row, checks, raw = {p: float("nan") for p in PRIORS}, [], float("nan")
                    for prior in priors if method != "hard" else ("none",):  # a hard vote has no probabilities to re-weight
                        result = ens.compose(project, recipe, [STEPS.get(method, lambda: method)()] + ([ens.Priors(prior)] if prior != "none" else []))
                        row[prior] = f1(result.eval.labels)
                        record = (result.step("priors") or {}).get("prior")
                        if record:
                            applied = "applied" if record["applied"] else "kept plain"
                            check = record.get("check") or {}
                            checks.append(f"{applied}" + (f" {check['gain']:+.3f} ({check['wins']:.0%})" if check else ""))
                            if row[prior] < row["none"] - 1e-9:
                                losses.append(f"{kind}/{shift}/{method} --prior {prior}: {row[prior]:.4f} < {row['none']:.4f}")
                        elif result.val is not None and method != "hard":
                            raw = f1(raw_em(result))
                    plain[method] = row["none"]
                    if method == "soft":
                        soft_plain = row["none"]
                    if method == "auto" and soft_plain is not None and row["none"] < soft_plain - 0.005:
                        losses.append(f"{kind}/{shift}: auto {row['none']:.4f} < soft vote {soft_plain:.4f} - 0.005")
                    print(f"{method:10s} {row['none']:7.4f} {row['em']:7.4f} {row['bbse']:7.4f} {raw:7.4f}   {' / '.join(checks)}")
                    if method.startswith("auto") and (record := (result.step("auto") or {}).get("auto")):
                        print(f"{'':10s} chose {record['chosen']}: {record['why']['rule']}")
                if "auto-before" in plain and "auto" in plain:
                    versus_before.append(plain["auto"] - plain["auto-before"])
                    print(f"auto - auto-before (the last round's rule): {versus_before[-1]:+.4f}")
                    if versus_before[-1] < -0.005:
                        losses.append(f"{kind}/{shift}: auto {plain['auto']:.4f} < the last round's auto {plain['auto-before']:.4f} - 0.005")
                fixed = [m for m in plain if not m.startswith("auto")]
                if "auto" in plain and fixed:
                    other = max(fixed, key=plain.get)
                    gap = plain["auto"] - plain[other]
                    print(f"auto - best other method ({other}): {gap:+.4f}")
                    if gap < -0.01:
                        behind.append(f"{kind}/{shift}: auto {plain['auto']:.4f} < {other} {plain[other]:.4f}")
    print(f"\n{time.perf_counter() - start:.0f} s")
    if versus_before:
        gaps = np.array(versus_before)
        print(f"auto - auto-before over {len(gaps)} teams: mean {gaps.mean():+.4f}, worst {gaps.min():+.4f}, below it by more than 0.005 on {int((gaps < -0.005).sum())}")
    print("where auto trails the best fixed method by more than 0.01 (chosen blind, after the fact): " + ("; ".join(behind) or "nowhere"))
    print("where ens loses: " + ("; ".join(losses) if losses else "nowhere (no applied prior correction below plain; auto within 0.005 of the soft vote)"))


if __name__ == "__main__":
    main()
