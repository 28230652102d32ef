// The error bound of the Vulkan decode matvecs' integer-dot path (matvec.comp IDOT) for the
// kernel tests: which x values share an int8 scale, and how far that rounding can move a row.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/quant/types.h"
#include "engine/vulkan/kernels.h"

namespace garnet::vk::testing {

// True when `kern` runs `type`'s decode matvecs with integer dot products (matvec.comp IDOT: the
// "_idot" variants, on devices with shaderIntegerDotProduct).
inline bool UsesIdot(const Kernels& kern, GgmlType type) {
  return kern.MatvecVariant(type).ends_with("_idot");
}

// The items of the IDOT path for `type` (matvec_items.glsl): each item's x values are rounded to
// int8 with one scale. Returns the element offsets of every item within one block.
inline std::vector<std::vector<uint32_t>> IdotItems(GgmlType type) {
  std::vector<std::vector<uint32_t>> items;
  if (type == GgmlType::kQ4_K) {  // word u: 64c + 16h + i and 64c + 32 + 16h + i, i < 16
    for (uint32_t u = 0; u < 8; ++u) {
      auto& it = items.emplace_back();
      for (uint32_t i = 0; i < 16; ++i) {
        it.push_back(64 * (u >> 1) + 16 * (u & 1) + i);
        it.push_back(64 * (u >> 1) + 32 + 16 * (u & 1) + i);
      }
    }
  } else if (type == GgmlType::kQ6_K) {  // (h, l4): 128h + 32g + 4 l4 + i, g < 4, i < 4
    for (uint32_t part = 0; part < 16; ++part) {
      auto& it = items.emplace_back();
      for (uint32_t g = 0; g < 4; ++g) {
        for (uint32_t i = 0; i < 4; ++i)
          it.push_back(128 * (part >> 3) + 32 * g + 4 * (part & 7) + i);
      }
    }
  } else if (type == GgmlType::kQ8_0) {  // quarter: 8 part + i, i < 8
    for (uint32_t part = 0; part < 4; ++part) {
      auto& it = items.emplace_back();
      for (uint32_t i = 0; i < 8; ++i) it.push_back(8 * part + i);
    }
  } else if (type == GgmlType::kQ5_0) {  // quarter: 4 part + i and 16 + 4 part + i, i < 4
    for (uint32_t part = 0; part < 4; ++part) {
      auto& it = items.emplace_back();
      for (uint32_t i = 0; i < 4; ++i) {
        it.push_back(4 * part + i);
        it.push_back(16 + 4 * part + i);
      }
    }
  }
  return items;
}

// The most one row of the IDOT path can differ from the float product: each x value of an item
// is off by at most half a step of its int8 scale (max|x| / 127); 1 % more for float rounding of
// the scale. w is the dequantised row, x the input the products use (after any norm or GeGLU).
template <typename X>
double IdotRowBound(GgmlType type, const float* w, const X* x, uint32_t in) {
  const uint32_t block = type == GgmlType::kQ4_K || type == GgmlType::kQ6_K ? 256 : 32;
  const std::vector<std::vector<uint32_t>> items = IdotItems(type);
  double bound = 0;
  for (uint32_t base = 0; base < in; base += block) {
    for (const std::vector<uint32_t>& item : items) {
      double amax = 0, wsum = 0;
      for (uint32_t e : item) {
        amax = std::max(amax, std::fabs(double(x[base + e])));
        wsum += std::fabs(w[base + e]);
      }
      bound += wsum * amax / 254 * 1.01;
    }
  }
  return bound;
}

}  // namespace garnet::vk::testing
