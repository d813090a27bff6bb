/* test_exactly_once_stress.c
 *
 * Exactly-once under concurrent distribution (the original's work ring
 * duplicated and lost items with several consumers and dropped everything
 * beyond 1000 per sphere):
 *   - a 4-level system (1885 spheres) runs while 4 C pthreads each
 *     distribute 25,000 items (disjoint id ranges) in calls of various
 *     sizes (1, 7, 1000, 13, 4096, ...) and the main thread adds a range
 *     with kissing_spheres_distribute_range and items enqueued directly on
 *     inner and leaf spheres (root, level 1, 2, 3); the callback increments
 *     a per-item atomic counter and does a little variable work; the main
 *     thread and two more threads wait (kissing_spheres_wait, concurrently);
 *     every counter must be exactly 1; 20 rounds on the same system;
 *   - sum of items_processed over all spheres == all items ever
 *     distributed; pending == 0 after each wait; per sphere, the number of
 *     callbacks that reported that sphere id == its items_processed;
 *   - more work (including chains: items whose callback distributes a
 *     follow-up item, 5 deep) then kissing_spheres_stop at once: stop
 *     drains everything, chains included;
 *   - work distributed while stopped stays pending (> 0), is reported by
 *     kissing_spheres_cancel_pending (which returns that count), pending
 *     becomes 0, and the cancelled items never run, even after a restart;
 *   - more workers than CPUs when asked for (options num_threads = 8 with
 *     pin_threads, and create_dynamic(6)): still exactly once, and the OS
 *     thread count grows by exactly that many on start.
 */
#include "test_util.h"

enum {
    THREADS = 4,
    PER_THREAD = 25000,
    RANGE_COUNT = 5000,
    ENQ_COUNT = 2000,
    RANGE_FIRST = THREADS * PER_THREAD,
    ENQ_FIRST = RANGE_FIRST + RANGE_COUNT,
    ROUND_ITEMS = ENQ_FIRST + ENQ_COUNT, /* ids 0..ROUND_ITEMS-1 */
    EXTRA_FIRST = ROUND_ITEMS,           /* ids used after the rounds */
    EXTRA_COUNT = 60000,
    CHAIN_ROOTS = 1000,
    CHAIN_DEPTH = 5,
    CHAIN_FIRST = EXTRA_FIRST + EXTRA_COUNT,
    CHAIN_COUNT = CHAIN_ROOTS * CHAIN_DEPTH,
    STOPPED_FIRST = CHAIN_FIRST + CHAIN_COUNT,
    STOPPED_COUNT = 3000,
    ALL_IDS = STOPPED_FIRST + STOPPED_COUNT,
    ROUNDS = 20,
    MAX_SPHERES = 1885,
};

static atomic_uint counts[ALL_IDS];
static atomic_ullong per_sphere[MAX_SPHERES];
static atomic_ullong unknown_items;
static atomic_ullong bad_sphere_ids;
static atomic_ullong chain_failures;
static atomic_ullong sink;

static void stress_cb(uint64_t item, int sphere_id, void *user_data)
{
    KissingSpheresSystem *sys = user_data;
    if (sphere_id >= 0 && sphere_id < MAX_SPHERES)
        atomic_fetch_add_explicit(&per_sphere[sphere_id], 1, memory_order_relaxed);
    else
        atomic_fetch_add(&bad_sphere_ids, 1);
    if (item >= ALL_IDS) {
        atomic_fetch_add(&unknown_items, 1);
        return;
    }
    atomic_fetch_add_explicit(&counts[item], 1, memory_order_relaxed);
    if (item >= CHAIN_FIRST && item < CHAIN_FIRST + CHAIN_ROOTS * (CHAIN_DEPTH - 1)) {
        uint64_t next = item + CHAIN_ROOTS;
        if (kissing_spheres_distribute_work(sys, &next, 1) != KS_OK)
            atomic_fetch_add(&chain_failures, 1);
    }
    /* 0..63 rounds of real work: uneven item costs */
    uint64_t v = tu_busy_work(item, (unsigned)((item * 2654435761u) >> 26) & 63u);
    atomic_fetch_add_explicit(&sink, v & 1, memory_order_relaxed);
}

typedef struct {
    KissingSpheresSystem *sys;
    int index;
    int round;
    int failures;
} DistArg;

