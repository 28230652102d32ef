#include "engine/cpu/ops.h"

#include <cmath>
#include <limits>

namespace garnet::cpu {

void RmsNorm(const float* x, const float* w, float* y, int64_t n, float eps) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  if (w != nullptr) {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale * w[i];
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale;
  }
}

float GeluTanh(float x) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
}

void GeluTanhMul(const float* gate, const float* up, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = GeluTanh(gate[i]) * up[i];
}

void Softmax(float* x, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) mx = std::fmax(mx, x[i]);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void Softcap(float* x, int64_t n, float cap) {
  if (cap <= 0) return;
  const float inv = 1.0f / cap;
  for (int64_t i = 0; i < n; ++i) x[i] = cap * std::tanh(x[i] * inv);
}

void RopeAngles(int64_t n_dims, int64_t pos, float base, const float* freq_factors, float* cs) {
  const int64_t half = n_dims / 2;
  for (int64_t j = 0; j < half; ++j) {
    // As the reference computes it: inv_freq in fp32, angle = pos * inv_freq in fp32.
    const float inv_freq =
        1.0f / std::pow(base, static_cast<float>(2 * j) / static_cast<float>(n_dims));
    float a = static_cast<float>(pos) * inv_freq;
    if (freq_factors != nullptr) a /= freq_factors[j];
    cs[2 * j] = std::cos(a);
    cs[2 * j + 1] = std::sin(a);
  }
}

void RopeApply(float* x, int64_t n_dims, const float* cs) {
  const int64_t half = n_dims / 2;
  for (int64_t j = 0; j < half; ++j) {
    const float c = cs[2 * j], s = cs[2 * j + 1];
    const float a = x[j], b = x[j + half];
    x[j] = a * c - b * s;
    x[j + half] = b * c + a * s;
  }
}

void RopeNeox(float* x, int64_t n_dims, int64_t pos, float base, const float* freq_factors) {
  float cs[2048];
  if (n_dims > 2048) n_dims = 2048;  // head dims are at most 512 in every Gemma 4 variant
  RopeAngles(n_dims, pos, base, freq_factors, cs);
  RopeApply(x, n_dims, cs);
}

}  // namespace garnet::cpu
