"""`python -m training.pretrain`: the command; it lives in `training.run.pretrain`."""

import sys

from training.run.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
