"""Batched test-time augmentation with ttach's transforms and merger.

ttach's ``ClassificationTTAWrapper`` runs the model once per view. Here all views of a batch
that share a shape go through the model in one forward pass (``V*B`` images), which keeps the
device busy; views of another shape (multi-scale, rotations of a non-square image) form their
own pass. Outputs are merged with ttach's own ``Merger``, by default over probabilities
(softmax per head, then merge); ``over: logits`` merges raw outputs as ttach's wrapper does.
Works for multi-head outputs, which ttach's wrapper does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ensembler.data.zoo import Layout, TTAPolicy

from .layouts import activate, flatten, renormalize


def build_transforms(policy: TTAPolicy):
    """The policy's transforms as a ``ttach.Compose`` (identity alone when there are none)."""
    import ttach as tta

    makers = {
        "hflip": lambda _: tta.HorizontalFlip(),
        "vflip": lambda _: tta.VerticalFlip(),
        "rotate90": lambda angles: tta.Rotate90(list(angles)),
        "scale": lambda scales: tta.Scale(list(scales), interpolation="bilinear"),
        "five_crop": lambda size: tta.FiveCrops(*size),
        "add": lambda values: tta.Add(list(values)),
        "multiply": lambda factors: tta.Multiply(list(factors)),
    }
    transforms = []
    for spec in policy.transforms:
        name, arg = (spec, None) if isinstance(spec, str) else next(iter(spec.items()))
        transforms.append(makers[name](arg))
    return tta.Compose(transforms)


def tta_predict(model: Callable[[torch.Tensor], Any], images: torch.Tensor, transforms, policy: TTAPolicy, layout: Layout, name: str = "model") -> torch.Tensor:
    """Merged, activated outputs ``(B, W)`` of `model` over the TTA views of `images` ``(B, C, H, W)``."""
    from ttach.base import Merger

    views = [t.augment_image(images) for t in transforms]
    flats: list[torch.Tensor | None] = [None] * len(views)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, view in enumerate(views):
        by_shape.setdefault(tuple(view.shape), []).append(i)
    for members in by_shape.values():
        out = flatten(model(torch.cat([views[i] for i in members])), layout, name)
        for i, chunk in zip(members, out.split(len(images))):
            flats[i] = chunk
    merger = Merger(type=policy.merge, n=len(views))
    for flat in flats:
        merger.append(activate(flat, layout) if policy.over == "probs" else flat)
    merged = merger.result
    # gmean, max, min, sum and tsharpen of probabilities are no distributions: renormalise each head
    return renormalize(merged, layout) if policy.over == "probs" else activate(merged, layout)
