"""CPU forward passes on ONNX Runtime, where they are faster and give the eager model's outputs.

On this project's CPU a CNN's forward pass on ONNX Runtime took 1.1-2.3x less time than the
traced, frozen TorchScript copy `ens` ran before (`models.FrozenOnCPU`; bench/predict.py). Each
model is exported once per checkpoint, preprocessing and input shape (the batch dimension
left free) with torch's TorchScript-based exporter, and kept on disk beside the prediction
store (``predictions-onnx/``), named by a hash of what it depends on, so a later run loads it
instead of exporting again. Every new input shape is checked against the eager model on two
images and on one (as the frozen copy is); a model whose export fails (team code with
operations ONNX cannot express) or whose outputs differ runs on the torch path for that shape,
and the run says so.

Needs ``onnxruntime`` and ``onnx`` (``pip install -e ".[onnx]"``); without them ``--backend
auto`` is the torch path.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ensembler.data.io import atomic_write

from .models import FrozenOnCPU

OPSET = 17
SESSIONS_MADE = 0  # ONNX Runtime sessions made in this process (`runner._onnx_ran`)


def available() -> bool:
    """Whether ONNX Runtime and the exporter's ``onnx`` are installed (found, not imported:
    importing ``onnx`` takes about 1 s, and a run whose exports are cached never needs it)."""
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None and find_spec("onnx") is not None


def exported(out: Any) -> list[torch.Tensor]:
    """A model's output (tensor, tuple/list or dict of tensors) flattened as torch's ONNX
    exporter orders the graph's outputs: a dict's values in the dict's own order (not sorted by
    key, as `models._tensors` has them), a sequence's items in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for value in out.values() for t in exported(value)]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in exported(item)]
    raise TypeError(f"unsupported output type {type(out).__name__}")


def _rebuild(template: Any, flat: list[torch.Tensor]) -> Any:
    """`flat` tensors (in `exported`'s order) back into the structure of a model's output `template`."""
    queue = list(flat)

    def take(node: Any) -> Any:
        if isinstance(node, torch.Tensor):
            return queue.pop(0)
        if isinstance(node, Mapping):
            return {k: take(v) for k, v in node.items()}
        return type(node)(take(item) for item in node)

    return take(template)


class OnnxOnCPU(nn.Module):
    """A model run on ONNX Runtime on the CPU, per input shape, checked against the eager model
    (module doc); `fallback` (the frozen copy) runs a shape whose export failed or differs.
    `path_for(shape)`: the cached model file for an input shape ``(C, H, W)``."""

    RTOL, ATOL = FrozenOnCPU.RTOL, FrozenOnCPU.ATOL

    def __init__(self, model: nn.Module, path_for: Callable[[tuple[int, ...]], Path], fallback: nn.Module, name: str = "model"):
        super().__init__()
        self.model = model.requires_grad_(False)
        self.fallback = fallback
        self.path_for = path_for
        self.name = name
        self.sessions: dict[tuple[int, ...], Any] = {}
        self.templates: dict[tuple[int, ...], Any] = {}
        self.notes: list[str] = []

    def _export(self, x: torch.Tensor, path: Path) -> bytes:
        if path.is_file():
            return path.read_bytes()
        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings; the check below decides
            torch.onnx.export(self.model, x[:2].contiguous(), buffer, input_names=["x"], dynamic_axes={"x": {0: "batch"}}, opset_version=OPSET, dynamo=False)
        data = buffer.getvalue()
        with atomic_write(path) as handle:
            handle.write(data)
        return data

    def _session(self, x: torch.Tensor) -> Any:
        """A checked session for `x`'s shape, or None (the torch path) with a note saying why. A
        cached export that fails the check (made from other model code, or half-made by an older
        version) is replaced by a fresh one, once."""
        path = self.path_for(tuple(x.shape[1:]))
        why = ""
        for fresh in (False, True) if path.is_file() else (True,):
            if fresh:
                path.unlink(missing_ok=True)
            session, why = self._checked(x, path)
            if session is not None:
                return session
        self.notes.append(why)
        return None

    def _checked(self, x: torch.Tensor, path: Path) -> tuple[Any, str]:
        import onnxruntime as ort

        global SESSIONS_MADE

        shape = tuple(x.shape[1:])
        try:
            data = self._export(x, path)
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()  # as many as torch's forward would use
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            SESSIONS_MADE += 1  # counted before: a session that fails half-made may have started threads
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - any failure to export or load means: the torch path
            return None, f"{self.name}: not exported to ONNX ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}); ran on torch"
        for sample in (x[:2], x[:1]):
            expected = exported(self.model(sample))
            got = self._run(session, sample)
            if len(got) != len(expected) or any(e.shape != g.shape for e, g in zip(expected, got)):
                return None, f"{self.name}: ONNX Runtime gives outputs of another shape than the eager model at {shape} (a batch size fixed in the export?); ran on torch"
            if not all(torch.allclose(e, g, rtol=self.RTOL, atol=self.ATOL) for e, g in zip(expected, got)):
                worst = max(float((e - g).abs().max()) for e, g in zip(expected, got))
                return None, f"{self.name}: ONNX Runtime's outputs differ from the eager model's by up to {worst:.2g} at {shape}; ran on torch"
        self.templates[shape] = self.model(x[:1])
        return session, ""

    @staticmethod
    def _run(session: Any, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = session.run(None, {"x": np.ascontiguousarray(x.detach().contiguous().numpy(), dtype=np.float32)})
        return [torch.from_numpy(o) for o in outputs]

    def forward(self, x: torch.Tensor) -> Any:
        shape = tuple(x.shape[1:])
        if shape not in self.sessions:
            self.sessions[shape] = self._session(x) if len(x) >= 2 else None
            if len(x) < 2:
                self.sessions.pop(shape)  # a shape first seen in a batch of one: checked at the next batch
                return self.fallback(x)
        session = self.sessions[shape]
        if session is None:
            return self.fallback(x)
        return _rebuild(self.templates[shape], self._run(session, x))
