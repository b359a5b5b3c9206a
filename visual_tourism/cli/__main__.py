"""`python -m visual_tourism.cli`: the same command as `visual-tourism`."""

import sys

from . import main

sys.exit(main())
