// Element types and devices shared by tensors, the parameter table and checkpoints.
// Names follow safetensors ("F32", "BF16", ...).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace moessm {

enum class DType : uint8_t { F64, F32, F16, BF16, I64, I32, U32, U16, U8 };
enum class Device : uint8_t { CPU, CUDA };

size_t dtype_size(DType t);
const char* dtype_name(DType t);            // safetensors spelling, e.g. "F32"
bool dtype_from_name(const std::string& s, DType* out);  // false when unknown

template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<double>() { return DType::F64; }
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<int32_t>() { return DType::I32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::I64; }
template <> constexpr DType dtype_of<uint32_t>() { return DType::U32; }
template <> constexpr DType dtype_of<uint16_t>() { return DType::U16; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::U8; }

// bf16 <-> f32 on the host (round to nearest even; NaN kept NaN).
uint16_t f32_to_bf16(float f);
float bf16_to_f32(uint16_t b);
uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);

}  // namespace moessm
