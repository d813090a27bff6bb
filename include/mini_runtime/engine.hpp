/* mini_runtime/engine.hpp: the mini_runtime schedule engine ("virtual
 * accelerator") as a C++ class.
 *
 * Part of the header-only C++17 wrapper over the C ABI in mini_runtime.h
 * (libcllm). Engine owns an MrEngine handle; every member forwards to the
 * matching mr_engine_* function. Errors throw, with libcllm's message
 * (cllm_last_error()):
 *   MR_ERR_OUT_OF_RANGE      -> std::out_of_range      (SRAM address, tensor
 *                                                        id, tile coordinate)
 *   MR_ERR_INVALID_ARGUMENT  -> std::invalid_argument  (bad name, shape,
 *                                                        schedule)
 *   anything else            -> std::runtime_error     (no trace, I/O, threads)
 * A rejected schedule changes no tensor, in both modes, and the engine stays
 * usable.
 *
 * Compared with the original runtime: Config has compute_threads (pipelined
 * mode only) and Stats has dma_stalls / compute_stalls; `trace` works
 * (write_trace); the engine is also default-constructible (Config()).
 * Engine::Config and Engine::Stats are aliases of the namespace-scope
 * EngineConfig and EngineStats, so that Config() can be a default argument
 * inside the class.
 */
#ifndef CLLM_MINI_RUNTIME_ENGINE_HPP
#define CLLM_MINI_RUNTIME_ENGINE_HPP

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "mini_runtime.h"
#include "mini_runtime/constants.hpp"
#include "mini_runtime/schedule.hpp"

namespace mini_runtime {

/// Engine configuration (also Engine::Config).
struct EngineConfig {
    size_t sram_bytes = 256 * 1024;  ///< SRAM size in bytes (4096 ..= 4 GiB).
    bool trace = false;              ///< Record per-op timings for Engine::write_trace.
    bool threaded = false;           ///< Pipelined DMA/compute threads instead of the calling thread.
    uint32_t compute_threads = 1;    ///< Compute threads in pipelined mode (1 ..= MR_MAX_COMPUTE_THREADS).
};

/// Operation counts and timings in ns, accumulated since the engine was made
/// or reset_stats() (also Engine::Stats).
struct EngineStats {
    uint64_t loads = 0;            ///< LOADs run.
    uint64_t executes = 0;         ///< EXECs run.
    uint64_t stores = 0;           ///< STOREs run.
    uint64_t dma_busy_ns = 0;      ///< Time in LOAD/STORE.
    uint64_t compute_busy_ns = 0;  ///< Time in EXEC (summed over compute threads).
    uint64_t overlap_ns = 0;       ///< DMA and compute work at the same time (0 in sequential mode).
    uint64_t total_ns = 0;         ///< Wall time of the execute calls.
    uint64_t dma_stalls = 0;       ///< Times a DMA op waited for compute.
    uint64_t compute_stalls = 0;   ///< Times an EXEC waited for another lane.
};

/// Executes schedules of LOAD / EXEC / STORE against simulated DRAM tensors
/// and a simulated SRAM scratchpad.
class Engine {
public:
    using Config = EngineConfig;
    using Stats = EngineStats;

    /// Creates the engine (in threaded mode its threads start here).
    /// Throws std::invalid_argument for a config outside the documented
    /// ranges, std::runtime_error when threads or memory cannot be had.
    explicit Engine(const Config& config = Config()) : handle_(nullptr)
    {
        MrEngineConfig c = mr_engine_config_default();
        c.sram_bytes = config.sram_bytes;
        c.trace = config.trace ? 1 : 0;
        c.threaded = config.threaded ? 1 : 0;
        c.compute_threads = config.compute_threads;
        handle_ = mr_engine_create(&c);
        if (handle_ == nullptr) {
            // mr_engine_create reports only NULL; tell a bad config (caller
            // error) from a refusal of the system by the documented ranges.
            bool bad_config = config.sram_bytes < TILE_BYTES ||
                              static_cast<unsigned long long>(config.sram_bytes) > (1ULL << 32) ||
                              config.compute_threads == 0 || config.compute_threads > MR_MAX_COMPUTE_THREADS;
            detail::throw_status(bad_config ? MR_ERR_INVALID_ARGUMENT : MR_ERR_SYSTEM, "mr_engine_create");
        }
    }

    ~Engine() { mr_engine_free(handle_); }

    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    /// Takes over `other`'s engine; `other` is left empty (its calls throw
    /// std::invalid_argument, its noexcept queries return zeros).
    Engine(Engine&& other) noexcept : handle_(other.handle_), ops_(std::move(other.ops_))
    {
        other.handle_ = nullptr;
    }

    Engine& operator=(Engine&& other) noexcept
    {
        if (this != &other) {
            mr_engine_free(handle_);
            handle_ = other.handle_;
            other.handle_ = nullptr;
            ops_ = std::move(other.ops_);
        }
        return *this;
    }

