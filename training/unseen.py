"""`python -m training.unseen fetch|run`: the unseen-repository set; it lives in
`training.eval.unseen` (`run` needs the server's fill path: `benchmarks/eval_unseen.py`)."""

import sys

from training.eval.unseen import main

if __name__ == "__main__":
    sys.exit(main())
