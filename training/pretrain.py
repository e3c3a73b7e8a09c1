"""``python -m training.pretrain --recipe NAME``: span-masked diffusion pre-training.

The same loop runs on plain CPU torch (``tiny_cpu``, ``default_model_cpu``) and on TPU through
torch_xla SPMD (``pretrain_coda_1p7b_tpu_v4``): recipes whose ``train.device`` is ``xla`` get
the backend from ``training.xla_backend``, the only module that imports torch_xla.
Re-running the same command resumes from the newest checkpoint in ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import recipes
from .loop import TorchBackend, Trainer


def make_backend(device: str):
    if device == "xla":
        from .xla_backend import XlaBackend  # torch_xla only on this path
        return XlaBackend()
    return TorchBackend(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.pretrain",
                                     description="CoDA diffusion pre-training")
    parser.add_argument("--recipe", required=True, help=", ".join(sorted(recipes.RECIPES)))
    parser.add_argument("--out", help="run folder (default runs/RECIPE)")
    parser.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                        help="override recipe fields, e.g. train.steps=200 optim.lr=1e-3")
    parser.add_argument("--data", nargs="*", help="source folders (replace data.sources)")
    parser.add_argument("--fresh", action="store_true", help="ignore existing checkpoints")
    parser.add_argument("--stop-after-step", type=int, default=None,
                        help="checkpoint and exit at this step (the schedule is unchanged)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    recipe = recipes.override(recipes.get(args.recipe), args.set)
    if args.data:
        recipe = recipes.override(recipe, [f"data.sources={list(args.data)!r}".replace("'", '"')])
    trainer = Trainer(recipe, args.out or f"runs/{recipe.name}",
                      backend=make_backend(recipe.train.device))
    result = trainer.run(resume=not args.fresh, stop_after_step=args.stop_after_step)
    if result:
        print(f"step {trainer.step}: masked CE {result.get('masked_ce', float('nan')):.4f}, "
              f"{result.get('tokens_per_s', 0):.0f} tokens/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