static void *distributor(void *arg)
{
    DistArg *a = arg;
    static const int sizes[] = {1, 7, 1000, 13, 4096, 250, 1, 2, 3, 777, 64, 9999, 31, 256, 257};
    const int nsizes = (int)(sizeof sizes / sizeof sizes[0]);
    uint64_t first = (uint64_t)a->index * PER_THREAD;
    uint64_t *buf = malloc(10000 * sizeof *buf);
    int k = (a->index * 5 + a->round) % nsizes;
    uint64_t done = 0;
    while (done < PER_THREAD) {
        int n = sizes[k++ % nsizes];
        if ((uint64_t)n > PER_THREAD - done)
            n = (int)(PER_THREAD - done);
        for (int i = 0; i < n; i++)
            buf[i] = first + done + (uint64_t)i;
        if (kissing_spheres_distribute_work(a->sys, buf, n) != KS_OK)
            a->failures++;
        /* The library copies the items: reuse the buffer at once. */
        memset(buf, 0xEE, (size_t)n * sizeof *buf);
        done += (uint64_t)n;
    }
    free(buf);
    return NULL;
}

typedef struct {
    KissingSpheresSystem *sys;
    int rc;
} WaitArg;

static void *waiter(void *arg)
{
    WaitArg *w = arg;
    w->rc = kissing_spheres_wait(w->sys, 30000);
    return NULL;
}

/* Number of ids in [first, first+count) whose counter is not `want`. */
static long count_not(uint64_t first, uint64_t count, unsigned want, uint64_t *first_bad)
{
    long bad = 0;
    *first_bad = UINT64_MAX;
    for (uint64_t i = first; i < first + count; i++) {
        if (atomic_load(&counts[i]) != want) {
            if (bad++ == 0)
                *first_bad = i;
        }
    }
    return bad;
}

static void reset_counts(uint64_t first, uint64_t count)
{
    for (uint64_t i = first; i < first + count; i++)
        atomic_store_explicit(&counts[i], 0, memory_order_relaxed);
}

/* per sphere: callbacks reporting the sphere == its items_processed */
static void check_per_sphere(KissingSpheresSystem *sys, const char *label)
{
    int total = kissing_spheres_total_spheres(sys);
    int mismatches = 0, first = -1;
    uint64_t a = 0, b = 0;
    for (int s = 0; s < total && s < MAX_SPHERES; s++) {
        KissingSphereStats st;
        if (kissing_spheres_sphere_stats(sys, s, &st) != KS_OK || st.items_processed != atomic_load(&per_sphere[s])) {
            if (mismatches++ == 0) {
                first = s;
                a = st.items_processed;
                b = atomic_load(&per_sphere[s]);
            }
        }
    }
    CHECKF(mismatches == 0,
           "%s: %d spheres where items_processed != callbacks reporting that sphere (first: sphere %d, %" PRIu64
           " vs %" PRIu64 ")",
           label, mismatches, first, a, b);
}

