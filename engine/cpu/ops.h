// Element-wise and row operations of the Gemma 4 forward pass, on fp32 activations
// (../shared/docs/gemma4.md §2). Reductions accumulate in double, so these are also the
// reference for other backends.
//
// Thread-safety: pure functions over caller-owned buffers.
#pragma once

#include <cstdint>

namespace garnet::cpu {

// y = x * (mean(x^2) + eps)^-1/2 * w   (w may be null: no weight). x and y may alias.
void RmsNorm(const float* x, const float* w, float* y, int64_t n, float eps);

// gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
float GeluTanh(float x);
// y[i] = gelu_tanh(gate[i]) * up[i]. y may alias gate or up.
void GeluTanhMul(const float* gate, const float* up, float* y, int64_t n);

// In place: x = softmax(x). Entries of -inf get probability 0; n > 0 and at least one finite.
void Softmax(float* x, int64_t n);

// In place: x = cap * tanh(x / cap); cap <= 0 leaves x unchanged.
void Softcap(float* x, int64_t n, float cap);

// NeoX (rotate-half) RoPE of one head vector x[0..head_dim) at position pos, on its first
// n_dims channels: for j < n_dims/2, the pair (j, j + n_dims/2) rotates by
//   angle_j = pos * base^(-2j / n_dims) / freq_factors[j]     (freq_factors may be null = 1).
// Channels from n_dims on pass through.
void RopeNeox(float* x, int64_t n_dims, int64_t pos, float base, const float* freq_factors);

// Precomputed cos/sin of RopeNeox for one position: cs[2j] = cos, cs[2j+1] = sin, j < n_dims/2.
void RopeAngles(int64_t n_dims, int64_t pos, float base, const float* freq_factors, float* cs);
void RopeApply(float* x, int64_t n_dims, const float* cs);

}  // namespace garnet::cpu
