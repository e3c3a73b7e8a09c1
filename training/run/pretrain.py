"""``python -m training.pretrain --recipe NAME``: span-masked diffusion pre-training.

The same loop runs on plain CPU torch (``tiny_cpu``, ``default_model_cpu``) and on TPU through
torch_xla SPMD (``pretrain_coda_1p7b_tpu_v4``): recipes whose ``train.device`` is ``xla`` get
the backend from ``training.run.xla_backend``, the only module that imports torch_xla.
Re-running the same command resumes from the newest checkpoint in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys

from training.errors import UsageError, main_guarded
from training.run import devices, dry_run, recipes
from training.run.loop import Trainer
from training.run.torch_backend import TorchBackend

HELP = """\
CoDA diffusion pre-training; re-run the same command to resume

hardware (the recipe's train.device, or --set train.device=...):
  cpu     the *_cpu recipes (the shipped model was trained this way)
  cuda    one GPU: --set train.device=cuda; several GPUs: fine-tune-style runs go through
          accelerate launch -m training.finetune (this entry point is single-process)
  xla     TPU through torch_xla SPMD (the *_tpu_* recipes); install torch_xla in its own
          environment on the TPU VM: pip install -e '.[train,tpu]'
"""


def make_backend(device: str):
    device = devices.resolve(device)
    if device == "xla":
        return devices.xla_backend()   # torch_xla only on this path
    return TorchBackend(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.pretrain", description=HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True, help=", ".join(sorted(recipes.RECIPES)))
    parser.add_argument("--out", help="run folder (default runs/RECIPE)")
    parser.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                        help="override recipe fields, e.g. train.steps=200 optim.lr=1e-3")
    parser.add_argument("--data", nargs="*", help="source folders (replace data.sources)")
    parser.add_argument("--fresh", action="store_true",
                        help="ignore existing checkpoints and re-pack the data")
    parser.add_argument("--force", action="store_true",
                        help="resume even though --set or the recipe changed since the checkpoint")
    parser.add_argument("--dry-run", action="store_true",
                        help="check recipe, data, shapes and memory; train nothing")
    parser.add_argument("--stop-after-step", type=int, default=None,
                        help="checkpoint and exit at this step (the schedule is unchanged)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return main_guarded(parser, parser.parse_args(argv), run)


def run(args: argparse.Namespace) -> int:
    try:
        recipe = recipes.override(recipes.get(args.recipe), args.set)
        if args.data:
            recipe = recipes.override(recipe, [f"data.sources={json.dumps(list(args.data))}"])
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    trainer = Trainer(recipe, args.out or f"runs/{recipe.name}",
                      backend=make_backend(recipe.train.device), rebuild_data=args.fresh)
    if args.dry_run:
        print(dry_run.report(trainer))
        return 0
    result = trainer.run(resume=not args.fresh, stop_after_step=args.stop_after_step,
                         force=args.force)
    if result:
        print(f"step {trainer.step}: masked CE {result.get('masked_ce', float('nan')):.4f}, "
              f"{result.get('tokens_per_s', 0):.0f} tokens/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
