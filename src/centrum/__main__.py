"""``python -m centrum`` runs the command line."""

import sys

from centrum.cli import main

sys.exit(main())
