/* EchobeatsThreadPoolManager.h: DeepTreeEcho::FEchobeatsThreadPoolManager,
 * the Echobeats 3-stream, 12-step cognitive task pool, as a header-only
 * C++17/C++20 wrapper over libcllm's C ABI (echobeats.h).
 *
 * The API is that of the original Deep Tree Echo header (same namespace,
 * enums, structs, constants, tables and member functions), so modules
 * written against it compile unchanged; a few members are added (marked
 * "extension" below). Also reachable as <DeepTreeEcho/EchobeatsThreadPoolManager.h>.
 * Included from C, this header only includes echobeats.h.
 *
 * What differs from the original (its defects are gone):
 *  - WaitForTask may be called any number of times, from any thread; an id
 *    never issued (or no longer retained, see ResultRetention) returns false
 *    at once; the timeout is honoured. It returns
 *    true once the task has finished, whatever the outcome (as the original:
 *    "completed" = its result is available); WaitForTaskResult (extension)
 *    tells success, failure, expiry and cancellation apart.
 *  - WaitForStream returns true only when the stream has nothing queued,
 *    pending or running; SynchronizeStreams waits until all three streams
 *    are idle at once (no time limit); TrySynchronizeStreams (extension) is
 *    the bounded form and says whether it succeeded.
 *  - Destruction drains queued tasks (FThreadPoolConfig::DrainOnShutdown,
 *    extension, default true) or cancels them (false); it never hangs except
 *    while a task is still running. Shutdown() (extension) does the same
 *    early and reports the counts.
 *  - Dependencies: a task waits until its dependencies have finished and is
 *    released exactly once. A dependency that was never issued makes
 *    SubmitTask fail (returns 0). If a dependency fails, expires or is
 *    cancelled, the task does not run and finishes as failed (cancelled when
 *    the dependency was cancelled), transitively.
 *  - Step: SubmitTask/SubmitForStep reject steps outside 1..12 (return 0).
 *    The static helpers accept any int32_t and wrap it into 1..12 with
 *    WrapStep(): ((Step - 1) mod 12) + 1, never negative (0 -> 12, -1 -> 11,
 *    13 -> 1).
 *  - RunCycle runs steps 1..12 (waiting for each step's stream, and
 *    synchronising all streams when leaving 4, 8 and 12), then waits out the
 *    rest of TargetCycleTimeMs; the returned and recorded cycle time
 *    includes the pacing. Safe with concurrent getters.
 *  - Every metric is real (QueueWaitTime, ContentionEvents, queue depths,
 *    sync events); MaxQueueDepth is back-pressure (a submit to a full stream
 *    waits up to SubmitTimeout, then fails; RejectWhenFull fails at once);
 *    Deadline (a task not started by then never runs: Expired), TargetLayer
 *    (DataLoader pool, stream workers, in-order CUDAStream lane), Phase,
 *    EnableRealTimePriority and the thread counts take effect.
 *  - ConfigureNUMAAffinity reads the topology from sysfs (no libnuma) and
 *    workers pin themselves before taking work; barriers can be destroyed
 *    (DestroyBarrier, extension; shutdown destroys the rest).
 *  - Nothing is printed: not by the constructor, not by
 *    ConfigurePyTorchThreads (GetPyTorchThreadConfig returns what it
 *    recommends), not by failing tasks. Messages go to the optional
 *    FThreadPoolConfig::Log callback (extension).
 *
 * Errors:
 *  - The constructors throw std::invalid_argument for a configuration
 *    libcllm rejects (negative counts, MaxQueueDepth 0, NaN or negative
 *    TargetCycleTimeMs, ...) and std::runtime_error when the pool cannot be
 *    created otherwise; the message is cllm_last_error().
 *  - SubmitTask and SubmitForStep keep the original signatures and return 0
 *    on error (bad step, stream, phase or layer, non-finite priority,
 *    unknown dependency, nonzero FCognitiveTask::TaskId -- ids are assigned
 *    by the pool --, a full stream, a shut-down pool); GetLastError() gives
 *    the reason on the calling thread. The task's Work is destroyed
 *    without running.
 *  - WaitAtBarrier(Id) returns at once for an unknown or destroyed barrier
 *    (as the original did for unknown ids) and returns when the barrier is
 *    destroyed while it waits; TryWaitAtBarrier (extension) reports it.
 *  - An exception thrown by a task's Work is caught in the task's thread:
 *    the task is reported failed (and the message goes to Log). No exception
 *    crosses into libcllm.
 *
 * Timeouts: a negative std::chrono::milliseconds counts as zero (as in
 * std::chrono waits); std::chrono::milliseconds::max() waits without limit.
 * Deadlines are std::chrono::steady_clock time points; a deadline already
 * passed when the task is submitted makes it expire.
 *
 * Threads: every member function may be called from any thread, except that
 * the destructor must not run inside one of the pool's own tasks. GetMetrics
 * and GetStreamMetrics refresh the returned object from libcllm on each call
 * (its fields are atomics, so reading them while another thread refreshes is
 * safe).
 *
 * Metrics: TasksCompleted counts tasks that succeeded and TasksFailed those
 * that failed, expired or were cancelled, so that TasksSubmitted ==
 * TasksCompleted + TasksFailed + CurrentQueueDepth + (tasks running).
 * Times are microseconds. GetAverageExecutionTime divides by TasksRun
 * (extension: tasks that started running, as the original's TasksCompleted).
 */
#ifndef CLLM_ECHOBEATS_THREAD_POOL_MANAGER_H
#define CLLM_ECHOBEATS_THREAD_POOL_MANAGER_H

#include "echobeats.h"