static void main_system(void)
{
    double t0 = tu_now();
    KissingSpheresSystem *sys = tu_create_levels(4);
    if (sys == NULL)
        return;
    for (int s = 0; s < MAX_SPHERES; s++)
        atomic_store(&per_sphere[s], 0);
    CHECK_EQ_I64(kissing_spheres_set_work_callback(sys, stress_cb, sys), KS_OK);
    CHECKF(kissing_spheres_start(sys) == KS_OK, "start: %s", tu_err());
    long long distributed_total = 0;
    static const int enq_spheres[] = {0, 1, 7, 12, 13, 100, 156, 157, 1000, 1884};
    const int n_enq_spheres = (int)(sizeof enq_spheres / sizeof enq_spheres[0]);

    for (int round = 0; round < ROUNDS; round++) {
        reset_counts(0, ROUND_ITEMS);
        pthread_t th[THREADS];
        DistArg args[THREADS];
        for (int t = 0; t < THREADS; t++) {
            args[t] = (DistArg){.sys = sys, .index = t, .round = round};
            CHECK(pthread_create(&th[t], NULL, distributor, &args[t]) == 0);
        }
        /* concurrently: a range in two pieces, and direct enqueues */
        CHECK_EQ_I64(kissing_spheres_distribute_range(sys, RANGE_FIRST, RANGE_COUNT / 2), KS_OK);
        CHECK_EQ_I64(kissing_spheres_distribute_range(sys, RANGE_FIRST + RANGE_COUNT / 2, RANGE_COUNT - RANGE_COUNT / 2),
                     KS_OK);
        uint64_t ebuf[100];
        for (int b = 0; b < ENQ_COUNT / 100; b++) {
            for (int i = 0; i < 100; i++)
                ebuf[i] = ENQ_FIRST + (uint64_t)(b * 100 + i);
            int sphere = enq_spheres[(b + round) % n_enq_spheres];
            CHECKF(kissing_spheres_enqueue(sys, sphere, ebuf, 100) == KS_OK, "enqueue on sphere %d: %s", sphere,
                   tu_err());
        }
        for (int t = 0; t < THREADS; t++) {
            pthread_join(th[t], NULL);
            CHECKF(args[t].failures == 0, "round %d: %d distribute_work calls of thread %d failed", round,
                   args[t].failures, t);
        }
        distributed_total += ROUND_ITEMS;
        /* three concurrent waiters */
        WaitArg w[2] = {{sys, -99}, {sys, -99}};
        pthread_t wt[2];
        for (int i = 0; i < 2; i++)
            CHECK(pthread_create(&wt[i], NULL, waiter, &w[i]) == 0);
        int rc = kissing_spheres_wait(sys, 30000);
        for (int i = 0; i < 2; i++) {
            pthread_join(wt[i], NULL);
            CHECKF(w[i].rc == KS_OK, "round %d: waiter thread %d: wait returned %d", round, i, w[i].rc);
        }
        CHECKF(rc == KS_OK, "round %d: wait returned %d (%s), pending %lld", round, rc, tu_err(),
               (long long)kissing_spheres_pending(sys));
        CHECK_EQ_I64(kissing_spheres_pending(sys), 0);
        uint64_t first_bad;
        long bad = count_not(0, ROUND_ITEMS, 1, &first_bad);
        CHECKF(bad == 0, "round %d: %ld items not run exactly once (first: item %" PRIu64 " ran %u times)", round, bad,
               first_bad, first_bad < ALL_IDS ? atomic_load(&counts[first_bad]) : 0u);
        long long processed = TU_SUM_STAT(sys, items_processed);
        CHECKF(processed == distributed_total, "round %d: items_processed total %lld, distributed %lld", round,
               processed, distributed_total);
    }
    CHECK_EQ_I64(atomic_load(&unknown_items), 0);
    check_per_sphere(sys, "after the rounds");
    printf("exactly-once: %d rounds of %d items in %.2f s\n", ROUNDS, ROUND_ITEMS, tu_now() - t0);

    /* stop drains: distribute (plus chains that grow during the drain),
     * then stop at once */
    uint64_t *buf = malloc(EXTRA_COUNT / 2 * sizeof *buf);
    for (int i = 0; i < CHAIN_ROOTS; i++)
        buf[i] = CHAIN_FIRST + (uint64_t)i;
    CHECK_EQ_I64(kissing_spheres_distribute_work(sys, buf, CHAIN_ROOTS), KS_OK);
    for (int i = 0; i < EXTRA_COUNT / 2; i++)
        buf[i] = EXTRA_FIRST + (uint64_t)i;
    CHECK_EQ_I64(kissing_spheres_distribute_work(sys, buf, EXTRA_COUNT / 2), KS_OK);
    CHECK_EQ_I64(kissing_spheres_distribute_range(sys, EXTRA_FIRST + EXTRA_COUNT / 2, EXTRA_COUNT - EXTRA_COUNT / 2),
                 KS_OK);
    distributed_total += EXTRA_COUNT + CHAIN_COUNT;
    CHECKF(kissing_spheres_stop(sys) == KS_OK, "stop: %s", tu_err());
    CHECK_EQ_I64(kissing_spheres_is_running(sys), 0);
    CHECK_EQ_I64(kissing_spheres_pending(sys), 0);
    uint64_t first_bad;
    long bad = count_not(EXTRA_FIRST, EXTRA_COUNT, 1, &first_bad);
    CHECKF(bad == 0, "stop did not drain: %ld of %d items not run exactly once (first %" PRIu64 ")", bad, EXTRA_COUNT,
           first_bad);
    bad = count_not(CHAIN_FIRST, CHAIN_COUNT, 1, &first_bad);
    CHECKF(bad == 0,
           "stop did not drain work queued by callbacks: %ld of %d chain items not run exactly once (first %" PRIu64
           ", depth %d)",
           bad, CHAIN_COUNT, first_bad, first_bad != UINT64_MAX ? (int)((first_bad - CHAIN_FIRST) / CHAIN_ROOTS) : -1);
    CHECK_EQ_I64(atomic_load(&chain_failures), 0);
    CHECK_EQ_I64(TU_SUM_STAT(sys, items_processed), distributed_total);
    /* wait after a complete drain: nothing pending -> 0 even when stopped */
    CHECK_EQ_I64(kissing_spheres_wait(sys, 0), KS_OK);

    /* distribute while stopped: pending, then cancelled */
    for (int i = 0; i < STOPPED_COUNT / 3; i++)
        buf[i] = STOPPED_FIRST + (uint64_t)i;
    CHECK_EQ_I64(kissing_spheres_distribute_work(sys, buf, STOPPED_COUNT / 3), KS_OK);
    CHECK_EQ_I64(kissing_spheres_distribute_range(sys, STOPPED_FIRST + STOPPED_COUNT / 3,
                                                  STOPPED_COUNT - STOPPED_COUNT / 3 - 1),
                 KS_OK);
    uint64_t last = STOPPED_FIRST + STOPPED_COUNT - 1;
    CHECK_EQ_I64(kissing_spheres_enqueue(sys, 1000, &last, 1), KS_OK);
    int64_t pending = kissing_spheres_pending(sys);
    CHECKF(pending == STOPPED_COUNT, "pending while stopped = %lld, expected %d", (long long)pending, STOPPED_COUNT);
    CHECK_ERR(kissing_spheres_wait(sys, 0), KS_ERROR);
    int64_t cancelled = kissing_spheres_cancel_pending(sys);
    CHECKF(cancelled == pending, "cancel_pending returned %lld, pending was %lld", (long long)cancelled,
           (long long)pending);
    CHECK_EQ_I64(kissing_spheres_pending(sys), 0);
    CHECK_EQ_I64(kissing_spheres_cancel_pending(sys), 0);
    long long queued = 0;
    for (int s = 0; s < kissing_spheres_total_spheres(sys); s++) {
        KissingSphereStats st;
        if (kissing_spheres_sphere_stats(sys, s, &st) == KS_OK)
            queued += (long long)st.queue_size;
    }
    CHECK_EQ_I64(queued, 0);
    /* restart: the cancelled items must not come back */
    CHECKF(kissing_spheres_start(sys) == KS_OK, "restart: %s", tu_err());
    CHECK_EQ_I64(kissing_spheres_distribute_range(sys, 0, 10), KS_OK);
    CHECKF(kissing_spheres_wait(sys, 10000) == KS_OK, "wait after restart: %s", tu_err());
    CHECKF(kissing_spheres_stop(sys) == KS_OK, "stop: %s", tu_err());
    bad = count_not(STOPPED_FIRST, STOPPED_COUNT, 0, &first_bad);
    CHECKF(bad == 0, "%ld cancelled items ran anyway (first %" PRIu64 ")", bad, first_bad);
    CHECK_EQ_I64(TU_SUM_STAT(sys, items_processed), distributed_total + 10);
    CHECK_EQ_I64(TU_SUM_STAT(sys, items_failed), 0);
    CHECK_EQ_I64(atomic_load(&unknown_items), 0);
    CHECK_EQ_I64(atomic_load(&bad_sphere_ids), 0);
    check_per_sphere(sys, "at the end");
    kissing_spheres_free(sys);
    free(buf);
}

