"""ens: compose a team's predictions into competition submissions, with honest validation.

The public API (a notebook's ``import ensembler as ens``; the command line runs the same code):

- `load_project`: the project file (``model_zoo.yaml``) and the data folder;
- `split`: the team's fold file (grouped by person, or by a declared competition's group);
- `import_source`: a teammate's CSV as a source;
- `predict`: run zoo models with TTA (needs torch; imported only when called);
- `compose`: a recipe composed into a submission DataFrame and its manifest, written on request;
- `report`: validation scores (with person-bootstrap intervals) and class priors as DataFrames;
- `pick_final`: the two final submissions to choose, and why;
- `group`: a split's images as people (needs torch), for the `ByPerson` step;
- `audit`: train labels likely wrong, person by person (label fixes: `project.label_fixes`);
- the steps of a composition, for `compose`'s pipeline: `Soft`, `Geo`, `Hard`, `Rank`, `Stack`,
  `Select`, `Pool`, `Auto` (combine the sources), `Priors`, `TuneF1`, `ByPerson` (refine the
  composition), `CutPoints`, `PriorDivided` (decide for a declared metric); every registered step is here by its class name (`pipeline.engine.REGISTRY`),
  and `Pipeline`;
- `parse_recipe`, `Method`, `Tie`, `EnsError`.

The torch-free core lives in four wings, each importing only those before it: `ensembler.data`
(the competition, its files and people), `ensembler.scoring` (metrics and the person
bootstrap), `ensembler.pipeline` (recipes and the steps of a composition), `ensembler.evaluate`
(reports); `predictors` (the torch side) imports this package, never the reverse.
Names load on first use, so ``import ensembler`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .errors import EnsError

_LAZY = {
    "load_project": "api",
    "split": "api",
    "import_source": "api",
    "predict": "api",
    "compose": "api",
    "report": "api",
    "pick_final": "api",
    "group": "api",
    "audit": "api",
    "Tables": "api",
    "Composition": "pipeline.composition",
    "parse_recipe": "pipeline.recipe",
    "Recipe": "pipeline.recipe",
    "Method": "pipeline.steps",
    "Tie": "pipeline.voting",
    "Project": "data.project",
    "Pipeline": "pipeline.engine",
    "Soft": "pipeline.voting",
    "Geo": "pipeline.voting",
    "Rank": "pipeline.voting",
    "Hard": "pipeline.voting",
    "Stack": "pipeline.learned",
    "Select": "pipeline.learned",
    "Pool": "pipeline.learned",
    "Auto": "pipeline.auto",
    "Priors": "pipeline.priors",
    "TuneF1": "pipeline.tuning",
    "ByPerson": "pipeline.persons",
}

__all__ = [
    "Composition", "EnsError", "Method", "Project", "Recipe", "Tables", "Tie", "__version__",
    "audit", "compose", "group", "import_source", "load_project", "parse_recipe", "pick_final", "predict", "report", "split",
    "Pipeline", "Soft", "Geo", "Hard", "Rank", "Stack", "Select", "Pool", "Auto", "Priors", "TuneF1", "ByPerson",
]  # fmt: skip
assert set(__all__) == {"EnsError", "__version__", *_LAZY}

if TYPE_CHECKING:
    from .api import Tables, audit, compose, group, import_source, load_project, pick_final, predict, report, split
    from .data.project import Project
    from .pipeline.auto import Auto
    from .pipeline.composition import Composition
    from .pipeline.engine import Pipeline
    from .pipeline.learned import Pool, Select, Stack
    from .pipeline.persons import ByPerson
    from .pipeline.priors import Priors
    from .pipeline.recipe import Recipe, parse_recipe
    from .pipeline.tuning import TuneF1
    from .pipeline.steps import Method
    from .pipeline.voting import Geo, Hard, Rank, Soft, Tie


def _steps() -> dict[str, type]:
    """Every registered step class by its class name (`pipeline.engine.REGISTRY`): a step
    registered by a module of its own (``Median``) is ``ens.Median`` with no line here."""
    from .pipeline.engine import REGISTRY

    return {step.__name__: step for step in REGISTRY.values()}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name[:1].isupper() and name in _steps():
        return _steps()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*__all__, *_steps()})
