// echobeats_test_util.hpp: the small test harness shared by the Echobeats C++
// programs (cpp_examples/echobeats_*.cpp). Each program is its own test
// binary, so the counters are per program.
//
//   EB_EXPECT(cond)            one check; a failure is counted and printed
//                              with file:line and the current test's name
//   EB_EXPECT_MSG(cond, msg)   the same with a message (a std::string)
//   Gate                       a task blocks in Wait() until the test calls
//                              Open(); WaitStarted() waits until a task is in
//                              Wait() or called MarkStarted() (condition
//                              variables, no sleeps)
//   Elapsed                    seconds since construction (steady_clock)
//   SilentConfig(threads)      an FThreadPoolConfig for tests: that many
//                              threads per stream, small pools, no NUMA
//                              pinning, no pacing
//   RunTests(program, tests)   runs named tests in order, each under a 60 s
//                              watchdog (a hang fails the program), prints
//                              "[ RUN ] name" / "[ OK ] name" / "[ FAIL ] name"
//                              and a summary; returns the exit status
#ifndef CLLM_CPP_EXAMPLES_ECHOBEATS_TEST_UTIL_HPP
#define CLLM_CPP_EXAMPLES_ECHOBEATS_TEST_UTIL_HPP

#include "EchobeatsThreadPoolManager.h"

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

namespace echobeats_test {

inline int g_failures = 0;
inline int g_checks = 0;
inline const char* g_current = "";
inline std::mutex g_print_mutex;

inline bool Expect(bool ok, const char* expr, const char* file, int line, const std::string& msg = std::string())
{
    std::lock_guard<std::mutex> lock(g_print_mutex);
    ++g_checks;
    if (!ok) {
        ++g_failures;
        std::printf("FAIL [%s] %s:%d: %s%s%s\n", g_current, file, line, expr, msg.empty() ? "" : " -- ",
                    msg.c_str());
        std::fflush(stdout);
    }
    return ok;
}

#define EB_EXPECT(cond) ::echobeats_test::Expect(static_cast<bool>(cond), #cond, __FILE__, __LINE__)
#define EB_EXPECT_MSG(cond, msg) ::echobeats_test::Expect(static_cast<bool>(cond), #cond, __FILE__, __LINE__, (msg))

/// A task blocks in Wait() until Open().
class Gate {
public:
    void Wait()
    {
        std::unique_lock<std::mutex> lock(m_);
        started_ = true;
        cv_.notify_all();
        cv_.wait_for(lock, std::chrono::seconds(30), [this] { return open_; });
    }
    /// Marks a task started without blocking it.
    void MarkStarted()
    {
        std::lock_guard<std::mutex> lock(m_);
        started_ = true;
        cv_.notify_all();
    }
    void WaitStarted()
    {
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait_for(lock, std::chrono::seconds(30), [this] { return started_; });
    }
    bool Started()
    {
        std::lock_guard<std::mutex> lock(m_);
        return started_;
    }
    void Open()
    {
        std::lock_guard<std::mutex> lock(m_);
        open_ = true;
        cv_.notify_all();
    }

private:
    std::mutex m_;
    std::condition_variable cv_;
    bool started_ = false;
    bool open_ = false;
};

/// Seconds since construction.
class Elapsed {
public:
    double Seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

private:
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

/// A test configuration: `threads` per stream, small pools, no pinning, no pacing.
inline DeepTreeEcho::FThreadPoolConfig SilentConfig(int32_t threads)
{
    DeepTreeEcho::FThreadPoolConfig c;
    c.ThreadsPerStream = threads;
    c.DataLoaderWorkers = 2;
    c.IntraOpThreads = 2;
    c.EnableNUMAAffinity = false;
    c.TargetCycleTimeMs = 0.0f;
    return c;
}

inline void WatchdogHandler(int)
{
    static const char msg[] = "FAIL watchdog: a test did not finish in time (hang?)\n";
    ssize_t ignored = write(STDOUT_FILENO, msg, sizeof msg - 1);
    (void)ignored;
    _exit(3);
}

using TestList = std::vector<std::pair<const char*, std::function<void()>>>;

inline int RunTests(const char* program, const TestList& tests)
{
    std::signal(SIGALRM, WatchdogHandler);
    int failed_tests = 0;
    Elapsed total;
    for (const auto& t : tests) {
        g_current = t.first;
        std::printf("[ RUN  ] %s\n", t.first);
        std::fflush(stdout);
        alarm(60);
        const int before = g_failures;
        try {
            t.second();
        } catch (const std::exception& e) {
            Expect(false, "no exception", __FILE__, __LINE__, e.what());
        } catch (...) {
            Expect(false, "no exception", __FILE__, __LINE__, "unknown exception");
        }
        alarm(0);
        const bool ok = g_failures == before;
        failed_tests += ok ? 0 : 1;
        std::printf("[ %s ] %s\n", ok ? " OK " : "FAIL", t.first);
        std::fflush(stdout);
    }
    std::printf("%s: %zu tests, %d failed; %d checks, %d failed; %.2f s\n", program, tests.size(), failed_tests,
                g_checks, g_failures, total.Seconds());
    return g_failures == 0 ? 0 : 1;
}

}  // namespace echobeats_test

#endif  // CLLM_CPP_EXAMPLES_ECHOBEATS_TEST_UTIL_HPP
