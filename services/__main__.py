"""``python -m services`` runs the risk-monitor command line."""

import sys

from services.cli import main

sys.exit(main())
