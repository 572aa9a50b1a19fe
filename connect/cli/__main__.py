"""``python -m connect.cli`` runs the ``connect`` command."""

import sys

from connect.cli import main

sys.exit(main())
