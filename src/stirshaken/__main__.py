"""``python -m stirshaken`` runs the command line (the ``stirshaken`` program)."""

from stirshaken.cli.main import main

main()
