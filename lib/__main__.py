"""`python -m chariotd` for an installed package: the same as the command."""

from .cli import run

run()
