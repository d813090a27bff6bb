/* test_work_queue_fifo_and_stealing.c
 *
 * Work-queue semantics kept from the original hierarchical-structures
 * tests (a sphere's own queue is FIFO, a thief takes the most recently
 * added item, stealing can be disabled per sphere, stolen_from/stolen_to
 * count it), checked through kissing_spheres_enqueue:
 *   1. FIFO own queue: 1 worker, items 1..50 enqueued on one sphere before
 *      start run in order 1..50 on that sphere; 51..100 enqueued on another
 *      sphere while running run in order too.
 *   2. Newest-first stealing: 2 workers, items 1..N enqueued on a sphere
 *      owned by worker 0. A handshake (condvar, bounded wait) makes the
 *      owner's first item wait until the other worker has run an item and
 *      the thief's first item wait until the owner has run one, so both
 *      really run concurrently. Then: every item exactly once; the owner
 *      runs its sphere's items in increasing order starting at 1; the thief
 *      (sphere id == worker_home(1)) runs them in decreasing order starting
 *      with N (the newest); stolen_from / stolen_to are > 0 and consistent
 *      with what ran where.
 *   3. Stealing disabled on that sphere: every item runs on it, in order;
 *      no stolen counters move, even though worker 1 is provably idle
 *      (it ran a marker item while the owner's first item was blocked).
 */
#include "test_util.h"

#define HANDSHAKE_MS 5000

typedef struct {
    pthread_mutex_t m;
    pthread_cond_t cv;
    int target;     /* sphere the items were enqueued on */
    bool handshake; /* owner and thief wait for each other once */
    uint64_t marker;  /* item whose run releases the owner (phase 3); 0 = none */
    bool marker_ran;
    int owner_runs, other_runs;
    bool owner_waited, thief_waited;
    bool owner_timed_out, thief_timed_out;
    /* log, in callback order */
    uint64_t *items;
    int *spheres;
    int n, cap;
    unsigned work_rounds;
} QCtx;

static void qctx_init(QCtx *c, int cap, int target)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->m, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->cap = cap;
    c->items = calloc((size_t)cap, sizeof *c->items);
    c->spheres = calloc((size_t)cap, sizeof *c->spheres);
    c->target = target;
}

static void qctx_destroy(QCtx *c)
{
    pthread_mutex_destroy(&c->m);
    pthread_cond_destroy(&c->cv);
    free(c->items);
    free(c->spheres);
}

/* Waits on c->cv until *flag_or_count becomes non-zero, at most
 * HANDSHAKE_MS. Returns false on timeout. Called with c->m held. */
static bool wait_nonzero(QCtx *c, const int *count, const bool *flag)
{
    struct timespec dl = tu_deadline_ms(HANDSHAKE_MS);
    while ((count != NULL && *count == 0) || (flag != NULL && !*flag)) {
        if (pthread_cond_timedwait(&c->cv, &c->m, &dl) == ETIMEDOUT)
            return (count != NULL && *count != 0) || (flag != NULL && *flag);
    }
    return true;
}

static void record_cb(uint64_t item, int sphere_id, void *user_data)
{
    QCtx *c = user_data;
    pthread_mutex_lock(&c->m);
    if (c->n < c->cap) {
        c->items[c->n] = item;
        c->spheres[c->n] = sphere_id;
    }
    c->n++;
    if (c->marker != 0 && item == c->marker)
        c->marker_ran = true;
    else if (sphere_id == c->target)
        c->owner_runs++;
    else
        c->other_runs++;
    pthread_cond_broadcast(&c->cv);

    if (sphere_id == c->target && !c->owner_waited && (c->handshake || c->marker != 0)) {
        c->owner_waited = true;
        bool ok = c->marker != 0 ? wait_nonzero(c, NULL, &c->marker_ran) : wait_nonzero(c, &c->other_runs, NULL);
        c->owner_timed_out = !ok;
    } else if (c->handshake && sphere_id != c->target && !c->thief_waited) {
        c->thief_waited = true;
        c->thief_timed_out = !wait_nonzero(c, &c->owner_runs, NULL);
    }
    pthread_mutex_unlock(&c->m);
    if (c->work_rounds)
        (void)tu_busy_work(item, c->work_rounds);
}

