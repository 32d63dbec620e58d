"""``python -m stirshaken.serve --config FILE``: the service without the CLI (same as ``stirshaken serve``)."""

import sys

from stirshaken.serve.server import main

sys.exit(main())
