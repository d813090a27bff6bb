/* test_bad_input.c
 *
 * Bad arguments and calls in the wrong state never crash or hang; they
 * return the documented error value and set cllm_last_error():
 *   - every function with a NULL system (-1 / NULL; print_stats(NULL) and
 *     free(NULL) do nothing);
 *   - create(0 / 5 / -1), create_dynamic(-1 / 1025), out-of-range options,
 *     default_options(NULL), hierarchy_levels(-1);
 *   - distribute_work with n < 0, NULL items and n > 0 (-1), n = 0 (0);
 *     distribute_range overflow; enqueue on sphere -1 / total, NULL items,
 *     n < 0; set_stealing on a bad id; sphere_info / sphere_stats with a
 *     bad id or NULL out; spheres_per_level(-1 / 4); worker_home out of
 *     range; send_message with type 28, priority 4, bad ids, an unrelated
 *     pair; receive with a bad id or NULL out;
 *   - wrong state: start twice, stop when not running, double stop,
 *     set_work_callback while running, wait while stopped with pending
 *     items, wait timing out while an item is still running, free without
 *     stop (running, work queued: drained, no hang), free of a never
 *     started system with queued work, start/stop repeated;
 *   - from inside a callback: wait, stop, start, set_work_callback and free
 *     are refused (the return value / error is recorded in the callback and
 *     the system keeps working); distribute from a callback works;
 *   - epoch / level barrier from a non-worker thread, or from a worker of
 *     another system -> -1;
 *   - accumulate / reduce with a wrong length or NULL -> -1;
 *   - stats_json / stats_table snprintf contract (NULL/0 gives the length,
 *     small buffers truncate and NUL-terminate), stats_json_alloc +
 *     cllm_string_free;
 *   - groups_for_worker(0, 0, ...) and worker_for_group(0, 0) -> -1;
 *   - cllm_last_error is per thread and cllm_clear_error resets it.
 */
#include "test_util.h"

static void null_system(void)
{
    KissingSpheresSystem *n = NULL;
    uint64_t items[2] = {1, 2};
    KissingSphereInfo info;
    KissingSphereStats st;
    KissingSphereMessage msg;
    float f[4] = {0};
    uint64_t gen = 0;
    char buf[32];

    CHECK_ERR(kissing_spheres_start(n), -1);
    CHECK_ERR(kissing_spheres_stop(n), -1);
    CHECK_ERR(kissing_spheres_distribute_work(n, items, 2), -1);
    CHECK_ERR(kissing_spheres_distribute_range(n, 0, 10), -1);
    CHECK_ERR(kissing_spheres_enqueue(n, 0, items, 2), -1);
    CHECK_ERR(kissing_spheres_set_stealing(n, 0, false), -1);
    CHECK_ERR(kissing_spheres_set_work_callback(n, NULL, NULL), -1);
    CHECK_ERR(kissing_spheres_wait(n, 0), -1);
    CHECK_ERR(kissing_spheres_wait(n, -1), -1);
    CHECK_ERR(kissing_spheres_pending(n), -1);
    CHECK_ERR(kissing_spheres_cancel_pending(n), -1);
    CHECK_ERR(kissing_spheres_is_running(n), -1);
    CHECK_ERR(kissing_spheres_num_levels(n), -1);
    CHECK_ERR(kissing_spheres_spheres_per_level(n, 0), -1);
    CHECK_ERR(kissing_spheres_total_spheres(n), -1);
    CHECK_ERR(kissing_spheres_worker_threads(n), -1);
    CHECK_ERR(kissing_spheres_worker_home(n, 0), -1);
    CHECK_ERR(kissing_spheres_sphere_info(n, 0, &info), -1);
    CHECK_ERR(kissing_spheres_sphere_stats(n, 0, &st), -1);
    CHECK_ERR(kissing_spheres_stats_json(n, buf, sizeof buf), -1);
    CHECK_ERR(kissing_spheres_stats_json(n, NULL, 0), -1);
    CHECK_NULL_ERR(kissing_spheres_stats_json_alloc(n));
    CHECK_ERR(kissing_spheres_stats_table(n, buf, sizeof buf), -1);
    CHECK_ERR(kissing_spheres_send_message(n, 1, 0, MSG_WORK_REQUEST, MSG_PRIORITY_NORMAL, NULL), -1);
    CHECK_ERR(kissing_spheres_receive_message(n, 0, &msg, 0), -1);
    CHECK_ERR(kissing_spheres_try_receive_message(n, 0, &msg), -1);
    CHECK_ERR(kissing_spheres_buffer_len(n), -1);
    CHECK_ERR(kissing_spheres_accumulate(n, 0, f, 4), -1);
    CHECK_ERR(kissing_spheres_reduce(n, f, 4), -1);
    CHECK_ERR(kissing_spheres_level_barrier(n, 0, 0, &gen), -1);
    CHECK_ERR(kissing_spheres_epoch_barrier(n, 0, &gen), -1);
    CHECK_NULL_ERR(kissing_spheres_create_with_options(NULL));
    CHECK_ERR(kissing_spheres_default_options(NULL), -1);
    /* void functions: nothing happens, no crash */
    kissing_spheres_print_stats(n);
    kissing_spheres_free(n);
    cllm_string_free(NULL);
    CHECK(true);
}

