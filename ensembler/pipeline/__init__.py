"""Recipes, the cross-validation engine and the steps of a composition. Every step module is
imported here, so that each step has registered itself (`engine.register`) whichever module a
caller imports first."""

from . import auto, decisions, learned, median, persons, priors, tuning, voting  # noqa: F401  (each module registers its steps)
