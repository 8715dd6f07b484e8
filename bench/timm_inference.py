"""`ens predict` against timm's own `inference.py`, each run as a command the way a team runs it.

The same full-size images (384 x 512 JPEGs, as bench/predict.py writes them), the same checkpoints
(plain state_dicts, 18 outputs), the same resize (squashed to --size, bilinear) and normalisation:

- ens: ``python -m ensembler predict --model A [--model B ...] --tta T --device cpu --force``,
  its defaults otherwise (on CPU in float32 the forward runs on ONNX Runtime when installed; the
  exports are made by a first, untimed run and found in the cache by the timed ones, as a team's
  second run finds them);
- timm: ``python inference.py --model A --checkpoint A.pth --num-classes 18 --input-size 3 H W
  --crop-pct 1 --crop-mode squash --interpolation bilinear --mean ... --std ... --topk 0
  --device cpu`` once per model and, with ``--tta hflip``, once more per model on a folder of the
  images flipped beforehand (inference.py has no TTA: a team runs it twice; the flipped copies
  are written before the clock starts); its defaults otherwise (batch 256, 2 workers).

Both are timed end to end from a fresh process (start-up, model building, decoding, writing
included), the best of --repeat runs. It also checks that ens's probabilities are the eager
model's: the same command with ``--backend torch --no-freeze`` (the eager torch path) is run once
and the two prediction sets compared (largest absolute difference of any class probability).

timm's `inference.py` is not part of the timm package: take it from timm's repository (the
version that matches your installed timm) and pass its path:

    python bench/timm_inference.py --timm-script PATH/inference.py [--images 1008] [--models efficientnet_b0]
        [--size 192x256] [--tta none|hflip] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from predict import write_images  # noqa: E402

from ensembler.data.project import load_project  # noqa: E402
from ensembler.data.store import Split, Store  # noqa: E402
from ensembler.data.toy import make_toy_competition  # noqa: E402
from predictors.models import build_model  # noqa: E402

MEAN, STD = (0.548, 0.504, 0.479), (0.237, 0.247, 0.246)


def timed(command: list[str], repeat: int, env: dict[str, str] | None = None) -> float:
    """The best of `repeat` wall-clock runs of `command` (each a fresh process)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode:
            raise SystemExit(f"{' '.join(command[:4])} ... failed:\n{done.stderr[-3000:]}")
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timm-script", required=True, type=Path, help="path to timm's inference.py (from timm's repository)")
    parser.add_argument("--images", type=int, default=1008)
    parser.add_argument("--models", default="efficientnet_b0")
    parser.add_argument("--size", default="192x256", help="resize, width x height")
    parser.add_argument("--tta", default="none", choices=["none", "hflip"])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    names = args.models.split(",")
    script = args.timm_script.resolve()
    if not script.is_file():
        raise SystemExit(f"--timm-script {script}: not found")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        comp = make_toy_competition(root, n_people=5, n_eval_people=max(1, args.images // 7), seed=0)
        write_images(comp.data)
        images = comp.data / "eval" / "images"
        n = len(comp.eval)
        folders = [images]
        if args.tta == "hflip":  # timm's second pass reads copies flipped beforehand (not timed)
            from PIL import Image

            flipped = root / "flipped"
            flipped.mkdir()
            for path in images.iterdir():
                Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped / path.name, quality=90)
            folders.append(flipped)
        pre = {"resize": [width, height], "mean": list(MEAN), "std": list(STD)}
        entries = [{"name": m, "architecture": m, "checkpoint": f"{m}.pth", "layout": "classes18", "preprocess": pre, "tta": args.tta} for m in names]
        zoo = root / "model_zoo.yaml"
        zoo.write_text(yaml.safe_dump({"project": {"data": str(comp.data)}, "models": entries}, sort_keys=False))
        project = load_project(zoo)
        torch.manual_seed(0)
        for entry in project.models:
            torch.save(build_model(entry).eval().state_dict(), entry.checkpoint)

        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        ens = [sys.executable, "-m", "ensembler", "--zoo", str(zoo), "predict", *[a for m in names for a in ("--model", m)], "--tta", args.tta, "--device", "cpu", "--force"]
        eager = subprocess.run([*ens, "--backend", "torch", "--no-freeze"], capture_output=True, text=True, env=env)
        if eager.returncode:
            raise SystemExit(eager.stderr)
        store = Store(project.predictions)
        reference = {m: store.read(m, Split.EVAL).joint for m in names}
        first = subprocess.run(ens, capture_output=True, text=True, env=env)  # exports and caches the ONNX models (untimed)
        if first.returncode:
            raise SystemExit(first.stderr)
        backend = json.loads((project.predictions / names[0] / "eval.json").read_text())["origin"].get("backend", "torch")
        worst = max(float(np.abs(store.read(m, Split.EVAL).joint - reference[m]).max()) for m in names)

        out = root / "timm-out"
        timm = [
            [sys.executable, str(script), "--data-dir", str(folder), "--model", m, "--checkpoint", str(project.models[i].checkpoint),
             "--num-classes", "18", "--input-size", "3", str(height), str(width), "--crop-pct", "1.0", "--crop-mode", "squash",
             "--interpolation", "bilinear", "--mean", *map(str, MEAN), "--std", *map(str, STD), "--topk", "0", "--device", "cpu",
             "--label-type", "none", "--no-console-results", "--results-dir", str(out), "--results-file", f"{m}-{j}.csv"]
            for i, m in enumerate(names) for j, folder in enumerate(folders)
        ]
        for command in timm:  # warm the file cache and check each command runs, not timed
            timed(command, 1, env)

        t_ens = timed(ens, args.repeat, env)
        t_timm = sum(timed(command, args.repeat, env) for command in timm)
        print(f"{n} images 384x512 JPEG -> {width}x{height}; models {', '.join(names)}; TTA {args.tta}; CPU, {os.cpu_count()} cores; "
              f"torch threads {torch.get_num_threads()}")
        print(f"ens predict      : {n / t_ens:7.1f} images/s ({t_ens:.2f} s, start-up included; forward on {backend})")
        print(f"timm inference.py: {n / t_timm:7.1f} images/s ({t_timm:.2f} s, {len(timm)} run{'s' if len(timm) > 1 else ''}: "
              f"{len(names)} model{'s' if len(names) > 1 else ''} x {len(folders)} pass{'es' if len(folders) > 1 else ''})")
        print(f"-> ens is {t_timm / t_ens:.2f}x timm's inference.py; its probabilities differ from the eager model's by at most {worst:.1e}")


if __name__ == "__main__":
    main()
