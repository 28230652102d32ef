// Per-block encoders and decoders behind DequantizeRow/QuantizeRow (quant.h). Internal to
// garnet_quant: other code uses quant.h, or blocks.h for the layouts.
//
// Each function handles exactly one block: a decoder reads Traits(type).block_bytes bytes at
// `src` (any alignment) and writes block_elems floats; an encoder reads block_elems finite
// floats and writes block_bytes bytes at `dst` (any alignment). Pure functions.
#pragma once

#include <cstdint>

namespace garnet::quant {

void DequantQ8_0(const uint8_t* src, float* y);
void DequantQ4_0(const uint8_t* src, float* y);
void DequantQ4_1(const uint8_t* src, float* y);
void DequantQ5_0(const uint8_t* src, float* y);
void DequantQ5_1(const uint8_t* src, float* y);
void DequantQ2_K(const uint8_t* src, float* y);
void DequantQ3_K(const uint8_t* src, float* y);
void DequantQ4_K(const uint8_t* src, float* y);
void DequantQ5_K(const uint8_t* src, float* y);
void DequantQ6_K(const uint8_t* src, float* y);
void DequantIQ4_NL(const uint8_t* src, float* y);
void DequantIQ4_XS(const uint8_t* src, float* y);

void QuantQ8_0(const float* x, uint8_t* dst);
void QuantQ4_0(const float* x, uint8_t* dst);
void QuantQ4_1(const float* x, uint8_t* dst);
void QuantQ5_0(const float* x, uint8_t* dst);
void QuantQ5_1(const float* x, uint8_t* dst);
void QuantQ2_K(const float* x, uint8_t* dst);
void QuantQ3_K(const float* x, uint8_t* dst);
void QuantQ4_K(const float* x, uint8_t* dst);
void QuantQ5_K(const float* x, uint8_t* dst);
void QuantQ6_K(const float* x, uint8_t* dst);
void QuantIQ4_NL(const float* x, uint8_t* dst);
void QuantIQ4_XS(const float* x, uint8_t* dst);

}  // namespace garnet::quant
