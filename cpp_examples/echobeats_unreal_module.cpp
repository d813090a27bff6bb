// echobeats_unreal_module.cpp: an Unreal-style game module driving the
// Echobeats pool (DeepTreeEcho::FEchobeatsThreadPoolManager, the header-only
// wrapper over libcllm) the way the original Deep Tree Echo modules do:
// plain C++ with Unreal naming (F classes, StartupModule/ShutdownModule/Tick),
// no engine types.
//
// One class per cognitive stream role:
//   FPatternRecognition    Cerebral: reads a sensor frame (step 1, data-loader
//                          pool), matches patterns in it (step 7, intra-op)
//   FReflexTraining        Somatic: reacts to the recognised pattern (step 2,
//                          depends on the pattern task), trains its reflex
//                          weights (step 5)
//   FStrategicSimulation   Autonomic: simulates futures from pattern and
//                          reflex (step 3, depends on both), scores them
//                          (step 9)
// At the integration steps (4, 8, 12: each stream's ordered lane), after its
// own work of the cycle, each role meets the other two at a barrier and they
// exchange their state. The module runs 100
// cycles paced to TargetCycleTimeMs = 2 ms, checks that every task ran, every
// dependency held and every barrier round met, and prints the per-stream
// metrics. Exit status 0 when everything checks out.
#include "DeepTreeEcho/EchobeatsThreadPoolManager.h"

#include <array>
#include <atomic>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace DeepTreeEcho {

namespace {

int GErrors = 0;
std::mutex GLogMutex;

void EchoLog(const char* Format, ...)
{
    std::lock_guard<std::mutex> Lock(GLogMutex);
    va_list Args;
    va_start(Args, Format);
    std::vprintf(Format, Args);
    va_end(Args);
    std::printf("\n");
}

void EchoCheck(bool bOk, const char* What)
{
    if (!bOk) {
        std::lock_guard<std::mutex> Lock(GLogMutex);
        ++GErrors;
        std::printf("ERROR: %s\n", What);
    }
}

constexpr int32_t FrameSize = 256;
constexpr int32_t NumCycles = 100;

/// State the three roles share at the integration barrier.
struct FSharedState {
    std::atomic<float> PatternStrength{0.0f};
    std::atomic<float> ReflexGain{0.0f};
    std::atomic<float> BestFutureScore{0.0f};
    std::atomic<int32_t> BarrierRounds{0};
    std::atomic<int32_t> BarrierMisses{0};
    std::atomic<int32_t> OrderViolations{0};
};

/// Common base: each role knows its stream and the pool.
class FCognitiveRole {
public:
    FCognitiveRole(FEchobeatsThreadPoolManager& InPool, FSharedState& InShared, ECognitiveStream InStream)
        : Pool(InPool), Shared(InShared), Stream(InStream)
    {
    }
    virtual ~FCognitiveRole() = default;
    ECognitiveStream GetStream() const { return Stream; }
    int32_t GetTasksRun() const { return TasksRun.load(); }

protected:
    /// Submits Work for Step; the step must belong to this role's stream.
    uint64_t Submit(std::function<void()> Work, int32_t Step, std::vector<uint64_t> Dependencies = {},
                    float Priority = 0.5f)
    {
        EchoCheck(FEchobeatsThreadPoolManager::GetStreamForStep(Step) == Stream, "step of another stream");
        FCognitiveTask Task;
        Task.Work = [this, W = std::move(Work)] {
            W();
            ++TasksRun;
        };
        Task.Stream = Stream;
        Task.Phase = FEchobeatsThreadPoolManager::GetPhaseForStep(Step);
        Task.Step = Step;
        Task.Priority = Priority;
        Task.TargetLayer = FEchobeatsThreadPoolManager::GetLayerForStep(Step);
        Task.Dependencies = std::move(Dependencies);
        const uint64_t Id = Pool.SubmitTask(std::move(Task));
        EchoCheck(Id != 0, "a task was rejected");
        if (Id == 0)
            EchoLog("  rejected: %s", FEchobeatsThreadPoolManager::GetLastError().c_str());
        return Id;
    }

