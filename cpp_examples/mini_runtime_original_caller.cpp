// mini_runtime_original_caller.cpp: C++ code written against the original
// tileflow mini_runtime API, compiled unchanged against libcllm's
// header-only wrapper (include/mini_runtime/*.hpp over mini_runtime.h).
//
// It does what the original's callers do: configure an Engine (threaded),
// register tensors, set data, hand it a std::vector<SchedOp> of
// SchedLoad / SchedExecute / SchedStore, read results back and look at the
// stats. Workloads:
//   1. C = A . B, 64x64 (2x2x2 tiles), the manual schedule of the original
//      tests, checked against a double-precision reference;
//   2. the reference 3-layer MLP (x 128x128 -> w1 128x64 + ReLU -> w2 64x32
//      + ReLU -> w3 32x32), lowered by a small m/n/k scheduler written here
//      (operand tiles cached in SRAM, fused ReLU in the STOREs),
//      checked against a double reference; threaded == sequential bit for
//      bit; stats counted right;
//   3. Engine moved around (move construction / assignment) keeps working.
// Exit status 0 on success, 1 on any mismatch or exception.
#include "mini_runtime/constants.hpp"
#include "mini_runtime/engine.hpp"
#include "mini_runtime/kernels.hpp"
#include "mini_runtime/schedule.hpp"

#include "mini_runtime_example_util.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <variant>
#include <vector>

using namespace mini_runtime;
using mini_runtime_example::expect;

namespace {

struct Matrix {
    size_t rows = 0, cols = 0;
    std::vector<float> v;
    Matrix() = default;
    Matrix(size_t r, size_t c) : rows(r), cols(c), v(r * c, 0.0f) {}
};

Matrix random_matrix(size_t rows, size_t cols, std::mt19937& rng, float scale)
{
    std::normal_distribution<float> dist(0.0f, scale);
    Matrix m(rows, cols);
    for (float& x : m.v)
        x = dist(rng);
    return m;
}

// out = relu?(a . b) in double, and the error scale |a| . |b| (chained).
struct Ref {
    std::vector<double> val, mag;
};

Ref ref_layer(const Ref& a, size_t rows, size_t inner, const Matrix& b, bool relu)
{
    Ref out;
    out.val.assign(rows * b.cols, 0.0);
    out.mag.assign(rows * b.cols, 0.0);
    for (size_t i = 0; i < rows; ++i)
        for (size_t j = 0; j < b.cols; ++j) {
            double s = 0, m = 0;
            for (size_t k = 0; k < inner; ++k) {
                s += a.val[i * inner + k] * b.v[k * b.cols + j];
                m += a.mag[i * inner + k] * std::fabs(static_cast<double>(b.v[k * b.cols + j]));
            }
            out.val[i * b.cols + j] = (relu && s < 0) ? 0.0 : s;
            out.mag[i * b.cols + j] = m;
        }
    return out;
}

Ref ref_of(const Matrix& m)
{
    Ref r;
    for (float x : m.v) {
        r.val.push_back(x);
        r.mag.push_back(std::fabs(static_cast<double>(x)));
    }
    return r;
}

int count_far(const std::vector<float>& got, const Ref& ref)
{
    int bad = 0;
    for (size_t i = 0; i < got.size(); ++i)
        if (!(std::fabs(got[i] - ref.val[i]) <= 2e-5 * ref.mag[i] + 1e-7))
            ++bad;
    return bad;
}

// ---- 1. 64x64, the original manual schedule -----------------------------

std::vector<float> matmul_64(const Engine::Config& cfg, const Matrix& A, const Matrix& B, Engine::Stats* stats)
{
    Engine eng(cfg);
    uint32_t a = eng.register_tensor("A", 64, 64);
    uint32_t b = eng.register_tensor("B", 64, 64);
    uint32_t c = eng.register_tensor("C", 64, 64);
    expect(a == 0 && b == 1 && c == 2, "tensor ids 0, 1, 2");
    eng.set_tensor("A", A.v.data(), 64, 64);
    eng.set_tensor("B", B.v.data(), 64, 64);

    std::vector<SchedOp> schedule;
    for (uint32_t m = 0; m < 2; ++m)
        for (uint32_t n = 0; n < 2; ++n) {
            const uint32_t acc = 0x2000 + (m * 2 + n) * static_cast<uint32_t>(TILE_BYTES);
            for (uint32_t k = 0; k < 2; ++k) {
                schedule.push_back(SchedLoad(a, m, k, 0x0000, TILE_BYTES));
                schedule.push_back(SchedLoad(b, k, n, 0x1000, TILE_BYTES));
                schedule.push_back(SchedExecute(m, n, k, 0x0000, 0x1000, acc));
            }
            schedule.emplace_back(SchedStore(c, m, n, acc, TILE_BYTES));
        }
    eng.execute(schedule);

    std::vector<float> C(64 * 64);
    eng.get_tensor("C", C.data(), 64, 64);
    if (stats != nullptr)
        *stats = eng.stats();
    return C;
}

// ---- 2. MLP, with a small scheduler of our own -----------------------------

// Lowers out = relu?(a . b) (tile counts mt x kt . kt x nt) in m, n, k
// order. Operand tiles are cached by (tensor, row, col) in a fixed pool of
// SRAM slots, evicted round-robin; one accumulator slot per output tile.
class MiniScheduler {
public:
    explicit MiniScheduler(size_t sram_bytes) : slots_(sram_bytes / TILE_BYTES - 1) {}

