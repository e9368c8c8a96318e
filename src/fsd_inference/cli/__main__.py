"""``python -m fsd_inference.cli``."""

import sys

from fsd_inference.cli import main

sys.exit(main())
