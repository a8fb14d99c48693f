"""``fastsdf train-diffusion``: latent diffusion over the latents of a trained DeepSDF auto-decoder or
shape VAE, conditioned on partial point clouds if asked, on one process or, under torchrun, on
several (the multi-node command is in the help below)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastsdf.cli.common import UsageError, integer, number, positive, positive_int, progress_enabled
from fastsdf.cli.launch import add_run_options, multinode_help, train_command

__all__ = ["add_parser"]

_HELP = """\
Train a denoiser (DDPM) on the latent codes of MODEL (`fastsdf train-deepsdf`'s or `fastsdf
train-shape-vae`'s output folder or its model.pt), one code per training shape, normalised per
dimension; then write into OUT:

  model.pt       the denoiser and the moving average of its weights (--ema-decay), which sampling
                 uses, the codes' statistics and MODEL's model (fastsdf.load_model(OUT) reads it;
                 `fastsdf generate OUT --count N --out MESHES` makes new shapes)
  training.png   the loss and learning-rate curves

--held-out P keeps that share of the codes out of training: the weights written are those of the
moment their loss on them was lowest, before the denoiser learned its training codes by heart (its
samples would be copies of them).

--partial-clouds DATA (a shape VAE's MODEL, DATA its training samples): condition each shape's code
on the VAE's encoding of the surface points of DATA's file that face a random direction, what one
scan sees, with --condition-dropout of the steps unconditioned (classifier-free guidance); then
`fastsdf generate OUT --condition POINTS.ply --guidance W` generates shapes that fit a (partial) cloud.

While it trains, OUT/checkpoint.pt holds its progress: if the run is killed, the same command
resumes it (removed at the end); a finished run's outputs are never replaced without --overwrite.
Under torchrun the processes share each batch's codes: 1 and N processes train the same model.
""" + multinode_help("train-diffusion", "MODEL")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from fastsdf.training import train_diffusion as td
    from fastsdf.training.diffusion import PREDICTIONS, SCHEDULES

    train = sub.add_parser("train-diffusion", help="train latent diffusion on a DeepSDF auto-decoder's codes",
                           description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("model", metavar="MODEL", help="fastsdf train-deepsdf's or train-shape-vae's output (a folder "
                                                      "or model.pt)")
    train.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    train.add_argument("--steps", type=positive_int, default=td.DEFAULT_STEPS, metavar="N",
                       help=f"Adam steps (default: {td.DEFAULT_STEPS})")
    train.add_argument("--batch-size", type=positive_int, default=td.BATCH_SIZE, metavar="N",
                       help=f"codes per step, drawn with replacement; under torchrun, the processes' together "
                            f"(default: {td.BATCH_SIZE})")
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
    train.add_argument("--partial-clouds", default=None, metavar="DATA",
                       help="condition on partial clouds of the shape VAE's training samples in DATA")
    train.add_argument("--condition-dropout", type=number(0.0, 1.0), default=None, metavar="P",
                       help=f"with --partial-clouds, the share of codes trained unconditioned (default: "
                            f"{td.CONDITION_DROPOUT:g})")
    train.add_argument("--ema-decay", type=number(0.0, 1.0, high_open=True), default=td.EMA_DECAY, metavar="D",
                       help=f"decay of the moving average of the weights that sampling uses, warmed up as "
                            f"(1 + k) / (10 + k) at step k; 0: none (default: {td.EMA_DECAY:g})")
    train.add_argument("--held-out", type=number(0.0, 1.0, high_open=True), default=td.HELD_OUT, metavar="P",
                       help=f"share of the codes kept out of training to choose the weights by (the moment "
                            f"their loss was lowest); 0: train on all, keep the last weights (default: "
                            f"{td.HELD_OUT:g})")
    add_run_options(train, None)
    train.set_defaults(run=_train)


def _train(args: argparse.Namespace) -> int:
    if args.condition_dropout is not None and args.partial_clouds is None:
        raise UsageError("--condition-dropout needs --partial-clouds: without conditions there is nothing to drop")
    from fastsdf.training.train_diffusion import CONDITION_DROPOUT, train_diffusion

    def inputs():  # noqa: ANN202 - ((latent model, conditions), its name in the summary)
        from fastsdf.cli.common import load_model_of
        from fastsdf.training.latent_model import LATENT_MODELS
        from fastsdf.training.shape_vae import ShapeVAE

        latent_model = load_model_of(args.model, tuple(LATENT_MODELS.values()), "a latent model: a DeepSDF "
                                     "auto-decoder (fastsdf train-deepsdf's output) or a shape VAE (fastsdf "
                                     "train-shape-vae's)")
        if args.partial_clouds is None:
            return (latent_model, None), f"{len(latent_model.names)} codes"
        if not isinstance(latent_model, ShapeVAE):
            raise ValueError(f"--partial-clouds needs a shape VAE to encode the clouds (fastsdf train-shape-vae's "
                             f"output); {args.model} holds a {type(latent_model).__name__}")
        conditions = latent_model.partial_conditions(args.partial_clouds, seed=args.seed)
        return (latent_model, conditions), f"{len(latent_model.names)} codes with partial-cloud conditions"

    def train(data, device: str, checkpoint: Path):  # noqa: ANN001, ANN202 - (LatentModel, tensor), (LatentDiffusion, dict)
        from fastsdf.nn import LatentDenoiser

        latent_model, conditions = data
        denoiser = LatentDenoiser(latent_model.latent_size, hidden_features=args.width, blocks=args.blocks,
                                  condition_size=0 if conditions is None else conditions.shape[1])
        model, history = train_diffusion(
            latent_model, denoiser, steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
            schedule=args.schedule, timesteps=args.timesteps, prediction=args.prediction, conditions=conditions,
            condition_dropout=CONDITION_DROPOUT if args.condition_dropout is None else args.condition_dropout,
            ema_decay=args.ema_decay, held_out=args.held_out, seed=args.seed, device=device, checkpoint=checkpoint,
            progress=progress_enabled(args.quiet))
        return model.to("cpu"), history

    return train_command(args, train, _summary, inputs, unit="step")


def _summary(history: dict) -> str:
    if "best_step" not in history:
        return f"final loss {history['loss'][-1]:.3g}"
    held = len(history["held_out_shapes"])
    return (f"final loss {history['loss'][-1]:.3g}; weights of step {history['best_step']}, where the loss on the "
            f"{held} held-out code{'' if held == 1 else 's'} was lowest ({min(history['validation_loss']):.3g})")
