/* test_util.h: shared helpers of the libcllm C tests (c_tests/test_*.c).
 *
 * Include it FIRST in every test (it sets the feature-test macros the
 * POSIX/GNU declarations need). Every helper is `static`, so each test is a
 * single translation unit with its own counters.
 *
 *   CHECK(cond)               one check; on failure prints file:line and
 *                             the expression
 *   CHECKF(cond, fmt, ...)    same, plus a printf-style explanation
 *   CHECK_EQ_I64(a, b)        integer equality, prints both values
 *   CHECK_ERR(expr, expected) clears the thread's libcllm error, evaluates
 *                             expr, checks it returned `expected` AND that
 *                             cllm_last_error() is non-NULL and non-empty
 *   CHECK_NULL_ERR(expr)      same for functions returning a pointer (NULL)
 *   TU_WATCHDOG(seconds)      alarm(): a hang becomes a failure (exit 3)
 *   TU_SUMMARY()              prints "N passed, N failed"; returns the
 *                             process exit code (0 only when all passed)
 *   TU_SUM_STAT(sys, field)   a KissingSphereStats counter summed over all
 *                             spheres
 *   tu_os_thread_count()      entries of /proc/self/task
 *   tu_now(), tu_deadline_ms() monotonic seconds; absolute deadline for
 *                             pthread_cond_timedwait
 *   tu_shuffle_int(), tu_busy_work()  deterministic shuffle; real CPU work
 *   tu_options(levels, threads)  default options with those two fields set
 *   tu_create_opts(&o), tu_create(levels, threads), tu_create_levels(levels),
 *   tu_create_buffers(levels, buffer_len)
 *                             create a system; NULL is one failed check
 *                             (reported at the caller's line)
 *   tu_create_and_run(levels, n)  a stopped system that ran items 0..n-1
 *   TuGate, tu_gate_*()       a callback blocks until the test opens the gate
 *   tu_begin(seconds), tu_finish(name)  a test main's first and last steps
 *
 * No helper sleeps: waiting is done with condition variables, atomics and
 * the library's own wait calls.
 *
 * One line is printed per failed check (at most TU_MAX_FAIL_LINES lines;
 * further failures are still counted and a note says how many were not
 * printed).
 */
#ifndef CLLM_C_TESTS_TEST_UTIL_H
#define CLLM_C_TESTS_TEST_UTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "libcllm.h"

#ifndef TU_MAX_FAIL_LINES
#define TU_MAX_FAIL_LINES 200
#endif

static atomic_long tu_passed_count;
static atomic_long tu_failed_count;
static pthread_mutex_t tu_print_lock = PTHREAD_MUTEX_INITIALIZER;

/* Records one check. Thread-safe (checks may run in worker callbacks). */
static inline bool tu_check(bool ok, const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static inline bool tu_check(bool ok, const char *file, int line, const char *expr, const char *fmt, ...)
{
    if (ok) {
        atomic_fetch_add(&tu_passed_count, 1);
        return true;
    }
    long n = atomic_fetch_add(&tu_failed_count, 1) + 1;
    if (n <= TU_MAX_FAIL_LINES) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        pthread_mutex_lock(&tu_print_lock);
        if (msg[0] != '\0')
            printf("FAIL %s:%d: %s -- %s\n", file, line, expr, msg);
        else
            printf("FAIL %s:%d: %s\n", file, line, expr);
        fflush(stdout);
        pthread_mutex_unlock(&tu_print_lock);
    }
    return false;
}

#define CHECK(cond) tu_check((cond) ? true : false, __FILE__, __LINE__, #cond, "%s", "")
#define CHECKF(cond, ...) tu_check((cond) ? true : false, __FILE__, __LINE__, #cond, __VA_ARGS__)

/* One integer-equality check, reported at file:line as `expr`. */
static inline bool tu_check_eq_at(const char *file, int line, const char *expr, long long got, long long expected)
{
    return tu_check(got == expected, file, line, expr, "got %lld, expected %lld", got, expected);
}

