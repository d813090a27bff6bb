// echobeats_defects.cpp: one named test for each of the nine defects of the
// original FEchobeatsThreadPoolManager (shared/spec/echobeats.md, "What is
// wrong in the original"), run against the header-only wrapper over
// libcllm. Each test fails if the defect comes back. Exit status 0 when
// every check passes.
//
//   defect1_wait_for_task_repeatable_unknown_false
//   defect2_wait_for_stream_and_synchronize_wait_for_running_tasks
//   defect3_shutdown_drains_or_cancels_and_never_hangs
//   defect4_dependencies_pending_released_once_unknown_rejected
//   defect5_steps_validated
//   defect6_run_cycle_paced_and_safe_with_getters
//   defect7_metrics_and_config_take_effect
//   defect8_numa_without_libnuma_pinned_first_barriers_freed
//   defect9_silent
//   defect7b_max_queue_depth_wait_mode (the waiting form of back-pressure)
#include "EchobeatsThreadPoolManager.h"

#include "echobeats_test_util.hpp"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace DeepTreeEcho;
using echobeats_test::Elapsed;
using echobeats_test::Gate;
using echobeats_test::SilentConfig;
using std::chrono::milliseconds;

namespace {

using Pool = FEchobeatsThreadPoolManager;

/// Counts live copies of a task's captures.
struct Tracker {
    std::shared_ptr<int> token = std::make_shared<int>(0);
    long Alive() const { return token.use_count(); }
};

/// Keeps one stream's single worker busy until the pool shuts down (it waits
/// at a barrier nobody else joins; shutdown destroys it). Returns its id.
uint64_t BlockUntilShutdown(Pool& p, int32_t step)
{
    const uint64_t barrier = p.CreateBarrier(2);
    auto started = std::make_shared<Gate>();
    const uint64_t id = p.SubmitForStep(
        [&p, barrier, started] {
            started->MarkStarted();
            p.WaitAtBarrier(barrier);
        },
        step);
    started->WaitStarted();
    return id;
}

double ProcessCpuSeconds()
{
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

void Spin(int rounds)
{
    volatile uint64_t x = 1;
    for (int k = 0; k < rounds; ++k)
        x = x * 3 + 1;
}

// 1. WaitForTask twice threw ("future already retrieved"); unknown ids
//    returned true.
void defect1_wait_for_task_repeatable_unknown_false()
{
    Pool p(SilentConfig(2));
    const uint64_t id = p.SubmitForStep([] { Spin(100000); }, 2);
    EB_EXPECT(p.WaitForTask(id, milliseconds(10000)));
    EB_EXPECT(p.WaitForTask(id, milliseconds(10000)));  // the original threw here
    for (int i = 0; i < 100; ++i)
        EB_EXPECT(p.WaitForTask(id, milliseconds(0)));
    // Many threads, before and after completion.
    Gate g;
    const uint64_t gated = p.SubmitForStep([&g] { g.Wait(); }, 3);
    g.WaitStarted();
    std::atomic<int> ok{0};
    std::vector<std::thread> th;
    for (int i = 0; i < 8; ++i)
        th.emplace_back([&] {
            for (int k = 0; k < 3; ++k)
                ok += p.WaitForTask(gated, milliseconds(10000)) ? 1 : 0;
        });
    Elapsed e;
    EB_EXPECT(!p.WaitForTask(gated, milliseconds(30)));  // timeout honoured
    EB_EXPECT(e.Seconds() >= 0.029 && e.Seconds() < 5.0);
    g.Open();
    for (auto& t : th)
        t.join();
    EB_EXPECT(ok == 24);
    // Never submitted: false, at once (the original said true).
    Elapsed u;
    EB_EXPECT(!p.WaitForTask(0, milliseconds(5000)));
    EB_EXPECT(!p.WaitForTask(gated + 1, milliseconds(5000)));
    EB_EXPECT(!p.WaitForTask(UINT64_MAX, milliseconds(5000)));
    EB_EXPECT_MSG(u.Seconds() < 1.0, std::to_string(u.Seconds()) + " s for unknown ids");
}

// 2. WaitForStream/SynchronizeStreams polled until the queue was empty:
//    they returned while tasks were still running, and ignored timeouts.
void defect2_wait_for_stream_and_synchronize_wait_for_running_tasks()
{
    Pool p(SilentConfig(1));
    Gate g;
    std::atomic<bool> finished{false};
    p.SubmitForStep(
        [&] {
            g.Wait();
            Spin(300000);
            finished = true;
        },
        2);
    g.WaitStarted();
    // The queue is empty, the task runs: not done.
    EB_EXPECT(p.GetStreamMetrics(ECognitiveStream::Somatic).CurrentQueueDepth == 0);
    Elapsed e;
    EB_EXPECT(!p.WaitForStream(ECognitiveStream::Somatic, milliseconds(40)));
    EB_EXPECT_MSG(e.Seconds() >= 0.039 && e.Seconds() < 5.0, std::to_string(e.Seconds()));
    Elapsed e2;
    EB_EXPECT(!p.TrySynchronizeStreams(milliseconds(40)));
    EB_EXPECT_MSG(e2.Seconds() >= 0.039 && e2.Seconds() < 5.0, std::to_string(e2.Seconds()));
    EB_EXPECT(p.GetMetrics().SyncEvents == 0);  // failed syncs are not counted
    std::atomic<bool> seen_finished{false};
    std::thread syncer([&] {
        p.SynchronizeStreams();  // no limit: returns once everything finished
        seen_finished = finished.load();
    });
    g.Open();
    syncer.join();
    EB_EXPECT(seen_finished);
    EB_EXPECT(p.WaitForStream(ECognitiveStream::Somatic, milliseconds(0)));
    EB_EXPECT(p.GetMetrics().SyncEvents == 1);
}

// 3. Shutdown: a lost wake-up could hang the join; queued tasks were
//    silently dropped.
void defect3_shutdown_drains_or_cancels_and_never_hangs()
{
    enum { N = 100 };
    // Drain (default): the destructor runs everything queued.
    {
        std::atomic<int> ran{0};
        Tracker tr;
        {
            Pool p(SilentConfig(1));
            BlockUntilShutdown(p, 10);
            for (int i = 0; i < N; ++i)
                p.SubmitForStep([&ran, tr] { ran++; }, 10);  // Cerebral, on its workers
            EB_EXPECT(ran == 0 && p.GetStreamMetrics(ECognitiveStream::Cerebral).CurrentQueueDepth == N);
        }  // destructor: drains
        EB_EXPECT_MSG(ran == N, std::to_string(ran.load()) + " of " + std::to_string(N) + " ran");
        EB_EXPECT(tr.Alive() == 1);
    }
    // Cancel: counted and reported, never run, every std::function destroyed.
    {
        FThreadPoolConfig c = SilentConfig(1);
        c.DrainOnShutdown = false;
        std::atomic<int> ran{0};
        Tracker tr;
        Pool p(c);
        BlockUntilShutdown(p, 10);
        std::vector<uint64_t> ids;
        for (int i = 0; i < N; ++i)
            ids.push_back(p.SubmitForStep([&ran, tr] { ran++; }, 10));
        const FShutdownReport r = p.Shutdown();
        EB_EXPECT(r.FirstCall && r.Complete && r.Cancelled == N && r.Drained == 1);
        EB_EXPECT(ran == 0 && tr.Alive() == 1);
        for (uint64_t id : ids)
            EB_EXPECT(p.WaitForTaskResult(id, milliseconds(0)) == ETaskStatus::Cancelled);
        EB_EXPECT(p.GetStreamMetrics(ECognitiveStream::Cerebral).TasksCancelled == N);
    }
    // Lost wake-ups: pools destroyed right after their workers went idle,
    // or while they are going idle, or never started.
    Elapsed e;
    for (int i = 0; i < 300; ++i) {
        Pool p(SilentConfig(1 + i % 3));
        if (i % 3 != 2)
            for (int32_t s = 1; s <= 3; ++s)
                p.SubmitForStep([] {}, s + 9);
        if (i % 3 == 0)
            p.SynchronizeStreams();
    }
    std::printf("  300 create/submit/destroy cycles: %.3f s\n", e.Seconds());
}

// 4. An unmet dependency re-queued the task in a busy loop with ever lower
//    priority, overwriting its promise; an unknown dependency counted as met.
void defect4_dependencies_pending_released_once_unknown_rejected()
{
    Pool p(SilentConfig(1));
    Gate g;
    const uint64_t dep = p.SubmitForStep([&g] { g.Wait(); }, 10);
    g.WaitStarted();
    std::atomic<int> runs{0};
    std::atomic<bool> dep_done_when_run{false};
    FCognitiveTask t;
    t.Stream = ECognitiveStream::Somatic;
    t.Dependencies = {dep};
    t.Work = [&] {
        runs++;
        dep_done_when_run = p.WaitForTask(dep, milliseconds(0));
    };
    const uint64_t dependent = p.SubmitTask(t);
    EB_EXPECT(dependent != 0);
    // Pending, not "done", and no busy loop while it waits.
    const double cpu0 = ProcessCpuSeconds();
    EB_EXPECT(!p.WaitForTask(dependent, milliseconds(100)));
    const double cpu = ProcessCpuSeconds() - cpu0;
    EB_EXPECT_MSG(cpu < 0.05, std::to_string(cpu) + " s CPU while a dependent waited 100 ms");
    EB_EXPECT(p.GetStreamMetrics(ECognitiveStream::Somatic).CurrentQueueDepth == 1);
    EB_EXPECT(runs == 0);
    g.Open();
    EB_EXPECT(p.WaitForTaskResult(dependent, milliseconds(10000)) == ETaskStatus::Completed);
    p.SynchronizeStreams();
    EB_EXPECT(runs == 1 && dep_done_when_run);
    EB_EXPECT(p.GetStreamMetrics(ECognitiveStream::Somatic).TasksSubmitted == 1);  // no re-queue
    // Unknown dependency: rejected.
    Tracker tr;
    FCognitiveTask u;
    u.Dependencies = {dependent + 1000};
    u.Work = [tr] {};
    EB_EXPECT(p.SubmitTask(u) == 0);
    u.Dependencies = {0};
    EB_EXPECT(p.SubmitTask(u) == 0);
    EB_EXPECT(tr.Alive() == 2);  // u itself still holds one copy
    // A failed dependency fails its dependents, transitively, unrun.
    const uint64_t bad = p.SubmitForStep([] { throw std::runtime_error("dependency failed"); }, 10);
    FCognitiveTask d1;
    d1.Dependencies = {bad};
    d1.Work = [&runs] { runs++; };
    const uint64_t d1id = p.SubmitTask(d1);
    FCognitiveTask d2 = d1;
    d2.Dependencies = {d1id, dependent};
    const uint64_t d2id = p.SubmitTask(d2);
    EB_EXPECT(p.WaitForTaskResult(d1id, milliseconds(10000)) == ETaskStatus::Failed);
    EB_EXPECT(p.WaitForTaskResult(d2id, milliseconds(10000)) == ETaskStatus::Failed);
    EB_EXPECT(runs == 1);
}

// 5. No validation of Step (<= 0 indexed before the array).
void defect5_steps_validated()
{
    Pool p(SilentConfig(1));
    std::atomic<int> runs{0};
    Tracker tr;
    for (int32_t s : {0, -1, -12, 13, 100, INT32_MIN, INT32_MAX}) {
        EB_EXPECT_MSG(p.SubmitForStep([&runs, tr] { runs++; }, s) == 0, std::to_string(s));
        FCognitiveTask t;
        t.Step = s;
        t.Work = [&runs, tr] { runs++; };
        EB_EXPECT_MSG(p.SubmitTask(std::move(t)) == 0, std::to_string(s));
        EB_EXPECT(tr.Alive() == 1);
    }
    EB_EXPECT_MSG(Pool::GetLastError().find("step") != std::string::npos, Pool::GetLastError());
    p.SynchronizeStreams();
    EB_EXPECT(runs == 0);
    // The static helpers wrap any int32_t into 1..12 (documented), no UB.
    for (int32_t s : {0, -1, -11, -12, 13, 25, INT32_MIN, INT32_MIN + 1, INT32_MAX}) {
        const int32_t w = Pool::WrapStep(s);
        EB_EXPECT(w >= 1 && w <= 12);
        EB_EXPECT((static_cast<int64_t>(s) - w) % 12 == 0);
        EB_EXPECT(Pool::GetStreamForStep(s) == Pool::GetStreamForStep(w));
        EB_EXPECT(Pool::GetPhaseForStep(s) == Pool::GetPhaseForStep(w));
        EB_EXPECT(Pool::GetModeForStep(s) == Pool::GetModeForStep(w));
        EB_EXPECT(Pool::GetTriadForStep(s) >= 0 && Pool::GetTriadForStep(s) <= 3);
    }
    EB_EXPECT(Pool::GetStreamForStep(0) == ECognitiveStream::Autonomic);  // 0 -> 12
    EB_EXPECT(Pool::GetPhaseForStep(-1) == ECognitivePhase::Simulation);  // -1 -> 11
}

// 6. RunCycle did no pacing; CycleStartTime was written from several
//    threads without synchronisation.
void defect6_run_cycle_paced_and_safe_with_getters()
{
    FThreadPoolConfig c = SilentConfig(1);
    c.TargetCycleTimeMs = 15.0f;
    Pool p(c);
    for (int i = 0; i < 3; ++i) {
        Elapsed e;
        const uint64_t us = p.RunCycle();
        EB_EXPECT_MSG(us >= 15000 && e.Seconds() >= 0.0149, std::to_string(us) + " us");
    }
    const float cps = p.GetMetrics().GetCyclesPerSecond();
    EB_EXPECT_MSG(cps > 0.0f && cps <= 66.7f, std::to_string(cps) + " cycles/s");
    // Two threads running cycles, two reading: serialised, counted exactly.
    FThreadPoolConfig fast = SilentConfig(1);
    fast.TargetCycleTimeMs = 0.1f;
    Pool q(fast);
    std::atomic<bool> stop{false};
    std::atomic<long> bad{0}, reads{0};
    std::vector<std::thread> readers;
    for (int r = 0; r < 2; ++r)
        readers.emplace_back([&] {
            while (!stop) {
                const int32_t s = q.GetCurrentStep();
                const int st = static_cast<int>(q.GetCurrentStream());
                const int ph = static_cast<int>(q.GetCurrentPhase());
                const int mo = static_cast<int>(q.GetCurrentMode());
                if (s < 1 || s > 12 || st > 2 || ph > 3 || mo > 1)
                    bad++;
                (void)q.GetMetrics().CyclesCompleted.load();
                reads++;
            }
        });
    std::vector<std::thread> runners;
    for (int r = 0; r < 2; ++r)
        runners.emplace_back([&] {
            for (int i = 0; i < 50; ++i) {
                q.SubmitForStep([] {}, 1 + i % 12);
                q.RunCycle();
            }
        });
    for (auto& t : runners)
        t.join();
    stop = true;
    for (auto& t : readers)
        t.join();
    EB_EXPECT(bad == 0 && reads > 0);
    EB_EXPECT(q.GetMetrics().CyclesCompleted == 100);
    EB_EXPECT(q.GetCurrentStep() == 1);
}

// 7. QueueWaitTime and ContentionEvents never updated; MaxQueueDepth,
//    Deadline, TargetLayer, Phase, EnableRealTimePriority and the thread
//    counts had no effect.
void defect7_metrics_and_config_take_effect()
{
    {  // QueueWaitTime, queue depths, Phase
        Pool p(SilentConfig(1));
        Gate g;
        p.SubmitForStep([&g] { g.Wait(); }, 11);
        g.WaitStarted();
        std::vector<uint64_t> ids;
        for (int i = 0; i < 5; ++i) {
            FCognitiveTask t;
            t.Stream = ECognitiveStream::Somatic;
            t.Phase = ECognitivePhase::Simulation;
            t.Step = 11;
            ids.push_back(p.SubmitTask(t));
        }
        EB_EXPECT(p.GetStreamMetrics(ECognitiveStream::Somatic).CurrentQueueDepth == 5);
        EB_EXPECT(!p.WaitForTask(ids[0], milliseconds(20)));
        g.Open();
        p.SynchronizeStreams();
        const FStreamMetrics& s = p.GetStreamMetrics(ECognitiveStream::Somatic);
        EB_EXPECT_MSG(s.QueueWaitTime >= 5 * 20000, std::to_string(s.QueueWaitTime.load()) + " us");
        EB_EXPECT(s.MaxQueueDepth == 5 && s.CurrentQueueDepth == 0);
        FTaskResult r;
        p.WaitForTaskResult(ids[4], milliseconds(0), &r);
        EB_EXPECT(r.Phase == ECognitivePhase::Simulation && r.QueueWaitTime.count() >= 20000);
    }
    {  // ContentionEvents
        FThreadPoolConfig c = SilentConfig(2);
        c.MaxQueueDepth = 1 << 20;
        Pool p(c);
        for (int round = 0; round < 20 && p.GetStreamMetrics(ECognitiveStream::Cerebral).ContentionEvents == 0;
             ++round) {
            std::vector<std::thread> th;
            for (int i = 0; i < 4; ++i)
                th.emplace_back([&p] {
                    for (int k = 0; k < 20000; ++k)
                        p.SubmitForStep([] {}, 10);
                });
            for (auto& t : th)
                t.join();
            p.SynchronizeStreams();
        }
        EB_EXPECT(p.GetStreamMetrics(ECognitiveStream::Cerebral).ContentionEvents > 0);
    }
    {  // MaxQueueDepth is back-pressure (RejectWhenFull; the waiting form is defect7b)
        FThreadPoolConfig c = SilentConfig(1);
        c.MaxQueueDepth = 5;
        c.RejectWhenFull = true;
        Pool p(c);
        Gate g;
        p.SubmitForStep([&g] { g.Wait(); }, 10);
        g.WaitStarted();
        for (int i = 0; i < 5; ++i)
            EB_EXPECT(p.SubmitForStep([] {}, 10) != 0);
        EB_EXPECT(p.SubmitForStep([] {}, 10) == 0);
        EB_EXPECT_MSG(Pool::GetLastError().find("full") != std::string::npos, Pool::GetLastError());
        EB_EXPECT(p.SubmitForStep([] {}, 11) != 0);  // other streams unaffected
        g.Open();
        p.SynchronizeStreams();
        EB_EXPECT(p.SubmitForStep([] {}, 10) != 0);
    }
    {  // Deadline
        Pool p(SilentConfig(1));
        std::atomic<bool> ran{false};
        FCognitiveTask t;
        t.Work = [&ran] { ran = true; };
        t.Deadline = std::chrono::steady_clock::now();
        EB_EXPECT(p.WaitForTaskResult(p.SubmitTask(t), milliseconds(10000)) == ETaskStatus::Expired);
        EB_EXPECT(!ran && p.GetStreamMetrics(ECognitiveStream::Cerebral).TasksExpired == 1);
    }
    {  // TargetLayer: DataLoader pool, stream workers, ordered CUDA-stream lane
        Pool p(SilentConfig(1));
        Gate g;
        p.SubmitForStep([&g] { g.Wait(); }, 10);
        g.WaitStarted();
        FCognitiveTask loader;
        loader.TargetLayer = EThreadPoolLayer::DataLoader;
        EB_EXPECT(p.WaitForTask(p.SubmitTask(loader), milliseconds(10000)));  // not held by the stream
        FCognitiveTask intra;
        intra.TargetLayer = EThreadPoolLayer::IntraOp;
        const uint64_t intra_id = p.SubmitTask(intra);
        EB_EXPECT(!p.WaitForTask(intra_id, milliseconds(10)));  // on the stream's (busy) workers
        g.Open();
        EB_EXPECT(p.WaitForTask(intra_id, milliseconds(10000)));
    }
    {  // EnableRealTimePriority: tried, reported, never fatal
        std::atomic<int> logged{0};
        FThreadPoolConfig c = SilentConfig(1);
        c.EnableRealTimePriority = true;
        c.Log = [&logged](int, const char*) { logged++; };
        Pool p(c);
        EB_EXPECT(p.WaitForTask(p.SubmitForStep([] {}, 1), milliseconds(10000)));
        EB_EXPECT(logged >= 1);  // "now run under SCHED_..." or the refusal
    }
    // Thread counts: N tasks meet at an N-party barrier only if N threads
    // run them at once; one thread fewer and they time out.
    auto meet = [](Pool& p, int n, EThreadPoolLayer layer, ECognitiveStream stream, milliseconds timeout) {
        const uint64_t b = p.CreateBarrier(n);
        std::atomic<int> met{0};
        std::vector<uint64_t> ids;
        for (int i = 0; i < n; ++i) {
            FCognitiveTask t;
            t.Stream = stream;
            t.TargetLayer = layer;
            t.Work = [&p, &met, b, timeout] { met += p.TryWaitAtBarrier(b, timeout) ? 1 : 0; };
            ids.push_back(p.SubmitTask(t));
        }
        for (uint64_t id : ids)
            p.WaitForTask(id, milliseconds(30000));
        p.DestroyBarrier(b);
        return met.load();
    };
    {
        FThreadPoolConfig c = SilentConfig(3);
        c.DataLoaderWorkers = 2;
        c.CUDAStreams = 3;
        Pool p(c);
        EB_EXPECT(meet(p, 3, EThreadPoolLayer::InterOp, ECognitiveStream::Cerebral, milliseconds(10000)) == 3);
        EB_EXPECT(meet(p, 2, EThreadPoolLayer::DataLoader, ECognitiveStream::Somatic, milliseconds(10000)) == 2);
        EB_EXPECT(meet(p, 3, EThreadPoolLayer::DataLoader, ECognitiveStream::Somatic, milliseconds(30)) == 0);
        // Lanes: one at a time per stream.
        EB_EXPECT(meet(p, 2, EThreadPoolLayer::CUDAStream, ECognitiveStream::Autonomic, milliseconds(30)) == 0);
    }
    {
        FThreadPoolConfig c = SilentConfig(0);
        c.InterOpThreads = 6;  // 2 per stream
        Pool p(c);
        EB_EXPECT(meet(p, 2, EThreadPoolLayer::InterOp, ECognitiveStream::Autonomic, milliseconds(10000)) == 2);
        EB_EXPECT(meet(p, 3, EThreadPoolLayer::InterOp, ECognitiveStream::Autonomic, milliseconds(30)) == 0);
    }
    {  // CUDAStreams = 1: the three streams share one ordered lane.
        FThreadPoolConfig c = SilentConfig(2);
        c.CUDAStreams = 1;
        Pool p(c);
        std::mutex m;
        std::vector<int> order;
        std::atomic<int> running{0}, max_running{0};
        for (int i = 0; i < 30; ++i) {
            FCognitiveTask t;
            t.Stream = static_cast<ECognitiveStream>(i % 3);
            t.TargetLayer = EThreadPoolLayer::CUDAStream;
            t.Work = [&, i] {
                const int now = ++running;
                int seen = max_running.load();
                while (now > seen && !max_running.compare_exchange_weak(seen, now)) {
                }
                Spin(20000);
                {
                    std::lock_guard<std::mutex> l(m);
                    order.push_back(i);
                }
                --running;
            };
            p.SubmitTask(t);
        }
        p.SynchronizeStreams();
        std::lock_guard<std::mutex> l(m);
        EB_EXPECT(order.size() == 30 && std::is_sorted(order.begin(), order.end()));
        EB_EXPECT(max_running == 1);
    }
}

// 8. NUMA affinity needed libnuma and otherwise did nothing; threads were
//    pinned only after they started; barriers were never freed.
void defect8_numa_without_libnuma_pinned_first_barriers_freed()
{
    cpu_set_t process;
    CPU_ZERO(&process);
    sched_getaffinity(0, sizeof process, &process);
    FThreadPoolConfig c = SilentConfig(1);
    c.EnableNUMAAffinity = true;
    Pool p(c);
    const std::string summary = p.GetNUMAAffinitySummary();
    std::printf("  %s\n", summary.c_str());
    EB_EXPECT(!summary.empty());
    // The very first task of each stream already runs pinned.
    std::vector<int> counts(3, 0);
    std::vector<cpu_set_t> sets(3);
    for (int s = 0; s < 3; ++s) {
        FCognitiveTask t;
        t.Stream = static_cast<ECognitiveStream>(s);
        cpu_set_t* out = &sets[static_cast<size_t>(s)];
        t.Work = [out] {
            CPU_ZERO(out);
            sched_getaffinity(0, sizeof *out, out);
        };
        EB_EXPECT(p.WaitForTask(p.SubmitTask(t), milliseconds(10000)));
        counts[static_cast<size_t>(s)] = CPU_COUNT(&sets[static_cast<size_t>(s)]);
    }
    const int total = CPU_COUNT(&process);
    for (int s = 0; s < 3; ++s) {
        EB_EXPECT(counts[static_cast<size_t>(s)] >= 1);
        if (total > 1 && summary.find("not pinned") == std::string::npos)
            EB_EXPECT_MSG(counts[static_cast<size_t>(s)] < total || summary.find("NUMA nodes") != std::string::npos,
                          "stream " + std::to_string(s) + " not pinned");
    }
    if (summary.find("disjoint") != std::string::npos)
        for (int a = 0; a < 3; ++a)
            for (int b = a + 1; b < 3; ++b) {
                cpu_set_t both;
                CPU_AND(&both, &sets[static_cast<size_t>(a)], &sets[static_cast<size_t>(b)]);
                EB_EXPECT(CPU_COUNT(&both) == 0);
            }
    // Barriers: destroyed ones are gone (waits return at once), and
    // shutdown frees the rest, releasing their waiters.
    for (int i = 0; i < 10000; ++i) {
        const uint64_t b = p.CreateBarrier();
        if (!p.DestroyBarrier(b)) {
            EB_EXPECT(false);
            break;
        }
    }
    const uint64_t gone = p.CreateBarrier();
    p.DestroyBarrier(gone);
    EB_EXPECT(!p.TryWaitAtBarrier(gone, milliseconds(10000)));
    const uint64_t kept = p.CreateBarrier();
    std::thread waiter([&] { p.WaitAtBarrier(kept); });
    p.Shutdown();
    waiter.join();
    EB_EXPECT(!p.DestroyBarrier(kept));  // freed by the shutdown
}

// 9. The constructor printed to stdout/stderr unconditionally.
void defect9_silent()
{
    char path[] = "/tmp/echobeats_silence_XXXXXX";
    const int fd = mkstemp(path);
    EB_EXPECT(fd >= 0);
    if (fd < 0)
        return;
    std::fflush(stdout);
    std::fflush(stderr);
    const int saved_out = dup(STDOUT_FILENO);
    const int saved_err = dup(STDERR_FILENO);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    {
        Pool p;  // the original defaults: NUMA affinity on, ConfigurePyTorchThreads
        p.ConfigurePyTorchThreads();
        p.ConfigureNUMAAffinity();
        p.TryEnableRealTimePriority();
        p.WaitForTask(p.SubmitForStep([] { throw std::runtime_error("a failing task"); }, 1), milliseconds(10000));
        p.SubmitForStep([] {}, 0);  // rejected
        p.RunCycle();
    }
    try {
        FThreadPoolConfig bad;
        bad.MaxQueueDepth = -1;
        Pool p(bad);
    } catch (const std::invalid_argument&) {
    }
    std::fflush(stdout);
    std::fflush(stderr);
    dup2(saved_out, STDOUT_FILENO);
    dup2(saved_err, STDERR_FILENO);
    close(saved_out);
    close(saved_err);
    struct stat st {};
    fstat(fd, &st);
    close(fd);
    unlink(path);
    EB_EXPECT_MSG(st.st_size == 0, std::to_string(static_cast<long long>(st.st_size)) + " bytes printed");
}

// 7b. The waiting form of back-pressure: a submit to a full stream waits up
//     to SubmitTimeout for room, then fails (returns 0).
void defect7b_max_queue_depth_wait_mode()
{
    FThreadPoolConfig c = SilentConfig(1);
    c.MaxQueueDepth = 3;
    c.SubmitTimeout = milliseconds(30);
    Pool p(c);
    Gate g;
    p.SubmitForStep([&g] { g.Wait(); }, 11);
    g.WaitStarted();
    for (int i = 0; i < 3; ++i)
        EB_EXPECT(p.SubmitForStep([] {}, 11) != 0);
    Elapsed e;
    EB_EXPECT(p.SubmitForStep([] {}, 11) == 0);
    EB_EXPECT_MSG(e.Seconds() >= 0.029 && e.Seconds() < 5.0, std::to_string(e.Seconds()) + " s");
    g.Open();
    p.SynchronizeStreams();
    // Without a limit: a submitter blocked on a full stream gets in once the
    // worker makes room.
    c.SubmitTimeout = milliseconds::max();
    Pool q(c);
    Gate h;
    q.SubmitForStep([&h] { h.Wait(); }, 11);
    h.WaitStarted();
    for (int i = 0; i < 3; ++i)
        EB_EXPECT(q.SubmitForStep([] {}, 11) != 0);
    std::atomic<uint64_t> id{0};
    std::thread submitter([&] { id = q.SubmitForStep([] {}, 11); });
    h.Open();
    submitter.join();
    EB_EXPECT(id != 0);
    q.SynchronizeStreams();
}

}  // namespace

int main()
{
    return echobeats_test::RunTests(
        "echobeats_defects",
        {
            {"defect1_wait_for_task_repeatable_unknown_false", defect1_wait_for_task_repeatable_unknown_false},
            {"defect2_wait_for_stream_and_synchronize_wait_for_running_tasks",
             defect2_wait_for_stream_and_synchronize_wait_for_running_tasks},
            {"defect3_shutdown_drains_or_cancels_and_never_hangs", defect3_shutdown_drains_or_cancels_and_never_hangs},
            {"defect4_dependencies_pending_released_once_unknown_rejected",
             defect4_dependencies_pending_released_once_unknown_rejected},
            {"defect5_steps_validated", defect5_steps_validated},
            {"defect6_run_cycle_paced_and_safe_with_getters", defect6_run_cycle_paced_and_safe_with_getters},
            {"defect7_metrics_and_config_take_effect", defect7_metrics_and_config_take_effect},
            {"defect8_numa_without_libnuma_pinned_first_barriers_freed",
             defect8_numa_without_libnuma_pinned_first_barriers_freed},
            {"defect9_silent", defect9_silent},
            {"defect7b_max_queue_depth_wait_mode", defect7b_max_queue_depth_wait_mode},
        });
}