static void bad_creation(void)
{
    CHECK_NULL_ERR(kissing_spheres_create(0));
    CHECK_NULL_ERR(kissing_spheres_create(5));
    CHECK_NULL_ERR(kissing_spheres_create(-1));
    CHECK_NULL_ERR(kissing_spheres_create(INT32_MIN));
    CHECK_NULL_ERR(kissing_spheres_create_dynamic(-1));
    CHECK_NULL_ERR(kissing_spheres_create_dynamic(1025));
    CHECK_ERR(kissing_spheres_hierarchy_levels(-1), -1);

    struct {
        const char *what;
        int levels, spheres, threads, capacity;
        int64_t buffer_len;
    } cases[] = {
        {"num_levels 0", 0, 0, 0, 256, 0},      {"num_levels 5", 5, 0, 0, 256, 0},
        {"num_levels -1", -1, 0, 0, 256, 0},    {"num_spheres -1", 2, -1, 0, 256, 0},
        {"num_spheres 1886", 2, 1886, 0, 256, 0}, {"num_threads -1", 2, 0, -1, 256, 0},
        {"buffer_len -1", 2, 0, 0, 256, -1},    {"mailbox_capacity 0", 2, 0, 0, 0, 0},
        {"mailbox_capacity -5", 2, 0, 0, -5, 0},
        {"buffer_len beyond memory (1e9 floats x 1885 spheres)", 4, 0, 1, 256, 1000000000LL},
        {"buffer_len beyond the address space", 2, 0, 1, 256, INT64_MAX},
        {"num_threads 100000", 2, 0, 100000, 256, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        KissingSpheresOptions o;
        kissing_spheres_default_options(&o);
        o.num_levels = cases[i].levels;
        o.num_spheres = cases[i].spheres;
        o.num_threads = cases[i].threads;
        o.mailbox_capacity = cases[i].capacity;
        o.buffer_len = cases[i].buffer_len;
        cllm_clear_error();
        KissingSpheresSystem *sys = kissing_spheres_create_with_options(&o);
        CHECKF(sys == NULL, "create_with_options(%s) should fail", cases[i].what);
        CHECKF(tu_error_is_set(), "create_with_options(%s): no error message", cases[i].what);
        kissing_spheres_free(sys);
    }
}

static void bad_arguments(void)
{
    KissingSpheresSystem *sys = tu_create_levels(3);
    if (sys == NULL)
        return;
    int total = kissing_spheres_total_spheres(sys);
    uint64_t items[3] = {1, 2, 3};
    KissingSphereInfo info;
    KissingSphereStats st;
    KissingSphereMessage msg;

    CHECK_ERR(kissing_spheres_distribute_work(sys, items, -1), -1);
    CHECK_ERR(kissing_spheres_distribute_work(sys, NULL, 5), -1);
    CHECK_EQ_I64(kissing_spheres_distribute_work(sys, items, 0), KS_OK);
    CHECK_EQ_I64(kissing_spheres_distribute_work(sys, NULL, 0), KS_OK);
    CHECK_ERR(kissing_spheres_distribute_range(sys, UINT64_MAX, 2), -1);
    CHECK_ERR(kissing_spheres_distribute_range(sys, UINT64_MAX - 5, 10), -1);
    CHECK_EQ_I64(kissing_spheres_distribute_range(sys, 5, 0), KS_OK);
    CHECK_ERR(kissing_spheres_enqueue(sys, -1, items, 3), -1);
    CHECK_ERR(kissing_spheres_enqueue(sys, total, items, 3), -1);
    CHECK_ERR(kissing_spheres_enqueue(sys, 0, NULL, 3), -1);
    CHECK_ERR(kissing_spheres_enqueue(sys, 0, items, -1), -1);
    CHECK_EQ_I64(kissing_spheres_enqueue(sys, 0, items, 0), KS_OK);
    CHECKF(kissing_spheres_pending(sys) == 0, "failed or empty calls queued %lld items",
           (long long)kissing_spheres_pending(sys));
    CHECK_ERR(kissing_spheres_set_stealing(sys, -1, false), -1);
    CHECK_ERR(kissing_spheres_set_stealing(sys, total, false), -1);
    CHECK_ERR(kissing_spheres_sphere_info(sys, -1, &info), -1);
    CHECK_ERR(kissing_spheres_sphere_info(sys, total, &info), -1);
    CHECK_ERR(kissing_spheres_sphere_info(sys, 0, NULL), -1);
    CHECK_ERR(kissing_spheres_sphere_stats(sys, -1, &st), -1);
    CHECK_ERR(kissing_spheres_sphere_stats(sys, total, &st), -1);
    CHECK_ERR(kissing_spheres_sphere_stats(sys, 0, NULL), -1);
    CHECK_ERR(kissing_spheres_spheres_per_level(sys, -1), -1);
    CHECK_ERR(kissing_spheres_spheres_per_level(sys, 4), -1);
    CHECK_ERR(kissing_spheres_worker_home(sys, -1), -1);
    CHECK_ERR(kissing_spheres_worker_home(sys, kissing_spheres_worker_threads(sys)), -1);

    CHECK_ERR(kissing_spheres_send_message(sys, 13, 1, 28, MSG_PRIORITY_NORMAL, NULL), -1);
    CHECK_ERR(kissing_spheres_send_message(sys, 13, 1, UINT32_MAX, MSG_PRIORITY_NORMAL, NULL), -1);
    CHECK_ERR(kissing_spheres_send_message(sys, 13, 1, MSG_WORK_REQUEST, 4, NULL), -1);
    CHECK_ERR(kissing_spheres_send_message(sys, 13, 25, MSG_WORK_REQUEST, MSG_PRIORITY_NORMAL, NULL), -1);
    CHECK_ERR(kissing_spheres_send_message(sys, -1, 0, MSG_WORK_REQUEST, MSG_PRIORITY_NORMAL, NULL), -1);
    CHECK_ERR(kissing_spheres_send_message(sys, 0, total, MSG_WORK_REQUEST, MSG_PRIORITY_NORMAL, NULL), -1);
    CHECK_ERR(kissing_spheres_receive_message(sys, -1, &msg, 0), -1);
    CHECK_ERR(kissing_spheres_receive_message(sys, total, &msg, 0), -1);
    CHECK_ERR(kissing_spheres_receive_message(sys, 0, NULL, 0), -1);
    CHECK_ERR(kissing_spheres_try_receive_message(sys, -1, &msg), -1);
    CHECK_ERR(kissing_spheres_try_receive_message(sys, 0, NULL), -1);
    KissingSphereStats s13;
    CHECK_EQ_I64(kissing_spheres_sphere_stats(sys, 13, &s13), KS_OK);
    CHECKF(s13.messages_sent == 0, "rejected sends were counted: messages_sent(13)=%" PRIu64, s13.messages_sent);

    /* no reduction buffers in this system */
    float f[8] = {0};
    CHECK_EQ_I64(kissing_spheres_buffer_len(sys), 0);
    CHECK_ERR(kissing_spheres_accumulate(sys, 0, f, 1), -1);
    CHECK_ERR(kissing_spheres_reduce(sys, f, 1), -1);
    CHECK_ERR(kissing_spheres_accumulate(sys, 0, f, -1), -1);
    CHECK_ERR(kissing_spheres_reduce(sys, f, -1), -1);

    CHECK_ERR(kissing_spheres_groups_for_worker(0, 0, NULL, 0), -1);
    int g[12];
    CHECK_ERR(kissing_spheres_groups_for_worker(0, 0, g, 12), -1);
    CHECK_ERR(kissing_spheres_worker_for_group(0, 0), -1);
    kissing_spheres_free(sys);

    /* with buffers of 8 floats */
    sys = tu_create_buffers(2, 8);
    if (sys == NULL)
        return;
    CHECK_EQ_I64(kissing_spheres_buffer_len(sys), 8);
    CHECK_ERR(kissing_spheres_accumulate(sys, 0, f, 7), -1);
    CHECK_ERR(kissing_spheres_accumulate(sys, 0, f, 9), -1);
    CHECK_ERR(kissing_spheres_accumulate(sys, 0, NULL, 8), -1);
    CHECK_ERR(kissing_spheres_accumulate(sys, -1, f, 8), -1);
    CHECK_ERR(kissing_spheres_accumulate(sys, 13, f, 8), -1);
    CHECK_ERR(kissing_spheres_reduce(sys, f, 7), -1);
    CHECK_ERR(kissing_spheres_reduce(sys, f, 9), -1);
    CHECK_ERR(kissing_spheres_reduce(sys, NULL, 8), -1);
    /* the failed calls changed nothing */
    float ones[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    CHECK_EQ_I64(kissing_spheres_accumulate(sys, 5, ones, 8), KS_OK);
    float out[8];
    CHECK_EQ_I64(kissing_spheres_reduce(sys, out, 8), KS_OK);
    CHECKF(out[0] == 1.0f && out[7] == 1.0f, "reduce after failed calls: %g %g", (double)out[0], (double)out[7]);
    kissing_spheres_free(sys);
}

static void stats_strings(void)
{
    KissingSpheresSystem *sys = tu_create_and_run(2, 100);
    if (sys == NULL)
        return;

    int64_t need = kissing_spheres_stats_json(sys, NULL, 0);
    CHECKF(need > 0, "stats_json(NULL, 0) returned %lld", (long long)need);
    if (need > 0) {
        char *full = malloc((size_t)need + 1);
        memset(full, 'X', (size_t)need + 1);
        CHECK_EQ_I64(kissing_spheres_stats_json(sys, full, (size_t)need + 1), need);
        CHECKF(full[need] == '\0' && (int64_t)strlen(full) == need, "stats_json full: not NUL-terminated at %lld",
               (long long)need);
        CHECKF(full[0] == '{' && full[need - 1] == '}', "stats_json does not look like a JSON object: %.40s", full);
        char small[16];
        memset(small, 'X', sizeof small);
        CHECK_EQ_I64(kissing_spheres_stats_json(sys, small, sizeof small), need);
        CHECKF(small[15] == '\0' && strlen(small) == 15 && strncmp(small, full, 15) == 0,
               "stats_json(buf, 16) did not truncate to the first 15 bytes + NUL");
        char one[1] = {'X'};
        CHECK_EQ_I64(kissing_spheres_stats_json(sys, one, 1), need);
        CHECK(one[0] == '\0');
        /* exactly need bytes: one short, still NUL-terminated */
        char *edge = malloc((size_t)need);
        CHECK_EQ_I64(kissing_spheres_stats_json(sys, edge, (size_t)need), need);
        CHECK((int64_t)strlen(edge) == need - 1);
        free(edge);
        char *alloc = kissing_spheres_stats_json_alloc(sys);
        CHECKF(alloc != NULL, "stats_json_alloc: %s", tu_err());
        if (alloc != NULL) {
            CHECKF(strcmp(alloc, full) == 0, "stats_json_alloc differs from stats_json on an idle system");
            cllm_string_free(alloc);
        }
        free(full);
    }
    CHECK_ERR(kissing_spheres_stats_json(sys, NULL, 10), -1);

    int64_t tneed = kissing_spheres_stats_table(sys, NULL, 0);
    CHECKF(tneed > 0, "stats_table(NULL, 0) returned %lld", (long long)tneed);
    char small[8];
    memset(small, 'X', sizeof small);
    CHECK_EQ_I64(kissing_spheres_stats_table(sys, small, sizeof small), tneed);
    CHECK(small[7] == '\0' && strlen(small) == 7);
    CHECK_ERR(kissing_spheres_stats_table(sys, NULL, 10), -1);
    kissing_spheres_free(sys);
}

/* ---- wrong state --------------------------------------------------------- */

typedef struct {
    KissingSpheresSystem *sys;
    KissingSpheresSystem *other; /* a second system, for cross-system calls */
    atomic_int count;
    /* results recorded by the callback (item = which call to make) */
    int rc_wait, rc_stop, rc_start, rc_setcb, rc_epoch_other, rc_distribute;
    bool err_wait, err_stop, err_start, err_setcb, err_free, err_epoch_other;
    bool did_free;
    TuGate gate; /* the blocking item waits here */
    unsigned work_rounds;
} SCtx;

enum {
    IT_WAIT = 1000001,
    IT_STOP,
    IT_START,
    IT_SETCB,
    IT_FREE,
    IT_EPOCH_OTHER,
    IT_DISTRIBUTE,
    IT_BLOCK,
};

static void state_cb(uint64_t item, int sphere_id, void *user_data)
{
    (void)sphere_id;
    SCtx *c = user_data;
    atomic_fetch_add(&c->count, 1);
    switch (item) {
    case IT_WAIT:
        cllm_clear_error();
        c->rc_wait = kissing_spheres_wait(c->sys, 1000);
        c->err_wait = tu_error_is_set();
        break;
    case IT_STOP:
        cllm_clear_error();
        c->rc_stop = kissing_spheres_stop(c->sys);
        c->err_stop = tu_error_is_set();
        break;
    case IT_START:
        cllm_clear_error();
        c->rc_start = kissing_spheres_start(c->sys);
        c->err_start = tu_error_is_set();
        break;
    case IT_SETCB:
        cllm_clear_error();
        c->rc_setcb = kissing_spheres_set_work_callback(c->sys, NULL, NULL);
        c->err_setcb = tu_error_is_set();
        break;
    case IT_FREE:
        cllm_clear_error();
        kissing_spheres_free(c->sys); /* refused: must not free or deadlock */
        c->err_free = tu_error_is_set();
        c->did_free = true;
        break;
    case IT_EPOCH_OTHER: {
        uint64_t e = 0;
        cllm_clear_error();
        c->rc_epoch_other = kissing_spheres_epoch_barrier(c->other, 100, &e);
        c->err_epoch_other = tu_error_is_set();
        break;
    }
    case IT_DISTRIBUTE: {
        uint64_t more[3] = {1, 2, 3};
        c->rc_distribute = kissing_spheres_distribute_work(c->sys, more, 3);
        break;
    }
    case IT_BLOCK:
        tu_gate_wait(&c->gate, 10000);
        break;
    default:
        if (c->work_rounds)
            (void)tu_busy_work(item, c->work_rounds);
        break;
    }
}

static void run_one(SCtx *c, uint64_t item)
{
    CHECK_EQ_I64(kissing_spheres_distribute_work(c->sys, &item, 1), KS_OK);
    int rc = kissing_spheres_wait(c->sys, 10000);
    CHECKF(rc == KS_OK, "wait after item %" PRIu64 ": %d %s", item, rc, tu_err());
}

static void wrong_state(void)
{
    KissingSpheresSystem *sys = kissing_spheres_create(2);
    KissingSpheresSystem *other = kissing_spheres_create(1);
    CHECK(sys != NULL && other != NULL);
    if (sys == NULL || other == NULL) {
        kissing_spheres_free(sys);
        kissing_spheres_free(other);
        return;
    }
    SCtx c;
    memset(&c, 0, sizeof c);
    c.sys = sys;
    c.other = other;
    c.rc_wait = c.rc_stop = c.rc_start = c.rc_setcb = c.rc_epoch_other = c.rc_distribute = 12345;
    tu_gate_init(&c.gate);

    CHECK_ERR(kissing_spheres_stop(sys), -1); /* never started */
    CHECK_EQ_I64(kissing_spheres_is_running(sys), 0);
    CHECK_EQ_I64(kissing_spheres_set_work_callback(sys, state_cb, &c), KS_OK);
    CHECK_EQ_I64(kissing_spheres_wait(sys, 0), KS_OK); /* nothing pending */
    CHECK_EQ_I64(kissing_spheres_start(sys), KS_OK);
    CHECK_ERR(kissing_spheres_start(sys), -1);
    CHECK_EQ_I64(kissing_spheres_is_running(sys), 1);
    CHECK_ERR(kissing_spheres_set_work_callback(sys, NULL, NULL), -1);
    CHECK_ERR(kissing_spheres_set_work_callback(sys, state_cb, &c), -1);

    /* barriers outside a worker */
    uint64_t gen = 0;
    CHECK_ERR(kissing_spheres_epoch_barrier(sys, 10, &gen), -1);
    CHECK_ERR(kissing_spheres_epoch_barrier(sys, 10, NULL), -1);
    CHECK_ERR(kissing_spheres_level_barrier(sys, 1, 10, &gen), -1);
    CHECK_ERR(kissing_spheres_level_barrier(sys, 0, 10, &gen), -1);

    /* refused from inside a callback */
    run_one(&c, IT_WAIT);
    CHECKF(c.rc_wait == -1 && c.err_wait, "wait from a callback returned %d (error set: %d)", c.rc_wait, c.err_wait);
    run_one(&c, IT_STOP);
    CHECKF(c.rc_stop == -1 && c.err_stop, "stop from a callback returned %d (error set: %d)", c.rc_stop, c.err_stop);
    run_one(&c, IT_START);
    CHECKF(c.rc_start == -1 && c.err_start, "start from a callback returned %d", c.rc_start);
    run_one(&c, IT_SETCB);
    CHECKF(c.rc_setcb == -1 && c.err_setcb, "set_work_callback from a callback returned %d", c.rc_setcb);
    run_one(&c, IT_FREE);
    CHECKF(c.did_free && c.err_free, "free from a callback: returned=%d, error set=%d", c.did_free, c.err_free);
    run_one(&c, IT_EPOCH_OTHER);
    CHECKF(c.rc_epoch_other == -1 && c.err_epoch_other,
           "epoch_barrier on another system from this system's callback returned %d", c.rc_epoch_other);
    /* allowed from a callback: distributing more work */
    int before = atomic_load(&c.count);
    run_one(&c, IT_DISTRIBUTE);
    CHECK_EQ_I64(c.rc_distribute, KS_OK);
    CHECKF(atomic_load(&c.count) - before == 4, "distribute from a callback: %d callbacks, expected 4 (wait must "
           "include work queued by callbacks)", atomic_load(&c.count) - before);
    /* the system still works after all that */
    CHECK_EQ_I64(kissing_spheres_is_running(sys), 1);
    before = atomic_load(&c.count);
    CHECK_EQ_I64(kissing_spheres_distribute_range(sys, 0, 1000), KS_OK);
    CHECK_EQ_I64(kissing_spheres_wait(sys, 10000), KS_OK);
    CHECK_EQ_I64(atomic_load(&c.count) - before, 1000);

    /* wait times out while an item is still running */
    uint64_t blk = IT_BLOCK;
    CHECK_EQ_I64(kissing_spheres_distribute_work(sys, &blk, 1), KS_OK);
    tu_gate_wait_started(&c.gate, 10000);
    CHECK(c.gate.started);
    double t0 = tu_now();
    int rc = kissing_spheres_wait(sys, 20);
    double dt = tu_now() - t0;
    CHECKF(rc == KS_TIMEOUT, "wait(20 ms) with an item still running returned %d", rc);
    CHECKF(dt >= 0.019 && dt < 5.0, "wait(20 ms) returned after %.4f s", dt);
    CHECK_EQ_I64(kissing_spheres_pending(sys), 1);
    tu_gate_open(&c.gate);
    CHECK_EQ_I64(kissing_spheres_wait(sys, -1), KS_OK);

    CHECK_EQ_I64(kissing_spheres_stop(sys), KS_OK);
    CHECK_ERR(kissing_spheres_stop(sys), -1); /* double stop */
    CHECK_EQ_I64(kissing_spheres_is_running(sys), 0);

    /* wait while stopped with items queued */
    CHECK_EQ_I64(kissing_spheres_distribute_range(sys, 0, 10), KS_OK);
    CHECK_ERR(kissing_spheres_wait(sys, 0), -1);
    CHECK_ERR(kissing_spheres_wait(sys, -1), -1); /* must not hang either */
    /* start picks them up */
    before = atomic_load(&c.count);
    CHECK_EQ_I64(kissing_spheres_start(sys), KS_OK);
    CHECK_EQ_I64(kissing_spheres_wait(sys, 10000), KS_OK);
    CHECK_EQ_I64(atomic_load(&c.count) - before, 10);

    /* start / stop repeated, with work each time */
    for (int i = 0; i < 10; i++) {
        if (i > 0)
            CHECKF(kissing_spheres_start(sys) == KS_OK, "start #%d: %s", i, tu_err());
        before = atomic_load(&c.count);
        CHECK_EQ_I64(kissing_spheres_distribute_range(sys, 0, 500), KS_OK);
        CHECKF(kissing_spheres_stop(sys) == KS_OK, "stop #%d: %s", i, tu_err());
        CHECKF(atomic_load(&c.count) - before == 500, "cycle %d: %d of 500 items ran before stop returned", i,
               atomic_load(&c.count) - before);
    }
    /* start / stop with nothing to do */
    for (int i = 0; i < 10; i++) {
        CHECK_EQ_I64(kissing_spheres_start(sys), KS_OK);
        CHECK_EQ_I64(kissing_spheres_stop(sys), KS_OK);
    }
    kissing_spheres_free(sys);
    kissing_spheres_free(other);
    tu_gate_destroy(&c.gate);
}

/* free a running system with work queued: drains, no hang, no crash */
static void free_without_stop(void)
{
    enum { N = 50000 };
    KissingSpheresSystem *sys = tu_create_levels(3);
    if (sys == NULL)
        return;
    SCtx c;
    memset(&c, 0, sizeof c);
    c.sys = sys;
    c.work_rounds = 200;
    tu_gate_init(&c.gate);
    CHECK_EQ_I64(kissing_spheres_set_work_callback(sys, state_cb, &c), KS_OK);
    CHECK_EQ_I64(kissing_spheres_start(sys), KS_OK);
    CHECK_EQ_I64(kissing_spheres_distribute_range(sys, 0, N), KS_OK);
    int threads_running = tu_os_thread_count();
    kissing_spheres_free(sys); /* without stop */
    CHECKF(atomic_load(&c.count) == N, "free of a running system ran %d of %d queued items", atomic_load(&c.count), N);
    int threads_after = tu_os_thread_count();
    CHECKF(threads_after < threads_running, "free of a running system left its threads (%d -> %d)", threads_running,
           threads_after);

    /* never started, work queued: discarded, nothing runs */
    memset(&c, 0, sizeof c);
    tu_gate_init(&c.gate);
    sys = tu_create_levels(4);
    if (sys != NULL) {
        CHECK_EQ_I64(kissing_spheres_set_work_callback(sys, state_cb, &c), KS_OK);
        CHECK_EQ_I64(kissing_spheres_distribute_range(sys, 0, 100000), KS_OK);
        uint64_t it[4] = {1, 2, 3, 4};
        CHECK_EQ_I64(kissing_spheres_enqueue(sys, 1884, it, 4), KS_OK);
        CHECK_EQ_I64(kissing_spheres_pending(sys), 100004);
        kissing_spheres_free(sys);
        CHECK_EQ_I64(atomic_load(&c.count), 0);
    }
    /* stopped with work queued */
    sys = kissing_spheres_create(2);
    if (sys != NULL) {
        CHECK_EQ_I64(kissing_spheres_start(sys), KS_OK);
        CHECK_EQ_I64(kissing_spheres_stop(sys), KS_OK);
        CHECK_EQ_I64(kissing_spheres_distribute_range(sys, 0, 1000), KS_OK);
        kissing_spheres_free(sys);
        CHECK(true);
    }
    tu_gate_destroy(&c.gate);
}

/* ---- the error slot ------------------------------------------------------ */

static void *other_thread_error(void *arg)
{
    bool *was_null = arg;
    *was_null = cllm_last_error() == NULL;
    return NULL;
}

static void error_slot(void)
{
    cllm_clear_error();
    CHECK(cllm_last_error() == NULL);
    CHECK_EQ_I64(kissing_spheres_start(NULL), -1);
    const char *e = cllm_last_error();
    CHECK(e != NULL && e[0] != '\0');
    /* per thread: another thread does not see this thread's error */
    bool was_null = false;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, other_thread_error, &was_null) == 0);
    pthread_join(th, NULL);
    CHECKF(was_null, "cllm_last_error() of a fresh thread is not NULL");
    CHECK(cllm_last_error() != NULL);
    cllm_clear_error();
    CHECK(cllm_last_error() == NULL);
}

int main(void)
{
    tu_begin(60);
    error_slot();
    null_system();
    bad_creation();
    bad_arguments();
    stats_strings();
    wrong_state();
    free_without_stop();
    return tu_finish("test_bad_input");
}
