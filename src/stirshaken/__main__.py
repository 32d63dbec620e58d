"""``python -m stirshaken`` runs the command line (the same as the ``stirshaken`` script)."""

from stirshaken.cli.main import main

main()
