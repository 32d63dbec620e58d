"""``python -m stirshaken.cli`` runs the command line."""

from stirshaken.cli.main import main

main()
