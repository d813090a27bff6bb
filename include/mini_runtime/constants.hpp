/* mini_runtime/constants.hpp: tile geometry of the mini_runtime engine.
 *
 * Part of the header-only C++17 wrapper over the C ABI in mini_runtime.h
 * (libcllm). Hand-written, not generated. The values are the ones the C ABI
 * exports as MR_TILE_DIM, MR_TILE_BYTES and MR_ALIGNMENT; the static_asserts
 * below keep the two in step.
 */
#ifndef CLLM_MINI_RUNTIME_CONSTANTS_HPP
#define CLLM_MINI_RUNTIME_CONSTANTS_HPP

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "mini_runtime.h"

namespace mini_runtime {

/// Edge of a tile: tiles are TILE_DIM x TILE_DIM fp32 values.
constexpr uint32_t TILE_DIM = 32;

/// Bytes of one tile (32 * 32 * sizeof(float)); the `bytes` field of every
/// LOAD and STORE must be exactly this.
constexpr size_t TILE_BYTES = 4096;

/// SRAM addresses must be multiples of this (one cache line).
constexpr size_t ALIGNMENT = 64;

static_assert(TILE_DIM == MR_TILE_DIM, "TILE_DIM differs from the C ABI");
static_assert(TILE_BYTES == MR_TILE_BYTES, "TILE_BYTES differs from the C ABI");
static_assert(TILE_BYTES == TILE_DIM * TILE_DIM * sizeof(float), "a tile is 32 x 32 floats");
static_assert(ALIGNMENT == MR_ALIGNMENT, "ALIGNMENT differs from the C ABI");

namespace detail {

/// Throws the exception that matches a negative MR_ERR_* status; its what()
/// is the message libcllm recorded for this thread (cllm_last_error()), or
/// "<call> failed with status <n>" when there is none:
///   MR_ERR_OUT_OF_RANGE      -> std::out_of_range
///   MR_ERR_INVALID_ARGUMENT  -> std::invalid_argument
///   anything else            -> std::runtime_error
/// Shared by kernels.hpp and engine.hpp; not part of the public interface.
[[noreturn]] inline void throw_status(long long status, const char* call)
{
    const char* msg = cllm_last_error();
    std::string what = (msg != nullptr && msg[0] != '\0')
                           ? std::string(msg)
                           : std::string(call) + " failed with status " + std::to_string(status);
    if (status == MR_ERR_OUT_OF_RANGE)
        throw std::out_of_range(what);
    if (status == MR_ERR_INVALID_ARGUMENT)
        throw std::invalid_argument(what);
    throw std::runtime_error(what);
}

/// Returns normally for MR_OK (or any non-negative value), throws otherwise.
inline void check_status(long long status, const char* call)
{
    if (status < 0)
        throw_status(status, call);
}

}  // namespace detail

}  // namespace mini_runtime

#endif  // CLLM_MINI_RUNTIME_CONSTANTS_HPP