static KissingSpheresSystem *make_system(int threads)
{
    KissingSpheresOptions o;
    CHECK_EQ_I64(kissing_spheres_default_options(&o), KS_OK);
    o.num_levels = 2;
    o.num_threads = threads;
    KissingSpheresSystem *sys = tu_create_opts(&o);
    if (sys != NULL)
        CHECKF(kissing_spheres_worker_threads(sys) == threads, "worker_threads=%d, expected %d",
               kissing_spheres_worker_threads(sys), threads);
    return sys;
}

static void fifo_single_worker(void)
{
    KissingSpheresSystem *sys = make_system(1);
    if (sys == NULL)
        return;
    QCtx c;
    qctx_init(&c, 200, 5);
    CHECK_EQ_I64(kissing_spheres_set_work_callback(sys, record_cb, &c), KS_OK);
    uint64_t items[50];
    for (int i = 0; i < 50; i++)
        items[i] = (uint64_t)i + 1;
    CHECK_EQ_I64(kissing_spheres_enqueue(sys, 5, items, 50), KS_OK);
    KissingSphereInfo info;
    CHECK_EQ_I64(kissing_spheres_sphere_info(sys, 5, &info), KS_OK);
    CHECKF(info.work_queue_size == 50, "work_queue_size before start = %" PRIu64 ", expected 50",
           info.work_queue_size);
    KissingSphereStats st;
    CHECK_EQ_I64(kissing_spheres_sphere_stats(sys, 5, &st), KS_OK);
    CHECKF(st.queue_size == 50, "stats.queue_size before start = %" PRIu64, st.queue_size);
    CHECK_EQ_I64(kissing_spheres_pending(sys), 50);

    CHECKF(kissing_spheres_start(sys) == KS_OK, "start: %s", tu_err());
    CHECKF(kissing_spheres_wait(sys, 10000) == KS_OK, "wait: %s", tu_err());
    CHECK_EQ_I64(c.n, 50);
    int out_of_order = 0, wrong_sphere = 0;
    for (int i = 0; i < c.n && i < 50; i++) {
        if (c.items[i] != (uint64_t)i + 1)
            out_of_order++;
        if (c.spheres[i] != 5)
            wrong_sphere++;
    }
    CHECKF(out_of_order == 0, "1 worker: %d of 50 items out of FIFO order (first run: %" PRIu64 ")", out_of_order,
           c.items[0]);
    CHECKF(wrong_sphere == 0, "1 worker: %d items did not run on sphere 5", wrong_sphere);
    CHECK_EQ_I64(kissing_spheres_sphere_info(sys, 5, &info), KS_OK);
    CHECK_EQ_I64(info.work_queue_size, 0);

    /* While running: 51..100 on sphere 7. */
    c.target = 7;
    int before = c.n;
    for (int i = 0; i < 50; i++)
        items[i] = (uint64_t)i + 51;
    CHECK_EQ_I64(kissing_spheres_enqueue(sys, 7, items, 50), KS_OK);
    CHECKF(kissing_spheres_wait(sys, 10000) == KS_OK, "wait: %s", tu_err());
    pthread_mutex_lock(&c.m);
    CHECK_EQ_I64(c.n - before, 50);
    out_of_order = 0;
    for (int i = before; i < c.n && i < c.cap; i++)
        if (c.items[i] != (uint64_t)(i - before) + 51 || c.spheres[i] != 7)
            out_of_order++;
    pthread_mutex_unlock(&c.m);
    CHECKF(out_of_order == 0, "1 worker, enqueued while running: %d items out of order or on a wrong sphere",
           out_of_order);
    CHECK_EQ_I64(TU_SUM_STAT(sys, stolen_to), 0);
    CHECKF(kissing_spheres_stop(sys) == KS_OK, "stop: %s", tu_err());
    kissing_spheres_free(sys);
    qctx_destroy(&c);
}

/* A sphere owned by worker 0 that is no worker's home (a leaf if there is
 * one), so that the sphere id an item reports tells who ran it and how. */
static int pick_target(KissingSpheresSystem *sys, int home0, int home1)
{
    int total = kissing_spheres_total_spheres(sys);
    int inner = -1, fallback = -1;
    for (int s = 0; s < total; s++) {
        KissingSphereInfo info;
        if (kissing_spheres_sphere_info(sys, s, &info) != KS_OK || info.owner_worker != 0)
            continue;
        if (s != home0 && s != home1 && info.num_children == 0)
            return s;
        if (s != home0 && s != home1 && inner < 0)
            inner = s;
        if (s != home1 && fallback < 0)
            fallback = s;
    }
    return inner >= 0 ? inner : fallback;
}

