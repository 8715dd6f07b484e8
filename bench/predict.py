"""Throughput of `ens predict` against the naive loop and against the bound.

On the same full-size images (384 x 512 JPEGs) and the same models (hflip TTA):

- ens: one `predict` call for all models (one decode per image, views batched);
- naive: each model in turn, its own DataLoader (decode again), ttach's ClassificationTTAWrapper
  (one forward per view), softmax;
- bound: decode-only (the same DataLoader, no model) and forward-only (every model on the
  pre-decoded tensors, both views in one batch, channels_last and, on CPU, traced and frozen as
  ens runs them). With perfect overlap a run takes max(decode, forward); with none, decode + forward.

In float32 on CUDA all three run without TF32, as ens does (cuDNN's default convolutions use it);
a line shows the forward passes with it. On CUDA the bench also times `ens predict` once as a
command: a fresh process, which pays CUDA's start, cuDNN's loading and each new shape's kernels
(19-26 s on an H200) before its speed shows.
On CPU it also times ens with --no-freeze and the forward-only bound of the eager models, to
show what freezing (`predictors.models.FrozenOnCPU`) brings; its tracing is inside ens's time.
With onnxruntime installed, ens runs on it (``--backend auto``; the exports are made in the
warm-up and cached, as a team's second run finds them), and the bench also times ``--backend
torch`` end to end and each model's forward pass frozen against onnxruntime.
ens freezes in float32 only (under bfloat16 the tracing cost more than it saved end to end).

Each figure is taken in float32 and again in the device's mixed precision (`ens predict --amp`:
float16 on CUDA; bfloat16 on CPU, only where the CPU has bfloat16 instructions), the naive loop
under the same autocast, so each ratio compares like with like; a last line compares ens in
mixed precision with the naive float32 loop. --no-amp times float32 only.

    python bench/predict.py [--images 256] [--models a,b,c] [--size 96x128] [--device auto] [--no-amp] [--repeat 2]
    python bench/predict.py --ranks 2        # one process against 2 torch.distributed ranks

Prints images/s of each (the best of --repeat runs) and the ratios (ens / naive, and ens's time
/ the bound's time).
"""

from __future__ import annotations

import argparse
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

from ensembler.data.project import load_project  # noqa: E402
from ensembler.data.toy import make_toy_competition  # noqa: E402
from predictors.images import Geometry, ImageSet, collate, normalize  # noqa: E402
from predictors.models import FrozenOnCPU, build_model  # noqa: E402
from predictors.onnx import OnnxOnCPU  # noqa: E402
from predictors.onnx import available as onnx_available  # noqa: E402
from predictors.runner import (  # noqa: E402
    _cuda_settings,
    autocast_dtype,
    bf16_is_native,
    precision_name,
    predict,
    resolve_device,
)


