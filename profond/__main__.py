"""``python -m profond ...`` (also what ``torchrun -m profond train ...`` runs)."""

from .cli import main

main()
