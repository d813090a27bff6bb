// parallel_lambda.cpp: libcllm's C API from C++17 with lambda callbacks.
//
// A small RAII wrapper owns a KissingSpheresSystem and keeps a
// std::function; the C callback is a captureless static trampoline that
// receives the wrapper through `user_data` and calls the std::function.
// The trampoline catches every exception: a C++ exception must never
// unwind into the library.
//
// Job 1 sums f(i) = i*i over 1,000,000 items with per-sphere partial sums
// and checks the total against the closed form. Job 2 shows that a lambda
// which throws is contained by the trampoline. Exit status 0 on success.
#include "cllm_kissing_spheres_threading.h"

#include <atomic>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

std::string last_error(const char* what) {
    const char* err = cllm_last_error();
    return std::string(what) + " failed: " + (err != nullptr ? err : "(no error message)");
}

// Owns one kissing-spheres system. Neither copyable nor movable: the library
// holds `this` as the callback's user_data.
class SphereSystem {
  public:
    using Callback = std::function<void(std::uint64_t item, int sphere_id)>;

    explicit SphereSystem(int levels) : sys_(kissing_spheres_create(levels)) {
        if (sys_ == nullptr) throw std::runtime_error(last_error("kissing_spheres_create"));
    }
    ~SphereSystem() { kissing_spheres_free(sys_); }  // stops (drains) first if running
    SphereSystem(const SphereSystem&) = delete;
    SphereSystem& operator=(const SphereSystem&) = delete;
    SphereSystem(SphereSystem&&) = delete;
    SphereSystem& operator=(SphereSystem&&) = delete;

    // Any callable taking (uint64_t item, int sphere_id). Only while stopped.
    template <class F>
    void on_item(F&& f) {
        // Workers may be calling the current callback: replace it only once
        // the library has accepted the change (it refuses while running).
        Callback next(std::forward<F>(f));
        check(kissing_spheres_set_work_callback(sys_, &SphereSystem::trampoline, this),
              "kissing_spheres_set_work_callback");
        callback_ = std::move(next);
    }

    void start() { check(kissing_spheres_start(sys_), "kissing_spheres_start"); }

    void distribute(std::vector<std::uint64_t>& items) {
        if (items.size() > static_cast<std::size_t>(INT32_MAX)) throw std::length_error("too many items");
        check(kissing_spheres_distribute_work(sys_, items.data(), static_cast<int>(items.size())),
              "kissing_spheres_distribute_work");
    }

    // true when every item is done, false on timeout.
    bool wait(std::int64_t timeout_ms) {
        const int rc = kissing_spheres_wait(sys_, timeout_ms);
        if (rc == KS_TIMEOUT) return false;
        check(rc, "kissing_spheres_wait");
        return true;
    }

    void print_stats() { kissing_spheres_print_stats(sys_); }

    int total_spheres() const {
        const int n = kissing_spheres_total_spheres(sys_);
        if (n < 1) throw std::runtime_error(last_error("kissing_spheres_total_spheres"));
        return n;
    }

    // Exceptions the callback threw (each one caught in the trampoline).
    std::uint64_t callback_failures() const { return failures_.load(); }
    std::string first_failure() const {
        std::lock_guard<std::mutex> lock(failure_mutex_);
        return first_failure_;
    }

  private:
    static void check(int rc, const char* what) {
        if (rc != KS_OK) throw std::runtime_error(last_error(what));
    }

    // Called by the worker threads; never lets an exception escape.
    static void trampoline(std::uint64_t item, int sphere_id, void* user_data) noexcept {
        auto* self = static_cast<SphereSystem*>(user_data);
        try {
            self->callback_(item, sphere_id);
        } catch (const std::exception& e) {
            self->record_failure(e.what());
        } catch (...) {
            self->record_failure("unknown exception");
        }
    }

    void record_failure(const char* what) noexcept {
        if (failures_.fetch_add(1) == 0) {
            try {
                std::lock_guard<std::mutex> lock(failure_mutex_);
                first_failure_ = what;
            } catch (...) {
                // Out of memory or a lock failure: the count is still right.
            }
        }
    }

    KissingSpheresSystem* sys_;
    Callback callback_;
    std::atomic<std::uint64_t> failures_{0};
    mutable std::mutex failure_mutex_;
    std::string first_failure_;
};

