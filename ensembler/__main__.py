"""``python -m ensembler`` runs the `ens` command line."""

from .cli import main

main()