    void matmul(uint32_t a, uint32_t b, uint32_t out, uint32_t mt, uint32_t kt, uint32_t nt, bool relu)
    {
        const uint32_t acc = static_cast<uint32_t>(slots_ * TILE_BYTES);  // the last tile of SRAM
        for (uint32_t m = 0; m < mt; ++m)
            for (uint32_t n = 0; n < nt; ++n) {
                for (uint32_t k = 0; k < kt; ++k) {
                    uint32_t a_addr = operand(a, m, k, UINT32_MAX);
                    uint32_t b_addr = operand(b, k, n, a_addr);
                    ops.push_back(SchedExecute(m, n, k, a_addr, b_addr, acc, static_cast<int32_t>(k % 2)));
                }
                ops.push_back(SchedStore(out, m, n, acc, TILE_BYTES, relu));
                forget(out);  // cached tiles of `out` are stale now
            }
    }

    std::vector<SchedOp> ops;

private:
    struct Key {
        uint32_t t, r, c;
        bool operator<(const Key& o) const
        {
            return t != o.t ? t < o.t : (r != o.r ? r < o.r : c < o.c);
        }
    };

    // SRAM address of the tile, loading it unless cached (round-robin
    // slots); never evicts the slot at `keep` (UINT32_MAX: none).
    uint32_t operand(uint32_t t, uint32_t r, uint32_t c, uint32_t keep)
    {
        auto it = cache_.find(Key{t, r, c});
        if (it != cache_.end())
            return it->second;
        uint32_t addr = static_cast<uint32_t>((next_++ % slots_) * TILE_BYTES);
        if (addr == keep)
            addr = static_cast<uint32_t>((next_++ % slots_) * TILE_BYTES);
        for (auto e = cache_.begin(); e != cache_.end(); ++e)
            if (e->second == addr) {
                cache_.erase(e);
                break;
            }
        cache_[Key{t, r, c}] = addr;
        ops.push_back(SchedLoad(t, r, c, addr, TILE_BYTES));
        return addr;
    }

    void forget(uint32_t t)
    {
        for (auto e = cache_.begin(); e != cache_.end();)
            e = (e->first.t == t) ? cache_.erase(e) : std::next(e);
    }

    size_t slots_;
    size_t next_ = 0;
    std::map<Key, uint32_t> cache_;
};

struct MlpResult {
    std::vector<float> out;
    Engine::Stats stats;
    size_t ops = 0, loads = 0, executes = 0, stores = 0;
};

MlpResult run_mlp(const Engine::Config& cfg, const Matrix& x, const Matrix& w1, const Matrix& w2, const Matrix& w3)
{
    Engine eng(cfg);
    const uint32_t tx = eng.register_tensor("x", 128, 128);
    const uint32_t tw1 = eng.register_tensor("w1", 128, 64);
    const uint32_t th1 = eng.register_tensor("h1", 128, 64);
    const uint32_t tw2 = eng.register_tensor("w2", 64, 32);
    const uint32_t th2 = eng.register_tensor("h2", 128, 32);
    const uint32_t tw3 = eng.register_tensor("w3", 32, 32);
    const uint32_t tout = eng.register_tensor("out", 128, 32);
    eng.set_tensor("x", x.v.data(), 128, 128);
    eng.set_tensor("w1", w1.v.data(), 128, 64);
    eng.set_tensor("w2", w2.v.data(), 64, 32);
    eng.set_tensor("w3", w3.v.data(), 32, 32);

    MiniScheduler sched(eng.sram_bytes());
    sched.matmul(tx, tw1, th1, 4, 4, 2, true);
    sched.matmul(th1, tw2, th2, 4, 2, 1, true);
    sched.matmul(th2, tw3, tout, 4, 1, 1, false);

    MlpResult r;
    for (const SchedOp& op : sched.ops) {
        if (std::holds_alternative<SchedLoad>(op))
            ++r.loads;
        else if (std::holds_alternative<SchedExecute>(op))
            ++r.executes;
        else
            ++r.stores;
    }
    r.ops = sched.ops.size();

    eng.reset_stats();
    eng.execute(sched.ops);
    r.out.resize(128 * 32);
    eng.get_tensor("out", r.out.data(), 128, 32);
    r.stats = eng.stats();
    return r;
}

// The original's callers sometimes pass a config with a default.
size_t sram_of(const Engine::Config& cfg = Engine::Config())
{
    Engine eng(cfg);
    return eng.sram_bytes();
}

}  // namespace

