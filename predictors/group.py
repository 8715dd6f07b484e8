"""`ens group`: a split's images as people, from what the images look like.

Each person's seven photos were taken together: one background, one set of clothes, one face,
the mask changing. The descriptor of an image is its colour layout: the decoded image (decoded
once, as `ens predict` decodes: `images.ImageSet`) shrunk to a 6 x 8 thumbnail in an opponent
colour space (luminance and two colour-difference axes, so that a change of light moves one
axis, not all three), the outer ring of cells, the background, counted twice. Descriptors are
standardised per dimension over the split and grouped by `ensembler.pipeline.persons.group_images`
(groups of at most seven; a doubtful image stays alone). No weights, no download, no labels:
on train the grouping is made blind to the folder names and only then compared with them.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from ensembler import __version__
from ensembler.data.dataset import images_fingerprint, read_eval, read_train
from ensembler.data.project import Project
from ensembler.errors import EnsError
from ensembler.pipeline.persons import GROUP_SIZE, Agreement, Grouping, agreement, check_threshold, group_images, groups_paths, write_groups

from .images import Geometry, ImageSet, collate, unreadable_error

THUMB = (6, 8)  # width x height of the colour layout
OPPONENT = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [0.5, -0.5, 0.0], [0.25, 0.25, -0.5]])  # luminance, red-green, yellow-blue
DESCRIPTOR = "colour layout: 6x8 opponent-colour thumbnail, border ring x2, standardised"


def describe(paths: list[str], workers: int = 0, batch_size: int = 64, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Descriptors ``(n, d)`` float32 of the images at `paths` (see the module doc). Every
    unreadable image is named in one error, as `ens predict` does."""
    w, h = THUMB
    loader = torch.utils.data.DataLoader(ImageSet(paths, [Geometry((w * 4, h * 4), None, "bilinear")]), batch_size=batch_size, num_workers=workers, collate_fn=collate)
    ring = torch.ones(h, w, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    out = np.zeros((len(paths), 3 * (h * w + int(ring.sum()))), dtype=np.float32)
    unreadable, done = [], 0
    for indices, views, errors in loader:
        unreadable += errors
        done += len(indices)
        if progress is not None:
            progress(done, len(paths))
        if unreadable:
            continue
        x = views[0].float() / 255.0  # (B, 3, 4h, 4w)
        small = torch.nn.functional.avg_pool2d(x, 4)  # (B, 3, h, w)
        colour = torch.einsum("cd,bdhw->bchw", OPPONENT, small)
        out[indices.numpy()] = torch.cat([colour.flatten(1), colour[:, :, ring].flatten(1)], dim=1).numpy()
    if unreadable:
        raise unreadable_error(unreadable)
    spread = out.std(axis=0)
    return (out - out.mean(axis=0)) / np.where(spread > 0, spread, 1.0)


@dataclass(frozen=True)
class GroupResult:
    """What `group_split` wrote, and how it measured (train only: against the true persons)."""

    split: str
    files: tuple[Path, Path]
    grouping: Grouping
    agreement: Agreement | None
    warnings: list[str]


def group_split(project: Project, split: str, threshold: float | None = None, workers: int | None = None, progress: Callable[[int, int], None] | None = None) -> GroupResult:
    """Group the `split` (``eval`` or ``train``) images into people and write ``groups/<split>.csv``
    and its JSON (`ensembler.pipeline.persons`). On train the grouping is then measured against the
    true persons (pairwise precision and recall, adjusted Rand index, people recovered whole)."""
    from ensembler.data.people import person_codes

    if split not in ("eval", "train"):
        raise EnsError(f"--split {split!r}: choose eval or train")
    check_threshold(threshold)
    data = project.require_data()
    table = read_eval(data) if split == "eval" else read_train(data)
    ids, paths = table["ImageID"].to_numpy(object), list(table["path"])
    fingerprint = images_fingerprint(ids, paths)
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    grouping = group_images(describe(paths, workers, progress=progress), threshold)
    warnings = []
    if len(ids) % GROUP_SIZE:
        warnings.append(f"{len(ids)} {split} images is not a multiple of {GROUP_SIZE}: some people lack photos (or others were added); grouped all the same")
    measured = agreement(grouping.groups, person_codes(ids)) if split == "train" else None
    meta = {
        "split": split,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "tool_version": __version__,
        "host": platform.node(),
        "fingerprint": fingerprint,
        "descriptor": DESCRIPTOR,
        "threshold": round(grouping.threshold, 6),
        "agreement": None if measured is None else measured.as_dict(),
    }
    if split == "eval":
        train_json = groups_paths(project.root, "train")[1]
        if train_json.is_file():
            import json

            meta["train_agreement"] = json.loads(train_json.read_text()).get("agreement")
    files = write_groups(project.root, split, ids, grouping, meta)
    return GroupResult(split, files, grouping, measured, warnings)
