"""`python -m offline build | eval` (see offline/cli.py)."""

import sys

from offline.cli import main

sys.exit(main())