    /// The integration step, after this role's work of the cycle: meet the
    /// other two roles, then integrate.
    uint64_t SubmitIntegration(int32_t Step, uint64_t BarrierId, uint64_t After, std::function<void()> Integrate)
    {
        return Submit(
            [this, BarrierId, Integrate = std::move(Integrate)] {
                if (!Pool.TryWaitAtBarrier(BarrierId, std::chrono::milliseconds(5000))) {
                    ++Shared.BarrierMisses;
                    return;
                }
                Integrate();
                ++Shared.BarrierRounds;
            },
            Step, {After});
    }

    FEchobeatsThreadPoolManager& Pool;
    FSharedState& Shared;
    const ECognitiveStream Stream;
    std::atomic<int32_t> TasksRun{0};
};

/// Cerebral stream: sensor frames in, pattern strength out.
class FPatternRecognition : public FCognitiveRole {
public:
    FPatternRecognition(FEchobeatsThreadPoolManager& InPool, FSharedState& InShared)
        : FCognitiveRole(InPool, InShared, ECognitiveStream::Cerebral), Frame(FrameSize, 0.0f)
    {
    }

    /// Step 1 (data loader): read a frame; step 7 (intra-op): match it.
    /// Returns the id of the matching task.
    uint64_t Schedule(int32_t Cycle)
    {
        const uint64_t Load = Submit(
            [this, Cycle] {
                for (int32_t I = 0; I < FrameSize; ++I)
                    Frame[static_cast<size_t>(I)] =
                        std::sin(0.05f * static_cast<float>(I + Cycle)) + (I % 37 == Cycle % 37 ? 2.0f : 0.0f);
                FrameCycle = Cycle;
            },
            1);
        return Submit(
            [this, Cycle] {
                if (FrameCycle != Cycle)
                    ++Shared.OrderViolations;
                float Peak = 0.0f;
                for (float V : Frame)
                    Peak = std::max(Peak, V);
                Strength = Peak / 3.0f;
                MatchedCycle = Cycle;
            },
            7, {Load});
    }

    uint64_t ScheduleIntegration(uint64_t BarrierId, uint64_t After)
    {
        return SubmitIntegration(4, BarrierId, After, [this] { Shared.PatternStrength = Strength.load(); });
    }

    float GetStrength() const { return Strength; }
    int32_t GetMatchedCycle() const { return MatchedCycle; }

private:
    std::vector<float> Frame;
    int32_t FrameCycle = -1;
    std::atomic<int32_t> MatchedCycle{-1};
    std::atomic<float> Strength{0.0f};
};

/// Somatic stream: reacts to patterns, trains reflex weights.
class FReflexTraining : public FCognitiveRole {
public:
    FReflexTraining(FEchobeatsThreadPoolManager& InPool, FSharedState& InShared, const FPatternRecognition& InPattern)
        : FCognitiveRole(InPool, InShared, ECognitiveStream::Somatic), Pattern(InPattern)
    {
    }

    /// Step 2: react (after the pattern matched); step 5: train. Returns the
    /// id of the training task.
    uint64_t Schedule(int32_t Cycle, uint64_t PatternTask)
    {
        const uint64_t React = Submit(
            [this, Cycle] {
                if (Pattern.GetMatchedCycle() != Cycle)
                    ++Shared.OrderViolations;
                Response = Gain * Pattern.GetStrength();
            },
            2, {PatternTask}, 0.9f);
        return Submit(
            [this] {
                const float Target = 0.8f;
                Gain = Gain + 0.1f * (Target - Response);
            },
            5, {React});
    }

    uint64_t ScheduleIntegration(uint64_t BarrierId, uint64_t After)
    {
        return SubmitIntegration(8, BarrierId, After, [this] { Shared.ReflexGain = Gain.load(); });
    }

    float GetResponse() const { return Response; }

private:
    const FPatternRecognition& Pattern;
    std::atomic<float> Gain{0.5f};
    std::atomic<float> Response{0.0f};
};

/// Autonomic stream: simulates futures from pattern and reflex.
class FStrategicSimulation : public FCognitiveRole {
public:
    FStrategicSimulation(FEchobeatsThreadPoolManager& InPool, FSharedState& InShared)
        : FCognitiveRole(InPool, InShared, ECognitiveStream::Autonomic)
    {
    }