#ifdef __cplusplus

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace DeepTreeEcho {

//=============================================================================
// Cognitive stream definitions
//=============================================================================

/// Cognitive streams (the triadic nervous system).
enum class ECognitiveStream : uint8_t {
    Cerebral = 0,  ///< Steps 1, 4, 7, 10: perception, analysis, planning.
    Somatic = 1,   ///< Steps 2, 5, 8, 11: action, motor control, behaviour.
    Autonomic = 2  ///< Steps 3, 6, 9, 12: simulation, emotion, prediction.
};

/// Phase of a step in the 12-step loop.
enum class ECognitivePhase : uint8_t {
    Perception = 0,  ///< Steps 1, 5, 9.
    Action = 1,      ///< Steps 2, 6, 10.
    Simulation = 2,  ///< Steps 3, 7, 11.
    Integration = 3  ///< Steps 4, 8, 12: the streams synchronise when leaving them.
};

/// Processing mode of a step.
enum class EProcessingMode : uint8_t {
    Expressive = 0,  ///< Steps 1, 2, 3, 5, 6, 9, 10.
    Reflective = 1   ///< Steps 4, 7, 8, 11, 12.
};

/// Where a task runs (the PyTorch thread-pool layers of the design).
enum class EThreadPoolLayer : uint8_t {
    DataLoader = 0,  ///< The data-loader pool (DataLoaderWorkers threads).
    MainThread = 1,  ///< The stream's workers (as InterOp).
    InterOp = 2,     ///< The stream's workers (ThreadsPerStream).
    IntraOp = 3,     ///< The stream's workers, with the intra-op pool.
    CUDAStream = 4   ///< The stream's ordered lane: one at a time, in submission order.
};

/// Outcome of a task, or of waiting for one (extension).
enum class ETaskStatus : uint8_t {
    Completed = 0,  ///< Ran and succeeded.
    Failed = 1,     ///< Ran and failed (threw), or a dependency did not succeed.
    Expired = 2,    ///< Not started before its deadline; never ran.
    Cancelled = 3,  ///< Cancelled by shutdown (DrainOnShutdown false); never ran.
    Timeout = 4,    ///< The wait ran out; the task is still queued or running.
    Unknown = 5     ///< No such task (never issued, or no longer retained).
};

//=============================================================================
// Task structures
//=============================================================================

/// A task with cognitive stream affinity.
struct FCognitiveTask {
    /// What to run; an empty function is a task that does nothing (and
    /// succeeds), as in the original. Exceptions mark the task failed.
    std::function<void()> Work;

    /// The stream whose queue and workers run it.
    ECognitiveStream Stream = ECognitiveStream::Cerebral;

    /// Its phase (recorded and reported).
    ECognitivePhase Phase = ECognitivePhase::Perception;

    /// Its step, 1..12 (others are rejected).
    int32_t Step = 1;

    /// Higher runs first, FIFO among equal priorities; must be finite.
    float Priority = 0.5f;

    /// Where it runs.
    EThreadPoolLayer TargetLayer = EThreadPoolLayer::InterOp;

    /// Not started by then: never runs, finishes as Expired.
    std::optional<std::chrono::steady_clock::time_point> Deadline;

    /// Must be 0: the pool assigns ids (SubmitTask returns it).
    uint64_t TaskId = 0;

    /// Ids of tasks that must complete successfully first.
    std::vector<uint64_t> Dependencies;

    /// Priority order, as in the original.
    bool operator<(const FCognitiveTask& Other) const { return Priority < Other.Priority; }
};

/// What a finished task reports.
struct FTaskResult {
    uint64_t TaskId = 0;
    bool Success = false;
    std::chrono::microseconds ExecutionTime{0};
    ECognitiveStream Stream = ECognitiveStream::Cerebral;
    int32_t Step = 0;
    // Extensions.
    ETaskStatus Status = ETaskStatus::Unknown;           ///< Completed, Failed, Expired or Cancelled.
    ECognitivePhase Phase = ECognitivePhase::Perception;  ///< The task's phase.
    std::chrono::microseconds QueueWaitTime{0};           ///< Runnable until started.
};

//=============================================================================
// Metrics
//=============================================================================

/// Per-stream counters (microseconds for times).
struct FStreamMetrics {
    // Task counts
    std::atomic<uint64_t> TasksSubmitted{0};
    std::atomic<uint64_t> TasksCompleted{0};  ///< Succeeded.
    std::atomic<uint64_t> TasksFailed{0};     ///< Failed, expired or cancelled.

    // Timing (µs), over the tasks that ran
    std::atomic<uint64_t> TotalExecutionTime{0};
    std::atomic<uint64_t> MaxExecutionTime{0};
    std::atomic<uint64_t> MinExecutionTime{UINT64_MAX};

    // Queue (queued plus waiting for dependencies)
    std::atomic<uint32_t> CurrentQueueDepth{0};
    std::atomic<uint32_t> MaxQueueDepth{0};

    // Contention
    std::atomic<uint64_t> QueueWaitTime{0};     ///< Sum of runnable-to-start waits, µs.
    std::atomic<uint64_t> ContentionEvents{0};  ///< Times a queue lock was found taken.

    // Extensions
    std::atomic<uint64_t> TasksExpired{0};    ///< Of the failed: expired.
    std::atomic<uint64_t> TasksCancelled{0};  ///< Of the failed: cancelled.
    std::atomic<uint64_t> TasksRun{0};        ///< Tasks that started running.

    /// Mean execution time of the tasks that ran, µs (0 when none ran).
    float GetAverageExecutionTime() const
    {
        const uint64_t Run = TasksRun.load();
        if (Run == 0)
            return 0.0f;
        return static_cast<float>(TotalExecutionTime.load()) / static_cast<float>(Run);
    }
};

/// The pool's counters.
struct FThreadPoolMetrics {
    std::array<FStreamMetrics, 3> StreamMetrics;

    // Cognitive loop
    std::atomic<uint64_t> CyclesCompleted{0};
    std::atomic<uint64_t> TotalCycleTime{0};  ///< µs.

    // Synchronisation
    std::atomic<uint64_t> SyncEvents{0};    ///< Successful synchronisations.
    std::atomic<uint64_t> SyncWaitTime{0};  ///< µs.

    /// Cycles per second of cycle time (0 before the first cycle).
    float GetCyclesPerSecond() const
    {
        const uint64_t Cycles = CyclesCompleted.load();
        const uint64_t Time = TotalCycleTime.load();
        if (Time == 0)
            return 0.0f;
        return static_cast<float>(Cycles) * 1000000.0f / static_cast<float>(Time);
    }
};

//=============================================================================
// Configuration
//=============================================================================

/// Pool configuration: the original fields and defaults, then extensions.
struct FThreadPoolConfig {
    int32_t ThreadsPerStream = 4;        ///< Workers per stream (0 = from InterOpThreads, else auto).
    int32_t DataLoaderWorkers = 9;       ///< Data-loader pool (0 = auto).
    int32_t InterOpThreads = 12;         ///< Used only when ThreadsPerStream is 0 (3 x per-stream).
    int32_t IntraOpThreads = 12;         ///< Intra-op pool (0 = auto).
    int32_t CUDAStreams = 3;             ///< Ordered lanes, 1..3 (0 = 3).
    bool EnableNUMAAffinity = true;      ///< Pin stream workers at construction.
    float TargetCycleTimeMs = 100.0f;    ///< RunCycle paces to this (0 = no pacing).
    int32_t MaxQueueDepth = 1000;        ///< Queued + pending tasks per stream at most.
    bool EnableRealTimePriority = false; ///< Try real-time scheduling (a refusal is logged).

    // Extensions.
    bool DrainOnShutdown = true;  ///< Destruction runs queued tasks (false: cancels them).
    bool RejectWhenFull = false;  ///< A submit to a full stream fails at once...
    std::chrono::milliseconds SubmitTimeout{1000};  ///< ...else waits this long (max(): no limit).
    int64_t ResultRetention = 65536;  ///< Finished results kept for WaitForTask.
    /// Receives libcllm's messages (level ECHOBEATS_LOG_*) and the messages
    /// of exceptions thrown by tasks; may be called from any pool thread.
    std::function<void(int Level, const char* Message)> Log;
};

/// The recommended thread configuration for this machine (extension).
struct FPyTorchThreadConfig {
    int32_t InterOpThreads = 0;
    int32_t IntraOpThreads = 0;
    int32_t DataLoaderWorkers = 0;
    int32_t CUDAStreams = 0;
    int32_t UsableCPUs = 0;
};

/// What a shutdown did (extension).
struct FShutdownReport {
    uint64_t Drained = 0;        ///< Unfinished tasks that then ran (or failed/expired).
    uint64_t Cancelled = 0;      ///< Tasks cancelled.
    uint64_t ThreadsJoined = 0;  ///< Threads joined.
    bool FirstCall = false;      ///< False when the pool was already shut down.
    bool Complete = false;       ///< False only when called from one of the pool's tasks.
};

//=============================================================================
// Implementation details
//=============================================================================

namespace EchobeatsDetail {

/// The wrapper's last error on this thread.
inline std::string& LastError()
{
    thread_local std::string Message;
    return Message;
}

inline void SetError(const char* Message)
{
    try {
        LastError() = Message;
    } catch (...) {
    }
}

/// Copies libcllm's last error of this thread.
inline void CaptureError()
{
    const char* E = cllm_last_error();
    SetError(E != nullptr ? E : "unknown libcllm error");
}

using FLogFn = std::function<void(int Level, const char* Message)>;

/// A task's context: its work and the manager's log sink (or nullptr).
struct FWorkContext {
    std::function<void()> Work;
    const FLogFn* Log = nullptr;
};

inline void Report(const FWorkContext& Ctx, const char* What) noexcept
{
    if (Ctx.Log == nullptr || !*Ctx.Log)
        return;
    try {
        const std::string Msg = std::string("echobeats: a task threw ") + What;
        (*Ctx.Log)(ECHOBEATS_LOG_WARNING, Msg.c_str());
    } catch (...) {
    }
}

/// EchobeatsTaskFn: runs the std::function; every exception becomes a
/// failed task (nonzero).
inline int RunWork(void* Context) noexcept
{
    FWorkContext& Ctx = *static_cast<FWorkContext*>(Context);
    try {
        if (Ctx.Work)
            Ctx.Work();
        return 0;
    } catch (const std::exception& E) {
        Report(Ctx, E.what());
    } catch (...) {
        Report(Ctx, "a non-standard exception");
    }
    return 1;
}

/// EchobeatsDestroyFn: called by libcllm exactly once per submitted context.
inline void DestroyWork(void* Context) noexcept { delete static_cast<FWorkContext*>(Context); }

/// EchobeatsLogFn.
inline void LogTrampoline(int Level, const char* Message, void* UserData) noexcept
{
    try {
        const FLogFn& F = *static_cast<const FLogFn*>(UserData);
        if (F)
            F(Level, Message != nullptr ? Message : "");
    } catch (...) {
    }
}

/// A C timeout: negative -> 0, max() -> no limit (-1).
inline int64_t TimeoutMs(std::chrono::milliseconds Timeout)
{
    if (Timeout == std::chrono::milliseconds::max())
        return -1;
    if (Timeout.count() < 0)
        return 0;
    return static_cast<int64_t>(Timeout.count());
}

/// A steady_clock time point as the C ABI's absolute CLOCK_MONOTONIC ns
/// (never 0, which means "no deadline").
inline int64_t DeadlineNs(std::chrono::steady_clock::time_point Deadline)
{
    using Clock = std::chrono::steady_clock;
    const Clock::time_point Now = Clock::now();
    const int64_t NowNs = echobeats_now_ns();
    if (Deadline <= Now)
        return 1;
    // Deadline > Now, so the difference is positive and exact in uint64_t.
    const uint64_t Ticks = static_cast<uint64_t>(Deadline.time_since_epoch().count()) -
                           static_cast<uint64_t>(Now.time_since_epoch().count());
    using TickDuration = std::chrono::duration<uint64_t, Clock::period>;
    using UNanoseconds = std::chrono::duration<uint64_t, std::nano>;
    const uint64_t Ahead = std::chrono::duration_cast<UNanoseconds>(TickDuration(Ticks)).count();
    const uint64_t Room = static_cast<uint64_t>(std::numeric_limits<int64_t>::max() - NowNs);
    return Ahead >= Room ? std::numeric_limits<int64_t>::max() : NowNs + static_cast<int64_t>(Ahead);
}

}  // namespace EchobeatsDetail

//=============================================================================
// FEchobeatsThreadPoolManager
//=============================================================================

/// The Echobeats pool: 3 cognitive streams with 12-step interleaving.
/// - Stream 0 (Cerebral): steps 1, 4, 7, 10
/// - Stream 1 (Somatic): steps 2, 5, 8, 11
/// - Stream 2 (Autonomic): steps 3, 6, 9, 12
/// Non-copyable and non-movable.
class FEchobeatsThreadPoolManager {
public:
    //=========================================================================
    // Constants
    //=========================================================================

    static constexpr int32_t NUM_STREAMS = 3;
    static constexpr int32_t STEPS_PER_CYCLE = 12;
    static constexpr int32_t STEPS_PER_STREAM = 4;
    static constexpr int32_t TRIADS_PER_CYCLE = 4;

    /// Step -> stream (triads phased 120 degrees apart), steps 1..12.
    static constexpr std::array<ECognitiveStream, STEPS_PER_CYCLE> StepStreamMap = {{
        ECognitiveStream::Cerebral,  ECognitiveStream::Somatic,  ECognitiveStream::Autonomic,
        ECognitiveStream::Cerebral,  ECognitiveStream::Somatic,  ECognitiveStream::Autonomic,
        ECognitiveStream::Cerebral,  ECognitiveStream::Somatic,  ECognitiveStream::Autonomic,
        ECognitiveStream::Cerebral,  ECognitiveStream::Somatic,  ECognitiveStream::Autonomic,
    }};

    /// Step -> phase, steps 1..12.
    static constexpr std::array<ECognitivePhase, STEPS_PER_CYCLE> StepPhaseMap = {{
        ECognitivePhase::Perception, ECognitivePhase::Action, ECognitivePhase::Simulation, ECognitivePhase::Integration,
        ECognitivePhase::Perception, ECognitivePhase::Action, ECognitivePhase::Simulation, ECognitivePhase::Integration,
        ECognitivePhase::Perception, ECognitivePhase::Action, ECognitivePhase::Simulation, ECognitivePhase::Integration,
    }};

    /// Step -> mode (7 expressive, 5 reflective), steps 1..12.
    static constexpr std::array<EProcessingMode, STEPS_PER_CYCLE> StepModeMap = {{
        EProcessingMode::Expressive,  // 1
        EProcessingMode::Expressive,  // 2
        EProcessingMode::Expressive,  // 3
        EProcessingMode::Reflective,  // 4
        EProcessingMode::Expressive,  // 5
        EProcessingMode::Expressive,  // 6
        EProcessingMode::Reflective,  // 7
        EProcessingMode::Reflective,  // 8
        EProcessingMode::Expressive,  // 9
        EProcessingMode::Expressive,  // 10
        EProcessingMode::Reflective,  // 11
        EProcessingMode::Reflective,  // 12
    }};

    /// Step -> thread-pool layer of the seed design (extension; what
    /// SubmitForStep uses): 1, 5, 9 DataLoader; 2, 6, 10 InterOp; 3, 7, 11
    /// IntraOp; 4, 8, 12 the CUDA-stream lane of the step's stream.
    static constexpr std::array<EThreadPoolLayer, STEPS_PER_CYCLE> StepLayerMap = {{
        EThreadPoolLayer::DataLoader, EThreadPoolLayer::InterOp, EThreadPoolLayer::IntraOp, EThreadPoolLayer::CUDAStream,
        EThreadPoolLayer::DataLoader, EThreadPoolLayer::InterOp, EThreadPoolLayer::IntraOp, EThreadPoolLayer::CUDAStream,
        EThreadPoolLayer::DataLoader, EThreadPoolLayer::InterOp, EThreadPoolLayer::IntraOp, EThreadPoolLayer::CUDAStream,
    }};

    //=========================================================================
    // Lifecycle
    //=========================================================================

    /// A pool with the default FThreadPoolConfig.
    FEchobeatsThreadPoolManager() : FEchobeatsThreadPoolManager(FThreadPoolConfig{}) {}

    /// Creates the pool (worker threads start with the first task of their
    /// layer). Throws std::invalid_argument for a rejected configuration,
    /// std::runtime_error otherwise. Prints nothing.
    explicit FEchobeatsThreadPoolManager(const FThreadPoolConfig& InConfig) : Config(InConfig)
    {
        EchobeatsConfig C;
        if (echobeats_config_default(&C) != ECHOBEATS_OK)
            ThrowLastError();
        C.threads_per_stream = Config.ThreadsPerStream;
        C.data_loader_workers = Config.DataLoaderWorkers;
        C.inter_op_threads = Config.InterOpThreads;
        C.intra_op_threads = Config.IntraOpThreads;
        C.cuda_streams = Config.CUDAStreams;
        // Pinning is done below by ConfigureNUMAAffinity (before any worker
        // takes a task), which also keeps its summary.
        C.enable_numa_affinity = 0;
        C.enable_realtime_priority = Config.EnableRealTimePriority ? 1 : 0;
        C.drain_on_shutdown = Config.DrainOnShutdown ? 1 : 0;
        C.reject_when_full = Config.RejectWhenFull ? 1 : 0;
        C.target_cycle_time_ms = Config.TargetCycleTimeMs;
        C.max_queue_depth = Config.MaxQueueDepth;
        C.submit_timeout_ms = EchobeatsDetail::TimeoutMs(Config.SubmitTimeout);
        C.result_retention = Config.ResultRetention;
        if (Config.Log) {
            C.log = &EchobeatsDetail::LogTrampoline;
            C.log_user_data = &Config.Log;
        } else {
            C.log = nullptr;
            C.log_user_data = nullptr;
        }
        Handle = echobeats_create(&C);
        if (Handle == nullptr)
            ThrowLastError();
        try {
            if (Config.EnableNUMAAffinity)
                ConfigureNUMAAffinity();
            ConfigurePyTorchThreads();
        } catch (...) {
            echobeats_free(Handle);
            throw;
        }
    }

    /// Shuts the pool down (drains or cancels per DrainOnShutdown, waits for
    /// running tasks, joins every thread) and frees it. Must not run inside
    /// one of the pool's tasks.
    ~FEchobeatsThreadPoolManager() { echobeats_free(Handle); }

    // Non-copyable, non-movable
    FEchobeatsThreadPoolManager(const FEchobeatsThreadPoolManager&) = delete;
    FEchobeatsThreadPoolManager& operator=(const FEchobeatsThreadPoolManager&) = delete;

    //=========================================================================
    // Task submission
    //=========================================================================

    /// Submits a task; returns its id (from 1), or 0 on error (see the top
    /// of this file; GetLastError() says why). On error the Work is
    /// destroyed without running.
    uint64_t SubmitTask(FCognitiveTask Task)
    {
        if (Task.TaskId != 0) {
            EchobeatsDetail::SetError("invalid argument: FCognitiveTask::TaskId must be 0 (the pool assigns ids)");
            return 0;
        }
        EchobeatsDetail::FWorkContext* Ctx = NewContext(std::move(Task.Work));
        if (Ctx == nullptr)
            return 0;
        EchobeatsTask T;
        T.work = &EchobeatsDetail::RunWork;
        T.context = Ctx;
        T.destroy_context = &EchobeatsDetail::DestroyWork;
        T.stream = static_cast<int>(Task.Stream);
        T.phase = static_cast<int>(Task.Phase);
        T.step = Task.Step;
        T.priority = Task.Priority;
        T.layer = static_cast<int>(Task.TargetLayer);
        T.deadline_ns = Task.Deadline ? EchobeatsDetail::DeadlineNs(*Task.Deadline) : 0;
        T.dependencies = Task.Dependencies.empty() ? nullptr : Task.Dependencies.data();
        T.dependency_count = Task.Dependencies.size();
        // From here libcllm owns Ctx: DestroyWork runs exactly once, after
        // the task ran, when it is dropped unrun, or now if the submit fails.
        const uint64_t Id = echobeats_submit(Handle, &T);
        if (Id == 0)
            EchobeatsDetail::CaptureError();
        return Id;
    }

    /// Submits each task in order; a task that fails gets id 0 in the
    /// result (the others are still submitted).
    std::vector<uint64_t> SubmitTasks(std::vector<FCognitiveTask> Tasks)
    {
        std::vector<uint64_t> Ids;
        Ids.reserve(Tasks.size());
        for (FCognitiveTask& Task : Tasks)
            Ids.push_back(SubmitTask(std::move(Task)));
        return Ids;
    }

    /// Submits Work for Step (1..12) with the stream, phase and layer of the
    /// step tables; 0 on error.
    uint64_t SubmitForStep(std::function<void()> Work, int32_t Step, float Priority = 0.5f)
    {
        EchobeatsDetail::FWorkContext* Ctx = NewContext(std::move(Work));
        if (Ctx == nullptr)
            return 0;
        const uint64_t Id = echobeats_submit_for_step(Handle, &EchobeatsDetail::RunWork, Ctx,
                                                      &EchobeatsDetail::DestroyWork, Step, Priority);
        if (Id == 0)
            EchobeatsDetail::CaptureError();
        return Id;
    }

    /// True once the task has finished (completed, failed, expired or
    /// cancelled), false on timeout or for an unknown id (at once). Any
    /// number of times, from any thread, while the result is retained (the
    /// results of at least the last ResultRetention ids; a result somebody
    /// waits for is kept until read).
    bool WaitForTask(uint64_t TaskId, std::chrono::milliseconds Timeout = std::chrono::milliseconds(1000))
    {
        const ETaskStatus S = WaitForTaskResult(TaskId, Timeout, nullptr);
        return S != ETaskStatus::Timeout && S != ETaskStatus::Unknown;
    }

    /// Waits like WaitForTask and returns the status (extension); fills
    /// *OutResult when the task finished and OutResult is not null.
    ETaskStatus WaitForTaskResult(uint64_t TaskId, std::chrono::milliseconds Timeout, FTaskResult* OutResult = nullptr)
    {
        EchobeatsTaskResult R;
        const int S = echobeats_wait_task(Handle, TaskId, EchobeatsDetail::TimeoutMs(Timeout), &R);
        if (S < ECHOBEATS_TASK_COMPLETED || S > ECHOBEATS_TASK_UNKNOWN) {
            EchobeatsDetail::CaptureError();
            return ETaskStatus::Unknown;
        }
        const ETaskStatus Status = static_cast<ETaskStatus>(S);
        if (OutResult != nullptr && S <= ECHOBEATS_TASK_CANCELLED) {
            OutResult->TaskId = R.id;
            OutResult->Success = S == ECHOBEATS_TASK_COMPLETED;
            OutResult->ExecutionTime = std::chrono::microseconds(static_cast<int64_t>(R.execution_us));
            OutResult->Stream = static_cast<ECognitiveStream>(R.stream);
            OutResult->Step = R.step;
            OutResult->Status = Status;
            OutResult->Phase = static_cast<ECognitivePhase>(R.phase);
            OutResult->QueueWaitTime = std::chrono::microseconds(static_cast<int64_t>(R.queue_wait_us));
        }
        return Status;
    }

    /// True when the stream has nothing queued, pending or running within
    /// Timeout; false on timeout.
    bool WaitForStream(ECognitiveStream Stream, std::chrono::milliseconds Timeout = std::chrono::milliseconds(1000))
    {
        if (static_cast<int32_t>(Stream) >= NUM_STREAMS) {
            EchobeatsDetail::SetError("invalid argument: stream must be 0..2");
            return false;
        }
        return echobeats_wait_stream(Handle, static_cast<int>(Stream), EchobeatsDetail::TimeoutMs(Timeout));
    }

    //=========================================================================
    // Cognitive loop control
    //=========================================================================

    /// Moves to the next step; leaving 4, 8 or 12 first synchronises the
    /// streams (for at most 1 s); 12 -> 1 completes a cycle.
    void AdvanceStep() { echobeats_advance_step(Handle); }

    /// Runs steps 1..12 paced to TargetCycleTimeMs; returns the cycle's µs.
    uint64_t RunCycle() { return echobeats_run_cycle(Handle); }

    /// The current step (1-12).
    int32_t GetCurrentStep() const { return echobeats_current_step(Handle); }

    /// The current step's stream.
    ECognitiveStream GetCurrentStream() const
    {
        return static_cast<ECognitiveStream>(echobeats_current_stream(Handle));
    }

    /// The current step's phase.
    ECognitivePhase GetCurrentPhase() const { return static_cast<ECognitivePhase>(echobeats_current_phase(Handle)); }

    /// The current step's mode.
    EProcessingMode GetCurrentMode() const { return static_cast<EProcessingMode>(echobeats_current_mode(Handle)); }

    //=========================================================================
    // Static helpers (any int32_t step, wrapped into 1..12)
    //=========================================================================

    /// Whether Step is 1..12 (extension).
    static constexpr bool IsValidStep(int32_t Step) { return Step >= 1 && Step <= STEPS_PER_CYCLE; }

    /// ((Step - 1) mod 12) + 1 with a non-negative modulo (extension).
    static constexpr int32_t WrapStep(int32_t Step)
    {
        const int64_t I = (static_cast<int64_t>(Step) - 1) % STEPS_PER_CYCLE;
        return static_cast<int32_t>(I < 0 ? I + STEPS_PER_CYCLE : I) + 1;
    }

    /// The stream of a step.
    static constexpr ECognitiveStream GetStreamForStep(int32_t Step) { return StepStreamMap[Index(Step)]; }

    /// The phase of a step.
    static constexpr ECognitivePhase GetPhaseForStep(int32_t Step) { return StepPhaseMap[Index(Step)]; }

    /// The mode of a step.
    static constexpr EProcessingMode GetModeForStep(int32_t Step) { return StepModeMap[Index(Step)]; }

    /// The triad of a step (0-3).
    static constexpr int32_t GetTriadForStep(int32_t Step) { return static_cast<int32_t>(Index(Step)) / NUM_STREAMS; }

    /// The thread-pool layer of a step (extension).
    static constexpr EThreadPoolLayer GetLayerForStep(int32_t Step) { return StepLayerMap[Index(Step)]; }

    //=========================================================================
    // Synchronisation
    //=========================================================================

    /// Waits until all three streams are idle at once (no time limit);
    /// records a sync event. Called automatically when leaving 4, 8, 12.
    void SynchronizeStreams() { echobeats_synchronize(Handle, -1); }

    /// SynchronizeStreams within Timeout; false when it ran out (extension).
    bool TrySynchronizeStreams(std::chrono::milliseconds Timeout)
    {
        return echobeats_synchronize(Handle, EchobeatsDetail::TimeoutMs(Timeout));
    }

    /// A reusable barrier for NUM_STREAMS parties; its id, or 0 after
    /// shutdown.
    uint64_t CreateBarrier() { return CreateBarrier(NUM_STREAMS); }

    /// A reusable barrier for Parties (>= 1) parties; 0 on error (extension).
    uint64_t CreateBarrier(int32_t Parties)
    {
        const uint64_t Id = echobeats_create_barrier(Handle, Parties);
        if (Id == 0)
            EchobeatsDetail::CaptureError();
        return Id;
    }

    /// Waits until all parties arrived. Returns at once for an unknown or
    /// destroyed barrier, and when the barrier is destroyed meanwhile.
    void WaitAtBarrier(uint64_t BarrierId)
    {
        if (echobeats_wait_at_barrier(Handle, BarrierId, -1) == ECHOBEATS_ERROR)
            EchobeatsDetail::CaptureError();
    }

    /// True when all parties arrived within Timeout; false on timeout (this
    /// arrival is withdrawn) or for an unknown or destroyed barrier
    /// (extension).
    bool TryWaitAtBarrier(uint64_t BarrierId, std::chrono::milliseconds Timeout)
    {
        const int R = echobeats_wait_at_barrier(Handle, BarrierId, EchobeatsDetail::TimeoutMs(Timeout));
        if (R == ECHOBEATS_ERROR)
            EchobeatsDetail::CaptureError();
        return R == ECHOBEATS_OK;
    }

    /// Frees a barrier; its waiters return. False for an unknown id
    /// (extension).
    bool DestroyBarrier(uint64_t BarrierId)
    {
        if (echobeats_destroy_barrier(Handle, BarrierId) == ECHOBEATS_OK)
            return true;
        EchobeatsDetail::CaptureError();
        return false;
    }

    //=========================================================================
    // Configuration
    //=========================================================================

    /// Pins each stream's workers (stream i to NUMA node i mod nodes; on one
    /// node to disjoint CPU sets when there are enough CPUs) from the sysfs
    /// topology; GetNUMAAffinitySummary() says what was done.
    void ConfigureNUMAAffinity()
    {
        std::string Summary(256, '\0');
        int64_t N = echobeats_configure_numa_affinity(Handle, &Summary[0], Summary.size());
        if (N >= static_cast<int64_t>(Summary.size())) {
            Summary.assign(static_cast<size_t>(N) + 1, '\0');
            N = echobeats_configure_numa_affinity(Handle, &Summary[0], Summary.size());
        }
        if (N < 0) {
            EchobeatsDetail::CaptureError();
            return;
        }
        Summary.resize(static_cast<size_t>(N) < Summary.size() ? static_cast<size_t>(N) : Summary.size() - 1);
        std::lock_guard<std::mutex> Lock(StateMutex);
        AffinitySummary = std::move(Summary);
    }

    /// Computes the design's recommended thread configuration for this
    /// machine (GetPyTorchThreadConfig); prints nothing.
    void ConfigurePyTorchThreads()
    {
        const FPyTorchThreadConfig R = GetRecommendedThreadConfig();
        std::lock_guard<std::mutex> Lock(StateMutex);
        PyTorchThreads = R;
    }

    /// The configuration given to the constructor.
    const FThreadPoolConfig& GetConfig() const { return Config; }

    //=========================================================================
    // Metrics
    //=========================================================================

    /// The pool's metrics, refreshed from libcllm by this call.
    const FThreadPoolMetrics& GetMetrics() const
    {
        RefreshMetrics();
        return Metrics;
    }

    /// Zeroes every metric (the current queue depths stay true).
    void ResetMetrics()
    {
        echobeats_reset_metrics(Handle);
        RefreshMetrics();
    }

    /// One stream's metrics, refreshed from libcllm by this call; throws
    /// std::out_of_range for a stream outside 0..2.
    const FStreamMetrics& GetStreamMetrics(ECognitiveStream Stream) const
    {
        const size_t I = static_cast<size_t>(Stream);
        if (I >= static_cast<size_t>(NUM_STREAMS))
            throw std::out_of_range("echobeats: stream must be 0..2");
        RefreshMetrics();
        return Metrics.StreamMetrics[I];
    }

    //=========================================================================
    // Tetrahedral thread bundle
    //=========================================================================

    /// The threads (vertices 0..3) of a face: 0 {0,1,2}, 1 {0,1,3},
    /// 2 {0,2,3}, 3 {1,2,3}; {0,0,0} for another index.
    static constexpr std::array<int32_t, 3> GetTriadicFace(int32_t FaceIndex)
    {
        switch (FaceIndex) {
        case 0:
            return {{0, 1, 2}};
        case 1:
            return {{0, 1, 3}};
        case 2:
            return {{0, 2, 3}};
        case 3:
            return {{1, 2, 3}};
        default:
            return {{0, 0, 0}};
        }
    }

    /// The edge (0..5) joining two threads, in either order: {0,1} 0,
    /// {0,2} 1, {0,3} 2, {1,2} 3, {1,3} 4, {2,3} 5; -1 otherwise.
    static constexpr int32_t GetDyadicEdge(int32_t Thread1, int32_t Thread2)
    {
        const int32_t Lo = Thread1 < Thread2 ? Thread1 : Thread2;
        const int32_t Hi = Thread1 < Thread2 ? Thread2 : Thread1;
        if (Lo < 0 || Hi > 3 || Lo == Hi)
            return -1;
        // Edges of vertex Lo start at 0, 3, 5 for Lo = 0, 1, 2.
        return (Lo == 0 ? 0 : Lo == 1 ? 3 : 5) + (Hi - Lo - 1);
    }

    //=========================================================================
    // Extensions
    //=========================================================================

    /// Shuts the pool down now (as the destructor, without freeing it):
    /// later submits fail, waits still work. Idempotent.
    FShutdownReport Shutdown()
    {
        EchobeatsShutdownReport R;
        FShutdownReport Out;
        if (echobeats_shutdown(Handle, &R) != ECHOBEATS_OK) {
            EchobeatsDetail::CaptureError();
            return Out;
        }
        Out.Drained = R.drained;
        Out.Cancelled = R.cancelled;
        Out.ThreadsJoined = R.threads_joined;
        Out.FirstCall = R.first_call != 0;
        Out.Complete = R.complete != 0;
        return Out;
    }

    /// Tries real-time scheduling for the pool's threads; false (reason in
    /// GetLastError()) when the OS refuses.
    bool TryEnableRealTimePriority()
    {
        if (echobeats_enable_realtime_priority(Handle) == ECHOBEATS_OK)
            return true;
        EchobeatsDetail::CaptureError();
        return false;
    }

    /// What the last ConfigureNUMAAffinity did ("" before the first call).
    std::string GetNUMAAffinitySummary() const
    {
        std::lock_guard<std::mutex> Lock(StateMutex);
        return AffinitySummary;
    }

    /// What ConfigurePyTorchThreads recommended.
    FPyTorchThreadConfig GetPyTorchThreadConfig() const
    {
        std::lock_guard<std::mutex> Lock(StateMutex);
        return PyTorchThreads;
    }

    /// The design's thread table scaled to the CPUs this process may use.
    static FPyTorchThreadConfig GetRecommendedThreadConfig()
    {
        EchobeatsRecommendedConfig R;
        FPyTorchThreadConfig Out;
        if (echobeats_recommended_config(&R) != ECHOBEATS_OK) {
            EchobeatsDetail::CaptureError();
            return Out;
        }
        Out.InterOpThreads = R.inter_op_threads;
        Out.IntraOpThreads = R.intra_op_threads;
        Out.DataLoaderWorkers = R.data_loader_workers;
        Out.CUDAStreams = R.cuda_streams;
        Out.UsableCPUs = R.usable_cpus;
        return Out;
    }

    /// Calls Body(i) for every i in [Begin, End) on the intra-op pool
    /// (IntraOpThreads threads, concurrently) and returns when all are done:
    /// the parallel-for of IntraOp tasks, usable from any task or thread.
    /// The first exception thrown by Body is rethrown here after the loop
    /// (no exception crosses into the library); returns false, with
    /// GetLastError(), when the library refuses (e.g. Begin > End).
    template <typename F>
    bool ParallelFor(size_t Begin, size_t End, F&& Body)
    {
        struct Loop {
            F* Body;
            std::mutex Mutex;
            std::exception_ptr Error;
            static void Run(size_t I, void* User) noexcept
            {
                Loop* L = static_cast<Loop*>(User);
                try {
                    (*L->Body)(I);
                } catch (...) {
                    std::lock_guard<std::mutex> Lock(L->Mutex);
                    if (!L->Error)
                        L->Error = std::current_exception();
                }
            }
        };
        Loop L;
        L.Body = &Body;
        const bool Ok = echobeats_parallel_for(Handle, Begin, End, &Loop::Run, &L) == ECHOBEATS_OK;
        if (L.Error)
            std::rethrow_exception(L.Error);
        return Ok;
    }

    /// Why the last failing call of this class on this thread failed.
    static std::string GetLastError() { return EchobeatsDetail::LastError(); }

    /// The C handle (owned by this object).
    EchobeatsManager* GetNativeHandle() const noexcept { return Handle; }

private:
    FThreadPoolConfig Config;
    EchobeatsManager* Handle = nullptr;
    mutable std::mutex MetricsMutex;
    mutable FThreadPoolMetrics Metrics;
    mutable std::mutex StateMutex;
    std::string AffinitySummary;
    FPyTorchThreadConfig PyTorchThreads;

    static constexpr size_t Index(int32_t Step) { return static_cast<size_t>(WrapStep(Step) - 1); }

    [[noreturn]] static void ThrowLastError()
    {
        const char* E = cllm_last_error();
        const std::string Msg = E != nullptr ? E : "echobeats: cannot create the pool";
        EchobeatsDetail::SetError(Msg.c_str());
        if (Msg.rfind("invalid argument", 0) == 0)
            throw std::invalid_argument(Msg);
        throw std::runtime_error(Msg);
    }

    /// A heap context for Work, or nullptr (error set) when out of memory.
    EchobeatsDetail::FWorkContext* NewContext(std::function<void()>&& Work) const
    {
        EchobeatsDetail::FWorkContext* Ctx = new (std::nothrow) EchobeatsDetail::FWorkContext;
        if (Ctx == nullptr) {
            EchobeatsDetail::SetError("echobeats: out of memory");
            return nullptr;
        }
        Ctx->Work = std::move(Work);
        Ctx->Log = Config.Log ? &Config.Log : nullptr;
        return Ctx;
    }

    void RefreshMetrics() const
    {
        EchobeatsMetrics M;
        std::lock_guard<std::mutex> Lock(MetricsMutex);
        if (echobeats_get_metrics(Handle, &M) != ECHOBEATS_OK) {
            EchobeatsDetail::CaptureError();
            return;
        }
        for (size_t I = 0; I < static_cast<size_t>(NUM_STREAMS); ++I) {
            const EchobeatsStreamMetrics& S = M.streams[I];
            FStreamMetrics& D = Metrics.StreamMetrics[I];
            D.TasksSubmitted.store(S.tasks_submitted);
            D.TasksCompleted.store(S.tasks_completed);
            D.TasksFailed.store(S.tasks_failed);
            D.TotalExecutionTime.store(S.total_execution_us);
            D.MaxExecutionTime.store(S.max_execution_us);
            D.MinExecutionTime.store(S.min_execution_us);
            D.CurrentQueueDepth.store(S.current_queue_depth);
            D.MaxQueueDepth.store(S.max_queue_depth);
            D.QueueWaitTime.store(S.queue_wait_us);
            D.ContentionEvents.store(S.contention_events);
            D.TasksExpired.store(S.tasks_expired);
            D.TasksCancelled.store(S.tasks_cancelled);
            D.TasksRun.store(S.tasks_run);
        }
        Metrics.CyclesCompleted.store(M.cycles_completed);
        Metrics.TotalCycleTime.store(M.total_cycle_us);
        Metrics.SyncEvents.store(M.sync_events);
        Metrics.SyncWaitTime.store(M.sync_wait_us);
    }
};

//=============================================================================
// Utility functions
//=============================================================================

inline const char* ToString(ECognitiveStream Stream)
{
    switch (Stream) {
    case ECognitiveStream::Cerebral:
        return "Cerebral";
    case ECognitiveStream::Somatic:
        return "Somatic";
    case ECognitiveStream::Autonomic:
        return "Autonomic";
    default:
        return "Unknown";
    }
}

inline const char* ToString(ECognitivePhase Phase)
{
    switch (Phase) {
    case ECognitivePhase::Perception:
        return "Perception";
    case ECognitivePhase::Action:
        return "Action";
    case ECognitivePhase::Simulation:
        return "Simulation";
    case ECognitivePhase::Integration:
        return "Integration";
    default:
        return "Unknown";
    }
}

inline const char* ToString(EProcessingMode Mode)
{
    switch (Mode) {
    case EProcessingMode::Expressive:
        return "Expressive";
    case EProcessingMode::Reflective:
        return "Reflective";
    default:
        return "Unknown";
    }
}

inline const char* ToString(EThreadPoolLayer Layer)
{
    switch (Layer) {
    case EThreadPoolLayer::DataLoader:
        return "DataLoader";
    case EThreadPoolLayer::MainThread:
        return "MainThread";
    case EThreadPoolLayer::InterOp:
        return "InterOp";
    case EThreadPoolLayer::IntraOp:
        return "IntraOp";
    case EThreadPoolLayer::CUDAStream:
        return "CUDAStream";
    default:
        return "Unknown";
    }
}

/// Extension.
inline const char* ToString(ETaskStatus Status)
{
    switch (Status) {
    case ETaskStatus::Completed:
        return "Completed";
    case ETaskStatus::Failed:
        return "Failed";
    case ETaskStatus::Expired:
        return "Expired";
    case ETaskStatus::Cancelled:
        return "Cancelled";
    case ETaskStatus::Timeout:
        return "Timeout";
    case ETaskStatus::Unknown:
        return "Unknown";
    default:
        return "Unknown";
    }
}

//=============================================================================
// Names without prefixes (the design document's spelling)
//=============================================================================

using EchobeatsThreadPoolManager = FEchobeatsThreadPoolManager;
using CognitiveStream = ECognitiveStream;
using CognitivePhase = ECognitivePhase;
using ProcessingMode = EProcessingMode;
using ThreadPoolLayer = EThreadPoolLayer;
using TaskStatus = ETaskStatus;
using CognitiveTask = FCognitiveTask;
using TaskResult = FTaskResult;
using StreamMetrics = FStreamMetrics;
using ThreadPoolMetrics = FThreadPoolMetrics;
using ThreadPoolConfig = FThreadPoolConfig;
using PyTorchThreadConfig = FPyTorchThreadConfig;
using ShutdownReport = FShutdownReport;

}  // namespace DeepTreeEcho

#endif /* __cplusplus */

#endif /* CLLM_ECHOBEATS_THREAD_POOL_MANAGER_H */