static void stealing_newest_first(void)
{
    enum { N = 400 };
    KissingSpheresSystem *sys = make_system(2);
    if (sys == NULL)
        return;
    int home0 = kissing_spheres_worker_home(sys, 0);
    int home1 = kissing_spheres_worker_home(sys, 1);
    CHECKF(home0 >= 0 && home1 >= 0 && home0 != home1, "worker homes %d and %d", home0, home1);
    int target = pick_target(sys, home0, home1);
    CHECKF(target >= 0, "no sphere is owned by worker 0");
    if (target < 0 || home1 < 0) {
        kissing_spheres_free(sys);
        return;
    }
    printf("stealing: target sphere %d (owner worker 0), worker homes %d / %d\n", target, home0, home1);

    QCtx c;
    qctx_init(&c, N + 10, target);
    c.handshake = true;
    c.work_rounds = 3000;
    CHECK_EQ_I64(kissing_spheres_set_work_callback(sys, record_cb, &c), KS_OK);
    uint64_t items[N];
    for (int i = 0; i < N; i++)
        items[i] = (uint64_t)i + 1;
    CHECK_EQ_I64(kissing_spheres_enqueue(sys, target, items, N), KS_OK);
    CHECKF(kissing_spheres_start(sys) == KS_OK, "start: %s", tu_err());
    CHECKF(kissing_spheres_wait(sys, 20000) == KS_OK, "wait: %s", tu_err());

    pthread_mutex_lock(&c.m);
    CHECKF(c.n == N, "%d callbacks for %d items", c.n, N);
    CHECKF(!c.owner_timed_out, "the owner's first item waited %d ms and no other worker ran an item", HANDSHAKE_MS);
    CHECKF(!c.thief_timed_out, "the thief's first item waited %d ms and the owner ran nothing", HANDSHAKE_MS);
    int seen[N + 1];
    memset(seen, 0, sizeof seen);
    int on_target = 0, on_home1 = 0, on_home0 = 0, elsewhere = 0;
    uint64_t last_owner = 0, last_thief = UINT64_MAX, first_owner = 0, first_thief = 0;
    int owner_order_errors = 0, thief_order_errors = 0, unknown_items = 0;
    for (int i = 0; i < c.n && i < c.cap; i++) {
        uint64_t it = c.items[i];
        if (it < 1 || it > N) {
            unknown_items++;
            continue;
        }
        seen[it]++;
        if (c.spheres[i] == target) {
            if (on_target++ == 0)
                first_owner = it;
            if (it <= last_owner)
                owner_order_errors++;
            last_owner = it;
        } else if (c.spheres[i] == home1) {
            if (on_home1++ == 0)
                first_thief = it;
            if (it >= last_thief)
                thief_order_errors++;
            last_thief = it;
        } else if (c.spheres[i] == home0) {
            on_home0++; /* worker 0 stealing back from worker 1's home */
        } else {
            elsewhere++;
        }
    }
    pthread_mutex_unlock(&c.m);
    int missing = 0, dup = 0;
    for (int i = 1; i <= N; i++) {
        if (seen[i] == 0)
            missing++;
        if (seen[i] > 1)
            dup++;
    }
    printf("stealing: %d items on the owner's sphere, %d on the thief's home, %d stolen back\n", on_target, on_home1,
           on_home0);
    CHECKF(missing == 0 && dup == 0 && unknown_items == 0, "%d items missing, %d run twice, %d unknown", missing, dup,
           unknown_items);
    CHECKF(elsewhere == 0, "%d items reported a sphere that is neither %d (owner) nor a worker home", elsewhere,
           target);
    CHECKF(on_target >= 1, "the owner ran nothing on sphere %d", target);
    CHECKF(on_home1 >= 1, "the thief (worker 1, home %d) ran nothing", home1);
    CHECKF(first_owner == 1, "the owner's first item was %" PRIu64 ", expected 1 (FIFO)", first_owner);
    CHECKF(first_thief == N, "the thief's first item was %" PRIu64 ", expected %d (the newest)", first_thief, N);
    CHECKF(owner_order_errors == 0, "owner items not in increasing order (%d inversions)", owner_order_errors);
    CHECKF(thief_order_errors == 0, "thief items not in decreasing order (%d inversions)", thief_order_errors);

    KissingSphereStats ts, h1, h0;
    CHECK_EQ_I64(kissing_spheres_sphere_stats(sys, target, &ts), KS_OK);
    CHECK_EQ_I64(kissing_spheres_sphere_stats(sys, home1, &h1), KS_OK);
    CHECK_EQ_I64(kissing_spheres_sphere_stats(sys, home0, &h0), KS_OK);
    CHECKF(ts.stolen_from > 0, "stolen_from(target %d) = 0", target);
    CHECKF(h1.stolen_to > 0, "stolen_to(home1 %d) = 0", home1);
    CHECKF(ts.stolen_from == (uint64_t)(N - on_target),
           "stolen_from(target)=%" PRIu64 " but %d items did not run on the target", ts.stolen_from, N - on_target);
    CHECKF(ts.items_processed == (uint64_t)on_target, "items_processed(target)=%" PRIu64 ", callbacks there: %d",
           ts.items_processed, on_target);
    CHECKF(h1.items_processed == (uint64_t)on_home1, "items_processed(home1)=%" PRIu64 ", callbacks there: %d",
           h1.items_processed, on_home1);
    CHECKF(h1.stolen_to >= (uint64_t)on_home1, "stolen_to(home1)=%" PRIu64 " < %d items run there", h1.stolen_to,
           on_home1);
    long long sum_from = TU_SUM_STAT(sys, stolen_from), sum_to = TU_SUM_STAT(sys, stolen_to);
    CHECKF(sum_from == sum_to, "sum of stolen_from (%lld) != sum of stolen_to (%lld)", sum_from, sum_to);
    CHECKF(sum_to >= N - on_target, "sum of stolen_to %lld < %d items stolen", sum_to, N - on_target);
    CHECK_EQ_I64(TU_SUM_STAT(sys, items_processed), N);
    CHECKF(kissing_spheres_stop(sys) == KS_OK, "stop: %s", tu_err());
    kissing_spheres_free(sys);
    qctx_destroy(&c);
}