// One cache line per sphere so that spheres do not share counters' lines.
struct alignas(64) Partial {
    std::atomic<std::uint64_t> sum{0};
    std::atomic<std::uint64_t> count{0};
};

constexpr std::uint64_t kItems = 1000000;
constexpr std::int64_t kWaitMs = 120000;

int sum_of_squares() {
    SphereSystem system(2);
    const int spheres = system.total_spheres();
    std::unique_ptr<Partial[]> partials(new Partial[static_cast<std::size_t>(spheres)]);
    std::atomic<int> bad_sphere_ids{0};

    system.on_item([&](std::uint64_t item, int sphere_id) {
        if (sphere_id < 0 || sphere_id >= spheres) {
            bad_sphere_ids.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        Partial& p = partials[static_cast<std::size_t>(sphere_id)];
        p.sum.fetch_add(item * item, std::memory_order_relaxed);
        p.count.fetch_add(1, std::memory_order_relaxed);
    });

    std::vector<std::uint64_t> items(kItems);
    std::iota(items.begin(), items.end(), std::uint64_t{0});
    system.start();
    system.distribute(items);
    if (!system.wait(kWaitMs)) {
        std::fprintf(stderr, "sum_of_squares: timed out after %" PRId64 " ms\n", kWaitMs);
        return 1;
    }

    std::uint64_t sum = 0;
    std::uint64_t count = 0;
    int busy_spheres = 0;
    for (int s = 0; s < spheres; ++s) {
        const Partial& p = partials[static_cast<std::size_t>(s)];
        sum += p.sum.load();
        count += p.count.load();
        if (p.count.load() > 0) ++busy_spheres;
    }
    // sum_{i=0}^{n-1} i^2 = (n-1) n (2n-1) / 6; fits in 64 bits for n = 1e6.
    const std::uint64_t n = kItems;
    const std::uint64_t expected = (n - 1) * n * (2 * n - 1) / 6;

    system.print_stats();
    std::printf("sum_of_squares: %" PRIu64 " items on %d of %d spheres, sum %" PRIu64 " (expected %" PRIu64 ")\n",
                count, busy_spheres, spheres, sum, expected);
    if (bad_sphere_ids.load() != 0 || count != kItems || sum != expected) {
        std::fprintf(stderr, "sum_of_squares: WRONG RESULT (%d bad sphere ids)\n", bad_sphere_ids.load());
        return 1;
    }
    if (system.callback_failures() != 0) {
        std::fprintf(stderr, "sum_of_squares: unexpected exception: %s\n", system.first_failure().c_str());
        return 1;
    }
    return 0;
}

int exceptions_are_contained() {
    constexpr std::uint64_t items_total = 1000;
    SphereSystem system(1);
    std::atomic<std::uint64_t> ok{0};
    system.on_item([&](std::uint64_t item, int) {
        if (item % 10 == 0) throw std::runtime_error("item " + std::to_string(item) + " is a multiple of 10");
        ok.fetch_add(1, std::memory_order_relaxed);
    });
    std::vector<std::uint64_t> items(items_total);
    std::iota(items.begin(), items.end(), std::uint64_t{0});
    system.start();
    system.distribute(items);
    if (!system.wait(kWaitMs)) {
        std::fprintf(stderr, "exceptions_are_contained: timed out\n");
        return 1;
    }
    const std::uint64_t failures = system.callback_failures();
    std::printf("exceptions_are_contained: %" PRIu64 " items ok, %" PRIu64 " exceptions caught (first: %s)\n",
                ok.load(), failures, system.first_failure().c_str());
    if (failures != items_total / 10 || ok.load() != items_total - items_total / 10) {
        std::fprintf(stderr, "exceptions_are_contained: WRONG COUNTS\n");
        return 1;
    }
    return 0;
}

}  // namespace

int main() {
    try {
        std::printf("libcllm %s\n", cllm_version());
        int rc = sum_of_squares();
        if (rc == 0) rc = exceptions_are_contained();
        std::printf("%s\n", rc == 0 ? "parallel_lambda: OK" : "parallel_lambda: FAILED");
        return rc;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "parallel_lambda: %s\n", e.what());
        return 1;
    }
}
