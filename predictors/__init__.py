"""The torch side of `ens`: zoo entries -> models, batched TTA, per-task probabilities.

Imports `ensembler` (labels, dataset, store); `ensembler` never imports this package.

Before torch loads its OpenMP runtime: on a machine that other processes already keep busy
(a load average of one core or more when `ens` starts), its threads are told to wait by
sleeping, not spinning (``OMP_WAIT_POLICY=PASSIVE``; the environment's own setting wins).
Spinning threads fight a busy neighbour for the cores: one demo training epoch took 4x as long
beside one CPU-bound process, 1.9x with sleeping threads. On an idle machine spinning is what
pays: sleeping threads made the whole demo's training 2.7x slower in one run (107 s against
288 s) and about 10-30 % slower in others, so the machine is left to its default there.
"""

import os

if hasattr(os, "getloadavg") and os.getloadavg()[0] >= 1.0:  # Unix only
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
