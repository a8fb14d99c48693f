"""``fastsdf train-occupancy``: an occupancy network (point-cloud encoder + decoder) over a folder of
sample files, on one process or, under torchrun, on several, on one node or several (the multi-node
command is in the help below)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastsdf.cli.common import integer, number, positive, positive_int, progress_enabled
from fastsdf.cli.launch import add_run_options, multinode_help, train_command

__all__ = ["add_parser"]

_HELP = """\
Train an occupancy network (Mescheder et al. 2019: a ResNet-PointNet encoder of point clouds and a
decoder of ResNet blocks with conditional batch norm, BCE on occupancy) on the DeepSDF .npz files of
DATA, then write into OUT:

  model.pt       the encoder and the decoder (fastsdf.load_model(OUT) reads them;
                 `fastsdf complete OUT POINTS` meshes the shape of a point cloud)
  training.png   the loss curve

The files need surface points, the encoder's input: for ONet's recipe, points uniform in the box
and surface points, e.g.

  fastsdf sample MESHES DATA --n-near 0 --n-uniform 100000 --n-surface 100000

(DeepSDF's default files plus --n-surface serve too: their points lie mostly near the surface).
Each step takes, per shape, 300 surface points with noise 0.01 (ONet's 0.005 in its unit cube) as
input and 2,048 points whose occupancy is the sign of their distance. While it trains,
OUT/checkpoint.pt holds its progress: the same command resumes a killed run (removed at the end);
a finished run's outputs are never replaced without --overwrite.
The defaults are ONet's (Adam 1e-4, 64 shapes per batch, encoder 512 wide, decoder 256 wide, 5
blocks each; codes of 256, ONet's point-cloud model uses 512): on a CPU, a smaller --width,
--encoder-width and --shapes-per-batch make a first run practical.
""" + multinode_help("train-occupancy")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from fastsdf.training import occupancy as oc
    from fastsdf.training import train_occupancy as to

    train = sub.add_parser("train-occupancy", help="train an occupancy network on a folder of .npz samples",
                           description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("data", metavar="DATA", help="a folder of DeepSDF .npz files with surface points")
    train.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    train.add_argument("--decoder", choices=("batchnorm", "concat"), default="batchnorm",
                       help="conditional batch norm (ONet's DecoderCBatchNorm) or the code concatenated to the "
                            "point (ONet's plain Decoder) (default: batchnorm)")
    train.add_argument("--latent-size", type=positive_int, default=256, metavar="K", help="code length (default: 256)")
    train.add_argument("--width", type=positive_int, default=None,
                       help="the decoder's hidden features (default: 256, or 128 with --decoder concat)")
    train.add_argument("--encoder-width", type=positive_int, default=512, metavar="W",
                       help="the encoder's hidden features (default: 512)")
    train.add_argument("--blocks", type=positive_int, default=5, help="ResNet blocks of each network (default: 5)")
    train.add_argument("--epochs", type=positive_int, default=to.DEFAULT_EPOCHS, metavar="N",
                       help=f"passes over all shapes (default: {to.DEFAULT_EPOCHS})")
    train.add_argument("--shapes-per-batch", type=positive_int, default=to.SHAPES_PER_BATCH, metavar="N",
                       help=f"shapes per batch (default: {to.SHAPES_PER_BATCH})")
    train.add_argument("--samples-per-shape", type=integer(2), default=to.SAMPLES_PER_SHAPE, metavar="N",
                       help=f"occupancy points per shape per batch (default: {to.SAMPLES_PER_SHAPE})")
    train.add_argument("--input-points", type=positive_int, default=oc.CLOUD_POINTS, metavar="N",
                       help=f"input points per shape (default: {oc.CLOUD_POINTS})")
    train.add_argument("--input-noise", type=number(0.0), default=oc.CLOUD_NOISE, metavar="STD",
                       help=f"Gaussian noise on the input points, normalised units (default: {oc.CLOUD_NOISE:g})")
    train.add_argument("--balanced", action="store_true",
                       help="draw the occupancy points half inside, half outside (default: uniformly from all rows)")
    train.add_argument("--learning-rate", type=positive, default=to.LEARNING_RATE, metavar="LR",
                       help=f"Adam's rate (default: {to.LEARNING_RATE:g})")
    add_run_options(train, to.DEFAULT_WORKERS)
    train.set_defaults(run=_train)


def _train(args: argparse.Namespace) -> int:
    from fastsdf.nn import OccupancyDecoder, PointNetEncoder
    from fastsdf.training.train_occupancy import train_occupancy

    def train(shapes, device: str, checkpoint: Path):  # noqa: ANN001, ANN202 - ShapeCollection, (OccupancyNetwork, dict)
        encoder = PointNetEncoder(args.latent_size, args.encoder_width, args.blocks)
        decoder = OccupancyDecoder(args.latent_size, args.width, args.blocks, conditioning=args.decoder)
        return train_occupancy(
            shapes, encoder, decoder, epochs=args.epochs, shapes_per_batch=args.shapes_per_batch,
            samples_per_shape=args.samples_per_shape, cloud_points=args.input_points, cloud_noise=args.input_noise,
            balanced=args.balanced, learning_rate=args.learning_rate, seed=args.seed, device=device,
            checkpoint=checkpoint, progress=progress_enabled(args.quiet), num_workers=args.workers)

    return train_command(args, train, lambda history: f"final BCE {history['loss'][-1]:.3g}, occupancy accuracy "
                                                      f"{history['accuracy'][-1]:.3f}")
