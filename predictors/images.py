"""Decoding images once, and the per-entry preprocessing.

`ImageSet` decodes each image once (in DataLoader workers) and returns one uint8 tensor per
distinct geometry (resize, crop, interpolation) among the models being run; normalisation
(mean/std, float) happens on the device, per model group. Resizing is torchvision's on PIL
images, as the public baseline's transforms do.
A corrupt or missing image is never skipped: the worker hands back its path and the error,
and the run goes on decoding (no model runs once one image failed) so that every unreadable
image is reported at once, and nothing is written.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ensembler.data.zoo import Preprocess
from ensembler.errors import EnsError


@dataclass(frozen=True)
class Geometry:
    """The part of a preprocessing that acts on pixels' positions (shared decode -> shared resize)."""

    resize: tuple[int, int] | None
    crop: tuple[int, int] | None
    interpolation: str

    @classmethod
    def of(cls, pre: Preprocess) -> Geometry:
        return cls(pre.resize, pre.crop, pre.interpolation)


def decode(path: str):
    """An image file as an RGB PIL image (decoded now, not lazily)."""
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def apply_geometry(image, geometry: Geometry) -> torch.Tensor:
    """Resize a PIL image to width x height, centre-crop to width x height -> uint8 ``(3, H, W)``.

    The resize and crop are torchvision's on PIL images, as in the public baseline's transforms,
    so that a baseline model sees bit for bit the pixels it saw in the baseline's inference.
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    if geometry.resize is not None:
        w, h = geometry.resize
        image = F.resize(image, [h, w], interpolation=InterpolationMode(geometry.interpolation))
    if geometry.crop is not None:
        w, h = geometry.crop
        image = F.center_crop(image, [h, w])
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


@functools.lru_cache(maxsize=64)
def _constants(device: torch.device, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std ``(1, 3, 1, 1)`` on `device`, made once: a new tensor per batch is a copy
    from the host, and on CUDA a wait for it."""
    return torch.tensor(mean, device=device).view(1, 3, 1, 1), torch.tensor(std, device=device).view(1, 3, 1, 1)


def normalize(batch: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float32 normalised by the entry's mean and std."""
    mean, std = _constants(batch.device, tuple(pre.mean), tuple(pre.std))
    return (batch.float() / 255.0 - mean) / std


class ImageSet(torch.utils.data.Dataset):
    """Images by path; item ``i`` -> ``(i, [uint8 tensor per geometry] or None, error or None)``."""

    def __init__(self, paths: Sequence[str], geometries: Sequence[Geometry]):
        self.paths = list(paths)
        self.geometries = list(geometries)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            image = decode(self.paths[i])
        except Exception as exc:  # noqa: BLE001 (any decoder failure stops the run with the path)
            return i, None, f"{self.paths[i]}: cannot read image ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        return i, [apply_geometry(image, g) for g in self.geometries], None


def unreadable_error(unreadable: Sequence[str]) -> EnsError:
    """One error naming every unreadable image (``path: why``; the first 10 and the count)."""
    more = " (the first 10)" if len(unreadable) > 10 else ""
    return EnsError(f"{len(unreadable)} image(s) cannot be read{more}: {'; '.join(unreadable[:10])}; nothing was written")


def collate(items):
    """Batch of items -> (indices (B,), per geometry a list of B uint8 tensors, errors).

    With any error (a list of ``path: why``) the views are None: the batch is not run.
    """
    indices = torch.tensor([i for i, _, _ in items])
    errors = [e for _, _, e in items if e is not None]
    if errors:
        return indices, None, errors
    per_geometry = list(zip(*(views for _, views, _ in items)))
    return indices, [_stack(list(v)) for v in per_geometry], []


def _stack(images: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    shapes = {tuple(t.shape) for t in images}
    return torch.stack(images) if len(shapes) == 1 else images
