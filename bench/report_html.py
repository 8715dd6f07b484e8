"""Time `ens report --html` on 20 sources x 19,000 labelled images (the competition's train size).

Writes a toy data folder of that size (placeholder image files), stores 20 prediction sets on
its train images (18-way joints of varied skill, so the plots have something to show), then
times, best of --repeat: `build_report` (read 20 sets, align, score, EM priors), the page's
sections (confusion, per-class F1, agreement and error correlation, errors by age, calibration:
numbers and matplotlib figures), and the whole `write_html_report`.

    python bench/report_html.py [--sources 20] [--people 2715] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from ensembler.data.labels import N_JOINT
from ensembler.data.project import load_project, update_project
from ensembler.data.store import PredictionSet, Split, Store
from ensembler.data.toy import make_toy_competition
from ensembler.evaluate.htmlreport import build_sections, write_html_report
from ensembler.evaluate.report import build_report


def timed(repeat: int, fn):
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=20)
    parser.add_argument("--people", type=int, default=2715, help="train people, 7 images each (2,715 -> 19,005 images)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        comp = make_toy_competition(Path(tmp) / "comp", n_people=args.people, n_eval_people=1, seed=0)
        zoo = Path(tmp) / "team" / "model_zoo.yaml"
        update_project(zoo, data=comp.data)
        project = load_project(zoo)
        ids, labels = comp.train["ImageID"].to_numpy(object), comp.train["label"].to_numpy()
        store = Store(project.predictions)
        for i in range(args.sources):
            logits = rng.normal(size=(len(ids), N_JOINT))
            logits[np.arange(len(ids)), labels] += 1.0 + 3.0 * i / max(args.sources - 1, 1)
            joint = np.exp(logits - logits.max(axis=1, keepdims=True))
            joint = (joint / joint.sum(axis=1, keepdims=True)).astype(np.float32)
            store.write(PredictionSet(f"model{i:02d}", Split.VAL, ids, joint=joint, labels=labels, meta={"kind": "proba", "origin": {"type": "import"}}))
        print(f"{args.sources} sources x {len(ids)} labelled images, best of {args.repeat}")

        t_report, report = timed(args.repeat, lambda: build_report(project))
        print(f"build_report (read, align, score, priors): {t_report:6.2f} s")
        t_sections, _ = timed(args.repeat, lambda: build_sections(report))
        print(f"sections (numbers + figures):               {t_sections:6.2f} s")
        out = Path(tmp) / "report.html"
        t_write, _ = timed(args.repeat, lambda: write_html_report(report, out))
        print(f"write_html_report (sections + template):    {t_write:6.2f} s, {out.stat().st_size / 1e6:.2f} MB")
        print(f"report + HTML end to end:                   {t_report + t_write:6.2f} s (target < 10 s)")


if __name__ == "__main__":
    main()
