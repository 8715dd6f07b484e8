"""A short built-in trainer, for the demos only (not a product feature): just enough to make
honest checkpoints of small timm models on a toy competition, on CPU, in seconds.

A model is trained on the people (a declared competition's groups) outside its held-out fold,
with the targets its layout names (the answer's classes, the mask competition's 18, or one
cross-entropy per head, classes weighted against their imbalance), random horizontal flips,
AdamW and a one-cycle schedule. The images are decoded and resized once into memory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ensembler.data.competition import MASK, Competition
from ensembler.data.dataset import folds_of, read_folds, read_train
from ensembler.data.zoo import ZooEntry

from .images import Geometry, apply_geometry, normalize
from .images import decode as decode_image
from .models import build_model


def load_images(paths: list[str], geometry: Geometry) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` of every image at `geometry`."""
    return torch.stack([apply_geometry(decode_image(p), geometry) for p in paths])


def _weights(labels: np.ndarray, n: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=n).astype(np.float64)
    w = 1.0 / np.sqrt(np.maximum(counts, 1))
    return torch.tensor(w / w.mean() * (counts > 0), dtype=torch.float32)


def train_model(
    entry: ZooEntry,
    data: Path,
    folds_file: Path,
    held_out: int,
    checkpoint: Path,
    epochs: int = 6,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    cache: dict | None = None,
    log: Callable[[str], None] = lambda _: None,
    competition: Competition = MASK,
) -> float:
    """Train `entry`'s architecture on the train people outside fold `held_out`; save its state_dict.

    cache: the train table and its images decoded per geometry (rows in the table's order),
    shared between calls. competition: whose labelled images and groups (default the mask
    competition's persons). Returns the last epoch's mean loss.
    """
    torch.manual_seed(seed)
    cache = {} if cache is None else cache
    if "table" not in cache:
        if competition.is_preset:
            cache["table"] = read_train(data).assign(group=lambda t: t["profile"])
        else:
            from ensembler.data.declared import read_labelled

            cache["table"] = read_labelled(competition, data)
    table = cache["table"]
    geometry = Geometry.of(entry.preprocess)
    if geometry not in cache:
        cache[geometry] = load_images(list(table["path"]), geometry)
    groups = table["group"].to_numpy(object)
    keep = folds_of(read_folds(folds_file, groups), groups, folds_file) != held_out
    x_all = cache[geometry][torch.from_numpy(keep)]
    labels = table["label"].to_numpy()[keep]
    space = competition.space
    parts = space.decode(labels)

    if entry.layout.joint:
        targets = [(slice(0, space.n_joint), torch.tensor(labels), _weights(labels, space.n_joint))]
    else:
        targets, start = [], 0
        for head in entry.layout.heads:
            y = parts[head.task]
            targets.append((slice(start, start + head.width), torch.tensor(y), _weights(y, space.n_classes[head.task])))
            start += head.width
    model = build_model(entry).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * int(np.ceil(len(x_all) / batch_size))
    if steps >= 4:
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=max(0.25, 2 / steps))
    else:  # too few steps for a warm-up and a decay
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    generator = torch.Generator().manual_seed(seed)
    loss_value = float("nan")
    for epoch in range(epochs):
        order = torch.randperm(len(x_all), generator=generator)
        total, count = 0.0, 0
        for batch in order.split(batch_size):
            x = normalize(x_all[batch], entry.preprocess)
            flip = torch.rand(len(batch), generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x).contiguous(memory_format=torch.channels_last)
            out = model(x)
            loss = sum(
                torch.nn.functional.cross_entropy(out[:, cols], y[batch], weight=w) for cols, y, w in targets
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
            count += len(batch)
        loss_value = total / count
        log(f"{entry.name} (fold {held_out} held out): epoch {epoch + 1}/{epochs}, loss {loss_value:.3f}")
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.eval().state_dict(), checkpoint)
    return loss_value



