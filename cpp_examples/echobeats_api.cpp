// echobeats_api.cpp: every public member of DeepTreeEcho::FEchobeatsThreadPoolManager
// (the header-only C++ wrapper over libcllm's echobeats.h) and of the types
// around it, one named test each. The defects of the original are tested
// one by one in echobeats_defects.cpp. Exit status 0 when every check passes.
#include "EchobeatsThreadPoolManager.h"
#include "DeepTreeEcho/EchobeatsThreadPoolManager.h"  // the original path, same header

#include "echobeats_test_util.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

using namespace DeepTreeEcho;
using echobeats_test::Elapsed;
using echobeats_test::Gate;
using echobeats_test::SilentConfig;
using std::chrono::milliseconds;

namespace {

using Pool = FEchobeatsThreadPoolManager;

// ---------------------------------------------------------------- compile time

static_assert(std::is_same_v<std::underlying_type_t<ECognitiveStream>, uint8_t>);
static_assert(std::is_same_v<std::underlying_type_t<ECognitivePhase>, uint8_t>);
static_assert(std::is_same_v<std::underlying_type_t<EProcessingMode>, uint8_t>);
static_assert(std::is_same_v<std::underlying_type_t<EThreadPoolLayer>, uint8_t>);
static_assert(!std::is_copy_constructible_v<Pool> && !std::is_copy_assignable_v<Pool>);
static_assert(!std::is_move_constructible_v<Pool> && !std::is_move_assignable_v<Pool>);
static_assert(std::is_same_v<EchobeatsThreadPoolManager, Pool>);
static_assert(std::is_same_v<CognitiveStream, ECognitiveStream>);
static_assert(std::is_same_v<CognitivePhase, ECognitivePhase>);
static_assert(std::is_same_v<ProcessingMode, EProcessingMode>);
static_assert(std::is_same_v<ThreadPoolLayer, EThreadPoolLayer>);
static_assert(std::is_same_v<CognitiveTask, FCognitiveTask>);
static_assert(std::is_same_v<TaskResult, FTaskResult>);
static_assert(std::is_same_v<StreamMetrics, FStreamMetrics>);
static_assert(std::is_same_v<ThreadPoolMetrics, FThreadPoolMetrics>);
static_assert(std::is_same_v<ThreadPoolConfig, FThreadPoolConfig>);
static_assert(std::is_same_v<decltype(Pool::StepStreamMap), const std::array<ECognitiveStream, 12>>);
static_assert(std::is_same_v<decltype(Pool::StepPhaseMap), const std::array<ECognitivePhase, 12>>);
static_assert(std::is_same_v<decltype(Pool::StepModeMap), const std::array<EProcessingMode, 12>>);
// The original signatures.
static_assert(std::is_same_v<decltype(&Pool::SubmitTask), uint64_t (Pool::*)(FCognitiveTask)>);
static_assert(std::is_same_v<decltype(&Pool::SubmitTasks), std::vector<uint64_t> (Pool::*)(std::vector<FCognitiveTask>)>);
static_assert(std::is_same_v<decltype(&Pool::SubmitForStep), uint64_t (Pool::*)(std::function<void()>, int32_t, float)>);
static_assert(std::is_same_v<decltype(&Pool::WaitForTask), bool (Pool::*)(uint64_t, milliseconds)>);
static_assert(std::is_same_v<decltype(&Pool::WaitForStream), bool (Pool::*)(ECognitiveStream, milliseconds)>);
static_assert(std::is_same_v<decltype(&Pool::AdvanceStep), void (Pool::*)()>);
static_assert(std::is_same_v<decltype(&Pool::RunCycle), uint64_t (Pool::*)()>);
static_assert(std::is_same_v<decltype(&Pool::GetCurrentStep), int32_t (Pool::*)() const>);
static_assert(std::is_same_v<decltype(&Pool::SynchronizeStreams), void (Pool::*)()>);
static_assert(std::is_same_v<decltype(static_cast<uint64_t (Pool::*)()>(&Pool::CreateBarrier)), uint64_t (Pool::*)()>);
static_assert(std::is_same_v<decltype(&Pool::WaitAtBarrier), void (Pool::*)(uint64_t)>);
static_assert(std::is_same_v<decltype(&Pool::ConfigureNUMAAffinity), void (Pool::*)()>);
static_assert(std::is_same_v<decltype(&Pool::ConfigurePyTorchThreads), void (Pool::*)()>);
static_assert(std::is_same_v<decltype(&Pool::GetConfig), const FThreadPoolConfig& (Pool::*)() const>);
static_assert(std::is_same_v<decltype(&Pool::GetMetrics), const FThreadPoolMetrics& (Pool::*)() const>);
static_assert(std::is_same_v<decltype(&Pool::ResetMetrics), void (Pool::*)()>);
static_assert(std::is_same_v<decltype(&Pool::GetStreamMetrics), const FStreamMetrics& (Pool::*)(ECognitiveStream) const>);
static_assert(std::is_same_v<decltype(&Pool::GetTriadicFace), std::array<int32_t, 3> (*)(int32_t)>);
static_assert(std::is_same_v<decltype(&Pool::GetDyadicEdge), int32_t (*)(int32_t, int32_t)>);
// The step helpers are usable in constant expressions.
static_assert(Pool::GetStreamForStep(4) == ECognitiveStream::Cerebral);
static_assert(Pool::GetPhaseForStep(12) == ECognitivePhase::Integration);
static_assert(Pool::GetModeForStep(7) == EProcessingMode::Reflective);
static_assert(Pool::GetTriadForStep(12) == 3 && Pool::GetTriadForStep(0) == 3);
static_assert(Pool::WrapStep(0) == 12 && Pool::WrapStep(-1) == 11 && Pool::WrapStep(13) == 1);
static_assert(Pool::GetDyadicEdge(3, 2) == 5 && Pool::GetTriadicFace(3)[0] == 1);

// ---------------------------------------------------------------- helpers

/// Counts its copies alive: captured in a task, shows when libcllm
/// destroyed the task's std::function.
struct Tracker {
    std::shared_ptr<int> token = std::make_shared<int>(0);
    long Alive() const { return token.use_count(); }
};

void types_and_to_string()
{
    EB_EXPECT(static_cast<int>(ECognitiveStream::Cerebral) == 0 && static_cast<int>(ECognitiveStream::Autonomic) == 2);
    EB_EXPECT(static_cast<int>(ECognitivePhase::Integration) == 3);
    EB_EXPECT(static_cast<int>(EProcessingMode::Reflective) == 1);
    EB_EXPECT(static_cast<int>(EThreadPoolLayer::CUDAStream) == 4 && static_cast<int>(EThreadPoolLayer::MainThread) == 1);
    EB_EXPECT(std::strcmp(ToString(ECognitiveStream::Somatic), "Somatic") == 0);
    EB_EXPECT(std::strcmp(ToString(static_cast<ECognitiveStream>(7)), "Unknown") == 0);
    EB_EXPECT(std::strcmp(ToString(ECognitivePhase::Simulation), "Simulation") == 0);
    EB_EXPECT(std::strcmp(ToString(static_cast<ECognitivePhase>(9)), "Unknown") == 0);
    EB_EXPECT(std::strcmp(ToString(EProcessingMode::Expressive), "Expressive") == 0);
    EB_EXPECT(std::strcmp(ToString(static_cast<EProcessingMode>(2)), "Unknown") == 0);
    EB_EXPECT(std::strcmp(ToString(EThreadPoolLayer::CUDAStream), "CUDAStream") == 0);
    EB_EXPECT(std::strcmp(ToString(static_cast<EThreadPoolLayer>(5)), "Unknown") == 0);
    EB_EXPECT(std::strcmp(ToString(ETaskStatus::Expired), "Expired") == 0);
    // The same names as the C ABI.
    for (int i = 0; i < 3; ++i)
        EB_EXPECT(std::strcmp(ToString(static_cast<ECognitiveStream>(i)), echobeats_stream_name(i)) == 0);
    for (int i = 0; i < 4; ++i)
        EB_EXPECT(std::strcmp(ToString(static_cast<ECognitivePhase>(i)), echobeats_phase_name(i)) == 0);
    for (int i = 0; i < 2; ++i)
        EB_EXPECT(std::strcmp(ToString(static_cast<EProcessingMode>(i)), echobeats_mode_name(i)) == 0);
    for (int i = 0; i < 5; ++i)
        EB_EXPECT(std::strcmp(ToString(static_cast<EThreadPoolLayer>(i)), echobeats_layer_name(i)) == 0);

    FCognitiveTask t;
    EB_EXPECT(!t.Work && t.Stream == ECognitiveStream::Cerebral && t.Phase == ECognitivePhase::Perception);
    EB_EXPECT(t.Step == 1 && t.Priority == 0.5f && t.TargetLayer == EThreadPoolLayer::InterOp);
    EB_EXPECT(!t.Deadline && t.TaskId == 0 && t.Dependencies.empty());
    FCognitiveTask hi;
    hi.Priority = 0.9f;
    EB_EXPECT(t < hi && !(hi < t));

    FStreamMetrics s;
    EB_EXPECT(s.MinExecutionTime.load() == UINT64_MAX && s.TasksSubmitted.load() == 0);
    EB_EXPECT(s.GetAverageExecutionTime() == 0.0f);
    s.TasksRun = 4;
    s.TotalExecutionTime = 10;
    EB_EXPECT(s.GetAverageExecutionTime() == 2.5f);
    FThreadPoolMetrics pm;
    EB_EXPECT(pm.GetCyclesPerSecond() == 0.0f);
    pm.CyclesCompleted = 5;
    pm.TotalCycleTime = 500000;
    EB_EXPECT(pm.GetCyclesPerSecond() == 10.0f);

    // The original defaults.
    FThreadPoolConfig c;
    EB_EXPECT(c.ThreadsPerStream == 4 && c.DataLoaderWorkers == 9 && c.InterOpThreads == 12);
    EB_EXPECT(c.IntraOpThreads == 12 && c.CUDAStreams == 3 && c.EnableNUMAAffinity);
    EB_EXPECT(c.TargetCycleTimeMs == 100.0f && c.MaxQueueDepth == 1000 && !c.EnableRealTimePriority);
    EB_EXPECT(c.DrainOnShutdown && !c.RejectWhenFull && c.SubmitTimeout == milliseconds(1000) && !c.Log);
}

void constants_and_tables()
{
    EB_EXPECT(Pool::NUM_STREAMS == 3 && Pool::STEPS_PER_CYCLE == 12);
    EB_EXPECT(Pool::STEPS_PER_STREAM == 4 && Pool::TRIADS_PER_CYCLE == 4);
    int expressive = 0;
    for (int32_t s = 1; s <= 12; ++s) {
        const size_t i = static_cast<size_t>(s - 1);
        EB_EXPECT(static_cast<int>(Pool::StepStreamMap[i]) == (s - 1) % 3);
        EB_EXPECT(static_cast<int>(Pool::StepPhaseMap[i]) == (s - 1) % 4);
        EB_EXPECT(static_cast<int>(Pool::StepStreamMap[i]) == echobeats_stream_for_step(s));
        EB_EXPECT(static_cast<int>(Pool::StepPhaseMap[i]) == echobeats_phase_for_step(s));
        EB_EXPECT(static_cast<int>(Pool::StepModeMap[i]) == echobeats_mode_for_step(s));
        EB_EXPECT(static_cast<int>(Pool::StepLayerMap[i]) == echobeats_layer_for_step(s));
        expressive += Pool::StepModeMap[i] == EProcessingMode::Expressive;
    }
    EB_EXPECT(expressive == 7);
    const int32_t reflective[] = {4, 7, 8, 11, 12};
    for (int32_t s : reflective)
        EB_EXPECT(Pool::GetModeForStep(s) == EProcessingMode::Reflective);
    // Any int32_t: the same wrapping as the C ABI.
    std::vector<int32_t> steps = {INT32_MIN, INT32_MIN + 1, -1000000007, -25, -13, -12, -1, 0, 13, 24, 25, INT32_MAX - 1, INT32_MAX};
    for (int32_t s = -30; s <= 30; ++s)
        steps.push_back(s);
    for (int32_t s : steps) {
        EB_EXPECT_MSG(Pool::WrapStep(s) == echobeats_wrap_step(s), std::to_string(s));
        EB_EXPECT(static_cast<int>(Pool::GetStreamForStep(s)) == echobeats_stream_for_step(s));
        EB_EXPECT(static_cast<int>(Pool::GetPhaseForStep(s)) == echobeats_phase_for_step(s));
        EB_EXPECT(static_cast<int>(Pool::GetModeForStep(s)) == echobeats_mode_for_step(s));
        EB_EXPECT(Pool::GetTriadForStep(s) == echobeats_triad_for_step(s));
        EB_EXPECT(static_cast<int>(Pool::GetLayerForStep(s)) == echobeats_layer_for_step(s));
        EB_EXPECT(Pool::IsValidStep(s) == echobeats_is_valid_step(s));
    }
    EB_EXPECT(Pool::GetTriadForStep(1) == 0 && Pool::GetTriadForStep(4) == 1 && Pool::GetTriadForStep(9) == 2);
}

void tetrahedron()
{
    const std::array<std::array<int32_t, 3>, 4> faces = {{{{0, 1, 2}}, {{0, 1, 3}}, {{0, 2, 3}}, {{1, 2, 3}}}};
    for (int32_t f = -3; f <= 6; ++f) {
        int32_t c[3];
        const bool ok = echobeats_triadic_face(f, c) == ECHOBEATS_OK;
        const std::array<int32_t, 3> got = Pool::GetTriadicFace(f);
        EB_EXPECT(got[0] == c[0] && got[1] == c[1] && got[2] == c[2]);
        if (ok)
            EB_EXPECT(got == faces[static_cast<size_t>(f)]);
        else
            EB_EXPECT((got == std::array<int32_t, 3>{{0, 0, 0}}));
    }
    EB_EXPECT((Pool::GetTriadicFace(INT32_MIN) == std::array<int32_t, 3>{{0, 0, 0}}));
    for (int32_t a = -2; a <= 5; ++a)
        for (int32_t b = -2; b <= 5; ++b) {
            EB_EXPECT(Pool::GetDyadicEdge(a, b) == echobeats_dyadic_edge(a, b));
            EB_EXPECT(Pool::GetDyadicEdge(a, b) == Pool::GetDyadicEdge(b, a));
        }
    EB_EXPECT(Pool::GetDyadicEdge(0, 1) == 0 && Pool::GetDyadicEdge(2, 0) == 1 && Pool::GetDyadicEdge(1, 3) == 4);
    EB_EXPECT(Pool::GetDyadicEdge(INT32_MIN, INT32_MAX) == -1 && Pool::GetDyadicEdge(2, 2) == -1);
}

template <typename E>
void expect_throw(const char* what, const FThreadPoolConfig& c)
{
    try {
        Pool p(c);
        EB_EXPECT_MSG(false, std::string(what) + ": accepted");
    } catch (const E& e) {
        EB_EXPECT_MSG(std::strlen(e.what()) > 0, what);
        std::printf("  %s -> %s\n", what, e.what());
    } catch (const std::exception& e) {
        EB_EXPECT_MSG(false, std::string(what) + ": wrong exception: " + e.what());
    }
}

void constructors_and_config()
{
    {
        Pool p;  // the original defaults
        EB_EXPECT(p.GetNativeHandle() != nullptr);
        EB_EXPECT(p.GetConfig().ThreadsPerStream == 4 && p.GetConfig().EnableNUMAAffinity);
        EB_EXPECT(p.WaitForTask(p.SubmitForStep([] {}, 1), milliseconds(10000)));
    }
    FThreadPoolConfig c = SilentConfig(2);
    c.MaxQueueDepth = 77;
    c.TargetCycleTimeMs = 3.5f;
    Pool p(c);
    EB_EXPECT(p.GetConfig().ThreadsPerStream == 2 && p.GetConfig().MaxQueueDepth == 77);
    EB_EXPECT(p.GetConfig().TargetCycleTimeMs == 3.5f && !p.GetConfig().EnableNUMAAffinity);
    EB_EXPECT(&p.GetConfig() == &p.GetConfig());

    FThreadPoolConfig bad = SilentConfig(1);
    bad.ThreadsPerStream = -1;
    expect_throw<std::invalid_argument>("ThreadsPerStream -1", bad);
    bad = SilentConfig(1);
    bad.DataLoaderWorkers = -4;
    expect_throw<std::invalid_argument>("DataLoaderWorkers -4", bad);
    bad = SilentConfig(1);
    bad.MaxQueueDepth = 0;
    expect_throw<std::invalid_argument>("MaxQueueDepth 0", bad);
    bad = SilentConfig(1);
    bad.CUDAStreams = 4;
    expect_throw<std::invalid_argument>("CUDAStreams 4", bad);
    bad = SilentConfig(1);
    bad.TargetCycleTimeMs = std::nanf("");
    expect_throw<std::invalid_argument>("TargetCycleTimeMs NaN", bad);
    bad = SilentConfig(1);
    bad.ResultRetention = -1;
    expect_throw<std::invalid_argument>("ResultRetention -1", bad);
}

void submit_task()
{
    Pool p(SilentConfig(2));
    std::atomic<int> ran{0};
    uint64_t prev = 0;
    for (int i = 0; i < 20; ++i) {
        FCognitiveTask t;
        t.Work = [&ran] { ran++; };
        t.Step = 1 + i % 12;
        t.Stream = Pool::GetStreamForStep(t.Step);
        t.Phase = Pool::GetPhaseForStep(t.Step);
        t.Priority = static_cast<float>(i);
        t.TargetLayer = static_cast<EThreadPoolLayer>(i % 5);
        const uint64_t id = p.SubmitTask(t);
        EB_EXPECT(id > prev);
        prev = id;
        FTaskResult r;
        EB_EXPECT(p.WaitForTaskResult(id, milliseconds(10000), &r) == ETaskStatus::Completed);
        EB_EXPECT(r.TaskId == id && r.Success && r.Status == ETaskStatus::Completed);
        EB_EXPECT(r.Stream == t.Stream && r.Step == t.Step && r.Phase == t.Phase);
        EB_EXPECT(r.ExecutionTime.count() >= 0 && r.QueueWaitTime.count() >= 0);
    }
    EB_EXPECT(ran == 20);
    // An empty Work is a no-op task that succeeds (as in the original).
    EB_EXPECT(p.WaitForTaskResult(p.SubmitTask(FCognitiveTask{}), milliseconds(10000)) == ETaskStatus::Completed);
    // A nonzero TaskId is rejected: ids are the pool's.
    Tracker tr;
    FCognitiveTask own;
    own.TaskId = 42;
    own.Work = [tr, &ran] { ran++; };
    EB_EXPECT(p.SubmitTask(std::move(own)) == 0);
    EB_EXPECT_MSG(Pool::GetLastError().find("TaskId") != std::string::npos, Pool::GetLastError());
    EB_EXPECT(tr.Alive() == 1 && ran == 20);
}

void submit_tasks()
{
    Pool p(SilentConfig(2));
    std::atomic<int> ran{0};
    std::vector<FCognitiveTask> tasks(10);
    for (size_t i = 0; i < tasks.size(); ++i) {
        tasks[i].Work = [&ran] { ran++; };
        tasks[i].Step = static_cast<int32_t>(1 + i);
        tasks[i].Stream = Pool::GetStreamForStep(tasks[i].Step);
    }
    tasks[4].Step = 0;  // rejected: only that one
    const std::vector<uint64_t> ids = p.SubmitTasks(std::move(tasks));
    EB_EXPECT(ids.size() == 10);
    for (size_t i = 0; i < ids.size(); ++i) {
        if (i == 4) {
            EB_EXPECT(ids[i] == 0);
            continue;
        }
        EB_EXPECT(ids[i] != 0 && p.WaitForTask(ids[i], milliseconds(10000)));
    }
    EB_EXPECT(ran == 9);
    EB_EXPECT(p.SubmitTasks({}).empty());
}

void submit_for_step()
{
    Pool p(SilentConfig(1));
    for (int32_t s = 1; s <= 12; ++s) {
        const uint64_t id = p.SubmitForStep([] {}, s, 0.25f * static_cast<float>(s));
        FTaskResult r;
        EB_EXPECT(p.WaitForTaskResult(id, milliseconds(10000), &r) == ETaskStatus::Completed);
        EB_EXPECT(r.Step == s && r.Stream == Pool::GetStreamForStep(s) && r.Phase == Pool::GetPhaseForStep(s));
    }
    Tracker tr;
    for (int32_t s : {0, 13, -1, INT32_MIN, INT32_MAX}) {
        EB_EXPECT(p.SubmitForStep([tr] {}, s) == 0);
        EB_EXPECT(tr.Alive() == 1);
    }
    EB_EXPECT(p.SubmitForStep([tr] {}, 3, std::numeric_limits<float>::quiet_NaN()) == 0);
    EB_EXPECT(p.SubmitForStep([tr] {}, 3, std::numeric_limits<float>::infinity()) == 0);
    EB_EXPECT(tr.Alive() == 1);
    EB_EXPECT(!Pool::GetLastError().empty());
}

void wait_for_task()
{
    Pool p(SilentConfig(1));
    Gate g;
    const uint64_t blocked = p.SubmitForStep([&g] { g.Wait(); }, 2);
    g.WaitStarted();
    Elapsed e;
    EB_EXPECT(!p.WaitForTask(blocked, milliseconds(20)));
    EB_EXPECT(e.Seconds() >= 0.019);
    EB_EXPECT(!p.WaitForTask(blocked, milliseconds(0)));
    EB_EXPECT(!p.WaitForTask(blocked, milliseconds(-5)));  // negative = 0
    g.Open();
    EB_EXPECT(p.WaitForTask(blocked, milliseconds::max()));  // no limit
    EB_EXPECT(p.WaitForTask(blocked));
    // A failed task has finished too.
    const uint64_t failed = p.SubmitForStep([] { throw std::runtime_error("no"); }, 1);
    EB_EXPECT(p.WaitForTask(failed, milliseconds(10000)));
    EB_EXPECT(p.WaitForTaskResult(failed, milliseconds(0)) == ETaskStatus::Failed);
    EB_EXPECT(!p.WaitForTask(0) && !p.WaitForTask(failed + 1000));
}

void wait_for_task_result_statuses()
{
    FThreadPoolConfig c = SilentConfig(1);
    c.DrainOnShutdown = false;
    Pool p(c);
    FTaskResult r;
    EB_EXPECT(p.WaitForTaskResult(p.SubmitForStep([] {}, 1), milliseconds(10000), &r) == ETaskStatus::Completed);
    EB_EXPECT(r.Success);
    EB_EXPECT(p.WaitForTaskResult(p.SubmitForStep([] { throw 7; }, 1), milliseconds(10000), &r) == ETaskStatus::Failed);
    EB_EXPECT(!r.Success && r.Status == ETaskStatus::Failed);
    FCognitiveTask late;
    late.Deadline = std::chrono::steady_clock::now() - std::chrono::seconds(1);
    EB_EXPECT(p.WaitForTaskResult(p.SubmitTask(late), milliseconds(10000), &r) == ETaskStatus::Expired);
    EB_EXPECT(!r.Success && r.ExecutionTime.count() == 0);
    EB_EXPECT(p.WaitForTaskResult(999999, milliseconds(10000), &r) == ETaskStatus::Unknown);
    // Timeout and Cancelled: a barrier that shutdown destroys holds the worker.
    const uint64_t b = p.CreateBarrier(2);
    Gate started;
    const uint64_t holder = p.SubmitForStep(
        [&] {
            started.MarkStarted();
            p.WaitAtBarrier(b);
        },
        2);
    started.WaitStarted();
    const uint64_t queued = p.SubmitForStep([] {}, 11);  // Somatic, on its workers
    EB_EXPECT(p.WaitForTaskResult(queued, milliseconds(1)) == ETaskStatus::Timeout);
    const FShutdownReport rep = p.Shutdown();
    EB_EXPECT(rep.Cancelled == 1 && rep.FirstCall && rep.Complete);
    EB_EXPECT(p.WaitForTaskResult(queued, milliseconds(0), &r) == ETaskStatus::Cancelled);
    EB_EXPECT(r.TaskId == queued && r.Status == ETaskStatus::Cancelled);
    EB_EXPECT(p.WaitForTaskResult(holder, milliseconds(0)) == ETaskStatus::Completed);
}

void exceptions_fail_tasks()
{
    std::mutex m;
    std::vector<std::string> logged;
    FThreadPoolConfig c = SilentConfig(1);
    c.Log = [&](int level, const char* msg) {
        std::lock_guard<std::mutex> l(m);
        if (level == ECHOBEATS_LOG_WARNING && std::strstr(msg, "threw") != nullptr)
            logged.emplace_back(msg);
    };
    Pool p(c);
    struct NotStd {};
    const uint64_t a = p.SubmitForStep([] { throw std::runtime_error("boom"); }, 1);
    const uint64_t b = p.SubmitForStep([] { throw NotStd{}; }, 2);
    const uint64_t d = p.SubmitForStep([] { throw std::bad_alloc(); }, 3);
    const uint64_t ok = p.SubmitForStep([] {}, 4);
    for (uint64_t id : {a, b, d})
        EB_EXPECT(p.WaitForTaskResult(id, milliseconds(10000)) == ETaskStatus::Failed);
    EB_EXPECT(p.WaitForTaskResult(ok, milliseconds(10000)) == ETaskStatus::Completed);
    p.SynchronizeStreams();
    std::lock_guard<std::mutex> l(m);
    EB_EXPECT(logged.size() == 3);
    const bool boom = std::any_of(logged.begin(), logged.end(),
                                  [](const std::string& s) { return s.find("boom") != std::string::npos; });
    EB_EXPECT(boom);
    EB_EXPECT(p.GetMetrics().StreamMetrics[0].TasksFailed == 1);
}

void wait_for_stream()
{
    Pool p(SilentConfig(1));
    for (int s = 0; s < 3; ++s)
        EB_EXPECT(p.WaitForStream(static_cast<ECognitiveStream>(s), milliseconds(0)));
    Gate g;
    p.SubmitForStep([&g] { g.Wait(); }, 3);
    g.WaitStarted();
    Elapsed e;
    EB_EXPECT(!p.WaitForStream(ECognitiveStream::Autonomic, milliseconds(25)));
    EB_EXPECT(e.Seconds() >= 0.024 && e.Seconds() < 5.0);
    EB_EXPECT(p.WaitForStream(ECognitiveStream::Cerebral));
    g.Open();
    EB_EXPECT(p.WaitForStream(ECognitiveStream::Autonomic, milliseconds(10000)));
    EB_EXPECT(!p.WaitForStream(static_cast<ECognitiveStream>(3)));
}

void advance_step_and_getters()
{
    Pool p(SilentConfig(1));
    EB_EXPECT(p.GetCurrentStep() == 1);
    for (int i = 0; i < 24; ++i) {
        const int32_t s = p.GetCurrentStep();
        EB_EXPECT(p.GetCurrentStream() == Pool::GetStreamForStep(s));
        EB_EXPECT(p.GetCurrentPhase() == Pool::GetPhaseForStep(s));
        EB_EXPECT(p.GetCurrentMode() == Pool::GetModeForStep(s));
        p.AdvanceStep();
        EB_EXPECT(p.GetCurrentStep() == s % 12 + 1);
    }
    const FThreadPoolMetrics& m = p.GetMetrics();
    EB_EXPECT(m.CyclesCompleted == 2 && m.SyncEvents == 6);
}

void run_cycle()
{
    FThreadPoolConfig c = SilentConfig(1);
    c.TargetCycleTimeMs = 5.0f;
    Pool p(c);
    std::atomic<int> ran{0};
    for (int32_t s = 1; s <= 12; ++s)
        p.SubmitForStep([&ran] { ran++; }, s);
    Elapsed e;
    const uint64_t us = p.RunCycle();
    EB_EXPECT(us >= 5000 && e.Seconds() >= 0.0049);
    EB_EXPECT(ran == 12);
    EB_EXPECT(p.GetCurrentStep() == 1);
    p.RunCycle();
    EB_EXPECT(p.GetMetrics().CyclesCompleted == 2);
    EB_EXPECT(p.GetMetrics().GetCyclesPerSecond() > 0.0f && p.GetMetrics().GetCyclesPerSecond() <= 201.0f);
}

void synchronize_streams()
{
    Pool p(SilentConfig(2));
    std::atomic<int> done{0};
    for (int i = 0; i < 30; ++i)
        p.SubmitForStep(
            [&done] {
                volatile uint64_t x = 1;
                for (int k = 0; k < 20000; ++k)
                    x = x * 3 + 1;
                done++;
            },
            1 + i % 12);
    p.SynchronizeStreams();
    EB_EXPECT(done == 30);
    EB_EXPECT(p.TrySynchronizeStreams(milliseconds(0)));
    Gate g;
    p.SubmitForStep([&g] { g.Wait(); }, 8);
    g.WaitStarted();
    Elapsed e;
    EB_EXPECT(!p.TrySynchronizeStreams(milliseconds(20)));
    EB_EXPECT(e.Seconds() >= 0.019);
    g.Open();
    EB_EXPECT(p.TrySynchronizeStreams(milliseconds(10000)));
    EB_EXPECT(p.GetMetrics().SyncEvents == 3);
}

void barriers()
{
    Pool p(SilentConfig(1));
    const uint64_t b3 = p.CreateBarrier();
    EB_EXPECT(b3 != 0);
    std::atomic<int> passed{0};
    std::vector<std::thread> th;
    for (int i = 0; i < 3; ++i)
        th.emplace_back([&] {
            for (int r = 0; r < 20; ++r)
                p.WaitAtBarrier(b3);
            passed++;
        });
    for (auto& t : th)
        t.join();
    EB_EXPECT(passed == 3);
    const uint64_t b2 = p.CreateBarrier(2);
    EB_EXPECT(b2 > b3);
    Elapsed e;
    EB_EXPECT(!p.TryWaitAtBarrier(b2, milliseconds(15)));  // alone: timeout
    EB_EXPECT(e.Seconds() >= 0.014);
    std::thread other([&] { EB_EXPECT(p.TryWaitAtBarrier(b2, milliseconds(10000))); });
    EB_EXPECT(p.TryWaitAtBarrier(b2, milliseconds(10000)));
    other.join();
    // Unknown ids return at once, destroyed ones too.
    Elapsed e2;
    p.WaitAtBarrier(987654);
    EB_EXPECT(!p.TryWaitAtBarrier(987654, milliseconds(10000)));
    EB_EXPECT(p.DestroyBarrier(b2));
    EB_EXPECT(!p.DestroyBarrier(b2));
    p.WaitAtBarrier(b2);
    EB_EXPECT(e2.Seconds() < 2.0);
    // Destroyed while waiting: the waiter returns.
    const uint64_t b4 = p.CreateBarrier(4);
    std::thread waiter([&] { p.WaitAtBarrier(b4); });
    EB_EXPECT(p.DestroyBarrier(b4));
    waiter.join();
    EB_EXPECT(p.CreateBarrier(0) == 0 && p.CreateBarrier(-3) == 0);
}

void configuration_calls()
{
    Pool p(SilentConfig(1));
    EB_EXPECT(p.GetNUMAAffinitySummary().empty());  // not asked for
    p.ConfigureNUMAAffinity();
    EB_EXPECT(!p.GetNUMAAffinitySummary().empty());
    std::printf("  NUMA: %s\n", p.GetNUMAAffinitySummary().c_str());
    p.ConfigurePyTorchThreads();
    const FPyTorchThreadConfig r = p.GetPyTorchThreadConfig();
    const FPyTorchThreadConfig s = Pool::GetRecommendedThreadConfig();
    EB_EXPECT(r.InterOpThreads == s.InterOpThreads && r.IntraOpThreads == s.IntraOpThreads);
    EB_EXPECT(r.DataLoaderWorkers == s.DataLoaderWorkers && r.CUDAStreams == 3 && r.UsableCPUs == cllm_usable_cpus());
    EB_EXPECT(r.InterOpThreads >= 3 && r.InterOpThreads <= 12 && r.InterOpThreads % 3 == 0);
    EB_EXPECT(r.IntraOpThreads >= 1 && r.IntraOpThreads <= 12 && r.DataLoaderWorkers >= 1 && r.DataLoaderWorkers <= 9);
    const bool rt = p.TryEnableRealTimePriority();
    std::printf("  real-time priority: %s\n", rt ? "enabled" : Pool::GetLastError().c_str());
    EB_EXPECT(rt || !Pool::GetLastError().empty());
    EB_EXPECT(p.WaitForTask(p.SubmitForStep([] {}, 6), milliseconds(10000)));
    FThreadPoolConfig c = SilentConfig(1);
    c.EnableNUMAAffinity = true;
    c.EnableRealTimePriority = true;
    Pool q(c);
    EB_EXPECT(!q.GetNUMAAffinitySummary().empty());
    EB_EXPECT(q.WaitForTask(q.SubmitForStep([] {}, 7), milliseconds(10000)));
}

void metrics()
{
    Pool p(SilentConfig(1));
    const FThreadPoolMetrics& m0 = p.GetMetrics();
    EB_EXPECT(m0.StreamMetrics[0].TasksSubmitted == 0 && m0.StreamMetrics[0].MinExecutionTime == UINT64_MAX);
    for (int i = 0; i < 9; ++i)
        p.SubmitForStep(
            [] {
                volatile uint64_t x = 1;
                for (int k = 0; k < 200000; ++k)
                    x = x * 3 + 1;
            },
            1 + i % 3);
    p.SubmitForStep([] { throw 1; }, 1);
    p.SynchronizeStreams();
    const FThreadPoolMetrics& m = p.GetMetrics();
    EB_EXPECT(&m == &m0);  // the same object, refreshed
    const FStreamMetrics& c = p.GetStreamMetrics(ECognitiveStream::Cerebral);
    EB_EXPECT(&c == &m.StreamMetrics[0]);
    EB_EXPECT(c.TasksSubmitted == 4 && c.TasksCompleted == 3 && c.TasksFailed == 1 && c.TasksRun == 4);
    EB_EXPECT(c.TasksSubmitted == c.TasksCompleted + c.TasksFailed);
    EB_EXPECT(c.MaxExecutionTime >= c.MinExecutionTime && c.TotalExecutionTime >= c.MaxExecutionTime);
    EB_EXPECT(c.GetAverageExecutionTime() > 0.0f);
    EB_EXPECT(c.CurrentQueueDepth == 0 && c.MaxQueueDepth >= 1);
    for (int s = 1; s < 3; ++s) {
        const FStreamMetrics& x = p.GetStreamMetrics(static_cast<ECognitiveStream>(s));
        EB_EXPECT(x.TasksSubmitted == 3 && x.TasksCompleted == 3 && x.TasksFailed == 0);
    }
    EB_EXPECT(m.SyncEvents == 1);
    p.ResetMetrics();
    EB_EXPECT(c.TasksSubmitted == 0 && c.TasksCompleted == 0 && c.MinExecutionTime == UINT64_MAX);
    EB_EXPECT(m.SyncEvents == 0 && m.CyclesCompleted == 0);
    bool threw = false;
    try {
        p.GetStreamMetrics(static_cast<ECognitiveStream>(3));
    } catch (const std::out_of_range&) {
        threw = true;
    }
    EB_EXPECT(threw);
    // Readers on other threads while refreshing.
    std::atomic<bool> stop{false};
    std::thread reader([&] {
        while (!stop)
            (void)p.GetMetrics().StreamMetrics[1].TasksCompleted.load();
    });
    for (int i = 0; i < 200; ++i)
        p.SubmitForStep([] {}, 2);
    p.SynchronizeStreams();
    stop = true;
    reader.join();
    EB_EXPECT(p.GetStreamMetrics(ECognitiveStream::Somatic).TasksCompleted == 200);
}

void deadlines()
{
    Pool p(SilentConfig(1));
    using Clock = std::chrono::steady_clock;
    const Clock::time_point points[] = {Clock::now() - std::chrono::seconds(1), Clock::time_point::min(),
                                        Clock::time_point(), Clock::now() + std::chrono::seconds(30),
                                        Clock::time_point::max()};
    const ETaskStatus want[] = {ETaskStatus::Expired, ETaskStatus::Expired, ETaskStatus::Expired,
                                ETaskStatus::Completed, ETaskStatus::Completed};
    for (size_t i = 0; i < 5; ++i) {
        std::atomic<bool> ran{false};
        FCognitiveTask t;
        t.Work = [&ran] { ran = true; };
        t.Deadline = points[i];
        const ETaskStatus s = p.WaitForTaskResult(p.SubmitTask(t), milliseconds(10000));
        EB_EXPECT_MSG(s == want[i], std::to_string(i) + ": " + ToString(s));
        EB_EXPECT(ran == (want[i] == ETaskStatus::Completed));
    }
    EB_EXPECT(p.GetStreamMetrics(ECognitiveStream::Cerebral).TasksExpired == 3);
}

void dependencies_and_order()
{
    Pool p(SilentConfig(1));
    std::mutex m;
    std::vector<int> order;
    auto rec = [&](int v) {
        return [&, v] {
            std::lock_guard<std::mutex> l(m);
            order.push_back(v);
        };
    };
    Gate g;
    const uint64_t a = p.SubmitForStep([&g] { g.Wait(); }, 10);  // Cerebral's own workers
    g.WaitStarted();
    FCognitiveTask b;
    b.Work = rec(1);
    b.Stream = ECognitiveStream::Somatic;
    b.Dependencies = {a};
    const uint64_t bid = p.SubmitTask(b);
    FCognitiveTask c;
    c.Work = rec(2);
    c.Stream = ECognitiveStream::Autonomic;
    c.Dependencies = {a, bid};
    const uint64_t cid = p.SubmitTask(c);
    // Priorities on the blocked stream: higher first, FIFO among equals.
    std::vector<uint64_t> ids;
    const float prios[] = {0.1f, 0.9f, 0.5f, 0.9f, 0.5f};
    for (int i = 0; i < 5; ++i) {
        FCognitiveTask t;
        t.Work = rec(10 + i);
        t.Priority = prios[i];
        ids.push_back(p.SubmitTask(t));
    }
    EB_EXPECT(!p.WaitForTask(cid, milliseconds(5)));
    g.Open();
    EB_EXPECT(p.WaitForTask(cid, milliseconds(10000)));
    p.SynchronizeStreams();
    std::lock_guard<std::mutex> l(m);
    const std::vector<int> prio_order = [&] {
        std::vector<int> v;
        for (int x : order)
            if (x >= 10)
                v.push_back(x);
        return v;
    }();
    EB_EXPECT((prio_order == std::vector<int>{11, 13, 12, 14, 10}));
    const auto pos = [&](int v) { return std::find(order.begin(), order.end(), v) - order.begin(); };
    EB_EXPECT(pos(1) < pos(2) && order.size() == 7);
    // An unknown dependency is rejected.
    FCognitiveTask u;
    u.Dependencies = {cid + 100000};
    EB_EXPECT(p.SubmitTask(u) == 0);
}

void layers()
{
    Pool p(SilentConfig(1));
    Gate g;
    p.SubmitForStep([&g] { g.Wait(); }, 10);  // blocks Cerebral's worker
    g.WaitStarted();
    // DataLoader tasks of the blocked stream run on the loader pool.
    FCognitiveTask t;
    t.TargetLayer = EThreadPoolLayer::DataLoader;
    EB_EXPECT(p.WaitForTask(p.SubmitTask(t), milliseconds(10000)));
    // CUDAStream tasks run in submission order whatever their priority.
    std::mutex m;
    std::vector<int> order;
    std::vector<uint64_t> ids;
    for (int i = 0; i < 10; ++i) {
        FCognitiveTask l;
        l.Stream = ECognitiveStream::Somatic;
        l.TargetLayer = EThreadPoolLayer::CUDAStream;
        l.Priority = static_cast<float>(i % 3);
        l.Work = [&m, &order, i] {
            std::lock_guard<std::mutex> lk(m);
            order.push_back(i);
        };
        ids.push_back(p.SubmitTask(l));
    }
    EB_EXPECT(p.WaitForStream(ECognitiveStream::Somatic, milliseconds(10000)));
    {
        std::lock_guard<std::mutex> lk(m);
        EB_EXPECT((order == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
    }
    g.Open();
    p.SynchronizeStreams();
}

void shutdown_extension()
{
    Pool p(SilentConfig(1));
    std::atomic<int> ran{0};
    for (int i = 0; i < 30; ++i)
        p.SubmitForStep([&ran] { ran++; }, 1 + i % 12);
    const FShutdownReport r = p.Shutdown();
    EB_EXPECT(r.FirstCall && r.Complete && r.Cancelled == 0);
    EB_EXPECT(ran == 30);
    EB_EXPECT(p.SubmitForStep([] {}, 1) == 0);
    EB_EXPECT(Pool::GetLastError().find("shut down") != std::string::npos);
    EB_EXPECT(p.CreateBarrier() == 0);
    const FShutdownReport again = p.Shutdown();
    EB_EXPECT(!again.FirstCall);
    EB_EXPECT(p.TrySynchronizeStreams(milliseconds(0)));
}

void concurrent_waiters()
{
    Pool p(SilentConfig(2));
    Gate g;
    const uint64_t id = p.SubmitForStep([&g] { g.Wait(); }, 2);
    g.WaitStarted();
    std::atomic<int> ok{0};
    std::vector<std::thread> th;
    for (int i = 0; i < 8; ++i)
        th.emplace_back([&] {
            if (p.WaitForTask(id, milliseconds(10000)) && p.WaitForTask(id, milliseconds(0)))
                ok++;
        });
    g.Open();
    for (auto& t : th)
        t.join();
    EB_EXPECT(ok == 8);
    // Submitting from several threads: unique ids.
    std::mutex m;
    std::set<uint64_t> ids;
    std::vector<std::thread> subs;
    for (int i = 0; i < 4; ++i)
        subs.emplace_back([&, i] {
            for (int k = 0; k < 250; ++k) {
                const uint64_t x = p.SubmitForStep([] {}, 1 + (i + k) % 12);
                std::lock_guard<std::mutex> l(m);
                ids.insert(x);
            }
        });
    for (auto& t : subs)
        t.join();
    p.SynchronizeStreams();
    EB_EXPECT(ids.size() == 1000 && ids.count(0) == 0);
}

void design_document_names()
{
    EchobeatsThreadPoolManager pool(SilentConfig(1));
    CognitiveTask task;
    task.Stream = CognitiveStream::Somatic;
    task.Phase = CognitivePhase::Action;
    task.Step = 2;
    std::atomic<bool> ran{false};
    task.Work = [&ran] { ran = true; };
    TaskResult result;
    EB_EXPECT(pool.WaitForTaskResult(pool.SubmitTask(task), milliseconds(10000), &result) == TaskStatus::Completed);
    EB_EXPECT(ran && result.Stream == CognitiveStream::Somatic && result.Phase == CognitivePhase::Action);
    const ThreadPoolMetrics& m = pool.GetMetrics();
    const StreamMetrics& s = m.StreamMetrics[1];
    EB_EXPECT(s.TasksCompleted == 1);
    ThreadPoolConfig c = pool.GetConfig();
    EB_EXPECT(c.ThreadsPerStream == 1);
}

}  // namespace

void parallel_for()
{
    Pool p(SilentConfig(1));
    std::vector<std::atomic<int>> hits(5000);
    EB_EXPECT(p.ParallelFor(0, hits.size(), [&hits](size_t i) { hits[i].fetch_add(1); }));
    int wrong = 0;
    for (auto& h : hits)
        wrong += h.load() != 1;
    EB_EXPECT(wrong == 0);
    // From inside an IntraOp task.
    std::atomic<long> sum{0};
    FCognitiveTask t;
    t.TargetLayer = EThreadPoolLayer::IntraOp;
    t.Work = [&] { p.ParallelFor(0, 100, [&sum](size_t i) { sum += static_cast<long>(i); }); };
    EB_EXPECT(p.WaitForTask(p.SubmitTask(t), milliseconds(10000)));
    EB_EXPECT(sum.load() == 4950);
    // An exception in the body comes back to the caller after the loop.
    bool thrown = false;
    try {
        p.ParallelFor(0, 10, [](size_t i) {
            if (i == 3)
                throw std::runtime_error("body failed");
        });
    } catch (const std::runtime_error&) {
        thrown = true;
    }
    EB_EXPECT(thrown);
    EB_EXPECT(!p.ParallelFor(5, 1, [](size_t) {}));
}

int main()
{
    return echobeats_test::RunTests("echobeats_api", {
                                                         {"types_and_to_string", types_and_to_string},
                                                         {"constants_and_tables", constants_and_tables},
                                                         {"tetrahedron", tetrahedron},
                                                         {"constructors_and_config", constructors_and_config},
                                                         {"submit_task", submit_task},
                                                         {"submit_tasks", submit_tasks},
                                                         {"submit_for_step", submit_for_step},
                                                         {"wait_for_task", wait_for_task},
                                                         {"wait_for_task_result_statuses", wait_for_task_result_statuses},
                                                         {"exceptions_fail_tasks", exceptions_fail_tasks},
                                                         {"wait_for_stream", wait_for_stream},
                                                         {"advance_step_and_getters", advance_step_and_getters},
                                                         {"run_cycle", run_cycle},
                                                         {"synchronize_streams", synchronize_streams},
                                                         {"barriers", barriers},
                                                         {"configuration_calls", configuration_calls},
                                                         {"metrics", metrics},
                                                         {"deadlines", deadlines},
                                                         {"dependencies_and_order", dependencies_and_order},
                                                         {"layers", layers},
                                                         {"parallel_for", parallel_for},
                                                         {"shutdown_extension", shutdown_extension},
                                                         {"concurrent_waiters", concurrent_waiters},
                                                         {"design_document_names", design_document_names},
                                                     });
}
