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

#include "cllm.h"

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

#define CHECK_EQ_I64(a, b)                                                                         \
    do {                                                                                           \
        long long tu_a_ = (long long)(a);                                                          \
        long long tu_b_ = (long long)(b);                                                          \
        tu_check(tu_a_ == tu_b_, __FILE__, __LINE__, #a " == " #b, "got %lld, expected %lld",      \
                 tu_a_, tu_b_);                                                                    \
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
        tu_check(tu_r_ == tu_x_, __FILE__, __LINE__, #expr " == " #expected,                      \
                 "got %lld, expected %lld", tu_r_, tu_x_);                                         \
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

#endif /* CLLM_C_TESTS_TEST_UTIL_H */
