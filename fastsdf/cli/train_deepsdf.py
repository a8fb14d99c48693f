"""``fastsdf train-deepsdf``: a DeepSDF auto-decoder over a folder of sample files, on one process or, under
torchrun, on several, on one node or several (the multi-node command is in the help below)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fastsdf.cli.common import add_overwrite_option, integer, number, positive, positive_int, refuse_to_overwrite, seed

__all__ = ["add_parser"]

_HELP = """\
Train a DeepSDF auto-decoder (one decoder, one latent code per shape) on the DeepSDF .npz files of
DATA (`fastsdf sample` writes them), then write into OUT:

  model.pt       the decoder and the codes, by shape name (fastsdf.load_model(OUT) reads them;
                 `fastsdf reconstruct OUT SAMPLES` finds codes for new shapes)
  training.png   the loss and learning-rate curves

While it trains, OUT/checkpoint.pt holds its progress: if the run is killed, the same command
resumes it (removed at the end); a finished run's outputs are never replaced without --overwrite.
On several processes, launch it with torchrun, e.g.

  torchrun --standalone --nproc_per_node 2 -m fastsdf.cli train-deepsdf DATA --out OUT

(gloo on CPUs, NCCL on GPUs: one GPU per process); the result is the same as on one process.
On several nodes, run the same command on each, with a rendezvous instead of --standalone:

  torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
      --rdzv_id JOB -m fastsdf.cli train-deepsdf DATA --out OUT

(HOST: a node every node reaches; or static rendezvous: --master_addr HOST --master_port 29500
--node_rank I, I = 0 on HOST). DATA must hold the same files at the same path on every node (a
shared filesystem or copies); the processes check that they see the same shapes and stop, all of
them, if not. OUT is written and read (its checkpoint too) only by the first process (rank 0):
the other nodes need not see it. With c10d, torchrun chooses which node that is (--node_rank is
ignored), so resuming from a checkpoint on one node's own disk needs static rendezvous, with that
node as node 0, or an OUT on a shared filesystem.
The defaults are the paper's decoder (8 x 512, dropout 0.2, weight norm, codes of 256) and
learning rates; on a CPU, a smaller --width and fewer --epochs make a first run practical.
The samples stay on disk: --workers processes read each batch's rows as it is drawn, so memory
does not grow with the number of shapes.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from fastsdf.training import train_deepsdf as ad

    train = sub.add_parser("train-deepsdf", help="train a DeepSDF auto-decoder on a folder of .npz samples",
                           description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("data", metavar="DATA", help="a folder of DeepSDF .npz files")
    train.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    train.add_argument("--decoder", choices=("deepsdf", "siren"), default="deepsdf",
                       help="DeepSDF's ReLU decoder or a SIREN with a latent input (default: deepsdf)")
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
    train.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")
    train.add_argument("--workers", type=integer(0), default=ad.DEFAULT_WORKERS, metavar="N",
                       help="processes that read the batches' samples from disk ahead of training; 0: none "
                            f"(default: {ad.DEFAULT_WORKERS}; the result does not depend on it)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    add_overwrite_option(train)
    train.set_defaults(run=_train)


def _decoder(args: argparse.Namespace):  # noqa: ANN202 - a torch module, imported late
    from fastsdf.nn import DeepSDFDecoder, SirenMLP

    if args.decoder == "siren":
        return SirenMLP(3, args.width, args.layers - 1, 1, latent_features=args.latent_size, double_backward=False)
    latent_in = (args.layers // 2,) if args.layers > 1 else ()
    return DeepSDFDecoder(latent_size=args.latent_size, hidden_features=args.width, hidden_layers=args.layers,
                          dropout=args.dropout, latent_in=latent_in)


def _train(args: argparse.Namespace) -> int:
    import torch
    import torch.distributed as dist

    from fastsdf.cli.common import progress_enabled
    from fastsdf.training.distributed import from_first_process, on_every_process
    from fastsdf.training.shapes import load_shapes
    from fastsdf.training.train_deepsdf import train_deepsdf

    out = Path(args.out)
    checkpoint = out / "checkpoint.pt"
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    device = "cpu"
    if launched:
        cuda = torch.cuda.is_available()
        dist.init_process_group("nccl" if cuda else "gloo")
        if cuda:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"  # this node's GPU, not the global rank's
            torch.cuda.set_device(device)
    elif torch.cuda.is_available():
        device = "cuda"
    try:
        # OUT is the first process's alone (other nodes may not see it): it checks it and decides,
        # and every process hears the answer, so that they all go on or all stop.
        from_first_process(lambda: _check_out(out), "checking --out")
        shapes = on_every_process(lambda: load_shapes(args.data), f"reading {args.data}")  # bad data: stop now
        from_first_process(lambda: _claim_out(out, checkpoint, args.overwrite), "checking --out")
        torch.manual_seed(args.seed)  # the decoder's initialisation, the same on every process
        model, history = train_deepsdf(
            shapes, _decoder(args), epochs=args.epochs, shapes_per_batch=args.shapes_per_batch,
            samples_per_shape=args.samples_per_shape, learning_rate=args.learning_rate,
            code_learning_rate=args.code_learning_rate, decay_every=args.decay_every,
            code_regularization=args.code_regularization, seed=args.seed, device=device, checkpoint=checkpoint,
            progress=progress_enabled(args.quiet), num_workers=args.workers)
        # Every process waits for the first one's writing, so that all end with its outcome.
        from_first_process(lambda: _write(out, checkpoint, model, history), f"writing {out}")
    finally:
        if launched:
            dist.destroy_process_group()
    return 0


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out is not a folder: {out}")


def _claim_out(out: Path, checkpoint: Path, overwrite: bool) -> None:
    if checkpoint.exists():  # the run is unfinished: it resumes, and its outputs are its own
        print(f"resuming from {checkpoint}")
    else:
        refuse_to_overwrite([out / "model.pt", out / "training.png"], overwrite)


def _write(out: Path, checkpoint: Path, model, history: dict) -> None:  # noqa: ANN001 - an AutoDecoder
    import torch.distributed as dist

    from fastsdf.plots import plot_history

    path = model.save(out)
    shapes = len(model.names)
    plot_history(history, out / "training.png", title=f"fastsdf train-deepsdf ({shapes} shapes)", x="epoch")
    processes = dist.get_world_size() if dist.is_initialized() else 1
    print(f"trained on {shapes} shapes: {history['epochs']} epochs in {history['training_seconds']:.1f} s "
          f"on {processes} process{'es' if processes > 1 else ''}, final loss {history['loss'][-1]:.3g}")
    print(f"  model.pt:     {path.resolve()}")
    print(f"  training.png: {(out / 'training.png').resolve()}")
    checkpoint.unlink(missing_ok=True)
