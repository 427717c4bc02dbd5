"""``python -m llamacpu COMMAND [ARGS]``: the ``llamacpu`` console script (llamacpu.cli)."""

import sys

from llamacpu.cli import main

sys.exit(main())
