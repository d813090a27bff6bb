/* test_demo_flow_without_sleep.c
 *
 * The original demo (demos/kissing_spheres_demo.c) did:
 *   create(levels) -> start -> distribute items 0..N-1 -> sleep -> print
 *   stats -> stop -> free
 * and never knew whether the work was done. Here the same flow waits with
 * kissing_spheres_wait (no sleep) and checks that:
 *   - every item reaches the callback exactly once (per-item atomic
 *     counters), for levels 1..4 and N = 1000 and 100000;
 *   - the sum of items_processed over all spheres equals N, and nothing is
 *     pending afterwards;
 *   - the demo path without a callback (items only counted) gives the same
 *     totals;
 *   - items distributed before start are queued and run on start;
 *   - worker_threads <= cllm_usable_cpus() for create(levels), while
 *     create(4) still reports 1885 spheres;
 *   - for 4 levels, the OS thread count (/proc/self/task) does not grow on
 *     create, grows by at most worker_threads on start, and is back to the
 *     original after stop;
 *   - sphere states: a callback (sampled) sees its sphere in
 *     SPHERE_PROCESSING, also when two workers run items of the same
 *     sphere (1 level, 2 workers); every sphere is SPHERE_TERMINATED after
 *     stop; busy_ns > 0 after real work;
 *   - print_stats flushes C stdio first (earlier printf text comes before
 *     the table) and prints the same text as kissing_spheres_stats_table.
 */
#include "test_util.h"

#include <sched.h>

typedef struct {
    atomic_uint *counts; /* one counter per item */
    uint64_t n;
    atomic_ullong out_of_range; /* items the callback got that were never distributed */
    atomic_ullong bad_sphere;   /* sphere ids outside 0..total-1 */
    int total_spheres;
    KissingSpheresSystem *sys; /* for state sampling; NULL = off */
    atomic_ullong not_processing;
    atomic_int last_bad_state;
} CountCtx;

static void count_cb(uint64_t item, int sphere_id, void *user_data)
{
    CountCtx *c = user_data;
    if (sphere_id < 0 || sphere_id >= c->total_spheres)
        atomic_fetch_add(&c->bad_sphere, 1);
    if (item >= c->n) {
        atomic_fetch_add(&c->out_of_range, 1);
        return;
    }
    atomic_fetch_add_explicit(&c->counts[item], 1, memory_order_relaxed);
    /* The sphere running an item is SPHERE_PROCESSING (sampled). */
    if (c->sys != NULL && item % 101 == 0) {
        KissingSphereInfo info;
        if (kissing_spheres_sphere_info(c->sys, sphere_id, &info) != KS_OK || info.state != SPHERE_PROCESSING) {
            atomic_fetch_add(&c->not_processing, 1);
            atomic_store(&c->last_bad_state, kissing_spheres_sphere_info(c->sys, sphere_id, &info) == KS_OK
                                                 ? info.state
                                                 : -1);
        }
    }
}

static const int expected_total[5] = {0, 1, 13, 157, 1885};

/* Counts of items whose counter is != 1 (missing, duplicated). */
static void check_exactly_once(const CountCtx *c, int levels, uint64_t n)
{
    uint64_t missing = 0, duplicated = 0, first_bad = UINT64_MAX;
    for (uint64_t i = 0; i < n; i++) {
        unsigned v = atomic_load(&c->counts[i]);
        if (v != 1 && first_bad == UINT64_MAX)
            first_bad = i;
        if (v == 0)
            missing++;
        else if (v > 1)
            duplicated++;
    }
    CHECKF(missing == 0 && duplicated == 0,
           "levels=%d N=%" PRIu64 ": %" PRIu64 " items never ran, %" PRIu64
           " ran more than once (first bad item %" PRIu64 ")",
           levels, n, missing, duplicated, first_bad);
    CHECKF(atomic_load(&c->out_of_range) == 0, "levels=%d N=%" PRIu64 ": %llu unknown items reached the callback",
           levels, n, (unsigned long long)atomic_load(&c->out_of_range));
    CHECKF(atomic_load(&c->bad_sphere) == 0, "levels=%d N=%" PRIu64 ": %llu callbacks got a bad sphere id", levels,
           n, (unsigned long long)atomic_load(&c->bad_sphere));
}

