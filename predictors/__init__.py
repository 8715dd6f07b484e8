"""The torch side of `ens`: zoo entries -> models, batched TTA, per-task probabilities.

Imports `ensembler` (labels, dataset, store); `ensembler` never imports this package.
"""
