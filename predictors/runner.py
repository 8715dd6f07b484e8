"""`ens predict`: run zoo models over a split with batched TTA and save prediction sets.

One pass over the images serves every model asked for: each image is decoded once (DataLoader
workers), resized once per distinct geometry, normalised once per distinct preprocessing, and
fed to every model that shares it. Splits:

- ``eval``: the images of ``info.csv``; a fold group averages its fold models;
- ``val``: the train images of the validation fold; a fold group uses the model that held that
  fold out; a single model must not claim another fold (leakage);
- ``oof``: every train image in the fold file, each predicted by the fold model that never saw
  it (fold groups only).

A set is recomputed only when its cache key changes: checkpoint hashes, architecture, layout,
preprocessing, TTA, precision (float32 or the autocast dtype), the images (paths, sizes,
modification times) and, for labelled splits, the fold file. Sets are written when the pass is over, each atomically: an interrupted run leaves
the store as it was.

Under torchrun the ranks share the images out and rank 0 writes (`predictors.distributed`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ensembler.data.dataset import folds_of, images_fingerprint, read_eval, read_folds, read_train
from ensembler.data.project import Project
from ensembler.data.store import PredictionSet, Split
from ensembler.data.zoo import Layout, TTAPolicy, ZooEntry
from ensembler.errors import EnsError

from . import distributed
from .images import Geometry, ImageSet, collate, normalize, unreadable_error
from .layouts import to_tasks
from .models import FrozenOnCPU, load_model, verify_sha256
from .tta import build_transforms, tta_predict

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Images:
    """The images of one split: ImageIDs, paths, joint labels (labelled splits) and folds (train)."""

    ids: np.ndarray
    paths: list[str]
    labels: np.ndarray | None
    folds: np.ndarray | None

    def take(self, rows: np.ndarray) -> Images:
        """The images at `rows` ``(m,)`` (a rank's shard)."""
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return Images(self.ids[rows], [self.paths[i] for i in rows], pick(self.labels), pick(self.folds))

    def fingerprint(self) -> str:
        """sha256 over (ImageID, size, mtime) of every image: a changed or replaced file shows."""
        return images_fingerprint(self.ids, self.paths)


def split_images(project: Project, split: Split) -> Images:
    """The images `split` covers (see the module doc); a declared competition's: the sample
    submission's (eval), or its labelled ones with folds by its groups."""
    preset = project.competition.is_preset
    if preset:
        data = project.require_data()
    else:
        from ensembler.data.declared import IMAGE_PATH, read_labelled, read_sample

        competition, data = project.competition, project.require_data(declared=True)
    if split is Split.EVAL:
        if not preset:
            sample = read_sample(competition, data)
            return Images(sample[competition.eval.id].to_numpy(object), list(sample[IMAGE_PATH]), None, None)
        table = read_eval(data)
        missing = [p for p in table["path"] if not os.path.isfile(p)]
        if missing:
            raise EnsError(f"eval/info.csv and eval/images disagree: {len(missing)} listed image(s) missing, e.g. {missing[0]}")
        return Images(table["ImageID"].to_numpy(object), list(table["path"]), None, None)
    if not project.folds.is_file():
        raise EnsError(f"--split {split} needs the team's fold file {project.folds} (run `ens split` first)")
    # the labels as given: a stored set never carries a label fix (the fix file in force is applied when it is read)
    table, key, unit = (read_train(data), "profile", "person") if preset else (read_labelled(competition, data), "group", "group")
    folds = folds_of(read_folds(project.folds, table[key].to_numpy(object), unit), table[key].to_numpy(object), project.folds, unit)
    keep = folds == project.val_fold if split is Split.VAL else np.ones(len(table), dtype=bool)
    table = table[keep]
    return Images(table["ImageID"].to_numpy(object), list(table["path"]), table["label"].to_numpy(), folds[keep])


@dataclass
class Job:
    """One model x split: its loaded models (fold -> module) and the accumulated outputs."""

    entry: ZooEntry
    tta: TTAPolicy
    key: dict[str, Any]
    folds: list[int | None]  # which checkpoints the split needs (None: the single one)
    models: dict[int | None, torch.nn.Module] = field(default_factory=dict)
    out: torch.Tensor | None = None
    hashes: dict[Any, str] = field(default_factory=dict)  # checkpoint sha256 per fold
    dtype: torch.dtype | None = None  # its autocast dtype (None: float32; see `job_dtype`)
    notes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.entry.name


@dataclass(frozen=True)
class Outcome:
    """What happened to one model x split."""

    name: str
    split: Split
    status: str  # "written" or "cached"
    rows: int
    precision: str  # "float32", or the autocast dtype: "float16" (CUDA), "bfloat16" (CPU)
    backend: str = "torch"  # where the CPU forward passes ran: "torch" or "onnxruntime"
    notes: tuple[str, ...] = ()  # a model that ONNX Runtime could not run, and why
    waited: float | None = None  # the share of the run spent waiting for decoded images (written sets)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise EnsError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if device not in ("cpu", "cuda"):
        raise EnsError(f"--device {device!r}: choose auto, cpu or cuda")
    return torch.device(device)


def autocast_dtype(dev: torch.device, amp: bool | None) -> torch.dtype | None:
    """The autocast dtype of a run, None for float32. ``amp`` None means the device's default:
    float16 on CUDA; float32 on CPU, where ``amp=True`` gives bfloat16 (fast on CPUs with
    bfloat16 instructions, `bf16_is_native`; probabilities move by up to about 0.03)."""
    if dev.type == "cuda":
        return None if amp is False else torch.float16
    return torch.bfloat16 if amp else None


def bf16_is_native() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX); without them bfloat16
    is emulated and slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def job_dtype(layout: Layout, dtype: torch.dtype | None) -> torch.dtype | None:
    """A model's autocast dtype in a run under `dtype`: an age-in-years head is regressed, and
    float16 steps (1/32 of a year near 60, 1/4 in bfloat16) could move an age across a band edge,
    so a layout with one runs in float32."""
    return None if any(h.years for h in layout.heads) else dtype


