"""Model outputs -> per-task probabilities, by the entry's layout.

Three steps, so that TTA can merge either raw outputs or probabilities:

- `flatten`: the model's output (one tensor, a tuple/list of per-head tensors in layout order,
  or a dict keyed by task) -> ``(B, W)`` raw values, W the layout's width;
- `activate`: ``(B, W)`` raw -> ``(B, W)`` with a softmax over each head (over the 18 classes
  for ``classes18``; over the bins for age bins; an age in years is left as it is);
- `to_tasks`: activated ``(B, W)`` -> the 18-way joint (``classes18`` only) and
  ``{task: (B, k)}``; age bins are summed into the three age classes, an age in years becomes
  the one-hot of its class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ensembler.data.labels import N_CLASSES, Task
from ensembler.data.zoo import AGE_BOUNDS, Head, Layout
from ensembler.errors import EnsError


def _segments(layout: Layout) -> list[tuple[Head | None, slice]]:
    if layout.joint:
        return [(None, slice(0, layout.width))]
    out, start = [], 0
    for head in layout.heads:
        out.append((head, slice(start, start + head.width)))
        start += head.width
    return out


def flatten(output: torch.Tensor | Sequence[torch.Tensor] | Mapping[str, torch.Tensor], layout: Layout, name: str = "model") -> torch.Tensor:
    """The model's raw output as ``(B, W)`` float32 (see the module doc)."""
    if isinstance(output, Mapping):
        missing = [h.task.value for h in layout.heads if h.task.value not in output]
        if layout.joint or missing:
            raise EnsError(f"model {name!r} returns a dict with keys {', '.join(map(str, output))}; layout {layout.label} needs {', '.join(missing) or 'one tensor'}")
        output = [output[h.task.value] for h in layout.heads]
    if isinstance(output, (tuple, list)):
        if len(output) != len(_segments(layout)):
            raise EnsError(f"model {name!r} returns {len(output)} outputs; layout {layout.label} has {len(_segments(layout))} head(s)")
        output = torch.cat([o.reshape(len(o), -1) for o in output], dim=1)
    if not isinstance(output, torch.Tensor):
        raise EnsError(f"model {name!r} returns {type(output).__name__}, not a tensor, tuple or dict of tensors")
    flat = output.reshape(len(output), -1).float()
    if flat.shape[1] != layout.width:
        raise EnsError(f"model {name!r} outputs {flat.shape[1]} values per image; its layout {layout.label} needs {layout.width}")
    return flat


def activate(flat: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Softmax over each head of ``(B, W)`` raw values; an age in years passes through."""
    parts = []
    for head, cols in _segments(layout):
        x = flat[:, cols]
        parts.append(x if head is not None and head.years else torch.softmax(x, dim=1))
    return torch.cat(parts, dim=1)


def renormalize(act: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Each softmax head of ``(B, W)`` divided by its sum (after a merge that is not a mean)."""
    parts = []
    for head, cols in _segments(layout):
        x = act[:, cols]
        parts.append(x if head is not None and head.years else x / x.sum(dim=1, keepdim=True).clamp_min(1e-30))
    return torch.cat(parts, dim=1)


def _age_class_of_edges(edges: Sequence[float]) -> torch.Tensor:
    return torch.tensor([sum(e >= b for b in AGE_BOUNDS) for e in edges])


def to_tasks(act: torch.Tensor, layout: Layout) -> tuple[torch.Tensor | None, dict[Task | str, torch.Tensor]]:
    """Activated ``(B, W)`` -> ``(joint (B, n_joint) or None, {task: (B, k)})``, float32 (a
    declared competition with one task: that task's probabilities, and no joint)."""
    if layout.joint:
        space = layout.space
        if len(space.tasks) == 1:
            return None, {space.tasks[0]: act}
        cube = act.reshape(-1, *space.shape)
        dims = range(1, len(space.tasks) + 1)
        return act, {t: cube.sum(tuple(d for d in dims if d != i + 1)) for i, t in enumerate(space.tasks)}
    tasks = {}
    for head, cols in _segments(layout):
        x = act[:, cols]
        if head.bins is not None:
            x = torch.zeros(len(x), 3, dtype=x.dtype, device=x.device).index_add_(1, _age_class_of_edges(head.bins).to(x.device), x)
        elif head.years:
            band = (x[:, 0] >= AGE_BOUNDS[0]).long() + (x[:, 0] >= AGE_BOUNDS[1]).long()
            x = torch.nn.functional.one_hot(band, N_CLASSES[Task.AGE]).to(act.dtype)
        tasks[head.task] = x
    return None, tasks
