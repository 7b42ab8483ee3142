"""``python -m bayesgen``: the command line."""

import sys

from bayesgen.cli import main

sys.exit(main())