    /// Step 3: simulate (after pattern and reflex); step 9 (data loader):
    /// score. Returns the id of the scoring task.
    uint64_t Schedule(uint64_t PatternTask, uint64_t ReflexTask, const FReflexTraining& Reflex)
    {
        const uint64_t Simulate = Submit(
            [this, &Reflex] {
                float Best = -1e9f;
                for (int32_t Future = 0; Future < 64; ++Future) {
                    const float Score = std::cos(0.1f * static_cast<float>(Future)) * Reflex.GetResponse();
                    Best = std::max(Best, Score);
                }
                BestScore = Best;
            },
            3, {PatternTask, ReflexTask});
        return Submit([this] { Scored = Scored + 1; }, 9, {Simulate});
    }

    uint64_t ScheduleIntegration(uint64_t BarrierId, uint64_t After)
    {
        return SubmitIntegration(12, BarrierId, After, [this] { Shared.BestFutureScore = BestScore.load(); });
    }

    int32_t GetScored() const { return Scored; }

private:
    std::atomic<float> BestScore{0.0f};
    std::atomic<int32_t> Scored{0};
};

/// The module: owns the pool and the three roles.
class FDeepTreeEchoModule {
public:
    void StartupModule()
    {
        FThreadPoolConfig Config;
        Config.ThreadsPerStream = 2;
        Config.DataLoaderWorkers = 3;
        Config.IntraOpThreads = 2;
        Config.EnableNUMAAffinity = false;
        Config.TargetCycleTimeMs = 2.0f;  // paced, and quick
        Pool = std::make_unique<FEchobeatsThreadPoolManager>(Config);
        Pattern = std::make_unique<FPatternRecognition>(*Pool, Shared);
        Reflex = std::make_unique<FReflexTraining>(*Pool, Shared, *Pattern);
        Simulation = std::make_unique<FStrategicSimulation>(*Pool, Shared);
        IntegrationBarrier = Pool->CreateBarrier();  // one party per stream
        EchoCheck(IntegrationBarrier != 0, "CreateBarrier");
        EchoLog("DeepTreeEcho module started: %d threads per stream, target cycle %.1f ms",
                Pool->GetConfig().ThreadsPerStream, static_cast<double>(Pool->GetConfig().TargetCycleTimeMs));
    }

    /// One cognitive cycle: schedule every role's work, then run the 12 steps.
    void Tick(int32_t Cycle)
    {
        const uint64_t PatternTask = Pattern->Schedule(Cycle);
        const uint64_t ReflexTask = Reflex->Schedule(Cycle, PatternTask);
        const uint64_t SimTask = Simulation->Schedule(PatternTask, ReflexTask, *Reflex);
        const std::array<uint64_t, 3> Integration = {Pattern->ScheduleIntegration(IntegrationBarrier, PatternTask),
                                                     Reflex->ScheduleIntegration(IntegrationBarrier, ReflexTask),
                                                     Simulation->ScheduleIntegration(IntegrationBarrier, SimTask)};
        const uint64_t Micros = Pool->RunCycle();
        EchoCheck(Micros >= 2000, "RunCycle shorter than the 2 ms target");
        for (uint64_t Id : {PatternTask, ReflexTask, SimTask, Integration[0], Integration[1], Integration[2]}) {
            FTaskResult Result;
            const ETaskStatus Status = Pool->WaitForTaskResult(Id, std::chrono::milliseconds(5000), &Result);
            EchoCheck(Status == ETaskStatus::Completed, "a cycle task did not complete");
        }
    }

    void ShutdownModule()
    {
        Pool->SynchronizeStreams();
        PrintMetrics();
        Pool->DestroyBarrier(IntegrationBarrier);
        Simulation.reset();
        Reflex.reset();
        Pattern.reset();
        Pool.reset();
        EchoLog("DeepTreeEcho module shut down");
    }

