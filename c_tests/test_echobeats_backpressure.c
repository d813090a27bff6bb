/* test_echobeats_backpressure.c: max_queue_depth is real back-pressure.
 *
 *   reject_when_full           reject_when_full = 1: the submit after
 *                              max_queue_depth queued + pending tasks fails at
 *                              once (context destroyed); room comes back
 *                              when the worker takes tasks
 *   wait_times_out             reject_when_full = 0: a submit to a full stream
 *                              waits submit_timeout_ms, then fails
 *   wait_succeeds_with_room    submit_timeout_ms = -1: a blocked submit
 *                              succeeds once the worker makes room
 *   shutdown_wakes_submitter   a submit blocked on a full stream returns 0
 *                              when the pool shuts down
 *   other_streams_unaffected   a full stream does not limit the others
 */
#include "test_util.h"
#include "eb_test_util.h"

enum { DEPTH = 4 };

static EchobeatsManager *full_pool(int reject, int64_t timeout_ms)
{
    EchobeatsConfig cfg = eb_config(1);
    cfg.max_queue_depth = DEPTH;
    cfg.reject_when_full = (uint8_t)reject;
    cfg.submit_timeout_ms = timeout_ms;
    return eb_create_cfg(&cfg);
}

/* With stream 0 blocked by `blocker`, fills it: DEPTH - 1 queued tasks plus
 * one pending, all counting into *c (initialised here). */
static void fill(EchobeatsManager *m, EbCounter *c, uint64_t blocker)
{
    eb_counter_init(c, 0);
    for (int i = 0; i < DEPTH - 1; i++) {
        EchobeatsTask t = eb_task(eb_count_work, c, eb_count_destroy, 1);
        EB_SUBMIT(m, &t);
    }
    EchobeatsTask t = eb_task(eb_count_work, c, eb_count_destroy, 4);
    t.dependencies = &blocker;
    t.dependency_count = 1;
    EB_SUBMIT(m, &t);
    EchobeatsMetrics met;
    echobeats_get_metrics(m, &met);
    CHECK_EQ_I64(met.streams[0].current_queue_depth, DEPTH);
}

/* full_pool(reject, timeout_ms) with stream 0 blocked by gate task *g and
 * filled with tasks counting into *c; NULL if the pool was not created. */
static EchobeatsManager *full_gated_pool(int reject, int64_t timeout_ms, EbGateTask *g, EbCounter *c)
{
    EchobeatsManager *m = full_pool(reject, timeout_ms);
    if (m != NULL)
        fill(m, c, eb_block_stream(m, 0, g));
    return m;
}

static void reject_when_full(void)
{
    EbGateTask g;
    EbCounter c;
    EchobeatsManager *m = full_gated_pool(1, 0, &g, &c);
    if (m == NULL)
        return;
    EbCounter r;
    EchobeatsTask t = eb_counter_task(&r, 0, 7);
    double t0 = tu_now();
    CHECK_ERR(echobeats_submit(m, &t), 0);
    CHECK_ERR(echobeats_submit_for_step(m, eb_count_work, &r, eb_count_destroy, 10, 0.5f), 0);
    CHECKF(tu_now() - t0 < 1.0, "rejecting took %.3f s", tu_now() - t0);
    EB_CHECK_RUNS_DESTROYS(&r, 0, 2);
    EchobeatsMetrics met;
    echobeats_get_metrics(m, &met);
    CHECK_EQ_I64(met.streams[0].tasks_submitted, DEPTH + 1); /* the blocker too */
    CHECK_EQ_I64(met.streams[0].max_queue_depth, DEPTH);
    tu_gate_open(&g.gate);
    CHECK(echobeats_wait_stream(m, 0, 10000));
    EB_CHECK_RUNS_DESTROYS(&c, DEPTH, DEPTH);
    /* Room again. */
    CHECK(echobeats_submit(m, &t) != 0);
    CHECK(echobeats_wait_stream(m, 0, 10000));
    EB_CHECK_RUNS_DESTROYS(&r, 1, 3);
    echobeats_free(m);
    tu_gate_destroy(&g.gate);
}

static void wait_times_out(void)
{
    EbGateTask g;
    EbCounter c;
    EchobeatsManager *m = full_gated_pool(0, 30, &g, &c);
    if (m == NULL)
        return;
    EbCounter r;
    EchobeatsTask t = eb_counter_task(&r, 0, 1);
    double t0 = tu_now();
    CHECK_ERR(echobeats_submit(m, &t), 0);
    double took = tu_now() - t0;
    CHECKF(took >= 0.029 && took < 5.0, "a submit waiting 30 ms for room took %.3f s", took);
    EB_CHECK_RUNS_DESTROYS(&r, 0, 1);
    tu_gate_open(&g.gate);
    CHECK(echobeats_wait_stream(m, 0, 10000));
    echobeats_free(m);
    tu_gate_destroy(&g.gate);
}

