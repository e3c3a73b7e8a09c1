"""`python -m training.decontam`: the command; it lives in `training.data.decontam`."""

import sys

from training.data.decontam import main

if __name__ == "__main__":
    sys.exit(main())