def precision_name(dtype: torch.dtype | None) -> str:
    """A run's precision as the prediction sets record it: float32, float16 or bfloat16."""
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


def _folds_needed(entry: ZooEntry, split: Split, images: Images, val_fold: int) -> list[int | None]:
    if not entry.is_fold_group:
        if split is Split.OOF:
            raise EnsError(f"model {entry.name!r} is one checkpoint: out-of-fold predictions need a fold group (use --split val)")
        if split is Split.VAL and entry.fold is not None and entry.fold != val_fold:
            raise EnsError(
                f"model {entry.name!r} held out fold {entry.fold}, not the validation fold {val_fold}: "
                "it trained on the validation images"
            )
        return [None]
    if split is Split.EVAL:
        return sorted(entry.folds)
    needed = sorted(set(images.folds.tolist()))
    lacking = [f for f in needed if f not in entry.folds]
    if lacking:
        raise EnsError(f"fold group {entry.name!r} has no checkpoint for fold(s) {', '.join(map(str, lacking))}")
    return needed


def _cache_key(entry: ZooEntry, tta: TTAPolicy, split: Split, hashes: dict, images_fp: str, folds_fp: str | None, precision: str, device: str, backend: str = "torch") -> dict[str, Any]:
    """What a prediction set depends on: a set made under another key is made again. The device
    kind is in it: a GPU's kernels (and float16) give other last digits than the CPU's."""
    return {
        "architecture": entry.architecture,
        "kwargs": dict(entry.kwargs),
        "checkpoints": {str(k): v for k, v in hashes.items()},
        "layout": entry.layout.label,
        "preprocess": dataclasses.asdict(entry.preprocess),
        "tta": dataclasses.asdict(tta),
        "split": split.value,
        "images": images_fp,
        "folds": folds_fp,
        "precision": precision,
        "device": device,
        **({"backend": backend} if backend != "torch" else {}),  # the torch path keeps the keys it had
    }


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=list))


@dataclass(frozen=True)
class RunOptions:
    """How one `predict` call runs its models, resolved once (CLI flag > zoo entry > default).

    tta: a policy overriding every entry's (None: each entry's own); amp: automatic mixed
    precision (`autocast_dtype`; None: on for CUDA, off for CPU); freeze: on CPU in float32,
    run each model as a traced, frozen copy (`models.FrozenOnCPU`); backend: on CPU in float32,
    ``onnxruntime`` (`onnx.OnnxOnCPU`), ``torch``, or ``auto`` (ONNX Runtime when installed)."""

    tta: TTAPolicy | None = None
    batch_size: int | None = None  # None: `default_batch` for the device
    workers: int | None = None
    force: bool = False
    amp: bool | None = None
    channels_last: bool = True
    freeze: bool = True
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise EnsError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.backend not in BACKENDS:
            raise EnsError(f"--backend {self.backend!r}: choose {', '.join(BACKENDS)}")