/* More workers than CPUs, when explicitly asked for. */
static void oversubscribed(KissingSpheresSystem *sys, const char *label, int want_workers)
{
    CHECKF(sys != NULL, "%s: %s", label, tu_err());
    if (sys == NULL)
        return;
    CHECKF(kissing_spheres_worker_threads(sys) == want_workers, "%s: worker_threads=%d, expected %d", label,
           kissing_spheres_worker_threads(sys), want_workers);
    for (int s = 0; s < MAX_SPHERES; s++)
        atomic_store(&per_sphere[s], 0);
    reset_counts(0, ROUND_ITEMS);
    CHECK_EQ_I64(kissing_spheres_set_work_callback(sys, stress_cb, sys), KS_OK);
    int before = tu_os_thread_count();
    CHECKF(kissing_spheres_start(sys) == KS_OK, "%s: start: %s", label, tu_err());
    int after = tu_os_thread_count();
    CHECKF(after - before == want_workers, "%s: start added %d OS threads, expected %d", label, after - before,
           want_workers);
    pthread_t th[THREADS];
    DistArg args[THREADS];
    for (int t = 0; t < THREADS; t++) {
        args[t] = (DistArg){.sys = sys, .index = t, .round = t};
        CHECK(pthread_create(&th[t], NULL, distributor, &args[t]) == 0);
    }
    CHECK_EQ_I64(kissing_spheres_distribute_range(sys, RANGE_FIRST, RANGE_COUNT + ENQ_COUNT), KS_OK);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    CHECKF(kissing_spheres_wait(sys, 30000) == KS_OK, "%s: wait: %s", label, tu_err());
    uint64_t first_bad;
    long bad = count_not(0, ROUND_ITEMS, 1, &first_bad);
    CHECKF(bad == 0, "%s: %ld items not run exactly once (first %" PRIu64 ")", label, bad, first_bad);
    CHECK_EQ_I64(TU_SUM_STAT(sys, items_processed), ROUND_ITEMS);
    check_per_sphere(sys, label);
    CHECKF(kissing_spheres_stop(sys) == KS_OK, "%s: stop: %s", label, tu_err());
    CHECKF(tu_os_thread_count() == before, "%s: %d OS threads after stop, %d before start", label,
           tu_os_thread_count(), before);
    kissing_spheres_free(sys);
}

