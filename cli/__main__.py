"""``python -m actorgrid.cli``: the same as the ``actorgrid`` console script."""

import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())