BACKENDS = ("auto", "torch", "onnxruntime")


def resolve_backend(backend: str, dev: torch.device, dtype: torch.dtype | None, freeze: bool) -> str:
    """Where the CPU forward passes run: ``onnxruntime`` when asked (on the CPU in float32, with
    it installed) or, with ``auto``, when installed and the torch path would be the frozen copy;
    else ``torch`` (eager or frozen, as before)."""
    from . import onnx

    cpu_float32 = dev.type == "cpu" and dtype is None
    if backend == "onnxruntime":
        if not cpu_float32:
            raise EnsError("--backend onnxruntime runs on the CPU in float32: drop --amp and --device cuda, or use --backend torch")
        if not onnx.available():
            raise EnsError('--backend onnxruntime: onnxruntime is not installed (pip install -e ".[onnx]")')
        return "onnxruntime"
    return "onnxruntime" if backend == "auto" and cpu_float32 and freeze and onnx.available() else "torch"


def code_digest(model: torch.nn.Module) -> str:
    """sha256 of the source file of `model`'s class (a team's ``model.py``, timm's module of the
    architecture): what an export was traced from besides the weights. Empty when not found."""
    import inspect

    try:
        source = inspect.getsourcefile(type(model))
        return hashlib.sha256(Path(source).read_bytes()).hexdigest() if source else ""
    except (TypeError, OSError):
        return ""


def onnx_path(project: Project, entry: ZooEntry, checkpoint_hash: str, shape: tuple[int, ...], code: str = "") -> Path:
    """The cached ONNX model of `entry` (one checkpoint) for input `shape` ``(C, H, W)``: named by
    what the export depends on (architecture, its arguments, the model's code (`code_digest`),
    the checkpoint, the output layout, the input shape, torch's version, the opset); in
    ``predictions-onnx`` beside the prediction store (``predictions``)."""
    import json

    from .onnx import OPSET

    parts = {"architecture": entry.architecture, "kwargs": dict(entry.kwargs), "checkpoint": checkpoint_hash, "layout": entry.layout.label, "shape": list(shape), "torch": torch.__version__, "opset": OPSET}
    if code:
        parts["code"] = code
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=list).encode()).hexdigest()[:24]
    return project.predictions.with_name(project.predictions.name + "-onnx") / f"{entry.name}-{digest}.onnx"


def predict(
    project: Project,
    names: Sequence[str],
    split: Split = Split.EVAL,
    tta: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    force: bool = False,
    amp: bool | None = None,
    progress: Progress | None = None,
    channels_last: bool = True,
    freeze: bool = True,
    backend: str = "auto",
) -> list[Outcome]:
    """Predict `names` on `split` and write their prediction sets (see the module doc).

    tta: a preset name overriding every entry's policy (CLI flag > zoo entry > none).
    amp: automatic mixed precision (`autocast_dtype`); None: on for CUDA, off for CPU.
    freeze: on CPU in float32, run each model as a traced, frozen copy (`models.FrozenOnCPU`).
    backend: on CPU in float32, ``auto`` (ONNX Runtime when installed), ``onnxruntime`` or ``torch``.
    """
    if not names:
        raise EnsError("name at least one model (--model NAME)")
    options = RunOptions(TTAPolicy.parse(tta) if tta is not None else None, batch_size, workers, force, amp, channels_last, freeze, backend)
    split = Split(split)
    entries = [project.model(n) for n in dict.fromkeys(names)]
    images = split_images(project, split)
    dev = resolve_device(device)
    with distributed.world(dev.type) as where:
        return _predict(project, entries, split, images, options, distributed.rank_device(dev, where), where, progress)