/* The demo flow with a counting callback. */
static void demo_with_callback(int levels, uint64_t n, bool distribute_before_start)
{
    const char *when = distribute_before_start ? "before start" : "after start";
    KissingSpheresSystem *sys = tu_create_levels(levels);
    if (sys == NULL)
        return;
    int usable = cllm_usable_cpus();
    int workers = kissing_spheres_worker_threads(sys);
    CHECKF(workers >= 1 && workers <= usable, "levels=%d: worker_threads=%d, usable cpus=%d", levels, workers,
           usable);
    CHECK_EQ_I64(kissing_spheres_total_spheres(sys), expected_total[levels]);
    CHECK_EQ_I64(kissing_spheres_num_levels(sys), levels);

    CountCtx ctx = {.n = n, .total_spheres = expected_total[levels]};
    ctx.counts = calloc(n, sizeof *ctx.counts);
    uint64_t *items = malloc(n * sizeof *items);
    if (ctx.counts == NULL || items == NULL) {
        CHECK(!"out of memory");
        free(ctx.counts);
        free(items);
        kissing_spheres_free(sys);
        return;
    }
    for (uint64_t i = 0; i < n; i++)
        items[i] = i;
    ctx.sys = sys;
    CHECK_EQ_I64(kissing_spheres_set_work_callback(sys, count_cb, &ctx), KS_OK);

    if (distribute_before_start) {
        CHECK_EQ_I64(kissing_spheres_distribute_work(sys, items, (int)n), KS_OK);
        CHECKF(kissing_spheres_pending(sys) == (int64_t)n, "levels=%d: pending before start = %lld, expected %" PRIu64,
               levels, (long long)kissing_spheres_pending(sys), n);
        /* Nothing may run before start. */
        CHECK_EQ_I64(TU_SUM_STAT(sys, items_processed), 0);
        CHECKF(kissing_spheres_start(sys) == KS_OK, "start: %s", tu_err());
    } else {
        CHECKF(kissing_spheres_start(sys) == KS_OK, "start: %s", tu_err());
        CHECK_EQ_I64(kissing_spheres_is_running(sys), 1);
        CHECK_EQ_I64(kissing_spheres_distribute_work(sys, items, (int)n), KS_OK);
    }
    /* The caller's array is copied: clobbering it must not change the work. */
    memset(items, 0xff, n * sizeof *items);

    int rc = kissing_spheres_wait(sys, 30000);
    CHECKF(rc == KS_OK, "levels=%d N=%" PRIu64 " (%s): wait returned %d (%s)", levels, n, when, rc, tu_err());
    CHECK_EQ_I64(kissing_spheres_pending(sys), 0);
    check_exactly_once(&ctx, levels, n);
    long long processed = TU_SUM_STAT(sys, items_processed);
    CHECKF(processed == (long long)n, "levels=%d N=%" PRIu64 " (%s): sum of items_processed = %lld", levels, n, when,
           processed);
    CHECK_EQ_I64(TU_SUM_STAT(sys, items_failed), 0);
    CHECKF(atomic_load(&ctx.not_processing) == 0,
           "levels=%d N=%" PRIu64 ": %llu sampled callbacks saw their sphere in state %d, not SPHERE_PROCESSING",
           levels, n, (unsigned long long)atomic_load(&ctx.not_processing), atomic_load(&ctx.last_bad_state));
    if (n >= 100000)
        CHECKF(TU_SUM_STAT(sys, busy_ns) > 0, "levels=%d N=%" PRIu64 ": busy_ns is 0 over all spheres", levels, n);
    if (n == 1000 && !distribute_before_start)
        kissing_spheres_print_stats(sys);
    CHECKF(kissing_spheres_stop(sys) == KS_OK, "stop: %s", tu_err());
    CHECK_EQ_I64(kissing_spheres_is_running(sys), 0);
    int not_terminated = 0, first_state = -1;
    for (int s = 0; s < expected_total[levels]; s++) {
        KissingSphereInfo info = {.state = -1};
        if (kissing_spheres_sphere_info(sys, s, &info) != KS_OK || info.state != SPHERE_TERMINATED) {
            if (not_terminated++ == 0)
                first_state = info.state;
        }
    }
    CHECKF(not_terminated == 0, "levels=%d: %d spheres not SPHERE_TERMINATED after stop (first state %d)", levels,
           not_terminated, first_state);
    /* Stop may not run anything twice either. */
    check_exactly_once(&ctx, levels, n);
    kissing_spheres_free(sys);
    free(ctx.counts);
    free(items);
}

