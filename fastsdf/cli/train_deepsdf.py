"""``fastsdf train-deepsdf``: a DeepSDF auto-decoder over a folder of sample files, on one process or, under
torchrun, on several, on one node or several (the multi-node command is in the help below)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastsdf.cli.common import number, positive, positive_int, progress_enabled, relu_network
from fastsdf.cli.launch import add_run_options, multinode_help, train_command

__all__ = ["add_parser"]

_HELP = """\
Train a DeepSDF auto-decoder (one decoder, one latent code per shape) on the DeepSDF .npz files of
DATA (`fastsdf sample` writes them), then write into OUT:

  model.pt       the decoder and the codes, by shape name (fastsdf.load_model(OUT) reads them;
                 `fastsdf reconstruct OUT SAMPLES` finds codes for new shapes)
  training.png   the loss and learning-rate curves

While it trains, OUT/checkpoint.pt holds its progress: if the run is killed, the same command
resumes it (removed at the end); a finished run's outputs are never replaced without --overwrite.
The defaults are the paper's decoder (8 x 512, dropout 0.2, weight norm, codes of 256) and
learning rates; on a CPU, a smaller --width and fewer --epochs make a first run practical.
The samples stay on disk: --workers processes read each batch's rows as it is drawn, so memory
does not grow with the number of shapes.
""" + multinode_help("train-deepsdf")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from fastsdf.training import train_deepsdf as ad

    train = sub.add_parser("train-deepsdf", help="train a DeepSDF auto-decoder on a folder of .npz samples",
                           description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("data", metavar="DATA", help="a folder of DeepSDF .npz files")
    train.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    train.add_argument("--decoder", choices=("deepsdf", "siren", "relu"), default="deepsdf",
                       help="DeepSDF's decoder (weight norm, dropout, its middle layer narrowed to take the input "
                            "again), a SIREN with a latent input, or a plain ReLU MLP with DeepSDF's skip "
                            "(fastsdf.ReluMLP, as `fastsdf fit --network relu`) (default: deepsdf)")
    train.add_argument("--latent-size", type=positive_int, default=256, metavar="K", help="code length (default: 256)")
    train.add_argument("--width", type=positive_int, default=512, help="hidden features (default: 512)")
    train.add_argument("--layers", type=positive_int, default=8, help="hidden layers (default: 8)")
    train.add_argument("--dropout", type=number(0.0, 1.0, high_open=True), default=0.2,
                       help="deepsdf decoder's dropout, in [0, 1) (default: 0.2)")
    train.add_argument("--epochs", type=positive_int, default=ad.DEFAULT_EPOCHS, metavar="N",
                       help=f"passes over all shapes (default: {ad.DEFAULT_EPOCHS})")
    train.add_argument("--shapes-per-batch", type=positive_int, default=ad.SHAPES_PER_BATCH, metavar="N",
                       help=f"shapes per batch (default: {ad.SHAPES_PER_BATCH})")
    train.add_argument("--samples-per-shape", type=positive_int, default=ad.SAMPLES_PER_SHAPE, metavar="N",
                       help=f"points per shape per batch, half inside (default: {ad.SAMPLES_PER_SHAPE})")
    train.add_argument("--learning-rate", type=positive, default=ad.DECODER_LEARNING_RATE, metavar="LR",
                       help=f"the decoder's Adam rate (default: {ad.DECODER_LEARNING_RATE:g})")
    train.add_argument("--code-learning-rate", type=positive, default=ad.CODE_LEARNING_RATE, metavar="LR",
                       help=f"the codes' Adam rate (default: {ad.CODE_LEARNING_RATE:g})")
    train.add_argument("--decay-every", type=positive_int, default=ad.DECAY_EVERY, metavar="N",
                       help=f"halve both rates every N epochs (default: {ad.DECAY_EVERY})")
    train.add_argument("--code-regularization", type=number(0.0), default=ad.CODE_REGULARIZATION, metavar="L",
                       help=f"1/sigma^2 of the code prior (default: {ad.CODE_REGULARIZATION:g})")
    add_run_options(train, ad.DEFAULT_WORKERS)
    train.set_defaults(run=_train)


def _decoder(args: argparse.Namespace):  # noqa: ANN202 - a torch module, imported late
    from fastsdf.nn import DeepSDFDecoder, SirenMLP

    if args.decoder == "siren":
        return SirenMLP(3, args.width, args.layers - 1, 1, latent_features=args.latent_size, double_backward=False)
    if args.decoder == "relu":
        return relu_network(args.width, args.layers - 1, latent_features=args.latent_size)
    latent_in = (args.layers // 2,) if args.layers > 1 else ()
    return DeepSDFDecoder(latent_size=args.latent_size, hidden_features=args.width, hidden_layers=args.layers,
                          dropout=args.dropout, latent_in=latent_in)


def _train(args: argparse.Namespace) -> int:
    from fastsdf.training.train_deepsdf import train_deepsdf

    def train(shapes, device: str, checkpoint: Path):  # noqa: ANN001, ANN202 - ShapeCollection, (AutoDecoder, dict)
        return train_deepsdf(
            shapes, _decoder(args), epochs=args.epochs, shapes_per_batch=args.shapes_per_batch,
            samples_per_shape=args.samples_per_shape, learning_rate=args.learning_rate,
            code_learning_rate=args.code_learning_rate, decay_every=args.decay_every,
            code_regularization=args.code_regularization, seed=args.seed, device=device, checkpoint=checkpoint,
            progress=progress_enabled(args.quiet), num_workers=args.workers)

    return train_command(args, train, lambda history: f"final loss {history['loss'][-1]:.3g}")
