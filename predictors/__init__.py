"""The torch side of `ens`: zoo entries -> models, batched TTA, per-task probabilities.

Imports `ensembler` (labels, dataset, store); `ensembler` never imports this package.

Before torch loads its OpenMP runtime, its threads are told to wait by sleeping, not spinning
(``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it): on a machine another process
keeps busy, spinning threads fight it for the cores (the demo's training ran 4x slower beside
one CPU-bound process, 1.9x with passive waiting; alone, passive waiting costs about 10 %).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