def write_images(data: Path, seed: int = 0, distinct: int = 64) -> None:
    """Full-size JPEGs with some structure (JPEG decode time depends on content): `distinct` of
    them drawn, the rest byte copies in turn (drawing each took 18 s for 1,008 images)."""
    import shutil

    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:512, 0:384]
    paths = sorted((data / "eval" / "images").iterdir())
    for i, path in enumerate(paths):
        if i >= distinct:
            shutil.copyfile(paths[i % distinct], path)
            continue
        base = (np.sin(xx / rng.uniform(10, 40)) + np.cos(yy / rng.uniform(10, 40))) * 60 + 128
        pixels = np.clip(base[..., None] + rng.normal(0, 20, size=(512, 384, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, format="JPEG", quality=90)


REPEAT = 1


def timed(fn) -> float:
    """The best of REPEAT wall-clock timings (shared machines vary by 10-20 % run to run)."""
    best = float("inf")
    for _ in range(REPEAT):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--models", default="resnet18,mobilenetv3_large_100,efficientnet_b0")
    parser.add_argument("--size", default="96x128", help="resize, width x height")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-amp", action="store_true", help="time float32 only")
    parser.add_argument("--repeat", type=int, default=2, help="report the best of N runs of each")
    parser.add_argument("--ranks", type=int, default=1, help="with N > 1: time ens predict in one process against N torch.distributed ranks (gloo on CPU, NCCL on CUDA), each as a fresh command, and stop")
    args = parser.parse_args()
    global REPEAT
    REPEAT = args.repeat
    width, height = map(int, args.size.split("x"))
    device = resolve_device(args.device)
    on_cpu = device.type == "cpu"
    names = args.models.split(",")
    # float32, then the device's mixed precision (bfloat16 on CPU only where it is native)
    amps = [False] if args.no_amp or (on_cpu and not bf16_is_native()) else [False, True]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        comp = make_toy_competition(root, n_people=5, n_eval_people=max(1, args.images // 7), seed=0)
        write_images(comp.data)
        n = len(comp.eval)
        pre = {"resize": [width, height], "mean": [0.548, 0.504, 0.479], "std": [0.237, 0.247, 0.246]}
        entries = []
        for name in names:
            entry = {"name": name, "architecture": name, "checkpoint": f"{name}.pth", "layout": "classes18", "preprocess": pre, "tta": "hflip"}
            entries.append(entry)
        (root / "model_zoo.yaml").write_text(yaml.safe_dump({"project": {"data": str(comp.data)}, "models": entries}, sort_keys=False))
        project = load_project(root / "model_zoo.yaml")
        torch.manual_seed(0)
        models = {}
        for entry in project.models:
            models[entry.name] = build_model(entry).eval()
            torch.save(models[entry.name].state_dict(), entry.checkpoint)
        print(f"{n} images 384x512 JPEG -> {width}x{height}; models {', '.join(names)}; hflip TTA; "
              f"device {device}; batch {args.batch_size}; workers {args.workers}; torch threads {torch.get_num_threads()}")

        if args.ranks > 1:
            compare_ranks(project, names, device, args)
            return

        def ens(amp: bool, freeze: bool = True, workers: int = args.workers, backend: str = "auto") -> None:
            predict(project, names, tta="hflip", device=str(device), batch_size=args.batch_size, workers=workers, force=True, amp=amp, freeze=freeze, backend=backend)

        paths = [str(comp.data / "eval" / "images" / i) for i in comp.eval["ImageID"]]
        geometry = Geometry((width, height), None, "bilinear")
        loader = torch.utils.data.DataLoader(ImageSet(paths, [geometry]), batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate)
        batches: list[torch.Tensor] = []
        t_decode = timed(lambda: batches.__setitem__(slice(None), [b[1][0] for b in loader]))
        pre = project.models[0].preprocess
        print(f"decode only : {n / t_decode:8.1f} images/s ({t_decode:.2f} s)")

        t_naive32 = None  # the naive float32 loop, for the last comparison
        for amp in amps:
            dtype = autocast_dtype(device, amp)
            label = precision_name(dtype) + ("" if dtype is None else " autocast")
            ens(amp, workers=0 if on_cpu else args.workers)  # warm-up (first-call allocations and kernels), not timed; on CUDA with the workers (one process decoding 12,600 images alone would hold the GPU bench for minutes)
            t_ens = timed(lambda: ens(amp))
            frozen_run = on_cpu and dtype is None  # ens freezes in float32 only; the bound runs the models as ens does
            t_eager = timed(lambda: ens(amp, freeze=False)) if frozen_run else None
            with_ort = frozen_run and onnx_available()
            t_torch = timed(lambda: ens(amp, backend="torch")) if with_ort else None
            t_naive = timed(lambda: naive(paths, models, (height, width), device, args.batch_size, args.workers, dtype))
            forward_only(batches[:1] + batches[-1:], models, pre, device, dtype)  # each shape's first pass (CUDA: kernels loaded and compiled, 0.5-4.8 s a model at 384x512), not timed, as ens's warm-up
            t_forward_eager = timed(lambda: forward_only(batches, models, pre, device, dtype))
            t_forward = t_forward_eager
            t_forward_tf32 = timed(lambda: forward_only(batches, models, pre, device, dtype, tf32=True)) if device.type == "cuda" and dtype is None else None
            if frozen_run:
                frozen = {k: FrozenOnCPU(m.to(memory_format=torch.channels_last)) for k, m in models.items()}
                forward_only(batches[:1], frozen, pre, device, dtype)  # trace once per model, as ens does, not timed
                t_forward = timed(lambda: forward_only(batches, frozen, pre, device, dtype))
            t_forward_ort = None
            if with_ort:
                exported = {k: OnnxOnCPU(m, lambda shape, k=k: root / "onnx" / f"{k}-{'x'.join(map(str, shape))}.onnx", frozen[k], k) for k, m in models.items()}
                forward_only(batches[:1], exported, pre, device, dtype)  # export once per model, as ens does (its cache), not timed
                t_forward_ort = timed(lambda: forward_only(batches, exported, pre, device, dtype))
                per_model = {k: (timed(lambda k=k: forward_only(batches, {k: frozen[k]}, pre, device, dtype)), timed(lambda k=k: forward_only(batches, {k: exported[k]}, pre, device, dtype))) for k in models}

            fastest = min(t_forward, t_forward_ort) if t_forward_ort is not None else t_forward  # the forward ens runs
            bound_overlap, bound_serial = max(t_decode, fastest), t_decode + fastest
            print(f"--- {label} (ens and the naive loop alike)")
            print(f"ens predict : {n / t_ens:8.1f} images/s ({t_ens:.2f} s){' (onnxruntime, exports cached)' if with_ort else ' (frozen models, tracing included)' if frozen_run else ''}")
            if t_torch is not None:
                print(f"  --backend torch: {n / t_torch:7.1f} images/s ({t_torch:.2f} s) (frozen models, tracing included) -> onnxruntime is {t_torch / t_ens:.2f}x it end to end")
            if t_eager is not None:
                print(f"  --no-freeze: {n / t_eager:7.1f} images/s ({t_eager:.2f} s)")
            print(f"naive loop  : {n / t_naive:8.1f} images/s ({t_naive:.2f} s)  -> ens is {t_naive / t_ens:.2f}x the naive way")
            print(f"forward only: {n / t_forward:8.1f} images/s ({t_forward:.2f} s){' (frozen)' if frozen_run else ''}")
            if t_forward_tf32 is not None:
                print(f"  with TF32 : {n / t_forward_tf32:8.1f} images/s ({t_forward_tf32:.2f} s) (cuDNN's default; ens's float32 is float32, without it)")
            if frozen_run:
                print(f"  eager     : {n / t_forward_eager:8.1f} images/s ({t_forward_eager:.2f} s)")
            if t_forward_ort is not None:
                print(f"  onnxruntime: {n / t_forward_ort:7.1f} images/s ({t_forward_ort:.2f} s) -> {t_forward / t_forward_ort:.2f}x the frozen copies")
                for k, (t_f, t_o) in per_model.items():
                    print(f"    {k:<24} frozen {1000 * t_f / len(batches):7.1f} ms a batch, onnxruntime {1000 * t_o / len(batches):7.1f} ms ({t_f / t_o:.2f}x)")
            print(f"bound       : {n / bound_overlap:8.1f} images/s with perfect overlap, {n / bound_serial:.1f} with none "
                  f"-> ens takes {t_ens / bound_overlap:.2f}x / {t_ens / bound_serial:.2f}x the bound's time")
            if dtype is None:
                t_naive32 = t_naive
            elif t_naive32 is not None:
                print(f"ens {label} against the naive float32 loop: {t_naive32 / t_ens:.2f}x")
        if not on_cpu:
            one = [sys.executable, "-m", "ensembler", *ens_args(project, names, device, args, args.workers)]
            start = time.perf_counter()
            subprocess.run(one, check=True, capture_output=True)
            t_one = time.perf_counter() - start
            print(f"ens predict as a command, {precision_name(autocast_dtype(device, not args.no_amp))}: {n / t_one:8.1f} images/s ({t_one:.2f} s; a fresh process: start-up, CUDA's and the kernels' loading included)")


def ens_args(project, names, device, args, workers: int) -> list[str]:
    """The arguments of `ens predict` of `names` with hflip (the --device, --batch-size and --no-amp of the bench)."""
    kind = "cuda" if device.type == "cuda" else "cpu"
    return ["--zoo", str(project.zoo), "predict", *[a for n in names for a in ("--model", n)], "--tta", "hflip", "--device", kind, "--batch-size", str(args.batch_size), "--force", "--workers", str(workers), *(["--no-amp"] if args.no_amp else [])]


def compare_ranks(project, names, device, args) -> None:
    """`ens predict` as one command against the same under torchrun with `args.ranks` ranks, both
    from a fresh process (start-up, model loading and writing included, as a user runs them). On
    CPU the cores are shared out: each rank gets cores / ranks threads and decode workers."""
    from predictors.distributed import launch_command

    cores = os.cpu_count() or 1
    kind = "cuda" if device.type == "cuda" else "cpu"
    one = [sys.executable, "-m", "ensembler", *ens_args(project, names, device, args, args.workers)]
    per_rank = max(1, args.workers // args.ranks) if kind == "cpu" else args.workers
    many, env = launch_command([f"cuda:{i}" for i in range(args.ranks)] if kind == "cuda" else ["cpu"] * args.ranks, ens_args(project, names, device, args, per_rank))
    if kind == "cpu":
        env["OMP_NUM_THREADS"] = str(max(1, cores // args.ranks))
    n = len(project.require_data().joinpath("eval", "info.csv").read_text().splitlines()) - 1
    run = lambda command, environment=None: subprocess.run(command, env=environment, check=True, capture_output=True)  # noqa: E731
    run(one)  # warm the file cache, not timed
    t_one = timed(lambda: run(one))
    t_many = timed(lambda: run(many, env))
    print(f"1 process          : {n / t_one:8.1f} images/s ({t_one:.2f} s, start-up included)")
    print(f"{args.ranks} ranks ({kind}, torchrun): {n / t_many:8.1f} images/s ({t_many:.2f} s) -> {t_one / t_many:.2f}x")


def naive(paths, models, size, device, batch_size, workers, dtype):
    """What teams write: per model, its own DataLoader and ttach's wrapper."""
    import ttach
    from PIL import Image
    from torchvision.transforms import Compose, Normalize, Resize, ToTensor

    transform = Compose([Resize(size, Image.BILINEAR), ToTensor(), Normalize((0.548, 0.504, 0.479), (0.237, 0.247, 0.246))])

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            return transform(Image.open(paths[i]).convert("RGB"))

    out = {}
    for name, model in models.items():
        model = model.to(device)
        wrapped = ttach.ClassificationTTAWrapper(model, ttach.aliases.hflip_transform())
        preds = []
        with torch.inference_mode(), _cuda_settings(device, dtype is None), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            for x in torch.utils.data.DataLoader(Images(), batch_size=batch_size, num_workers=workers):
                preds.append(torch.softmax(wrapped(x.to(device)).float(), 1).cpu())
        out[name] = torch.cat(preds)
    return out


def forward_only(batches, models, pre, device, dtype, tf32: bool = False):
    """Every model on the decoded batches, both views in one batch. In float32 on CUDA without
    TF32, as ens runs it, unless ``tf32`` (cuDNN's default, what a plain loop gets)."""
    xs = [normalize(b.to(device), pre).contiguous(memory_format=torch.channels_last) for b in batches]
    if device.type == "cuda":
        torch.cuda.synchronize()
    with torch.inference_mode(), _cuda_settings(device, dtype is None and not tf32), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for model in models.values():
            model = model.to(device, memory_format=torch.channels_last)
            for x in xs:
                model(torch.cat([x, x.flip(3)])).float().cpu()
    if device.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
