"""`python -m worker.cli`: the same command as `admitflow`."""

import sys

from worker.cli import main

sys.exit(main())