def _predict(project: Project, entries: list[ZooEntry], split: Split, images: Images, options: RunOptions, dev: torch.device, where: distributed.World, progress: Progress | None) -> list[Outcome]:
    """`predict` on this rank: its shard of the images (all of them on one device); rank 0 writes."""
    dtype = autocast_dtype(dev, options.amp)
    precision = precision_name(dtype)
    backend = resolve_backend(options.backend, dev, dtype, options.freeze)
    images_fp = images.fingerprint()
    folds_fp = None if split is Split.EVAL else hashlib.sha256(project.folds.read_bytes()).hexdigest() + f":{project.val_fold}"
    store = project.store

    jobs, outcomes = [], []
    for entry in entries:
        policy = options.tta or entry.tta
        folds = _folds_needed(entry, split, images, project.val_fold)
        hashes = verify_sha256(entry)
        own = job_dtype(entry.layout, dtype)
        notes = (f"{entry.name}: ran in float32, not {precision} (its age in years is regressed)",) if own != dtype else ()
        key = _jsonable(_cache_key(entry, policy, split, {f: hashes[f] for f in folds}, images_fp, folds_fp, precision_name(own), dev.type, backend))
        if not options.force and store.has(entry.name, split) and store.read_meta(entry.name, split).get("origin", {}).get("cache_key") == key:
            outcomes.append(Outcome(entry.name, split, "cached", len(images.ids), precision_name(own)))
            continue
        jobs.append(Job(entry, policy, key, folds, hashes=hashes, dtype=own, notes=notes))
    if not jobs:
        return outcomes

    rows = where.shard(len(images.ids))
    shard = images.take(rows) if where.distributed else images
    if progress is not None and where.distributed:  # rank 0 speaks for all: its shard's count, scaled to the split
        whole, total = progress, len(images.ids)
        progress = (lambda done, _: whole(min(done * where.size, total), total)) if where.leader else None
    error, waited = None, None
    try:
        for job in jobs:  # load every model before reading any image: a bad checkpoint fails fast
            paths = job.entry.folds if job.entry.is_fold_group else {None: job.entry.checkpoint}
            for fold in job.folds:
                try:
                    model = load_model(job.entry, paths[fold], dev).to(dev)
                except torch.cuda.OutOfMemoryError:
                    raise EnsError(f"out of memory on {dev} moving {job.name!r} there; free the device or predict it alone (ens predict --model {job.name})") from None
                if options.channels_last:
                    model = model.to(memory_format=torch.channels_last)
                # frozen copies pay off in float32 only: under bfloat16 their tracing cost more than they saved (bench/predict.py)
                torch_path = FrozenOnCPU(model) if options.freeze and dev.type == "cpu" and job.dtype is None else model
                if backend == "onnxruntime":
                    from .onnx import OnnxOnCPU

                    path_for = lambda shape, entry=job.entry, sha=job.hashes[fold], code=code_digest(model): onnx_path(project, entry, sha, shape, code)  # noqa: E731
                    torch_path = OnnxOnCPU(model, path_for, torch_path, job.name)
                job.models[fold] = torch_path
            job.out = torch.zeros(len(shard.ids), job.entry.layout.width, device=dev)  # on the device: no sync per batch
        waited = _run(jobs, shard, split, dev, options, progress)
        for job in jobs:  # one check a model, at the end: float16 overflows are written nowhere
            if not bool(torch.isfinite(job.out).all()):
                bad = int((~torch.isfinite(job.out)).any(dim=1).sum())
                fix = "run it with --no-amp (float32)" if job.dtype is not None else "its checkpoint gives them in float32 too"
                raise EnsError(f"{job.name!r}: {bad} image(s) got outputs that are not finite (NaN or inf) in {precision_name(job.dtype)}; nothing was written; {fix}")
    except Exception as exc:  # noqa: BLE001 - on many ranks every failure must reach the others, or they wait forever
        if not where.distributed:
            raise
        error = str(exc) if isinstance(exc, EnsError) else f"{type(exc).__name__}: {exc}"
    where.agree(error)
    parts = where.gather(rows, [job.out.float().cpu().numpy() for job in jobs])

    error = None
    if where.leader:
        try:
            full = distributed.assemble(parts, len(images.ids))
            for job, out in zip(jobs, full):
                joint, tasks = to_tasks(torch.from_numpy(out), job.entry.layout)
                origin = {"type": "model", "cache_key": job.key, "owner": job.entry.owner, "tta": job.tta.label, "device": dev.type, "precision": precision_name(job.dtype), "backend": backend}
                if where.distributed:
                    origin["world_size"] = where.size
                pset = PredictionSet(
                    job.name,
                    split,
                    images.ids,
                    {t: p.numpy() for t, p in tasks.items()},
                    None if joint is None else joint.numpy(),
                    images.labels,
                    {"kind": "proba", "origin": origin, "data": {"images": images_fp}},
                    project.competition.space,
                )
                store.write(pset, overwrite=True)
        except Exception as exc:  # noqa: BLE001
            if not where.distributed:
                raise
            error = str(exc) if isinstance(exc, EnsError) else f"{type(exc).__name__}: {exc}"
    where.agree(error)
    outcomes += [Outcome(job.name, split, "written", len(images.ids), precision_name(job.dtype), backend, job.notes + tuple(n for m in job.models.values() for n in getattr(m, "notes", ())), waited) for job in jobs]
    return outcomes


