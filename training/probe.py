"""`python -m training.probe`: the command; it lives in `training.eval.probe`."""

import sys

from training.eval.probe import main

if __name__ == "__main__":
    sys.exit(main())
