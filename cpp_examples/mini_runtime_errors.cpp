// mini_runtime_errors.cpp: how mini_runtime::Engine (the header-only C++
// wrapper over libcllm's mini_runtime.h) reports errors, in sequential,
// threaded and threaded-with-two-compute-threads mode:
//
//   an SRAM address outside SRAM, an unknown tensor id, a tile outside its
//   tensor                                      -> std::out_of_range
//   a STORE with no EXEC (hung the original), a LOAD over an open
//   accumulator, bytes != TILE_BYTES, a misaligned address, a shape mismatch,
//   an unknown or duplicate tensor name          -> std::invalid_argument
//   write_trace without Config::trace, a bad config
//                                                -> std::runtime_error /
//                                                   std::invalid_argument
//
// Every message comes from libcllm (cllm_last_error()). A rejected schedule
// changes no tensor (the output keeps a sentinel) and the engine keeps
// working: after each error a good schedule runs and gives A . B. The
// original threaded engine called std::terminate on the first of these.
// Exit status 0 when every check passes.
#include "mini_runtime/engine.hpp"
#include "mini_runtime/schedule.hpp"

#include "mini_runtime_example_util.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <unistd.h>

using namespace mini_runtime;
using mini_runtime_example::expect;

namespace {

template <typename E>
const char* exception_name()
{
    if (std::is_same<E, std::out_of_range>::value)
        return "std::out_of_range";
    if (std::is_same<E, std::invalid_argument>::value)
        return "std::invalid_argument";
    if (std::is_same<E, std::runtime_error>::value)
        return "std::runtime_error";
    return "?";
}

// Runs `f`, which must throw `Expected`; prints the message.
template <typename Expected>
void expect_throw(const std::string& what, const std::function<void()>& f)
{
    try {
        f();
        expect(false, what + ": did not throw");
    } catch (const Expected& e) {
        expect(std::strlen(e.what()) > 0, what + ": empty message");
        std::printf("   %-34s %-22s %s\n", what.c_str(), exception_name<Expected>(), e.what());
    } catch (const std::exception& e) {
        expect(false, what + ": threw another exception: " + e.what());
    }
}

constexpr uint32_t TB = static_cast<uint32_t>(TILE_BYTES);
constexpr float SENTINEL = -777.0f;

struct Fixture {
    Engine eng;
    std::vector<float> a, b;
    uint64_t good_runs = 0;  ///< schedules that ran (4 ops each)

    explicit Fixture(const Engine::Config& cfg) : eng(cfg), a(1024), b(1024)
    {
        for (size_t i = 0; i < a.size(); ++i) {
            a[i] = static_cast<float>((i * 37) % 19) * 0.125f - 1.0f;
            b[i] = static_cast<float>((i * 11) % 23) * 0.0625f - 0.5f;
        }
        eng.register_tensor("A", 32, 32);
        eng.register_tensor("B", 32, 32);
        eng.register_tensor("C", 32, 32);
        eng.set_tensor("A", a.data(), 32, 32);
        eng.set_tensor("B", b.data(), 32, 32);
        reset_output();
    }

    void reset_output()
    {
        std::vector<float> s(1024, SENTINEL);
        eng.set_tensor("C", s.data(), 32, 32);
    }

    bool output_untouched() const
    {
        std::vector<float> c(1024);
        eng.get_tensor("C", c.data(), 32, 32);
        for (float v : c)
            if (v != SENTINEL)
                return false;
        return true;
    }

    // A valid prefix that writes C: a rejected schedule must not run it.
    static std::vector<SchedOp> good()
    {
        return {SchedLoad(0, 0, 0, 0, TB), SchedLoad(1, 0, 0, TB, TB), SchedExecute(0, 0, 0, 0, TB, 2 * TB),
                SchedStore(2, 0, 0, 2 * TB, TB)};
    }

    static std::vector<SchedOp> good_then(std::initializer_list<SchedOp> tail)
    {
        std::vector<SchedOp> s = good();
        s.insert(s.end(), tail);
        return s;
    }

