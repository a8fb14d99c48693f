"""Training DeepSDF's auto-decoder (``fastsdf.training.autodecoder.AutoDecoder``): one decoder for many
shapes, each shape a latent code learned with it.

``train_deepsdf`` follows the paper (Park et al. 2019) and its code: codes as an embedding initialised
N(0, 1/latent_size), DeepSDF's clamped L1 plus the code prior (1/sigma^2) ||z||^2 on every sample,
Adam with the decoder at 5e-4 and the codes at 1e-3, both halved every 500 epochs, batches of a few
shapes with as many samples from inside as from outside each.

Launched by torchrun (``torch.distributed`` initialised), training runs on PyTorch's
DistributedDataParallel (``fastsdf.training.epochs``, the loop ``train_occupancy`` shares): every batch's shapes are dealt out to the processes, each process's loss is
its share of the batch's sum scaled so that DDP's gradient average is exactly the whole batch's
mean gradient, and which points a shape gives does not depend on the process, so 1 and N processes
train the same model (up to floating-point summation order, and to dropout masks, which each
process draws for itself). A script of its own imports this module (``from fastsdf import
train_deepsdf``) before ``init_process_group``, as ``fastsdf train-deepsdf`` does
(``fastsdf.training.distributed`` says why); training warns otherwise.

On several nodes (``torchrun --nnodes N --nproc_per_node G --rdzv_backend c10d --rdzv_endpoint
HOST:PORT``, the same command on every node; or static rendezvous, ``--master_addr HOST
--master_port PORT --node_rank I``), the processes first agree on what each can see
(``fastsdf.training.distributed``). Every process reads the samples at the same path (a shared
filesystem or identical copies): where reading fails on one, it fails on all, naming that one; and
they must find the same shapes, with the same row counts, and have the same settings, else every
process stops with an error that lists what each saw. The checkpoint is the first process's (rank
0): it alone reads it, sends its state to the others, and writes it, so the other nodes need not
see it. With c10d torchrun picks which node runs rank 0 (``--node_rank`` is ignored); with static
rendezvous it is node 0. A process that fails later, while training, ends the others through
the collective they wait in (gloo notices a peer that exits; NCCL, at its timeout).

The codes stay replicated, not sharded: each process holds the whole table, DDP all-reduces its
dense gradient with the decoder's at every step (``4 * shapes * latent_size`` bytes: 51 MB for
50,000 codes of 256) and every process applies the same Adam step, so the tables stay bitwise
equal. Each process holds 16 bytes per code entry (the value, its gradient in DDP's bucket and
Adam's two moments: 205 MB for 50,000 x 256, 3.3 GB for 800,000 x 256). Sharding the codes, or
sparse gradients, would change the algorithm: DeepSDF's dense Adam keeps moving the codes that are
not in the batch through their moments, which a sharded or sparse update would not.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import torch
from torch import nn

from fastsdf._validation import integer, real
from fastsdf.training.autodecoder import AutoDecoder
from fastsdf.training.epochs import read_shapes, train_epochs, training_device
from fastsdf.training.losses import clamped_l1
from fastsdf.training.seeding import check_seed
from fastsdf.training.shape_collection import ShapeCollection
from fastsdf.training.shape_loader import DEFAULT_WORKERS

__all__ = ["train_deepsdf"]

DEFAULT_EPOCHS = 2000
DECODER_LEARNING_RATE = 5e-4
CODE_LEARNING_RATE = 1e-3
DECAY_EVERY = 500  # epochs between halvings of both learning rates
CODE_REGULARIZATION = 1e-4  # 1 / sigma^2 of the code prior
SHAPES_PER_BATCH = 16
SAMPLES_PER_SHAPE = 4096


class _Trainable(nn.Module):
    """The decoder and the codes as one module, so that DDP reduces both."""

    def __init__(self, decoder: nn.Module, codes: nn.Embedding):
        super().__init__()
        self.decoder = decoder
        self.codes = codes

    def forward(self, points: torch.Tensor, owners: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.codes(owners)
        return self.decoder(points, latent)[..., 0], latent


def train_deepsdf(data: ShapeCollection | str | os.PathLike | Sequence[str | os.PathLike], decoder: nn.Module | None = None,
                  *, epochs: int = DEFAULT_EPOCHS, latent_size: int = 256, shapes_per_batch: int = SHAPES_PER_BATCH,
                  samples_per_shape: int = SAMPLES_PER_SHAPE, learning_rate: float = DECODER_LEARNING_RATE,
                  code_learning_rate: float = CODE_LEARNING_RATE, decay_every: int = DECAY_EVERY,
                  code_regularization: float = CODE_REGULARIZATION, code_init_std: float = 1.0, seed: int = 0,
                  device: Any = None, checkpoint: str | os.PathLike | None = None, checkpoint_every: float = 60.0,
                  time_budget: float | None = None, progress: bool | None = None,
                  num_workers: int = DEFAULT_WORKERS) -> tuple[AutoDecoder, dict[str, Any]]:
    """Trains a decoder and one latent code per shape (DeepSDF's auto-decoder).

    Args:
        data: a folder of DeepSDF ``.npz`` files or a list of them (``fastsdf sample`` writes
            them), whose rows are read from disk as batches draw them (``load_shapes``), or a
            ``ShapeSamples`` (samples in memory, 3D or 2D); both give the same batches for the
            same files.
        decoder: ``decoder(points, latent)`` -> (..., 1) whose latent input has ``latent_size``
            features (its ``latent_size`` or ``latent_features``: ``SirenMLP`` and ``ReluMLP`` take
            ``latent_features``) and whose ``in_features`` (if it says) match the shapes' dimension;
            default ``DeepSDFDecoder(latent_size, in_features=dim)``. Trained in place.
        epochs: passes over all shapes.
        shapes_per_batch, samples_per_shape: a batch's shapes and points per shape (half inside,
            half outside). Under DDP a batch's shapes are dealt out to the processes.
        learning_rate, code_learning_rate, decay_every: Adam's rates for the decoder and the codes,
            both halved every ``decay_every`` epochs.
        code_regularization: 1/sigma^2 of the code prior, added per sample as ``reg * ||z||^2``.
        code_init_std: codes start N(0, (code_init_std / sqrt(latent_size))^2), as DeepSDF.
        seed: an integer in [0, 2^63): decoder (when built here) and code initialisation, batches
            and points: the same seed gives the same run.
        checkpoint: a file to save to every ``checkpoint_every`` seconds (at an epoch's end) and at
            the end; when it exists, training resumes from it (the same settings required). Only
            the first process reads and writes it; under DDP it sends the state to the others.
        time_budget: stop at the end of the first epoch after this many seconds of training (the
            checkpoint, if any, then lets a later call go on).
        progress: a tqdm bar over epochs (default: when stderr is a terminal; first process only).
        num_workers: DataLoader worker processes that draw the batches ahead of the training step
            (0: this process draws them); the result does not depend on it.

    Returns:
        The ``AutoDecoder`` and the history: per epoch ``epoch``, ``seconds``, ``loss`` (mean clamped
        L1 over the epoch's samples), ``code_norm`` (mean ||z||), ``learning_rate`` (the decoder's);
        ``training_seconds``, ``epochs``, ``settings``.

    Raises:
        ValueError: bad arguments or samples; under DDP, processes that see different shapes or
            were given different settings, or a checkpoint the first process cannot use. Reading
            the samples or the checkpoint, where it fails on one process, fails on every one
            (RuntimeError on the others, naming it).
    """
    shapes = read_shapes(data)
    epochs, shapes_per_batch = integer(epochs, "epochs", 1), integer(shapes_per_batch, "shapes_per_batch", 1)
    samples_per_shape = integer(samples_per_shape, "samples_per_shape", 1)
    decay_every = integer(decay_every, "decay_every", 1)
    learning_rate = real(learning_rate, "learning_rate", 0, low_open=True)
    code_learning_rate = real(code_learning_rate, "code_learning_rate", 0, low_open=True)
    code_regularization = real(code_regularization, "code_regularization", 0)
    code_init_std = real(code_init_std, "code_init_std", 0, low_open=True)
    device = training_device(device)

    seed = check_seed(seed, allow_none=False)
    torch.manual_seed(seed)
    if decoder is None:
        from fastsdf.nn import DeepSDFDecoder

        decoder = DeepSDFDecoder(latent_size=integer(latent_size, "latent_size", 1), in_features=shapes.dim)
    if getattr(decoder, "in_features", shapes.dim) != shapes.dim:
        raise ValueError(f"the decoder takes {decoder.in_features} coordinates per point, the shapes have "
                         f"{shapes.dim} (build it with in_features={shapes.dim})")
    latent_size = getattr(decoder, "latent_size", getattr(decoder, "latent_features", None))
    if not latent_size:
        raise ValueError("the decoder has no latent input (DeepSDFDecoder(latent_size=k) or SirenMLP(latent_features=k))")
    codes = nn.Embedding(len(shapes), latent_size)
    with torch.no_grad():
        codes.weight.normal_(0.0, code_init_std / math.sqrt(latent_size),
                             generator=torch.Generator().manual_seed(seed))
    trainable = _Trainable(decoder, codes).to(device)
    optimiser = torch.optim.Adam([{"params": decoder.parameters(), "lr": learning_rate},
                                  {"params": codes.parameters(), "lr": code_learning_rate}])
    settings = {"epochs": epochs, "shapes_per_batch": shapes_per_batch, "samples_per_shape": samples_per_shape,
                "learning_rate": learning_rate, "code_learning_rate": code_learning_rate, "decay_every": decay_every,
                "code_regularization": code_regularization, "seed": seed, "shapes": shapes.names}

    def start_epoch(epoch: int) -> None:
        for group, base in zip(optimiser.param_groups, (learning_rate, code_learning_rate)):
            group["lr"] = base * 0.5 ** (epoch // decay_every)

    def step(engine: nn.Module, batch: tuple[torch.Tensor, ...], scale: float) -> tuple[torch.Tensor, list[float]]:
        points, sdf, owners = batch
        predicted, latent = engine(points, owners)
        errors = clamped_l1(predicted, sdf, reduction="none")
        prior = code_regularization * latent.square().sum(dim=-1)
        # The mean over the batch's samples: its sum over shapes of each shape's mean.
        loss = (errors + prior).sum() * (scale / samples_per_shape)
        return loss, [errors.detach().sum().item(), latent.detach().norm(dim=-1).sum().item(), len(errors)]

    def summary(totals: torch.Tensor, epoch: int) -> tuple[float, float, float]:
        # totals: clamped L1 sum, code norm sum, samples
        return (totals[0].item() / totals[2].item(), totals[1].item() / totals[2].item(),
                learning_rate * 0.5 ** (epoch // decay_every))

    history = train_epochs(shapes, trainable, optimiser, settings, label="fastsdf train-deepsdf",
                           columns=("loss", "code_norm", "learning_rate"), step=step, summary=summary,
                           start_epoch=start_epoch, agree={"latent_size": latent_size}, device=device,
                           checkpoint=checkpoint, checkpoint_every=checkpoint_every, time_budget=time_budget,
                           progress=progress, num_workers=num_workers)
    model = AutoDecoder(decoder, codes.weight, shapes.names, [shapes.transform(i) for i in range(len(shapes))], history)
    return model, history