typedef struct {
    EchobeatsManager *m;
    EbCounter *c;
    uint64_t id;
    const char *err;
} Blocked;

static void *blocked_submit(void *arg);

/* Starts a thread whose submit (counting into *r, initialised here) waits
 * for room in the full stream 0; its outcome lands in *b. */
static void start_blocked_submit(pthread_t *th, Blocked *b, EchobeatsManager *m, EbCounter *r)
{
    eb_counter_init(r, 0);
    *b = (Blocked){m, r, 0, NULL};
    CHECK(pthread_create(th, NULL, blocked_submit, b) == 0);
}

static void *blocked_submit(void *arg)
{
    Blocked *b = (Blocked *)arg;
    EchobeatsTask t = eb_task(eb_count_work, b->c, eb_count_destroy, 1);
    b->id = echobeats_submit(b->m, &t);
    b->err = b->id == 0 ? tu_err() : "";
    return NULL;
}

static void wait_succeeds_with_room(void)
{
    EbGateTask g;
    EbCounter c;
    EchobeatsManager *m = full_gated_pool(0, -1, &g, &c);
    if (m == NULL)
        return;
    EbCounter r;
    Blocked b;
    pthread_t th;
    start_blocked_submit(&th, &b, m, &r);
    /* The submitter cannot get in while the stream is full. */
    CHECK_EQ_I64(atomic_load(&r.destroys), 0);
    tu_gate_open(&g.gate);
    pthread_join(th, NULL);
    CHECKF(b.id != 0, "blocked submit failed: %s", b.err);
    if (b.id != 0)
        EB_WAIT(m, b.id, ECHOBEATS_TASK_COMPLETED);
    CHECK(echobeats_wait_stream(m, 0, 10000));
    EB_CHECK_RUNS_DESTROYS(&r, 1, 1);
    echobeats_free(m);
    tu_gate_destroy(&g.gate);
}

static void shutdown_wakes_submitter(void)
{
    EchobeatsManager *m = full_pool(0, -1);
    if (m == NULL)
        return;
    EbShutdownBlocker sb;
    uint64_t blocker = eb_block_until_shutdown(m, 0, &sb);
    EbCounter c;
    fill(m, &c, blocker);
    EbCounter r;
    Blocked b;
    pthread_t th;
    start_blocked_submit(&th, &b, m, &r);
    /* Before or while the submitter waits, the pool shuts down: it gets 0. */
    CHECK_EQ_I64(echobeats_shutdown(m, NULL), ECHOBEATS_OK);
    pthread_join(th, NULL);
    CHECK_EQ_I64(b.id, 0);
    EB_CHECK_RUNS_DESTROYS(&r, 0, 1);
    EB_CHECK_RUNS_DESTROYS(&c, DEPTH, DEPTH); /* drained */
    echobeats_free(m);
    tu_gate_destroy(&sb.gate);
}

static void other_streams_unaffected(void)
{
    EbGateTask g;
    EbCounter c;
    EchobeatsManager *m = full_gated_pool(1, 0, &g, &c);
    if (m == NULL)
        return;
    EbCounter o;
    eb_counter_init(&o, 0);
    for (int i = 0; i < 50; i++) {
        CHECK(echobeats_submit_for_step(m, eb_count_work, &o, eb_count_destroy, 2 + i % 2, 0.5f) != 0);
        if (i % 3 == 2)
            CHECK(echobeats_synchronize(m, 0) == false); /* stream 0 still busy */
        CHECK(echobeats_wait_stream(m, 1, 10000) && echobeats_wait_stream(m, 2, 10000));
    }
    EB_CHECK_RUNS_DESTROYS(&o, 50, 50);
    tu_gate_open(&g.gate);
    CHECK(echobeats_synchronize(m, 10000));
    echobeats_free(m);
    tu_gate_destroy(&g.gate);
}

int main(void)
{
    tu_begin(120);
    EB_RUN(reject_when_full, 20);
    EB_RUN(other_streams_unaffected, 20);
    EB_RUN(wait_times_out, 20);
    EB_RUN(wait_succeeds_with_room, 20);
    EB_RUN(shutdown_wakes_submitter, 20);
    return tu_finish("test_echobeats_backpressure");
}