/* cancel_pending while running: queued items are removed and never run,
 * the running item finishes, and a thread blocked in wait(-1) returns. */
typedef struct {
    atomic_int ran_others;
    TuGate gate; /* the blocker waits here */
} BlockCtx;

enum { BLOCKER = 999999999 };

static void block_cb(uint64_t item, int sphere_id, void *user_data)
{
    (void)sphere_id;
    BlockCtx *c = user_data;
    if (item != BLOCKER) {
        atomic_fetch_add(&c->ran_others, 1);
        return;
    }
    tu_gate_wait(&c->gate, 10000);
}

static void cancel_while_running(void)
{
    KissingSpheresSystem *sys = tu_create(3, 1); /* the blocker occupies the only worker */
    if (sys == NULL)
        return;
    BlockCtx c = {.ran_others = 0};
    tu_gate_init(&c.gate);
    CHECK_EQ_I64(kissing_spheres_set_work_callback(sys, block_cb, &c), KS_OK);
    CHECK_EQ_I64(kissing_spheres_start(sys), KS_OK);
    uint64_t blocker = BLOCKER;
    CHECK_EQ_I64(kissing_spheres_enqueue(sys, 20, &blocker, 1), KS_OK);
    tu_gate_wait_started(&c.gate, 10000);
    CHECKF(c.gate.started, "the blocking item never started");
    uint64_t items[300];
    for (int i = 0; i < 300; i++)
        items[i] = (uint64_t)i;
    CHECK_EQ_I64(kissing_spheres_enqueue(sys, 20, items, 300), KS_OK);
    CHECK_EQ_I64(kissing_spheres_distribute_range(sys, 1000, 5000), KS_OK);
    CHECK_EQ_I64(kissing_spheres_pending(sys), 1 + 300 + 5000);
    WaitArg w = {sys, -99};
    pthread_t wt;
    CHECK(pthread_create(&wt, NULL, waiter, &w) == 0);
    int64_t cancelled = kissing_spheres_cancel_pending(sys);
    CHECKF(cancelled == 5300, "cancel_pending while running returned %lld, expected 5300 (the running item stays)",
           (long long)cancelled);
    CHECK_EQ_I64(kissing_spheres_pending(sys), 1);
    tu_gate_open(&c.gate);
    pthread_join(wt, NULL);
    CHECKF(w.rc == KS_OK, "wait(-1) blocked across cancel_pending returned %d", w.rc);
    CHECK_EQ_I64(kissing_spheres_pending(sys), 0);
    CHECK_EQ_I64(kissing_spheres_stop(sys), KS_OK);
    CHECKF(atomic_load(&c.ran_others) == 0, "%d cancelled items ran", atomic_load(&c.ran_others));
    CHECK_EQ_I64(TU_SUM_STAT(sys, items_processed), 1);
    kissing_spheres_free(sys);
    tu_gate_destroy(&c.gate);
}

int main(void)
{
    tu_begin(60);
    main_system();

    KissingSpheresOptions o = tu_options(3, 8);
    o.pin_threads = true;
    oversubscribed(kissing_spheres_create_with_options(&o), "options(levels=3, threads=8, pinned)", 8);
    oversubscribed(kissing_spheres_create_dynamic(6), "create_dynamic(6)", 6);
    cancel_while_running();
    return tu_finish("test_exactly_once_stress");
}
