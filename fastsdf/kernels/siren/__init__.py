"""Triton kernels of the SIREN, ``fastsdf.ops.siren``'s ``"triton"`` backend, on CUDA tensors (on the
CPU under TRITON_INTERPRET=1). They take tensors (points, the layers' weights, biases and omegas)
and import nothing of fastsdf outside this package: the dispatch, the autograd Functions and what
is kept between calls are ``fastsdf.ops``'s (``siren``, ``siren_triton``, ``siren_composed``).

Modules, one idea each:

- ``network``: the whole network in one launch, its Jacobian by forward mode, the forward that
  writes the training tape, and forward mode along given directions that adds their tangents to it
  (``forward``, ``forward_with_tangents``, ``forward_taped``, ``forward_directional``, ``Tape``);
- ``training``: the backward sweep over that tape (``backward``, ``Deltas``; ``input_gradient``);
- ``parameters``: the parameter gradients after it, GEMMs over the batch (``parameter_gradients``);
- ``gradient``: the Jacobian by reverse mode from the tape (``jacobian_from_tape``), and without
  autograd by forward or reverse mode, whichever runs fewer products (``forward_with_gradient``);
- ``elementwise``: the fused sine of the composed path (``sincos``);
- ``device``: the device functions they share (range-reduced sine on the MUFU, operand rounding,
  the products at a precision, fp32's fp16x3 and tf32x3 among them);
- ``operands``: the weights as those products read them, prepared on the host once per call
  (fp32's fp16 big and small parts of the weights scaled by a power of two: ``split_fp16``);
- ``launch``: which networks the kernels take (``supports``), their tilings (``config``,
  ``backward_config``, with the registers and spills measured) and the device guard.

Offsets that scale with the batch (points x IN, points x OUT, the Jacobian's) are 64-bit, and every
launch runs under ``torch.cuda.device`` of its tensors.

Why Triton ``tl.dot`` on register tiles and not Gluon or CUDA C++: Gluon (explicit shared memory,
``wgmma`` descriptors, warp specialisation) is the way to BLOCK_M 128 tiles held in shared memory
at width 256, but its API is experimental and differs between Triton 3.6 (the GPU machine's) and
3.9 (this one's), and neither it nor a CUDA C++ kernel can run under the interpreter, which is
where CI tests these kernels (it has no GPU). The register design reaches the tensor
cores and the MUFU with no global traffic beyond inputs and outputs; its cost is the small
BLOCK_M of fp32 and tf32 from width 256 on (weights re-read from L2 per 16-32 points), the first
thing to revisit with a profiler. bf16 keeps the tile between layers in bfloat16 (half the
registers) and runs 64-128 points a tile at width 256 (``launch``).
"""

from fastsdf.kernels.siren.elementwise import sincos
from fastsdf.kernels.siren.gradient import forward_with_gradient, jacobian_from_tape
from fastsdf.kernels.siren.launch import Config, backward_config, config, supports
from fastsdf.kernels.siren.network import Tape, forward, forward_directional, forward_taped
from fastsdf.kernels.siren.parameters import parameter_gradients
from fastsdf.kernels.siren.training import Deltas, backward

__all__ = ["Config", "Deltas", "Tape", "backward", "backward_config", "config", "forward", "forward_directional",
           "forward_taped", "forward_with_gradient", "jacobian_from_tape", "parameter_gradients", "sincos", "supports"]
