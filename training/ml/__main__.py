"""``python -m training.ml COMMAND``: see :mod:`training.ml.cli`."""

import sys

from training.ml.cli import main

sys.exit(main())
