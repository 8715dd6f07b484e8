"""Zoo entries -> torch modules: architecture, checkpoint, weights.

Architectures: a timm name (``timm:`` optional), a torchvision name (``torchvision:`` to force),
``package.module:Class`` for a team's own code (the entry's ``code`` folder goes on
``sys.path``), or ``torchscript`` (the checkpoint is then a scripted module). Models are always
built with random weights (``pretrained=False``); the checkpoint supplies them.

Checkpoints: a plain ``state_dict``, ``{"state_dict": …}``, ``{"model": …}``, keys prefixed
with ``module.`` (DataParallel), or ``.safetensors``. Loaded with ``weights_only=True``; a file
that needs full unpickling is refused unless its entry says ``trusted: true``.
"""

from __future__ import annotations

import contextlib
import importlib
import pickle
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ensembler.data.io import sha256_file
from ensembler.data.zoo import ZooEntry
from ensembler.errors import EnsError, did_you_mean, preview

CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict", "net")


@contextlib.contextmanager
def _on_path(folder: Path | None) -> Iterator[None]:
    if folder is None:
        yield
        return
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(folder))


def _import_from(module_name: str, code: Path | None):
    """Import `module_name`, from `code` when given: two teams' ``model.py`` must not shadow each other."""
    if code is None:
        return importlib.import_module(module_name)
    top = module_name.split(".")[0]
    owned = lambda key: key == top or key.startswith(top + ".")  # noqa: E731
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if owned(k)}
    try:
        with _on_path(code):
            return importlib.import_module(module_name)
    finally:
        for key in [k for k in sys.modules if owned(k)]:
            del sys.modules[key]
        sys.modules.update(saved)


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


def build_model(entry: ZooEntry) -> nn.Module:
    """A randomly initialised module for `entry` (not for ``torchscript``), output width = layout's."""
    arch, width = entry.architecture, entry.layout.width
    kwargs = dict(entry.kwargs)
    prefix, _, rest = arch.partition(":")
    try:
        if prefix == "torchvision" or (not rest and _is_torchvision(arch)):
            import torchvision

            return torchvision.models.get_model(rest or arch, weights=None, num_classes=width, **kwargs)
        if prefix == "timm" or not rest:
            import timm

            name = rest or arch
            if not timm.is_model(name):
                raise EnsError(f"model {entry.name!r}: unknown architecture {arch!r}{did_you_mean(name, _timm_names())}")
            return timm.create_model(name, pretrained=False, num_classes=width, **kwargs)
        module = _import_from(prefix, entry.code)
        cls = getattr(module, rest, None)
        if cls is None:
            raise EnsError(f"model {entry.name!r}: {prefix} has no {rest!r}{did_you_mean(rest, dir(module))}")
        return cls(**kwargs)
    except ImportError as exc:
        where = f" (code folder {entry.code})" if entry.code else " (set code: to the folder holding it)"
        raise EnsError(f"model {entry.name!r}: cannot import {prefix!r}{where}: {exc}") from None
    except TypeError as exc:
        raise EnsError(f"model {entry.name!r}: building {arch} with kwargs {kwargs}: {exc}") from None


def _is_torchvision(name: str) -> bool:
    import timm

    if timm.is_model(name):
        return False  # timm first: the zoo's plain names are timm names unless timm lacks them
    import torchvision

    return name in torchvision.models.list_models()


def _unwrap(obj: Any, path: Path) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping):
        for key in CHECKPOINT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                inner = inner.state_dict()
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EnsError(f"{path}: no state_dict found (expected tensors, or one under {', '.join(CHECKPOINT_KEYS)})")
    keys = list(obj)
    if all(k.startswith("module.") for k in keys):  # saved from DataParallel / DDP
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


SAFE_MODULES = ("torch", "collections", "builtins", "_codecs", "numpy")  # what state_dicts reference


