"""`ens zoo add-baseline`: register a run of the competition's public baseline.

A run is ``<code>/model/<exp>/best.pth`` (a plain ``state_dict``) with the training run's
``config.json`` beside it (``model``: the class in the baseline's ``model.py``; ``resize``:
``[height, width]`` used in training). The entry uses the baseline's normalisation and the
*training* resize: the baseline's inference default (96, 128) is the training default
[128, 96] transposed, and a model run at a size it was not trained at loses points quietly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import EnsError
from .io import sha256_file
from .project import Project, add_model

BASELINE_MEAN = (0.548, 0.504, 0.479)
BASELINE_STD = (0.237, 0.247, 0.246)
BASELINE_INFERENCE_RESIZE = (96, 128)  # inference.py's --resize default, (height, width)


def read_run(exp_dir: Path) -> dict[str, Any]:
    """The run's ``config.json``, checked for what the entry needs."""
    exp_dir = Path(exp_dir)
    config_path = exp_dir / "config.json"
    if not (exp_dir / "best.pth").is_file():
        raise EnsError(f"{exp_dir}: no best.pth (a baseline run folder is model/<exp>/ with best.pth and config.json)")
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise EnsError(f"{config_path}: not found (the training run writes it beside best.pth)") from None
    except json.JSONDecodeError as exc:
        raise EnsError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(config.get("model"), str):
        raise EnsError(f"{config_path}: no 'model' (the model class name)")
    resize = config.get("resize")
    if not (isinstance(resize, list) and len(resize) == 2 and all(isinstance(v, int) and v > 0 for v in resize)):
        raise EnsError(f"{config_path}: 'resize' must be [height, width], got {resize!r}")
    return config


def add_baseline(
    project: Project,
    exp_dir: Path,
    name: str,
    code: Path | None = None,
    inference_resize: tuple[int, int] | None = None,
    owner: str = "",
) -> tuple[dict[str, Any], list[str]]:
    """Append the run's zoo entry to ``model_zoo.yaml`` (created when absent).

    Returns the entry as written and notes for the user (which resize is used, and why).
    """
    exp_dir = Path(exp_dir).absolute()
    config = read_run(exp_dir)
    code = Path(code).absolute() if code is not None else exp_dir.parent.parent
    if not (code / "model.py").is_file():
        raise EnsError(f"{code}: no model.py with class {config['model']} (pass --code DIR, the baseline's code folder)")
    height, width = config["resize"]
    notes = [f"resize: {width}x{height} (width x height), the training resize in config.json"]
    used = tuple(inference_resize) if inference_resize is not None else BASELINE_INFERENCE_RESIZE
    if tuple(used) != (height, width):
        origin = "your inference resize" if inference_resize is not None else "the baseline's inference default"
        notes.append(
            f"{origin} {used} differs from the training resize {[height, width]} "
            f"(height, width); ens uses the training one"
        )
    root = project.zoo.parent
    entry = {
        "name": name,
        "owner": owner,
        "architecture": f"model:{config['model']}",
        "code": _relative(code, root),
        "kwargs": {"num_classes": 18},
        "checkpoint": _relative(exp_dir / "best.pth", root),
        "sha256": sha256_file(exp_dir / "best.pth"),
        "layout": "classes18",
        "preprocess": {"resize": [width, height], "mean": list(BASELINE_MEAN), "std": list(BASELINE_STD), "interpolation": "bilinear"},
        "notes": f"public baseline run {exp_dir.name} (model {config['model']}, epochs {config.get('epochs', '?')})",
    }
    add_model(project.zoo, entry)
    return entry, notes


def _relative(path: Path, root: Path) -> str:
    import os

    return os.path.relpath(path, root)