def _run(jobs: list[Job], images: Images, split: Split, dev: torch.device, options: RunOptions, progress: Progress | None) -> float:
    """Decode the images once and run every job on each batch; the share of the time spent waiting for decoded images (`_Waiting`)."""
    geometries = list(dict.fromkeys(Geometry.of(j.entry.preprocess) for j in jobs))
    workers = default_workers(dev) if options.workers is None else options.workers
    loader = torch.utils.data.DataLoader(
        ImageSet(images.paths, geometries),
        batch_size=options.batch_size or default_batch(dev),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=dev.type == "cuda",
        worker_init_fn=_one_thread,
        # a worker forked from a process in which ONNX Runtime has run can hang on a lock one of
        # its threads held at the fork (seen once in CI: the workers waited forever); forkserver
        # workers come from a clean process
        multiprocessing_context="forkserver" if workers and _onnx_ran() else None,
    )
    transforms = {id(j): build_transforms(j.tta) for j in jobs}
    folds = torch.from_numpy(images.folds) if images.folds is not None else None
    done, unreadable = 0, []
    waiting = _Waiting(loader)
    with torch.inference_mode(), _cuda_settings(dev, any(j.dtype is None for j in jobs)):
        for indices, per_geometry, errors in waiting:
            unreadable += errors
            done += len(indices)
            if progress is not None:
                progress(done, len(images.ids))
            if unreadable:  # nothing will be written: only decode on, to name every bad image
                continue
            on_device: dict[Geometry, torch.Tensor] = {}
            normalized: dict[Any, torch.Tensor] = {}
            for job in jobs:
                pre = job.entry.preprocess
                key = (Geometry.of(pre), pre.mean, pre.std)
                if key not in normalized:
                    if key[0] not in on_device:
                        raw = per_geometry[geometries.index(key[0])]
                        if isinstance(raw, list):
                            raise EnsError("images of different sizes in one batch: give the model a preprocess.resize")
                        on_device[key[0]] = raw.to(dev, non_blocking=True)
                    x = normalize(on_device[key[0]], pre)
                    normalized[key] = x.contiguous(memory_format=torch.channels_last) if options.channels_last else x
                rows = _rows(indices)
                with torch.autocast(dev.type, dtype=job.dtype) if job.dtype is not None else contextlib.nullcontext():
                    job.out[rows] = _forward(job, normalized[key], indices, folds, split, transforms[id(job)], dev, len(indices))
    if unreadable:
        raise unreadable_error(unreadable)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)  # the device's queued work is part of the run
    return waiting.share()


class _Waiting:
    """The loader's batches, and how much of the run went on waiting for them: near 1 a run is
    decode-bound (the models wait for images), near 0 compute-bound."""

    def __init__(self, loader: Any):
        self.loader, self.waited, self.start = loader, 0.0, time.perf_counter()

    def __iter__(self):
        batches = iter(self.loader)
        while True:
            asked = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.waited += time.perf_counter() - asked
            yield batch

    def share(self) -> float:
        return self.waited / max(time.perf_counter() - self.start, 1e-9)


def _rows(indices: torch.Tensor) -> slice | torch.Tensor:
    """A batch's rows of the output: the loader reads in order, so a slice (indexing a CUDA
    tensor with a host index tensor copies the index over and waits for it)."""
    first, count = int(indices[0]), len(indices)
    return slice(first, first + count) if int(indices[-1]) - first == count - 1 else indices


