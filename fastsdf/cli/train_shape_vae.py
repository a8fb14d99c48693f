"""``fastsdf train-shape-vae``: a point-cloud VAE of shapes (DiffusionSDF's first stage) over a folder of
sample files, on one process or, under torchrun, on several, on one node or several (the multi-node
command is in the help below)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastsdf.cli.common import number, positive, positive_int, progress_enabled
from fastsdf.cli.launch import add_run_options, multinode_help, train_command

__all__ = ["add_parser"]

_HELP = """\
Train a point-cloud VAE of shapes (DiffusionSDF, Chou et al. 2023: a PointNet encoder of each shape's
surface points into a latent Gaussian, a DeepSDF decoder of the sampled latent, DeepSDF's clamped L1
plus a small KL term) on the DeepSDF .npz files of DATA, then write into OUT:

  model.pt       the encoder, the decoder and each training shape's latent (fastsdf.load_model(OUT)
                 reads them; `fastsdf train-diffusion OUT --out GEN [--partial-clouds DATA]` learns
                 the latents' distribution, conditioned on partial clouds if asked)
  training.png   the loss curves

The files need surface points, the encoder's input (fastsdf sample MESHES DATA --n-surface 100000).
Each step takes, per shape, --input-points of its surface points and --samples-per-shape of its
samples (half inside). While it trains, OUT/checkpoint.pt holds its progress: the same command
resumes a killed run (removed at the end); a finished run's outputs are never replaced without
--overwrite. The defaults are DiffusionSDF's where it has them (latents of 256, KL weight 1e-5
against N(0, 0.25^2), 1,024 input points, PointNet width 128, Adam 1e-4) and DeepSDF's decoder
(8 x 512); on a CPU, a smaller --width and fewer --epochs make a first run practical.
""" + multinode_help("train-shape-vae")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from fastsdf.training import train_shape_vae as tv

    train = sub.add_parser("train-shape-vae", help="train a point-cloud VAE of shapes on a folder of .npz samples",
                           description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("data", metavar="DATA", help="a folder of DeepSDF .npz files with surface points")
    train.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    train.add_argument("--latent-size", type=positive_int, default=256, metavar="K", help="latent length (default: 256)")
    train.add_argument("--width", type=positive_int, default=512, help="the decoder's hidden features (default: 512)")
    train.add_argument("--layers", type=positive_int, default=8, help="the decoder's hidden layers (default: 8)")
    train.add_argument("--dropout", type=number(0.0, 1.0, high_open=True), default=0.2,
                       help="the decoder's dropout, in [0, 1) (default: 0.2)")
    train.add_argument("--encoder-width", type=positive_int, default=128, metavar="W",
                       help="the encoder's hidden features (default: 128)")
    train.add_argument("--blocks", type=positive_int, default=5, help="the encoder's ResNet blocks (default: 5)")
    train.add_argument("--epochs", type=positive_int, default=tv.DEFAULT_EPOCHS, metavar="N",
                       help=f"passes over all shapes (default: {tv.DEFAULT_EPOCHS})")
    train.add_argument("--shapes-per-batch", type=positive_int, default=tv.SHAPES_PER_BATCH, metavar="N",
                       help=f"shapes per batch (default: {tv.SHAPES_PER_BATCH})")
    train.add_argument("--samples-per-shape", type=positive_int, default=tv.SAMPLES_PER_SHAPE, metavar="N",
                       help=f"SDF samples per shape per batch, half inside (default: {tv.SAMPLES_PER_SHAPE})")
    train.add_argument("--input-points", type=positive_int, default=tv.CLOUD_POINTS, metavar="N",
                       help=f"surface points per shape, the encoder's input (default: {tv.CLOUD_POINTS})")
    train.add_argument("--input-noise", type=number(0.0), default=tv.CLOUD_NOISE, metavar="STD",
                       help=f"Gaussian noise on the input points, normalised units (default: {tv.CLOUD_NOISE:g})")
    train.add_argument("--kl-weight", type=number(0.0), default=tv.KL_WEIGHT, metavar="W",
                       help=f"weight of the KL term, averaged over the latent's values (default: {tv.KL_WEIGHT:g})")
    train.add_argument("--prior-std", type=positive, default=tv.PRIOR_STD, metavar="S",
                       help=f"std of the latents' Gaussian prior (default: {tv.PRIOR_STD:g})")
    train.add_argument("--learning-rate", type=positive, default=tv.LEARNING_RATE, metavar="LR",
                       help=f"Adam's rate (default: {tv.LEARNING_RATE:g})")
    add_run_options(train, tv.DEFAULT_WORKERS)
    train.set_defaults(run=_train)


def _train(args: argparse.Namespace) -> int:
    from fastsdf.nn import DeepSDFDecoder
    from fastsdf.training.shape_vae import shape_vae_encoder
    from fastsdf.training.train_shape_vae import train_shape_vae

    def train(shapes, device: str, checkpoint: Path):  # noqa: ANN001, ANN202 - ShapeCollection, (ShapeVAE, dict)
        encoder = shape_vae_encoder(args.latent_size, args.encoder_width, args.blocks, args.prior_std)
        latent_in = (args.layers // 2,) if args.layers > 1 else ()
        decoder = DeepSDFDecoder(latent_size=args.latent_size, hidden_features=args.width, hidden_layers=args.layers,
                                 dropout=args.dropout, latent_in=latent_in)
        return train_shape_vae(
            shapes, encoder, decoder, epochs=args.epochs, shapes_per_batch=args.shapes_per_batch,
            samples_per_shape=args.samples_per_shape, cloud_points=args.input_points, cloud_noise=args.input_noise,
            kl_weight=args.kl_weight, prior_std=args.prior_std, learning_rate=args.learning_rate, seed=args.seed,
            device=device, checkpoint=checkpoint, progress=progress_enabled(args.quiet), num_workers=args.workers)

    return train_command(args, train, lambda history: f"final loss {history['loss'][-1]:.3g}, KL per value "
                                                      f"{history['kl'][-1]:.3g}")
