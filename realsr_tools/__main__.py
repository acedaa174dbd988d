"""``python -m realsr_tools`` runs the ``realsr`` command line."""

from .cli import main

main()
