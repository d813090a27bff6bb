/* mini_runtime/schedule.hpp: the three schedule operations of the
 * mini_runtime engine (LOAD, EXEC, STORE) and the SchedOp variant that a
 * schedule is a vector of.
 *
 * Part of the header-only C++17 wrapper over the C ABI in mini_runtime.h
 * (libcllm). Each struct has a positional constructor in field order, with
 * the trailing field defaulted (buffer = -1, apply_relu = false), so code
 * written against the original C++ runtime compiles unchanged. Engine::execute
 * (engine.hpp) converts them to the C ABI's MrOp.
 */
#ifndef CLLM_MINI_RUNTIME_SCHEDULE_HPP
#define CLLM_MINI_RUNTIME_SCHEDULE_HPP

#include <cstdint>
#include <variant>
#include <vector>

namespace mini_runtime {

/// LOAD: copy tile (tile_row, tile_col) of tensor `tensor_id` from DRAM into
/// SRAM at `dst_addr` (a multiple of ALIGNMENT; `bytes` must be TILE_BYTES).
struct SchedLoad {
    uint32_t tensor_id;  ///< Tensor id from Engine::register_tensor.
    uint32_t tile_row;   ///< Tile row inside the (padded) tensor.
    uint32_t tile_col;   ///< Tile column inside the (padded) tensor.
    uint32_t dst_addr;   ///< SRAM byte address of the destination.
    uint32_t bytes;      ///< Always TILE_BYTES.
    int32_t buffer;      ///< Double-buffer tag; -1 = none.

    SchedLoad(uint32_t tensor_id_, uint32_t tile_row_, uint32_t tile_col_, uint32_t dst_addr_, uint32_t bytes_,
              int32_t buffer_ = -1)
        : tensor_id(tensor_id_), tile_row(tile_row_), tile_col(tile_col_), dst_addr(dst_addr_), bytes(bytes_),
          buffer(buffer_)
    {
    }
};

/// EXEC: ACC[acc_addr] += A[a_addr] . B[b_addr] on 32x32 tiles; k == 0
/// zeroes the accumulator first.
struct SchedExecute {
    uint32_t m;         ///< Output tile row.
    uint32_t n;         ///< Output tile column.
    uint32_t k;         ///< Reduction step (0 starts a new accumulation).
    uint32_t a_addr;    ///< SRAM address of the A tile.
    uint32_t b_addr;    ///< SRAM address of the B tile.
    uint32_t acc_addr;  ///< SRAM address of the accumulator tile.
    int32_t buffer;     ///< Double-buffer tag; -1 = none.

    SchedExecute(uint32_t m_, uint32_t n_, uint32_t k_, uint32_t a_addr_, uint32_t b_addr_, uint32_t acc_addr_,
                 int32_t buffer_ = -1)
        : m(m_), n(n_), k(k_), a_addr(a_addr_), b_addr(b_addr_), acc_addr(acc_addr_), buffer(buffer_)
    {
    }
};

/// STORE: copy the accumulator at `src_addr` to tile (tile_row, tile_col) of
/// tensor `tensor_id`, applying ReLU (in place, then copied) when
/// `apply_relu`.
struct SchedStore {
    uint32_t tensor_id;  ///< Tensor id from Engine::register_tensor.
    uint32_t tile_row;   ///< Tile row inside the (padded) tensor.
    uint32_t tile_col;   ///< Tile column inside the (padded) tensor.
    uint32_t src_addr;   ///< SRAM address of the accumulator.
    uint32_t bytes;      ///< Always TILE_BYTES.
    bool apply_relu;     ///< ReLU before storing.

    SchedStore(uint32_t tensor_id_, uint32_t tile_row_, uint32_t tile_col_, uint32_t src_addr_, uint32_t bytes_,
               bool apply_relu_ = false)
        : tensor_id(tensor_id_), tile_row(tile_row_), tile_col(tile_col_), src_addr(src_addr_), bytes(bytes_),
          apply_relu(apply_relu_)
    {
    }
};

/// One schedule operation.
using SchedOp = std::variant<SchedLoad, SchedExecute, SchedStore>;

/// A schedule: operations in program order.
using Schedule = std::vector<SchedOp>;

}  // namespace mini_runtime

#endif  // CLLM_MINI_RUNTIME_SCHEDULE_HPP