    /// Registers a zero-filled rows x cols tensor (stored padded to multiples
    /// of 32); returns its id: 0, 1, 2, ... in registration order.
    uint32_t register_tensor(const std::string& name, size_t rows, size_t cols)
    {
        check_name(name, "mr_engine_register_tensor");
        int64_t id = mr_engine_register_tensor(handle_, name.c_str(), rows, cols);
        detail::check_status(id, "mr_engine_register_tensor");
        return static_cast<uint32_t>(id);
    }

    /// Id of a registered tensor; throws std::invalid_argument for an
    /// unknown name.
    uint32_t tensor_id(const std::string& name) const
    {
        check_name(name, "mr_engine_tensor_id");
        int64_t id = mr_engine_tensor_id(handle_, name.c_str());
        detail::check_status(id, "mr_engine_tensor_id");
        return static_cast<uint32_t>(id);
    }

    /// Copies row-major `data` (rows x cols, the registered shape) into the
    /// tensor.
    void set_tensor(const std::string& name, const float* data, size_t rows, size_t cols)
    {
        check_name(name, "mr_engine_set_tensor");
        detail::check_status(mr_engine_set_tensor(handle_, name.c_str(), data, rows, cols), "mr_engine_set_tensor");
    }

    /// Copies the tensor (registered shape, no padding) into `data`.
    void get_tensor(const std::string& name, float* data, size_t rows, size_t cols) const
    {
        check_name(name, "mr_engine_get_tensor");
        detail::check_status(mr_engine_get_tensor(handle_, name.c_str(), data, rows, cols), "mr_engine_get_tensor");
    }

    /// Validates and runs a schedule. An invalid one throws (naming the op)
    /// and changes no tensor.
    void execute(const std::vector<SchedOp>& schedule)
    {
        ops_.clear();
        ops_.reserve(schedule.size());
        for (const SchedOp& op : schedule)
            ops_.push_back(std::visit(ToMrOp{}, op));
        detail::check_status(mr_engine_execute(handle_, ops_.data(), ops_.size()), "mr_engine_execute");
    }

    /// The stats so far (zeros for an empty, moved-from engine).
    Stats stats() const noexcept
    {
        MrStats s{};
        Stats out;
        if (mr_engine_stats(handle_, &s) != MR_OK)
            return out;
        out.loads = s.loads;
        out.executes = s.executes;
        out.stores = s.stores;
        out.dma_busy_ns = s.dma_busy_ns;
        out.compute_busy_ns = s.compute_busy_ns;
        out.overlap_ns = s.overlap_ns;
        out.total_ns = s.total_ns;
        out.dma_stalls = s.dma_stalls;
        out.compute_stalls = s.compute_stalls;
        return out;
    }

    /// Zeroes the stats.
    void reset_stats() noexcept { (void)mr_engine_reset_stats(handle_); }

    /// SRAM size in bytes (0 for an empty, moved-from engine).
    size_t sram_bytes() const noexcept { return mr_engine_sram_bytes(handle_); }

    /// Writes the last execute's trace as Chrome trace-event JSON (open it
    /// in Perfetto or chrome://tracing). Throws std::runtime_error when the
    /// engine was made without `trace` or the file cannot be written.
    void write_trace(const std::string& path) const
    {
        check_name(path, "mr_engine_write_trace");
        detail::check_status(mr_engine_write_trace(handle_, path.c_str()), "mr_engine_write_trace");
    }

    /// The C handle, for the mr_* functions this class does not wrap
    /// (e.g. mr_engine_execute_schedule). Owned by the Engine.
    MrEngine* native_handle() const noexcept { return handle_; }

private:
    struct ToMrOp {
        MrOp operator()(const SchedLoad& l) const noexcept
        {
            MrOp op{};
            op.kind = MR_OP_LOAD;
            op.op.load = MrLoad{l.tensor_id, l.tile_row, l.tile_col, l.dst_addr, l.bytes, l.buffer};
            return op;
        }
        MrOp operator()(const SchedExecute& e) const noexcept
        {
            MrOp op{};
            op.kind = MR_OP_EXEC;
            op.op.exec = MrExec{e.m, e.n, e.k, e.a_addr, e.b_addr, e.acc_addr, e.buffer};
            return op;
        }
        MrOp operator()(const SchedStore& s) const noexcept
        {
            MrOp op{};
            op.kind = MR_OP_STORE;
            op.op.store = MrStore{s.tensor_id, s.tile_row, s.tile_col, s.src_addr, s.bytes,
                                  static_cast<uint8_t>(s.apply_relu ? 1 : 0)};
            return op;
        }
    };

    /// A name or path with an embedded NUL would be cut short by the C ABI.
    static void check_name(const std::string& s, const char* call)
    {
        if (s.find('\0') != std::string::npos)
            throw std::invalid_argument(std::string(call) + ": the string argument contains a NUL character");
    }

    MrEngine* handle_;
    std::vector<MrOp> ops_;  ///< Reused conversion buffer of execute().
};

}  // namespace mini_runtime

#endif  // CLLM_MINI_RUNTIME_ENGINE_HPP