#define CHECK_EQ_I64(a, b)                                                                         \
    do {                                                                                           \
        long long tu_a_ = (long long)(a);                                                          \
        long long tu_b_ = (long long)(b);                                                          \
        tu_check_eq_at(__FILE__, __LINE__, #a " == " #b, tu_a_, tu_b_);                            \
    } while (0)

/* The last error of this thread, or "(null)" for printing. */
static inline const char *tu_err(void)
{
    const char *e = cllm_last_error();
    return e ? e : "(null)";
}

static inline bool tu_error_is_set(void)
{
    const char *e = cllm_last_error();
    return e != NULL && e[0] != '\0';
}

/* expr must return `expected` and leave a non-empty error message. */
#define CHECK_ERR(expr, expected)                                                                  \
    do {                                                                                           \
        cllm_clear_error();                                                                        \
        long long tu_r_ = (long long)(expr);                                                       \
        long long tu_x_ = (long long)(expected);                                                   \
        tu_check_eq_at(__FILE__, __LINE__, #expr " == " #expected, tu_r_, tu_x_);                  \
        tu_check(tu_error_is_set(), __FILE__, __LINE__, "cllm_last_error() set after " #expr,      \
                 "cllm_last_error() is %s", cllm_last_error() ? "empty" : "NULL");                 \
    } while (0)

/* expr must return NULL and leave a non-empty error message. */
#define CHECK_NULL_ERR(expr)                                                                       \
    do {                                                                                           \
        cllm_clear_error();                                                                        \
        const void *tu_p_ = (const void *)(expr);                                                  \
        tu_check(tu_p_ == NULL, __FILE__, __LINE__, #expr " == NULL", "got %p", tu_p_);            \
        tu_check(tu_error_is_set(), __FILE__, __LINE__, "cllm_last_error() set after " #expr,      \
                 "cllm_last_error() is %s", cllm_last_error() ? "empty" : "NULL");                 \
    } while (0)

static inline void tu_watchdog_handler(int sig)
{
    (void)sig;
    static const char msg[] = "FAIL watchdog: test did not finish in time (hang?)\n";
    ssize_t ignored = write(STDOUT_FILENO, msg, sizeof msg - 1);
    (void)ignored;
    _exit(3);
}

/* A hang turns into a failure after `seconds`. */
static inline void TU_WATCHDOG(unsigned seconds)
{
    signal(SIGALRM, tu_watchdog_handler);
    alarm(seconds);
}

static inline int TU_SUMMARY(void)
{
    long passed = atomic_load(&tu_passed_count);
    long failed = atomic_load(&tu_failed_count);
    if (failed > TU_MAX_FAIL_LINES)
        printf("(%ld further failures not printed)\n", failed - TU_MAX_FAIL_LINES);
    printf("%ld passed, %ld failed\n", passed, failed);
    fflush(stdout);
    return failed == 0 ? 0 : 1;
}

/* Monotonic time in seconds. */
static inline double tu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* An absolute CLOCK_REALTIME deadline `ms` from now, for
 * pthread_cond_timedwait. */
static inline struct timespec tu_deadline_ms(long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* OS threads of this process: the entries of /proc/self/task. -1 when it
 * cannot be read. */
static inline int tu_os_thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n;
}

/* Sum of one counter over every sphere of a system (-1 on error). */
#define TU_SUM_STAT(sys, field) tu_sum_stat_impl((sys), offsetof(KissingSphereStats, field))

static inline long long tu_sum_stat_impl(KissingSpheresSystem *sys, size_t offset)
{
    int total = kissing_spheres_total_spheres(sys);
    if (total < 0)
        return -1;
    long long sum = 0;
    for (int s = 0; s < total; s++) {
        KissingSphereStats st;
        if (kissing_spheres_sphere_stats(sys, s, &st) != KS_OK)
            return -1;
        uint64_t v;
        memcpy(&v, (const char *)&st + offset, sizeof v);
        sum += (long long)v;
    }
    return sum;
}

/* Small deterministic PRNG (xorshift64*) for shuffles and work sizes. */
static inline uint64_t tu_rand_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static inline void tu_shuffle_int(int *a, int n, uint64_t seed)
{
    uint64_t st = seed ? seed : 0x9E3779B97F4A7C15ULL;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(tu_rand_next(&st) % (uint64_t)(i + 1));
        int t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* A few nanoseconds-to-microseconds of real, non-removable work. */
static inline uint64_t tu_busy_work(uint64_t seed, unsigned rounds)
{
    volatile uint64_t x = seed | 1;
    for (unsigned i = 0; i < rounds; i++)
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return x;
}

/* ---- systems ------------------------------------------------------------- */

/* kissing_spheres_default_options() with num_levels and num_threads set (0 threads = automatic). */
static inline KissingSpheresOptions tu_options(int levels, int threads)
{
    KissingSpheresOptions o;
    kissing_spheres_default_options(&o);
    o.num_levels = levels;
    o.num_threads = threads;
    return o;
}

/* create_with_options(o) as one check "sys != NULL" at file:line; returns the system or NULL. */
static inline KissingSpheresSystem *tu_create_opts_at(const char *file, int line, const KissingSpheresOptions *o)
{
    KissingSpheresSystem *sys = kissing_spheres_create_with_options(o);
    tu_check(sys != NULL, file, line, "sys != NULL",
             "create_with_options(levels=%d, spheres=%d, threads=%d, buffer_len=%lld, mailbox_capacity=%d, "
             "pin_threads=%d): %s",
             o->num_levels, o->num_spheres, o->num_threads, (long long)o->buffer_len, o->mailbox_capacity,
             (int)o->pin_threads, tu_err());
    return sys;
}

/* tu_options(levels, threads) created as by tu_create_opts_at. */
static inline KissingSpheresSystem *tu_create_at(const char *file, int line, int levels, int threads)
{
    KissingSpheresOptions o = tu_options(levels, threads);
    return tu_create_opts_at(file, line, &o);
}

/* tu_options(levels, 0) with reduction buffers of buffer_len floats, created as by tu_create_opts_at. */
static inline KissingSpheresSystem *tu_create_buffers_at(const char *file, int line, int levels, int64_t buffer_len)
{
    KissingSpheresOptions o = tu_options(levels, 0);
    o.buffer_len = buffer_len;
    return tu_create_opts_at(file, line, &o);
}

/* kissing_spheres_create(levels) as one check "sys != NULL" at file:line; returns the system or NULL. */
static inline KissingSpheresSystem *tu_create_levels_at(const char *file, int line, int levels)
{
    KissingSpheresSystem *sys = kissing_spheres_create(levels);
    tu_check(sys != NULL, file, line, "sys != NULL", "create(%d): %s", levels, tu_err());
    return sys;
}

/* tu_create_levels_at, then start, distribute_range(0, n), wait(10 s) and stop, one check each. */
static inline KissingSpheresSystem *tu_create_and_run_at(const char *file, int line, int levels, uint64_t n)
{
    KissingSpheresSystem *sys = tu_create_levels_at(file, line, levels);
    if (sys == NULL)
        return NULL;
    tu_check_eq_at(file, line, "kissing_spheres_start(sys) == KS_OK", kissing_spheres_start(sys), KS_OK);
    tu_check_eq_at(file, line, "kissing_spheres_distribute_range(sys, 0, n) == KS_OK",
                   kissing_spheres_distribute_range(sys, 0, n), KS_OK);
    tu_check_eq_at(file, line, "kissing_spheres_wait(sys, 10000) == KS_OK", kissing_spheres_wait(sys, 10000), KS_OK);
    tu_check_eq_at(file, line, "kissing_spheres_stop(sys) == KS_OK", kissing_spheres_stop(sys), KS_OK);
    return sys;
}

#define tu_create_opts(o) tu_create_opts_at(__FILE__, __LINE__, (o))
#define tu_create(levels, threads) tu_create_at(__FILE__, __LINE__, (levels), (threads))
#define tu_create_buffers(levels, buffer_len) tu_create_buffers_at(__FILE__, __LINE__, (levels), (buffer_len))
#define tu_create_levels(levels) tu_create_levels_at(__FILE__, __LINE__, (levels))
#define tu_create_and_run(levels, n) tu_create_and_run_at(__FILE__, __LINE__, (levels), (n))

/* ---- gate: a callback that blocks until the test lets it go -------------- */

typedef struct {
    pthread_mutex_t m;
    pthread_cond_t cv;
    bool started; /* a thread has entered tu_gate_wait */
    bool release; /* tu_gate_open was called */
} TuGate;

/* A closed gate that nobody waits at. */
static inline void tu_gate_init(TuGate *g)
{
    pthread_mutex_init(&g->m, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->started = false;
    g->release = false;
}

/* Frees the gate's mutex and condition variable. */
static inline void tu_gate_destroy(TuGate *g)
{
    pthread_mutex_destroy(&g->m);
    pthread_cond_destroy(&g->cv);
}

/* Waits until `*flag` is true or `ms` have passed; called with g->m held. */
static inline void tu_gate_wait_flag(TuGate *g, const bool *flag, long ms)
{
    struct timespec dl = tu_deadline_ms(ms);
    while (!*flag)
        if (pthread_cond_timedwait(&g->cv, &g->m, &dl) == ETIMEDOUT)
            break;
}

/* Marks the gate started, then blocks until tu_gate_open (at most `ms`). */
static inline void tu_gate_wait(TuGate *g, long ms)
{
    pthread_mutex_lock(&g->m);
    g->started = true;
    pthread_cond_broadcast(&g->cv);
    tu_gate_wait_flag(g, &g->release, ms);
    pthread_mutex_unlock(&g->m);
}

/* Blocks until a thread has entered tu_gate_wait (at most `ms`). */
static inline void tu_gate_wait_started(TuGate *g, long ms)
{
    pthread_mutex_lock(&g->m);
    tu_gate_wait_flag(g, &g->started, ms);
    pthread_mutex_unlock(&g->m);
}

/* Opens the gate: tu_gate_wait returns, now and later. */
static inline void tu_gate_open(TuGate *g)
{
    pthread_mutex_lock(&g->m);
    g->release = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->m);
}

/* ---- main ------------------------------------------------------------------ */

static double tu_start_time;

/* A test main's first step: the watchdog, and the clock tu_finish reads. */
static inline void tu_begin(unsigned watchdog_seconds)
{
    TU_WATCHDOG(watchdog_seconds);
    tu_start_time = tu_now();
}

/* A test main's last step: prints "<name>: <seconds> s" and the summary; returns the exit code. */
static inline int tu_finish(const char *name)
{
    printf("%s: %.2f s\n", name, tu_now() - tu_start_time);
    return TU_SUMMARY();
}

#endif /* CLLM_C_TESTS_TEST_UTIL_H */
