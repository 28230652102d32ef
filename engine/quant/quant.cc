#include "engine/quant/quant.h"

#include <cfloat>
#include <cmath>
#include <cstring>
#include <string>

#include "engine/quant/codec.h"
#include "engine/quant/fp16.h"

namespace garnet {
namespace {

using DequantFn = void (*)(const uint8_t*, float*);
using QuantFn = void (*)(const float*, uint8_t*);

struct BlockCodec {
  DequantFn dequant;
  QuantFn quant;
};

const BlockCodec* CodecFor(GgmlType type) {
  static constexpr BlockCodec kQ8_0{quant::DequantQ8_0, quant::QuantQ8_0};
  static constexpr BlockCodec kQ4_0{quant::DequantQ4_0, quant::QuantQ4_0};
  static constexpr BlockCodec kQ4_1{quant::DequantQ4_1, quant::QuantQ4_1};
  static constexpr BlockCodec kQ5_0{quant::DequantQ5_0, quant::QuantQ5_0};
  static constexpr BlockCodec kQ5_1{quant::DequantQ5_1, quant::QuantQ5_1};
  static constexpr BlockCodec kQ2_K{quant::DequantQ2_K, quant::QuantQ2_K};
  static constexpr BlockCodec kQ3_K{quant::DequantQ3_K, quant::QuantQ3_K};
  static constexpr BlockCodec kQ4_K{quant::DequantQ4_K, quant::QuantQ4_K};
  static constexpr BlockCodec kQ5_K{quant::DequantQ5_K, quant::QuantQ5_K};
  static constexpr BlockCodec kQ6_K{quant::DequantQ6_K, quant::QuantQ6_K};
  static constexpr BlockCodec kIQ4_NL{quant::DequantIQ4_NL, quant::QuantIQ4_NL};
  static constexpr BlockCodec kIQ4_XS{quant::DequantIQ4_XS, quant::QuantIQ4_XS};
  switch (type) {
    case GgmlType::kQ8_0:
      return &kQ8_0;
    case GgmlType::kQ4_0:
      return &kQ4_0;
    case GgmlType::kQ4_1:
      return &kQ4_1;
    case GgmlType::kQ5_0:
      return &kQ5_0;
    case GgmlType::kQ5_1:
      return &kQ5_1;
    case GgmlType::kQ2_K:
      return &kQ2_K;
    case GgmlType::kQ3_K:
      return &kQ3_K;
    case GgmlType::kQ4_K:
      return &kQ4_K;
    case GgmlType::kQ5_K:
      return &kQ5_K;
    case GgmlType::kQ6_K:
      return &kQ6_K;
    case GgmlType::kIQ4_NL:
      return &kIQ4_NL;
    case GgmlType::kIQ4_XS:
      return &kIQ4_XS;
    default:
      return nullptr;
  }
}

// Checks n against the type; returns the number of blocks.
Result<int64_t> CheckRow(GgmlType type, int64_t n, const char* what) {
  const TypeTraits& t = Traits(type);
  if (!t.supported) {
    return Status::Unimplemented(std::string(what) + " " + std::string(t.name),
                                 "type not supported by garnet");
  }
  if (n < 0)
    return Status::InvalidArgument(std::string(what), "negative row length " + std::to_string(n));
  if (n % t.block_elems != 0) {
    return Status::InvalidArgument(std::string(what) + " " + std::string(t.name),
                                   "row length " + std::to_string(n) +
                                       " is not a multiple of the block size " +
                                       std::to_string(t.block_elems));
  }
  return n / t.block_elems;
}

}  // namespace

bool IsQuantSupported(GgmlType type) {
  return Traits(type).supported;
}

Status DequantizeRow(GgmlType type, const uint8_t* src, float* dst, int64_t n) {
  GARNET_ASSIGN_OR_RETURN(const int64_t blocks, CheckRow(type, n, "dequantize"));
  switch (type) {
    case GgmlType::kF32:
      if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return Status::OK();
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) {
        dst[i] = F16ToF32(static_cast<uint16_t>(src[2 * i] | src[2 * i + 1] << 8));
      }
      return Status::OK();
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        dst[i] = Bf16ToF32(static_cast<uint16_t>(src[2 * i] | src[2 * i + 1] << 8));
      }
      return Status::OK();
    default:
      break;
  }
  const BlockCodec* codec = CodecFor(type);
  if (codec == nullptr)
    return Status::Internal("dequantize " + std::string(TypeName(type)), "no codec");
  const TypeTraits& t = Traits(type);
  for (int64_t b = 0; b < blocks; ++b)
    codec->dequant(src + b * t.block_bytes, dst + b * t.block_elems);
  return Status::OK();
}

Status QuantizeRow(GgmlType type, const float* src, uint8_t* dst, int64_t n) {
  GARNET_ASSIGN_OR_RETURN(const int64_t blocks, CheckRow(type, n, "quantize"));
  switch (type) {
    case GgmlType::kF32:
      if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return Status::OK();
    case GgmlType::kF16:
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = type == GgmlType::kF16 ? F32ToF16(src[i]) : F32ToBf16(src[i]);
        dst[2 * i] = static_cast<uint8_t>(h);
        dst[2 * i + 1] = static_cast<uint8_t>(h >> 8);
      }
      return Status::OK();
    default:
      break;
  }
  for (int64_t i = 0; i < n; ++i) {
    if (!(std::fabs(src[i]) <= FLT_MAX)) {
      return Status::InvalidArgument("quantize " + std::string(TypeName(type)),
                                     "element " + std::to_string(i) + " is not finite");
    }
  }
  const BlockCodec* codec = CodecFor(type);
  if (codec == nullptr)
    return Status::Internal("quantize " + std::string(TypeName(type)), "no codec");
  const TypeTraits& t = Traits(type);
  for (int64_t b = 0; b < blocks; ++b)
    codec->quant(src + b * t.block_elems, dst + b * t.block_bytes);
  return Status::OK();
}

}  // namespace garnet
