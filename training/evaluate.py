"""`python -m training.evaluate`: the command; it lives in `training.eval.evaluate`."""

import sys

from training.eval.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