/* The original demo path: no callback, items only counted. */
static void demo_without_callback(int levels, uint64_t n)
{
    KissingSpheresSystem *sys = tu_create_levels(levels);
    if (sys == NULL)
        return;
    uint64_t *items = malloc(n * sizeof *items);
    if (items == NULL) {
        CHECK(!"out of memory");
        kissing_spheres_free(sys);
        return;
    }
    for (uint64_t i = 0; i < n; i++)
        items[i] = i;
    CHECKF(kissing_spheres_start(sys) == KS_OK, "start: %s", tu_err());
    CHECK_EQ_I64(kissing_spheres_distribute_work(sys, items, (int)n), KS_OK);
    int rc = kissing_spheres_wait(sys, 30000);
    CHECKF(rc == KS_OK, "levels=%d N=%" PRIu64 " (no callback): wait returned %d (%s)", levels, n, rc, tu_err());
    CHECK_EQ_I64(kissing_spheres_pending(sys), 0);
    long long processed = TU_SUM_STAT(sys, items_processed);
    CHECKF(processed == (long long)n, "levels=%d N=%" PRIu64 " (no callback): sum of items_processed = %lld", levels,
           n, processed);
    if (n == 1000 && levels == 2)
        kissing_spheres_print_stats(sys);
    CHECKF(kissing_spheres_stop(sys) == KS_OK, "stop: %s", tu_err());
    kissing_spheres_free(sys);
    free(items);
}

/* One sphere, two workers: both run items reported as sphere 0. While one
 * item is still running, the sphere must read SPHERE_PROCESSING even after
 * the other worker finished its item on the same sphere. The first item
 * spins (sched_yield, bounded) on kissing_spheres_pending until the other
 * item is completely finished. */
typedef struct {
    KissingSpheresSystem *sys;
    pthread_mutex_t m;
    bool first_taken;
    int state_seen;
    bool other_finished;
} ShareCtx;

static void share_cb(uint64_t item, int sphere_id, void *user_data)
{
    (void)item;
    (void)sphere_id;
    ShareCtx *c = user_data;
    pthread_mutex_lock(&c->m);
    bool first = !c->first_taken;
    c->first_taken = true;
    pthread_mutex_unlock(&c->m);
    if (!first)
        return;
    double deadline = tu_now() + 5.0;
    while (kissing_spheres_pending(c->sys) > 1 && tu_now() < deadline)
        sched_yield();
    c->other_finished = kissing_spheres_pending(c->sys) == 1;
    KissingSphereInfo info = {.state = -1};
    kissing_spheres_sphere_info(c->sys, 0, &info);
    c->state_seen = info.state;
}

static void shared_sphere_state(void)
{
    KissingSpheresSystem *sys = tu_create(1, 2);
    if (sys == NULL)
        return;
    for (int round = 0; round < 3; round++) {
        ShareCtx c = {.sys = sys, .state_seen = -1};
        pthread_mutex_init(&c.m, NULL);
        CHECK_EQ_I64(kissing_spheres_set_work_callback(sys, share_cb, &c), KS_OK);
        uint64_t items[2] = {1, 2};
        CHECK_EQ_I64(kissing_spheres_enqueue(sys, 0, items, 2), KS_OK);
        CHECK_EQ_I64(kissing_spheres_start(sys), KS_OK);
        CHECK_EQ_I64(kissing_spheres_wait(sys, 10000), KS_OK);
        CHECK_EQ_I64(kissing_spheres_stop(sys), KS_OK);
        CHECKF(c.other_finished, "round %d: the second item never finished while the first was running", round);
        CHECKF(c.state_seen == SPHERE_PROCESSING,
               "round %d: 1 sphere, 2 workers: sphere 0 reads state %d while one of its items is still running "
               "(the other worker's finished item overwrote SPHERE_PROCESSING)",
               round, c.state_seen);
        pthread_mutex_destroy(&c.m);
    }
    kissing_spheres_free(sys);
}

/* print_stats flushes C stdio first, and prints the same table as
 * kissing_spheres_stats_table. stdout is redirected to a temporary file. */