static void stealing_disabled(void)
{
    enum { N = 2000 };
    const uint64_t marker = 1000000;
    KissingSpheresSystem *sys = make_system(2);
    if (sys == NULL)
        return;
    int home0 = kissing_spheres_worker_home(sys, 0);
    int home1 = kissing_spheres_worker_home(sys, 1);
    int target = pick_target(sys, home0, home1);
    CHECKF(target >= 0 && home1 >= 0, "no usable target sphere");
    if (target < 0 || home1 < 0) {
        kissing_spheres_free(sys);
        return;
    }
    CHECK_EQ_I64(kissing_spheres_set_stealing(sys, target, false), KS_OK);
    KissingSphereInfo info;
    CHECK_EQ_I64(kissing_spheres_sphere_info(sys, target, &info), KS_OK);
    CHECKF(!info.stealing_enabled, "sphere_info.stealing_enabled still true after set_stealing(%d, false)", target);

    QCtx c;
    qctx_init(&c, N + 10, target);
    c.marker = marker;
    c.work_rounds = 300;
    CHECK_EQ_I64(kissing_spheres_set_work_callback(sys, record_cb, &c), KS_OK);
    uint64_t *items = malloc(N * sizeof *items);
    for (int i = 0; i < N; i++)
        items[i] = (uint64_t)i + 1;
    CHECK_EQ_I64(kissing_spheres_enqueue(sys, target, items, N), KS_OK);
    /* Worker 1's own item: once it ran, worker 1 has nothing of its own
     * and would steal if it were allowed to. */
    CHECK_EQ_I64(kissing_spheres_enqueue(sys, home1, &marker, 1), KS_OK);
    CHECKF(kissing_spheres_start(sys) == KS_OK, "start: %s", tu_err());
    CHECKF(kissing_spheres_wait(sys, 20000) == KS_OK, "wait: %s", tu_err());

    pthread_mutex_lock(&c.m);
    CHECKF(c.n == N + 1, "%d callbacks for %d items", c.n, N + 1);
    CHECKF(c.marker_ran && !c.owner_timed_out, "worker 1's marker item did not run while the owner waited");
    int wrong_sphere = 0, out_of_order = 0;
    uint64_t expect = 1;
    for (int i = 0; i < c.n && i < c.cap; i++) {
        if (c.items[i] == marker)
            continue;
        if (c.spheres[i] != target)
            wrong_sphere++;
        if (c.items[i] != expect)
            out_of_order++;
        expect++;
    }
    pthread_mutex_unlock(&c.m);
    CHECKF(wrong_sphere == 0, "stealing disabled: %d items ran away from sphere %d", wrong_sphere, target);
    CHECKF(out_of_order == 0, "stealing disabled: %d items out of FIFO order", out_of_order);
    KissingSphereStats ts;
    CHECK_EQ_I64(kissing_spheres_sphere_stats(sys, target, &ts), KS_OK);
    CHECK_EQ_I64(ts.stolen_from, 0);
    CHECK_EQ_I64(ts.items_processed, N);
    CHECK_EQ_I64(TU_SUM_STAT(sys, stolen_to), 0);
    CHECK_EQ_I64(TU_SUM_STAT(sys, stolen_from), 0);

    /* Re-enabling is visible in the info. */
    CHECK_EQ_I64(kissing_spheres_set_stealing(sys, target, true), KS_OK);
    CHECK_EQ_I64(kissing_spheres_sphere_info(sys, target, &info), KS_OK);
    CHECKF(info.stealing_enabled, "stealing_enabled still false after set_stealing(%d, true)", target);
    CHECKF(kissing_spheres_stop(sys) == KS_OK, "stop: %s", tu_err());
    kissing_spheres_free(sys);
    free(items);
    qctx_destroy(&c);
}

