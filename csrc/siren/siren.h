// SIREN on the CPU: a fused forward (and forward with input Jacobian) that takes a tile of points
// through every layer while its activations stay in cache, and the vectorised sine the autograd
// path uses. float32, weights packed once per network (PackedNet).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace fastsdf::siren {

// One linear layer: weight (out, in) row-major, bias (out,) or null; a sine layer computes
// sin(omega (W x + b)), a linear one W x + b.
struct LayerSpec {
  const float* weight;
  const float* bias;
  int64_t in, out;
  bool sine;
  float omega;
};

// The weights of a network copied into the panels the kernel reads, for the widest vector unit of
// this CPU (AVX-512, AVX2 with FMA, or SSE), chosen when it is built.
class PackedNet {
 public:
  // Layers in order: the output of one is the input of the next; all but the last are sine layers.
  // width: floats per vector (16 AVX-512, 8 AVX2, 4 SSE), 0 for the widest this CPU allows.
  PackedNet(const std::vector<LayerSpec>& layers, int width);

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  int vector_width() const { return width_; }
  // (out, in) of each layer.
  std::vector<std::pair<int64_t, int64_t>> layer_shapes() const;
  // Whether it was packed from exactly these layers: the same sizes, kinds and omegas and, bit for
  // bit, the same weights and biases (a missing bias counts as zeros). Reads every weight once, far
  // cheaper than packing them again.
  bool holds(const std::vector<LayerSpec>& layers) const;

  // y (n, out); jacobian (n, out, grad_columns), dy/dx for the last grad_columns inputs, or null;
  // tape (tape_floats(n, jacobian != null)), or null: what a backward of these points reads instead
  // of running the network again.
  void forward(const float* x, int64_t n, float* y, float* jacobian, int64_t grad_columns, float* tape) const;
  int64_t tape_floats(int64_t n, bool with_jacobian) const;

  // Gradients of a loss from its gradients with respect to y (dy (n, out)) and to the Jacobian (dj
  // (n, out, grad_columns)), either null: per layer into grad_weights (out, in) and grad_biases
  // (out,) (overwritten; a null entry skips it) and, unless null, into dx (n, in). tape: what
  // forward() wrote for the same points (with the Jacobian if dj is given), or null to run the
  // network again tile by tile.
  void backward(const float* x, int64_t n, const float* dy, const float* dj, int64_t grad_columns,
                const std::vector<float*>& grad_weights, const std::vector<float*>& grad_biases, float* dx,
                const float* tape) const;

  // A layer as the kernel reads it; sizes padded to whole panels of 2 vectors (zeros beyond).
  struct Layer {
    int64_t in, out, in_padded, out_padded;
    bool sine;
    float omega;
    std::vector<float> weight;    // (out, in) as given (holds() compares with it)
    std::vector<float> bias;      // (out_padded,)
    std::vector<float> forward;   // W^T in panels: [p][k][j] = W[p * panel + j][k]
    std::vector<float> backward;  // W in panels: [p][j][k] = W[j][p * panel + k]
  };

 private:
  std::vector<Layer> layers_;
  int64_t in_, out_;
  int width_;  // floats per vector register of the kernel in use
};

// s = sin(omega z) and, unless c is null, c = omega cos(omega z), elementwise over n values.
void sincos(const float* z, int64_t n, float omega, float* s, float* c);

}  // namespace fastsdf::siren