static void print_stats_interleaving(void)
{
    KissingSpheresSystem *sys = tu_create_and_run(2, 1000);
    if (sys == NULL)
        return;
    int64_t tlen = kissing_spheres_stats_table(sys, NULL, 0);
    CHECKF(tlen > 0, "stats_table(NULL, 0) = %lld", (long long)tlen);
    if (tlen <= 0) {
        kissing_spheres_free(sys);
        return;
    }
    char *table = malloc((size_t)tlen + 1);
    CHECK_EQ_I64(kissing_spheres_stats_table(sys, table, (size_t)tlen + 1), tlen);

    FILE *tmp = tmpfile();
    CHECK(tmp != NULL);
    if (tmp == NULL) {
        free(table);
        kissing_spheres_free(sys);
        return;
    }
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    dup2(fileno(tmp), STDOUT_FILENO);
    printf("MARK-BEFORE|"); /* no newline: still in stdio's buffer */
    kissing_spheres_print_stats(sys);
    printf("|MARK-AFTER\n");
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);

    rewind(tmp);
    size_t cap = (size_t)tlen + 64;
    char *got = calloc(cap + 1, 1);
    size_t n = fread(got, 1, cap, tmp);
    fclose(tmp);
    size_t before_len = strlen("MARK-BEFORE|");
    CHECKF(n >= before_len && strncmp(got, "MARK-BEFORE|", before_len) == 0,
           "print_stats output came before earlier printf output: %.40s", got);
    CHECKF(n == before_len + (size_t)tlen + strlen("|MARK-AFTER\n"), "captured %zu bytes, expected %zu", n,
           before_len + (size_t)tlen + strlen("|MARK-AFTER\n"));
    CHECKF(n >= before_len + (size_t)tlen && memcmp(got + before_len, table, (size_t)tlen) == 0,
           "print_stats did not print the stats_table text");
    CHECKF(n >= 12 && strcmp(got + n - strlen("|MARK-AFTER\n"), "|MARK-AFTER\n") == 0,
           "printf output after print_stats is not at the end");
    free(got);
    free(table);
    kissing_spheres_free(sys);
}

/* create(4): 1885 logical spheres, at most usable-CPU worker threads, and
 * the OS threads really come and go with start/stop. */
static void thread_accounting(void)
{
    int usable = cllm_usable_cpus();
    int before_create = tu_os_thread_count();
    CHECKF(before_create >= 1, "cannot count /proc/self/task entries");
    KissingSpheresSystem *sys = tu_create_levels(4);
    if (sys == NULL)
        return;
    int workers = kissing_spheres_worker_threads(sys);
    CHECKF(workers >= 1 && workers <= usable, "create(4): worker_threads=%d, usable cpus=%d", workers, usable);
    CHECK_EQ_I64(kissing_spheres_total_spheres(sys), 1885);
    int after_create = tu_os_thread_count();
    CHECKF(after_create == before_create, "create(4) started OS threads: %d -> %d", before_create, after_create);

    CountCtx ctx = {.n = 100000, .total_spheres = 1885};
    ctx.counts = calloc(ctx.n, sizeof *ctx.counts);
    CHECK(ctx.counts != NULL);
    if (ctx.counts == NULL) {
        kissing_spheres_free(sys);
        return;
    }
    CHECK_EQ_I64(kissing_spheres_set_work_callback(sys, count_cb, &ctx), KS_OK);
    CHECKF(kissing_spheres_start(sys) == KS_OK, "start: %s", tu_err());
    int after_start = tu_os_thread_count();
    CHECKF(after_start > after_create && after_start <= after_create + workers,
           "4 levels: OS threads %d before start, %d after start, worker_threads=%d (1885 spheres must not mean "
           "1885 threads)",
           after_create, after_start, workers);
    CHECK_EQ_I64(kissing_spheres_distribute_range(sys, 0, ctx.n), KS_OK);
    CHECKF(kissing_spheres_wait(sys, 30000) == KS_OK, "wait: %s", tu_err());
    int while_running = tu_os_thread_count();
    CHECKF(while_running <= after_create + workers, "4 levels: %d OS threads after running work (base %d, workers %d)",
           while_running, after_create, workers);
    check_exactly_once(&ctx, 4, ctx.n);
    CHECKF(kissing_spheres_stop(sys) == KS_OK, "stop: %s", tu_err());
    int after_stop = tu_os_thread_count();
    CHECKF(after_stop == after_create, "4 levels: %d OS threads after stop, %d before start", after_stop,
           after_create);
    kissing_spheres_free(sys);
    int after_free = tu_os_thread_count();
    CHECKF(after_free == before_create, "%d OS threads after free, %d before create", after_free, before_create);
    free(ctx.counts);
}

int main(void)
{
    tu_begin(60);
    static const uint64_t sizes[] = {1000, 100000};
    for (int levels = 1; levels <= 4; levels++) {
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            demo_with_callback(levels, sizes[k], false);
            demo_with_callback(levels, sizes[k], true);
            demo_without_callback(levels, sizes[k]);
        }
    }
    thread_accounting();
    print_stats_interleaving();
    shared_sphere_state();
    return tu_finish("test_demo_flow_without_sleep");
}
