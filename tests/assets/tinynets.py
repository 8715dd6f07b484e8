"""Tiny models for the tests, imported through the zoo's ``package.module:Class`` path."""

import torch
from torch import nn


class TinyNet(nn.Module):
    """conv -> global pool -> linear: a real (if small) image classifier."""

    def __init__(self, num_classes: int = 18, heads: tuple[int, ...] | None = None, as_dict: bool = False):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.ModuleList(nn.Linear(8, k) for k in heads) if heads else None
        self.fc = None if heads else nn.Linear(8, num_classes)
        self.as_dict = as_dict

    def forward(self, x):
        f = self.features(x)
        if self.heads is None:
            return self.fc(f)
        outs = [h(f) for h in self.heads]
        return dict(zip(("mask", "gender", "age"), outs)) if self.as_dict else tuple(outs)


class Const(nn.Module):
    """Outputs the same logits for every image (its parameter), to tell fold models apart."""

    def __init__(self, num_classes: int = 18):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_classes))

    def forward(self, x):
        return self.logits.expand(len(x), -1) + 0 * x.mean()


class BatchNormNet(nn.Module):
    """conv -> batch norm -> ReLU -> pool -> linear: what freezing folds (batch norm into the conv)."""

    def __init__(self, num_classes: int = 18):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


class Counting(nn.Module):
    """Adds how often it was called to its output: Python-side state a trace bakes in."""

    def __init__(self, num_classes: int = 18):
        super().__init__()
        self.fc = nn.Linear(3, num_classes)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(x.mean(dim=(2, 3))) + self.calls


class BakedBatch(nn.Module):
    """Reshapes with the batch size as a Python int: a trace on 2 images fails on other sizes."""

    def __init__(self, num_classes: int = 18):
        super().__init__()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x):
        n = int(x.shape[0])
        return self.fc(x.mean(dim=(2, 3)).reshape(n, 3))