def _pickle_globals(data: bytes) -> list[str]:
    """The ``module.name`` globals a pickle references, read with `pickletools` (nothing runs)."""
    import pickletools

    found, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # a truncated or odd stream: what was read so far
        pass
    return list(dict.fromkeys(found))


def refused_object(path: Path, message: str) -> str:
    """The object a weights-only load refused: from torch's message (``GLOBAL posix.system``),
    else the first global of the file's pickle outside the modules a state_dict uses."""
    import re
    import zipfile

    named = re.search(r"GLOBAL ([\w.]+)", message)
    if named:
        return named.group(1)
    if zipfile.is_zipfile(path):  # torch.save's format: the pickle is <archive>/data.pkl
        with zipfile.ZipFile(path) as archive:
            member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            data = archive.read(member) if member else b""
    else:
        data = Path(path).read_bytes()
    others = [g for g in _pickle_globals(data) if g.split(".")[0] not in SAFE_MODULES]
    return others[0] if others else "an object outside torch's allowed types"


def read_state_dict(path: Path, trusted: bool = False) -> Mapping[str, torch.Tensor]:
    """The tensors of a checkpoint file (see the module doc for the accepted forms)."""
    path = Path(path)
    if not path.is_file():
        raise EnsError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return _unwrap(load_file(str(path)), path)
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols; the refusal below says what matters
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trusted:
            raise EnsError(
                f"{path}: refused: it needs full unpickling, which would call {refused_object(path, str(exc))} "
                "and can run any code; if you trust the file set trusted: true in its zoo entry, "
                "else re-save it as a state_dict (torch.save(model.state_dict(), …)) or .safetensors"
            ) from None
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError) as exc:
        raise EnsError(f"{path}: not a readable checkpoint ({str(exc).strip().splitlines()[0][:160]})") from None
    return _unwrap(obj, path)


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Load `state` strictly; a mismatch names the first missing and unexpected keys and shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise EnsError(
            f"{path}: does not fit the architecture: {len(missing)} missing key(s) ({preview(missing)}), "
            f"{len(unexpected)} unexpected ({preview(unexpected)})"
        )
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise EnsError(f"{path}: {key} has shape {tuple(value.shape)}, the architecture wants {tuple(own[key].shape)}")
    model.load_state_dict(state, strict=True)


def load_model(entry: ZooEntry, checkpoint: Path, device: torch.device | str = "cpu") -> nn.Module:
    """Build `entry`'s architecture with `checkpoint`'s weights, in eval mode, on the CPU (a
    TorchScript file on `device`: loading it there moves the constants it keeps too, which
    ``.to(device)`` would not)."""
    if entry.architecture == "torchscript":
        if not Path(checkpoint).is_file():
            raise EnsError(f"{checkpoint}: checkpoint not found")
        try:
            with warnings.catch_warnings():  # deprecated in torch 2.14 in favour of torch.export, still what teams have
                warnings.simplefilter("ignore", FutureWarning)
                model = torch.jit.load(str(checkpoint), map_location=device)
        except RuntimeError as exc:
            raise EnsError(f"{checkpoint}: not a TorchScript file ({str(exc).strip().splitlines()[0][:160]})") from None
        return model.eval()
    model = build_model(entry)
    load_weights(model, read_state_dict(checkpoint, entry.trusted), checkpoint)
    return model.eval()


def checkpoints(entry: ZooEntry) -> dict[int | None, Path]:
    """Fold -> checkpoint (``{None: path}`` for a single model)."""
    return dict(entry.folds) if entry.is_fold_group else {None: entry.checkpoint}


def verify_sha256(entry: ZooEntry) -> dict[int | None, str]:
    """sha256 of each checkpoint; a missing file or a hash that differs from the entry's is an error."""
    hashes = {}
    for fold, path in checkpoints(entry).items():
        if not path.is_file():
            raise EnsError(f"model {entry.name!r}: checkpoint {path} not found")
        hashes[fold] = sha256_file(path)
    if entry.sha256 and hashes[None] != entry.sha256:
        raise EnsError(f"model {entry.name!r}: {entry.checkpoint} has sha256 {hashes[None][:12]}…, the entry says {entry.sha256[:12]}… (changed file?)")
    return hashes