int main()
{
    try {
        std::printf("mini_runtime C++ wrapper, kernel: %s (AVX2 %s)\n", get_active_kernel_name(),
                    is_avx2_available() ? "available" : "not available");
        std::mt19937 rng(42);

        // Defaults as in the original.
        Engine::Config defaults{};
        expect(defaults.sram_bytes == 256 * 1024 && !defaults.trace && !defaults.threaded, "Config defaults");
        expect(sram_of() == 256 * 1024, "Engine(Config()) has 256 KiB of SRAM");

        // 1. 64x64 in threaded mode, then sequential: same bits, right values.
        Matrix A = random_matrix(64, 64, rng, 1.0f), B = random_matrix(64, 64, rng, 1.0f);
        Engine::Config cfg;
        cfg.threaded = true;
        Engine::Stats st;
        std::vector<float> C_thr = matmul_64(cfg, A, B, &st);
        expect(st.loads == 16 && st.executes == 8 && st.stores == 4, "64x64 stats: 16 loads, 8 execs, 4 stores");
        Engine::Config seq_cfg;
        std::vector<float> C_seq = matmul_64(seq_cfg, A, B, nullptr);
        expect(C_thr == C_seq, "64x64: threaded == sequential");
        int far = count_far(C_thr, ref_layer(ref_of(A), 64, 64, B, false));
        expect(far == 0, "64x64 vs double reference: " + std::to_string(far) + " elements off");

        // 2. The MLP.
        Matrix x = random_matrix(128, 128, rng, 0.1f), w1 = random_matrix(128, 64, rng, 0.1f),
               w2 = random_matrix(64, 32, rng, 0.1f), w3 = random_matrix(32, 32, rng, 0.1f);
        Ref h1 = ref_layer(ref_of(x), 128, 128, w1, true);
        Ref h2 = ref_layer(h1, 128, 64, w2, true);
        Ref out = ref_layer(h2, 128, 32, w3, false);

        Engine::Config thr2;
        thr2.threaded = true;
        thr2.compute_threads = 2;
        MlpResult mt = run_mlp(cfg, x, w1, w2, w3);
        MlpResult ms = run_mlp(seq_cfg, x, w1, w2, w3);
        MlpResult m2 = run_mlp(thr2, x, w1, w2, w3);
        std::printf("MLP: %zu ops (%zu LOAD, %zu EXEC, %zu STORE); threaded: total %.3f ms, overlap %.3f ms\n", mt.ops,
                    mt.loads, mt.executes, mt.stores, static_cast<double>(mt.stats.total_ns) / 1e6,
                    static_cast<double>(mt.stats.overlap_ns) / 1e6);
        far = count_far(mt.out, out);
        expect(far == 0, "MLP vs double reference: " + std::to_string(far) + " elements off");
        expect(mt.out == ms.out, "MLP: threaded == sequential");
        expect(m2.out == ms.out, "MLP: threaded with 2 compute threads == sequential");
        expect(mt.stats.loads == mt.loads && mt.stats.executes == mt.executes && mt.stats.stores == mt.stores,
               "MLP stats count the schedule's ops");
        expect(mt.executes == 44 && mt.stores == 16, "MLP: 44 EXEC, 16 STORE");
        expect(ms.stats.overlap_ns == 0, "sequential mode has no overlap");

        // 3. Moving engines.
        Engine e1(cfg);
        e1.register_tensor("A", 32, 32);
        e1.register_tensor("B", 32, 32);
        e1.register_tensor("C", 32, 32);
        std::vector<float> eye(32 * 32, 0.0f), a32(A.v.begin(), A.v.begin() + 32 * 32);
        for (int i = 0; i < 32; ++i)
            eye[static_cast<size_t>(i) * 33] = 1.0f;
        e1.set_tensor("A", a32.data(), 32, 32);
        e1.set_tensor("B", eye.data(), 32, 32);
        Engine e2(std::move(e1));
        Engine e3{Engine::Config{}};
        e3 = std::move(e2);
        const uint32_t tb = static_cast<uint32_t>(TILE_BYTES);
        e3.execute({SchedLoad(0, 0, 0, 0, tb), SchedLoad(1, 0, 0, tb, tb), SchedExecute(0, 0, 0, 0, tb, 2 * tb),
                    SchedStore(2, 0, 0, 2 * tb, tb)});
        std::vector<float> c32(32 * 32);
        e3.get_tensor("C", c32.data(), 32, 32);
        expect(c32 == a32, "moved engine: A . I == A");
        expect(e1.sram_bytes() == 0 && e1.stats().loads == 0, "moved-from engine is empty");
        expect(e3.stats().loads == 2, "moved engine keeps its stats");
    } catch (const std::exception& ex) {
        std::printf("FAIL: exception: %s\n", ex.what());
        return 1;
    }
    return mini_runtime_example::finish();
}