    void Verify() const
    {
        // Per cycle: pattern 2 + integration 1, reflex 2 + 1, simulation 2 + 1.
        EchoCheck(Pattern->GetTasksRun() == 3 * NumCycles, "pattern tasks");
        EchoCheck(Reflex->GetTasksRun() == 3 * NumCycles, "reflex tasks");
        EchoCheck(Simulation->GetTasksRun() == 3 * NumCycles, "simulation tasks");
        EchoCheck(Simulation->GetScored() == NumCycles, "scored futures");
        EchoCheck(Shared.BarrierRounds == 3 * NumCycles, "barrier rounds");
        EchoCheck(Shared.BarrierMisses == 0, "barrier misses");
        EchoCheck(Shared.OrderViolations == 0, "dependency order");
        const FThreadPoolMetrics& M = Pool->GetMetrics();
        EchoCheck(M.CyclesCompleted == NumCycles, "cycles completed");
        EchoCheck(M.GetCyclesPerSecond() <= 500.5f, "cycles faster than the 2 ms target");
        for (int32_t S = 0; S < FEchobeatsThreadPoolManager::NUM_STREAMS; ++S) {
            const FStreamMetrics& X = M.StreamMetrics[static_cast<size_t>(S)];
            EchoCheck(X.TasksSubmitted == 3 * NumCycles, "tasks submitted per stream");
            EchoCheck(X.TasksCompleted == X.TasksSubmitted && X.TasksFailed == 0, "every task completed");
        }
    }

private:
    void PrintMetrics() const
    {
        const FThreadPoolMetrics& M = Pool->GetMetrics();
        EchoLog("");
        EchoLog("%-10s %9s %9s %6s %9s %9s %11s %8s %10s", "Stream", "Submitted", "Completed", "Failed", "AvgExec",
                "MaxExec", "QueueWait", "MaxDepth", "Contention");
        for (int32_t S = 0; S < FEchobeatsThreadPoolManager::NUM_STREAMS; ++S) {
            const FStreamMetrics& X = M.StreamMetrics[static_cast<size_t>(S)];
            EchoLog("%-10s %9llu %9llu %6llu %7.1fus %7lluus %9lluus %8u %10llu",
                    ToString(static_cast<ECognitiveStream>(S)), static_cast<unsigned long long>(X.TasksSubmitted),
                    static_cast<unsigned long long>(X.TasksCompleted), static_cast<unsigned long long>(X.TasksFailed),
                    static_cast<double>(X.GetAverageExecutionTime()),
                    static_cast<unsigned long long>(X.MaxExecutionTime),
                    static_cast<unsigned long long>(X.QueueWaitTime), static_cast<unsigned>(X.MaxQueueDepth),
                    static_cast<unsigned long long>(X.ContentionEvents));
        }
        EchoLog("cycles %llu, %.1f cycles/s (target %.0f), sync events %llu (%llu us)",
                static_cast<unsigned long long>(M.CyclesCompleted), static_cast<double>(M.GetCyclesPerSecond()),
                1000.0 / static_cast<double>(Pool->GetConfig().TargetCycleTimeMs),
                static_cast<unsigned long long>(M.SyncEvents), static_cast<unsigned long long>(M.SyncWaitTime));
        EchoLog("shared state: pattern %.3f, reflex gain %.3f, best future %.3f",
                static_cast<double>(Shared.PatternStrength.load()), static_cast<double>(Shared.ReflexGain.load()),
                static_cast<double>(Shared.BestFutureScore.load()));
    }

public:
    void Run()
    {
        StartupModule();
        for (int32_t Cycle = 0; Cycle < NumCycles; ++Cycle)
            Tick(Cycle);
        Verify();
        ShutdownModule();
    }

private:
    std::unique_ptr<FEchobeatsThreadPoolManager> Pool;
    FSharedState Shared;
    std::unique_ptr<FPatternRecognition> Pattern;
    std::unique_ptr<FReflexTraining> Reflex;
    std::unique_ptr<FStrategicSimulation> Simulation;
    uint64_t IntegrationBarrier = 0;
};

}  // namespace

}  // namespace DeepTreeEcho

int main()
{
    try {
        DeepTreeEcho::FDeepTreeEchoModule Module;
        Module.Run();
    } catch (const std::exception& E) {
        std::printf("ERROR: %s\n", E.what());
        return 1;
    }
    std::printf("%s\n", DeepTreeEcho::GErrors == 0 ? "all checks passed" : "FAILED");
    return DeepTreeEcho::GErrors == 0 ? 0 : 1;
}