/* An item enqueued on a sphere whose stealing is disabled must be run by
 * its owner even when every worker had gone idle (parked) before: the
 * wake-up has to reach the owner, not just any worker. The idle period is
 * the 50 ms receive timeout (itself checked); correctness of the test does
 * not depend on it, it only makes the workers park first. */
typedef struct {
    atomic_int runs;
} OneCtx;

static void one_cb(uint64_t item, int sphere_id, void *user_data)
{
    (void)item;
    (void)sphere_id;
    OneCtx *c = user_data;
    atomic_fetch_add(&c->runs, 1);
}

static void disabled_sphere_after_idle(void)
{
    for (int round = 0; round < 3; round++) {
        for (int w = 0; w < 2; w++) {
            KissingSpheresSystem *sys = make_system(2);
            if (sys == NULL)
                return;
            int target = -1;
            for (int s = 0; s < kissing_spheres_total_spheres(sys) && target < 0; s++) {
                KissingSphereInfo info;
                if (kissing_spheres_sphere_info(sys, s, &info) == KS_OK && info.owner_worker == w &&
                    info.num_children == 0)
                    target = s;
            }
            CHECKF(target >= 0, "no leaf owned by worker %d", w);
            OneCtx c = {0};
            CHECK_EQ_I64(kissing_spheres_set_stealing(sys, target, false), KS_OK);
            CHECK_EQ_I64(kissing_spheres_set_work_callback(sys, one_cb, &c), KS_OK);
            CHECK_EQ_I64(kissing_spheres_start(sys), KS_OK);
            KissingSphereMessage msg;
            CHECK_EQ_I64(kissing_spheres_receive_message(sys, 0, &msg, 50), KS_TIMEOUT);
            uint64_t item = 42;
            CHECK_EQ_I64(kissing_spheres_enqueue(sys, target, &item, 1), KS_OK);
            int rc = kissing_spheres_wait(sys, 1000);
            CHECKF(rc == KS_OK,
                   "round %d: 1 item enqueued on idle sphere %d (owner worker %d, stealing disabled) did not run "
                   "within 1 s: wait returned %d, pending %lld",
                   round, target, w, rc, (long long)kissing_spheres_pending(sys));
            CHECK_EQ_I64(kissing_spheres_stop(sys), KS_OK); /* drains it in any case */
            CHECK_EQ_I64(atomic_load(&c.runs), 1);
            kissing_spheres_free(sys);
        }
    }
}

int main(void)
{
    tu_begin(60);
    fifo_single_worker();
    for (int round = 0; round < 5; round++)
        stealing_newest_first();
    stealing_disabled();
    disabled_sphere_after_idle();
    return tu_finish("test_work_queue_fifo_and_stealing");
}