def _forward(job: Job, x: torch.Tensor, indices: torch.Tensor, folds: torch.Tensor | None, split: Split, transforms, dev: torch.device, batch: int) -> torch.Tensor:
    def run(model: torch.nn.Module, subset: torch.Tensor) -> torch.Tensor:
        try:
            return tta_predict(model, subset, transforms, job.tta, job.entry.layout, job.name).float()
        except torch.cuda.OutOfMemoryError:
            raise EnsError(f"out of memory on {dev} running {job.name!r} at --batch-size {batch}; try --batch-size {max(1, batch // 2)}") from None
        except RuntimeError as exc:
            if dev.type != "cpu" and "same device" in str(exc):
                raise EnsError(f"{job.name!r} mixes devices on {dev} ({str(exc).splitlines()[0][:160]}): a TorchScript file traced on the CPU can carry CPU tensors made inside forward; trace it again on {dev.type}, or predict with --device cpu") from None
            raise

    if None in job.models:
        return run(job.models[None], x)
    if split is Split.EVAL:
        return torch.stack([run(m, x) for m in job.models.values()]).mean(0)
    out = torch.empty(len(x), job.entry.layout.width, device=x.device)
    row_folds = folds[indices]  # on the host: where each fold's rows are is known without the device
    for fold in row_folds.unique().tolist():
        where = torch.nonzero(row_folds == fold).squeeze(1).to(x.device, non_blocking=True)
        out.index_copy_(0, where, run(job.models[fold], x.index_select(0, where)))
    return out


@contextlib.contextmanager
def _cuda_settings(dev: torch.device, float32: bool):
    """On CUDA in a float32 run, no TF32 (cuDNN's convolutions use it by default, and a set
    labelled float32 would be TF32's). Restored on exit.

    cuDNN's autotuning (``cudnn.benchmark``) is left as the process has it: on an H200 it added
    16-18 s to each fresh ``ens predict`` of three CNNs at 384x512 and gave back nothing in
    float16 (2.59 s tuned against 2.37 s untuned for 1,008 images) and 0.3 s in float32."""
    backends = torch.backends
    # torch's fp32_precision settings where it has them (reading the legacy allow_tf32 raises in a
    # process that set those), else the legacy flags; False and "ieee" both mean no TF32
    if hasattr(backends.cuda.matmul, "fp32_precision"):
        flags, off = [(backends.cuda.matmul, "fp32_precision"), (backends.cudnn.conv, "fp32_precision")], "ieee"
    else:
        flags, off = [(backends.cuda.matmul, "allow_tf32"), (backends.cudnn, "allow_tf32")], False
    before = [getattr(owner, name) for owner, name in flags]
    if dev.type == "cuda" and float32:
        for owner, name in flags:
            setattr(owner, name, off)
    try:
        yield
    finally:
        for (owner, name), value in zip(flags, before):
            setattr(owner, name, value)


def default_batch(dev: torch.device) -> int:
    """Images per batch when none is asked for: 32, on the CPU and on CUDA alike. Each TTA view
    adds a copy.

    A DataLoader worker decodes a whole batch, so larger batches leave workers idle and make the
    first batch wait: on an H200 with 16 workers (1,008 images, three CNNs with hflip at 96x128)
    batches of 256 ran at 517-538 images/s, of 32 at 658-709, and a batch of 32 (64 with the
    flip) already ran each model's forward faster than the 16 workers decode (2,557-5,258
    images/s at 384x512 in float16, against 1,727)."""
    return 32


def default_workers(dev: torch.device) -> int:
    """Decode workers when none are asked for: on CPU up to 8 (the model needs the cores too);
    on CUDA the host's cores shared among this host's ranks (torchrun's ``LOCAL_WORLD_SIZE``),
    up to 16, so a GPU is not kept waiting by a fixed 8."""
    cpus = os.cpu_count() or 1
    if dev.type != "cuda":
        return min(8, cpus)
    return max(1, min(16, cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))))


def _onnx_ran() -> bool:
    """Whether an ONNX Runtime session was made in this process (its threads then outlive the
    run). A run makes its sessions at its first batch, after its workers started, so a fresh
    process (the CLI) forks its workers as before; only a process in which ONNX Runtime already
    ran (a notebook's second run, a test session) starts them from a forkserver (about 2 s)."""
    import sys

    onnx = sys.modules.get(f"{__package__}.onnx")
    return bool(onnx is not None and onnx.SESSIONS_MADE)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # workers decode and resize; the main process owns the cores for the models

