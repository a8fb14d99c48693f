"""fastsdf._validation: one rule per kind of argument, and the public functions that follow it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fastsdf
from fastsdf import _validation
from fastsdf._arrays import concatenate, is_tensor, to_numpy
from fastsdf._progress import show_progress
from fastsdf._validation import WrongTypeError, integer, one_of, real, triple
from fastsdf.geometry.sampling import sample_sdf
from fastsdf.nn import DeepSDFDecoder, SirenMLP


@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3), np.array(3)], ids=repr)
def test_integers_are_integral_values(value) -> None:
    out = integer(value, "n", minimum=1)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize("value", [3.0, np.float32(3), True, np.bool_(True), "3", None, 2.5], ids=repr)
def test_anything_else_is_not_an_integer(value) -> None:
    with pytest.raises(WrongTypeError, match=r"^n must be an integer >= 1, got "):
        integer(value, "n", minimum=1)


def test_wrong_types_are_type_errors_and_value_errors() -> None:
    assert issubclass(WrongTypeError, TypeError) and issubclass(WrongTypeError, ValueError)


def test_messages_name_the_argument_and_the_range() -> None:
    with pytest.raises(ValueError, match=r"^batch_size must be >= 1, got 0$"):
        integer(0, "batch_size", minimum=1)
    with pytest.raises(ValueError, match=r"^seed must be in \[0, 9\], got 10$"):
        integer(10, "seed", 0, 9)
    with pytest.raises(ValueError, match=r"^dropout must be in \[0, 1\), got 1$"):
        real(1, "dropout", 0, 1, high_open=True)
    with pytest.raises(ValueError, match=r"^radius must be a finite number > 0, got nan$"):
        real(math.nan, "radius", 0, low_open=True)
    with pytest.raises(WrongTypeError, match=r"^level must be a real number, got '0.5'$"):
        real("0.5", "level")
    with pytest.raises(ValueError, match=r"^must be >= 2, got 1$"):  # argparse's form: no name
        integer(1, "", minimum=2)
    with pytest.raises(ValueError, match=r"^method must be one of \('a', 'b'\), got 'c'$"):
        one_of("c", "method", ("a", "b"))


@pytest.mark.parametrize("value", [True, 1 + 0j, np.complex64(1), "1", b"1", [1.0, 2.0], None], ids=repr)
def test_reals_are_real_numbers(value) -> None:
    with pytest.raises(WrongTypeError):
        real(value, "x")


def test_reals_and_triples() -> None:
    assert real(np.float32(0.5), "x") == 0.5 and real(torch.tensor(2.0), "x") == 2.0 and real(3, "x") == 3.0
    assert triple(np.arange(3), "origin") == (0.0, 1.0, 2.0)
    for values in [(1, 2), (1, 2, "3"), 5, (1, 2, True)]:
        with pytest.raises(WrongTypeError, match="origin must be three real numbers"):
            triple(values, "origin")
    with pytest.raises(ValueError, match="three finite numbers"):
        triple((0, 0, np.inf), "origin")
    with pytest.raises(ValueError, match="spacing must be positive"):
        triple((1, 0, 1), "spacing", positive=True)
    with pytest.raises(ValueError):
        one_of(np.zeros(2), "sign", ("winding",))


def test_public_functions_share_the_integer_rule() -> None:
    """3.0 was accepted by some (extract_mesh, sample_sdf, fit) and refused by others (SirenMLP);
    NumPy integers the other way round."""
    sphere = fastsdf.Sphere(0.5)
    with pytest.raises(WrongTypeError, match="batch_size must be an integer"):
        fastsdf.extract_mesh(sphere, 8, batch_size=64.0)
    with pytest.raises(WrongTypeError, match="resolution must be an integer"):
        fastsdf.extract_mesh(sphere, 8.0)
    with pytest.raises(WrongTypeError, match="n_near must be an integer"):
        sample_sdf((np.eye(3), np.array([[0, 1, 2]])), 3, 2.0, sdf=lambda p: np.zeros(len(p)))
    with pytest.raises(WrongTypeError, match="steps must be an integer"):
        fastsdf.fit((np.eye(3), np.array([[0, 1, 2]])), steps=3.0)
    model = SirenMLP(np.int64(3), np.int32(8), np.int64(1), np.int16(1))
    assert model.config()["hidden_features"] == 8 and type(model.in_features) is int
    assert DeepSDFDecoder(latent_size=np.int64(4), hidden_features=16, hidden_layers=2, latent_in=()).latent_size == 4


def test_arrays_and_progress() -> None:
    assert is_tensor(torch.zeros(1)) and is_tensor(torch.nn.Parameter(torch.zeros(1)))
    assert not is_tensor(np.zeros(1)) and not is_tensor(torch.Size([1]))
    assert to_numpy(torch.ones(2, requires_grad=True)).tolist() == [1.0, 1.0]
    assert is_tensor(concatenate([torch.zeros(1), torch.ones(2)]))
    assert concatenate([np.zeros(1), np.ones(2)]).tolist() == [0.0, 1.0, 1.0]
    assert show_progress(True, long_run=False) and not show_progress(False)
    assert not show_progress(None, long_run=False)  # the caller's "too short to watch" wins even on a terminal
    assert _validation.__all__ == ["SEED_LIMIT", "WrongTypeError", "integer", "one_of", "real", "triple", "vector"]
