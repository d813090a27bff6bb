/* mini_runtime/kernels.hpp: the 32x32 fp32 tile kernels of the mini_runtime
 * engine, callable on their own.
 *
 * Part of the header-only C++17 wrapper over the C ABI in mini_runtime.h
 * (libcllm); every function forwards to mr_matmul_tile, mr_matmul_tile_relu
 * or mr_relu_tile. Tiles are 1024 row-major floats; C must not overlap A or
 * B. Errors (a NULL pointer, C overlapping an operand) throw
 * std::invalid_argument with libcllm's message.
 *
 * Differences from the original runtime: the kernel is picked at run time
 * from what the CPU supports, not at compile time, so there are no
 * matmul_tile_avx2 / relu_tile_avx2 declarations; use the KernelImpl
 * overloads. An unavailable KernelImpl falls back to the best available
 * kernel below it (as the original fell back from AVX2 to Reference).
 * get_active_kernel_name() may also return "AVX-512".
 */
#ifndef CLLM_MINI_RUNTIME_KERNELS_HPP
#define CLLM_MINI_RUNTIME_KERNELS_HPP

#include <cstdint>

#include "mini_runtime.h"
#include "mini_runtime/constants.hpp"

namespace mini_runtime {

/// A tile-kernel implementation.
enum class KernelImpl {
    Reference,  ///< Plain loops; always available.
    AVX2,       ///< AVX2 + FMA.
    AVX512      ///< AVX-512F.
};

namespace detail {

/// The MR_KERNEL_* value of a KernelImpl (an out-of-range enum value passes
/// through and is rejected by libcllm).
constexpr int32_t kernel_code(KernelImpl impl) noexcept
{
    switch (impl) {
    case KernelImpl::Reference:
        return MR_KERNEL_REFERENCE;
    case KernelImpl::AVX2:
        return MR_KERNEL_AVX2;
    case KernelImpl::AVX512:
        return MR_KERNEL_AVX512;
    }
    return static_cast<int32_t>(impl);
}

}  // namespace detail

// ---- explicit implementation ------------------------------------------------

/// C += A . B with the given implementation.
inline void matmul_tile(float* C, const float* A, const float* B, KernelImpl impl)
{
    detail::check_status(mr_matmul_tile(C, A, B, detail::kernel_code(impl)), "mr_matmul_tile");
}

/// C = max(0, C) with the given implementation.
inline void relu_tile(float* C, KernelImpl impl)
{
    detail::check_status(mr_relu_tile(C, detail::kernel_code(impl)), "mr_relu_tile");
}

/// C += A . B, then C = max(0, C), with the given implementation.
inline void matmul_tile_relu(float* C, const float* A, const float* B, KernelImpl impl)
{
    detail::check_status(mr_matmul_tile_relu(C, A, B, detail::kernel_code(impl)), "mr_matmul_tile_relu");
}

// ---- best available implementation ------------------------------------------

/// C += A . B with the fastest kernel this CPU supports.
inline void matmul_tile(float* C, const float* A, const float* B)
{
    detail::check_status(mr_matmul_tile(C, A, B, MR_KERNEL_AUTO), "mr_matmul_tile");
}

/// C = max(0, C) with the fastest kernel this CPU supports.
inline void relu_tile(float* C)
{
    detail::check_status(mr_relu_tile(C, MR_KERNEL_AUTO), "mr_relu_tile");
}

/// C += A . B, then C = max(0, C), with the fastest kernel this CPU supports.
inline void matmul_tile_relu(float* C, const float* A, const float* B)
{
    detail::check_status(mr_matmul_tile_relu(C, A, B, MR_KERNEL_AUTO), "mr_matmul_tile_relu");
}

// ---- the original reference entry points -------------------------------------

/// C += A . B with the reference kernel.
inline void matmul_tile_ref(float* C, const float* A, const float* B)
{
    matmul_tile(C, A, B, KernelImpl::Reference);
}

/// C = max(0, C) with the reference kernel.
inline void relu_tile_inplace(float* C)
{
    relu_tile(C, KernelImpl::Reference);
}

/// C += A . B, then C = max(0, C), with the reference kernel.
inline void matmul_tile_relu_ref(float* C, const float* A, const float* B)
{
    matmul_tile_relu(C, A, B, KernelImpl::Reference);
}

// ---- what this CPU runs -------------------------------------------------------

/// Whether the given implementation can run on this CPU.
inline bool is_kernel_available(KernelImpl impl) noexcept
{
    return mr_kernel_available(detail::kernel_code(impl));
}

/// Whether the AVX2 + FMA kernels can run on this CPU.
inline bool is_avx2_available() noexcept
{
    return is_kernel_available(KernelImpl::AVX2);
}

/// Whether the AVX-512 kernels can run on this CPU.
inline bool is_avx512_available() noexcept
{
    return is_kernel_available(KernelImpl::AVX512);
}

/// The implementation the parameterless overloads use.
inline KernelImpl get_active_kernel() noexcept
{
    switch (mr_kernel_active()) {
    case MR_KERNEL_AVX512:
        return KernelImpl::AVX512;
    case MR_KERNEL_AVX2:
        return KernelImpl::AVX2;
    default:
        return KernelImpl::Reference;
    }
}

/// Name of an implementation: "Reference", "AVX2+FMA" or "AVX-512" (static).
inline const char* get_kernel_name(KernelImpl impl) noexcept
{
    const char* name = mr_kernel_name(detail::kernel_code(impl));
    return name != nullptr ? name : "unknown";
}

/// Name of the implementation the parameterless overloads use (static).
inline const char* get_active_kernel_name() noexcept
{
    const char* name = mr_kernel_name(MR_KERNEL_AUTO);
    return name != nullptr ? name : "Reference";
}

}  // namespace mini_runtime

#endif  // CLLM_MINI_RUNTIME_KERNELS_HPP
