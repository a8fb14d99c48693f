"""``fastsdf train-diffusion``: latent diffusion over the codes of a trained DeepSDF auto-decoder."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastsdf.cli.common import add_overwrite_option, integer, positive, positive_int, refuse_to_overwrite, seed

__all__ = ["add_parser"]

_HELP = """\
Train a denoiser (DDPM) on the latent codes of MODEL (`fastsdf train-deepsdf`'s output folder or
its model.pt), one code per training shape, normalised per dimension; then write into OUT:

  model.pt       the denoiser, the codes' statistics and the auto-decoder (fastsdf.load_model(OUT)
                 reads it; `fastsdf generate OUT --count N --out MESHES` makes new shapes)
  training.png   the loss and learning-rate curves

While it trains, OUT/checkpoint.pt holds its progress: if the run is killed, the same command
resumes it (removed at the end); a finished run's outputs are never replaced without --overwrite.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from fastsdf.training import train_diffusion as td
    from fastsdf.training.diffusion import PREDICTIONS, SCHEDULES

    train = sub.add_parser("train-diffusion", help="train latent diffusion on a DeepSDF auto-decoder's codes",
                           description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("model", metavar="MODEL", help="fastsdf train-deepsdf's output (a folder or model.pt)")
    train.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    train.add_argument("--steps", type=positive_int, default=td.DEFAULT_STEPS, metavar="N",
                       help=f"Adam steps (default: {td.DEFAULT_STEPS})")
    train.add_argument("--batch-size", type=positive_int, default=td.BATCH_SIZE, metavar="N",
                       help=f"codes per step, drawn with replacement (default: {td.BATCH_SIZE})")
    train.add_argument("--learning-rate", type=positive, default=td.LEARNING_RATE, metavar="LR",
                       help=f"Adam's initial rate, decayed along a half cosine (default: {td.LEARNING_RATE:g})")
    train.add_argument("--width", type=positive_int, default=256, help="the denoiser's hidden features (default: 256)")
    train.add_argument("--blocks", type=positive_int, default=4, help="the denoiser's residual blocks (default: 4)")
    train.add_argument("--timesteps", type=integer(2), default=td.TIMESTEPS, metavar="T",
                       help=f"diffusion steps T (default: {td.TIMESTEPS})")
    train.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                       help="noise schedule: cosine (Nichol & Dhariwal, default) or linear (DDPM)")
    train.add_argument("--prediction", choices=PREDICTIONS, default=td.PREDICTION,
                       help=f"what the denoiser predicts: the noise or the code (default: {td.PREDICTION})")
    train.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    add_overwrite_option(train)
    train.set_defaults(run=_train)


def _train(args: argparse.Namespace) -> int:
    import torch

    from fastsdf.cli.common import load_model_of, progress_enabled
    from fastsdf.nn import LatentDenoiser
    from fastsdf.plots import plot_history
    from fastsdf.training.autodecoder import AutoDecoder
    from fastsdf.training.train_diffusion import train_diffusion

    autodecoder = load_model_of(args.model, AutoDecoder, "a DeepSDF auto-decoder (fastsdf train-deepsdf's output)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out is not a folder: {out}")
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():  # the run is unfinished and resumes
        print(f"resuming from {checkpoint}")
    else:
        refuse_to_overwrite([out / "model.pt", out / "training.png"], args.overwrite)
    torch.manual_seed(args.seed)
    denoiser = LatentDenoiser(autodecoder.latent_size, hidden_features=args.width, blocks=args.blocks)
    model, history = train_diffusion(
        autodecoder, denoiser, steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
        schedule=args.schedule, timesteps=args.timesteps, prediction=args.prediction, seed=args.seed,
        device="cuda" if torch.cuda.is_available() else "cpu", checkpoint=checkpoint,
        progress=progress_enabled(args.quiet))
    path = model.to("cpu").save(out)
    plot_history(history, out / "training.png",
                 title=f"fastsdf train-diffusion ({len(autodecoder.names)} codes)", x="step")
    print(f"trained on {len(autodecoder.names)} codes: {history['steps']} steps in {history['training_seconds']:.1f} s, "
          f"final loss {history['loss'][-1]:.3g}")
    print(f"  model.pt:     {path.resolve()}")
    print(f"  training.png: {(out / 'training.png').resolve()}")
    checkpoint.unlink(missing_ok=True)
    return 0