def check_entry(entry: ZooEntry) -> dict[str, Any]:
    """`ens zoo check`: files exist, hashes match, the model builds, weights load, and one dummy
    batch gives the layout's output width. Returns facts for the listing."""
    from .layouts import flatten

    hashes = verify_sha256(entry)
    pre = entry.preprocess
    w, h = pre.crop or pre.resize or (384, 512)
    params = 0
    for path in checkpoints(entry).values():
        model = load_model(entry, path)
        with torch.inference_mode():
            flatten(model(torch.zeros(2, 3, h, w)), entry.layout, entry.name)
        params = sum(p.numel() for p in model.parameters())
    return {"checkpoints": len(hashes), "params": params, "input": f"{w}x{h}", "sha256": next(iter(hashes.values()))[:12]}


def _tensors(out: Any) -> list[torch.Tensor]:
    """A model's output (tensor, tuple/list or dict of tensors) as a flat list, in a fixed order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for k in sorted(out) for t in _tensors(out[k])]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _tensors(item)]
    raise TypeError(f"unsupported output type {type(out).__name__}")


class FrozenOnCPU(nn.Module):
    """A model run as a traced, frozen TorchScript copy on CPU: freezing folds batch norms into
    the convolutions and inlines the weights, about 1.2-1.6x faster for the CNNs teams train.

    A copy is traced for each new image shape on two images and kept only if it gives the eager
    model's outputs (within `RTOL`/`ATOL`) on those two and on one image, so that a batch size
    baked into the trace (``len(x)`` in the model code) is caught too; a model that cannot be
    traced, or whose trace differs (Python-side state, value-dependent branches), runs eagerly,
    as does a shape first seen in a batch of one. The first call for a shape pays the tracing
    (0.2-1.2 s per model here).

    Under CPU autocast (``ens predict --amp``: bfloat16) the trace records the casts, so a copy
    is made per (shape, autocast dtype); eager and frozen bfloat16 runs round differently (up to
    1 % of the largest output here), so the check then allows `REDUCED` of the largest output.
    """

    RTOL, ATOL = 1e-4, 1e-5
    REDUCED = 0.05

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.requires_grad_(False)  # freezing under autocast folds the cast weights into constants
        self.frozen: dict[tuple[tuple[int, ...], torch.dtype | None], Any] = {}

    def _same(self, frozen: Any, sample: torch.Tensor, reduced: bool) -> bool:
        expected, got = _tensors(self.model(sample)), _tensors(frozen(sample))

        def close(e: torch.Tensor, g: torch.Tensor) -> bool:
            if e.shape != g.shape or e.dtype != g.dtype:
                return False
            if reduced:
                return bool(((e.float() - g.float()).abs().max() <= self.REDUCED * e.float().abs().max()).item()) if e.numel() else True
            return torch.allclose(e, g, rtol=self.RTOL, atol=self.ATOL)

        return len(expected) == len(got) and all(close(e, g) for e, g in zip(expected, got))

    def _freeze(self, x: torch.Tensor, reduced: bool) -> Any:
        if len(x) < 2:
            return None
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer warnings about Python values; the check below decides
                frozen = torch.jit.freeze(torch.jit.trace(self.model, x[:2], strict=False, check_trace=False))
                return frozen if self._same(frozen, x[:2], reduced) and self._same(frozen, x[:1], reduced) else None
        except Exception:  # noqa: BLE001  any failure to trace or to run the trace means: run eagerly
            return None

    def forward(self, x: torch.Tensor) -> Any:
        autocast = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        key = (tuple(x.shape[1:]), autocast)
        if key not in self.frozen:
            self.frozen[key] = self._freeze(x, autocast is not None)
        frozen = self.frozen[key]
        return self.model(x) if frozen is None else frozen(x)