    // The engine still works: C = A . B.
    bool still_works()
    {
        eng.execute(good());
        ++good_runs;
        std::vector<float> c(1024);
        eng.get_tensor("C", c.data(), 32, 32);
        int bad = 0;
        for (int i = 0; i < 32; ++i)
            for (int j = 0; j < 32; ++j) {
                double s = 0, m = 0;
                for (int k = 0; k < 32; ++k) {
                    double p = static_cast<double>(a[i * 32 + k]) * b[k * 32 + j];
                    s += p;
                    m += std::fabs(p);
                }
                bad += !(std::fabs(c[i * 32 + j] - s) <= 1e-5 * m + 1e-7);
            }
        reset_output();
        return bad == 0;
    }
};

// One bad schedule: throws `Expected`, changes nothing, engine still works.
template <typename Expected>
void bad_schedule(Fixture& f, const std::string& what, const std::vector<SchedOp>& ops)
{
    expect_throw<Expected>(what, [&] { f.eng.execute(ops); });
    expect(f.output_untouched(), what + ": the rejected schedule changed C");
    expect(f.still_works(), what + ": the engine no longer computes A . B");
}

void in_mode(const char* label, const Engine::Config& cfg)
{
    std::printf("-- %s\n", label);
    Fixture f(cfg);
    const uint32_t sram = static_cast<uint32_t>(f.eng.sram_bytes());

    bad_schedule<std::out_of_range>(f, "LOAD past the end of SRAM", Fixture::good_then({SchedLoad(0, 0, 0, sram, TB)}));
    bad_schedule<std::out_of_range>(f, "EXEC accumulator past SRAM",
                                    Fixture::good_then({SchedExecute(0, 0, 0, 0, TB, sram - 64)}));
    bad_schedule<std::out_of_range>(f, "LOAD of tensor 42", Fixture::good_then({SchedLoad(42, 0, 0, 0, TB)}));
    bad_schedule<std::out_of_range>(f, "LOAD of tile (1, 0) of 32x32", Fixture::good_then({SchedLoad(0, 1, 0, 0, TB)}));
    bad_schedule<std::invalid_argument>(f, "STORE without EXEC",
                                        Fixture::good_then({SchedStore(2, 0, 0, 8 * TB, TB, true)}));
    bad_schedule<std::invalid_argument>(
        f, "LOAD over an open accumulator",
        Fixture::good_then({SchedExecute(0, 0, 0, 0, TB, 6 * TB), SchedLoad(0, 0, 0, 6 * TB, TB),
                            SchedStore(2, 0, 0, 6 * TB, TB)}));
    bad_schedule<std::invalid_argument>(f, "LOAD of 2048 bytes", Fixture::good_then({SchedLoad(0, 0, 0, 0, 2048)}));
    bad_schedule<std::invalid_argument>(f, "misaligned LOAD", Fixture::good_then({SchedLoad(0, 0, 0, 96, TB)}));

    // Tensor-level errors.
    std::vector<float> buf(33 * 32);
    expect_throw<std::invalid_argument>("set_tensor with another shape",
                                        [&] { f.eng.set_tensor("A", buf.data(), 33, 32); });
    expect_throw<std::invalid_argument>("get_tensor of an unknown name",
                                        [&] { f.eng.get_tensor("nope", buf.data(), 32, 32); });
    expect_throw<std::invalid_argument>("register a duplicate name", [&] { f.eng.register_tensor("A", 1, 1); });
    expect_throw<std::invalid_argument>("register 0 rows", [&] { f.eng.register_tensor("Z", 0, 1); });
    expect_throw<std::invalid_argument>("register (size_t)-1 rows",
                                        [&] { f.eng.register_tensor("Z", static_cast<size_t>(-1), 1); });
    expect_throw<std::invalid_argument>("name with a NUL",
                                        [&] { f.eng.register_tensor(std::string("Z\0Y", 3), 1, 1); });
    expect_throw<std::runtime_error>("write_trace without trace", [&] { f.eng.write_trace("/tmp/never.json"); });
    expect(f.still_works(), "engine works after the tensor errors");
    expect(f.eng.register_tensor("Z", 1, 1) == 3, "failed registrations used no id");

    // Stats: only the good runs count.
    Engine::Stats s = f.eng.stats();
    expect(s.loads == 2 * f.good_runs && s.executes == f.good_runs && s.stores == f.good_runs,
           "stats count only the schedules that ran");
}

}  // namespace

int main()
{
    try {
        Engine::Config seq;
        Engine::Config thr;
        thr.threaded = true;
        Engine::Config thr2 = thr;
        thr2.compute_threads = 2;
        in_mode("sequential", seq);
        in_mode("threaded", thr);
        in_mode("threaded, 2 compute threads", thr2);

        std::printf("-- configuration\n");
        Engine::Config bad;
        bad.sram_bytes = 100;
        expect_throw<std::invalid_argument>("Config::sram_bytes = 100", [&] { Engine e(bad); });
        bad = Engine::Config{};
        bad.threaded = true;
        bad.compute_threads = 0;
        expect_throw<std::invalid_argument>("Config::compute_threads = 0", [&] { Engine e(bad); });

        std::printf("-- moved-from engine\n");
        Engine a(thr);
        Engine b(std::move(a));
        expect_throw<std::invalid_argument>("register on a moved-from engine", [&] { a.register_tensor("X", 1, 1); });
        expect(a.sram_bytes() == 0, "moved-from engine has no SRAM");
        b.register_tensor("X", 32, 32);

        std::printf("-- trace\n");
        Engine::Config traced = thr;
        traced.trace = true;
        Fixture t(traced);
        t.eng.execute(Fixture::good());
        expect_throw<std::runtime_error>("write_trace to a missing directory",
                                         [&] { t.eng.write_trace("/nonexistent-dir-mr/t.json"); });
        char tmpl[] = "/tmp/mini_runtime_errors_trace_XXXXXX";
        int fd = mkstemp(tmpl);
        expect(fd >= 0, "mkstemp");
        if (fd >= 0)
            close(fd);
        const std::string path = tmpl;
        t.eng.write_trace(path);
        std::FILE* fp = std::fopen(path.c_str(), "rb");
        expect(fp != nullptr, "trace file written");
        if (fp != nullptr) {
            char head[64] = {0};
            size_t n = std::fread(head, 1, sizeof head - 1, fp);
            std::fclose(fp);
            expect(n > 0 && head[0] == '{' && std::strstr(head, "traceEvents") != nullptr, "trace is JSON");
        }
        std::remove(path.c_str());
    } catch (const std::exception& e) {
        std::printf("FAIL: unexpected exception: %s\n", e.what());
        return 1;
    }
    return mini_runtime_example::finish();
}
