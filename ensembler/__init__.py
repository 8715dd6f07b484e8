"""ens: compose a team's predictions into competition submissions, with honest validation.

The torch-free core: labels, the data layout, prediction sets, recipes, voting, scores,
reports and submissions. `predictors` (the torch side) imports this package, never the reverse.
"""

__version__ = "0.1.0"

from .errors import EnsError  # noqa: E402

__all__ = ["EnsError", "__version__"]
