/* test_echobeats_scheduling.c: the order in which Echobeats runs tasks.
 *
 *   priority_order          1 worker per stream: tasks queued behind a
 *                           blocked worker run by priority (higher first,
 *                           -0.0 == 0.0, extremes included), FIFO among
 *                           equal priorities
 *   fifo_among_equals       200 equal-priority tasks run in submission order
 *   streams_are_independent a blocked stream does not hold back the others
 *   ordered_lane            CUDA_STREAM tasks of a stream run one at a time in
 *                           submission order whatever their priority, also
 *                           with 4 workers
 *   data_loader_layer       DATA_LOADER tasks run on their own pool: they
 *                           finish while their stream's worker is blocked
 *   dependency_chain        a 40-task chain across the three streams runs in
 *                           chain order, each task once
 *   dependency_diamond      A -> B, C -> D: D after B and C, once; the pending
 *                           tasks count in their streams' queue depth
 *   dependency_on_finished  dependencies already completed (and duplicated
 *                           ids) are met at once
 *   future_deadline         a deadline in the future does not stop a task
 */
#include "test_util.h"
#include "eb_test_util.h"

#include <float.h>

enum { NPRIO = 48 };

static void priority_order(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    EbGateTask g;
    eb_block_stream(m, 0, &g);
    EbOrder order;
    eb_order_init(&order);
    static EbTag tags[NPRIO];
    float prio[NPRIO];
    const float special[] = {FLT_MAX, -FLT_MAX, 0.0f, -0.0f, 1e-30f, -1e-30f, 1e30f, -1e30f};
    for (int i = 0; i < NPRIO; i++) {
        prio[i] = i < 8 ? special[i] : (float)((i * 7) % 5) - 2.0f + (i % 3 == 0 ? 0.5f : 0.0f);
        tags[i].order = &order;
        tags[i].tag = i;
        tags[i].rc = 0;
    }
    int perm[NPRIO];
    for (int i = 0; i < NPRIO; i++)
        perm[i] = i;
    tu_shuffle_int(perm, NPRIO, 42);
    /* Submit in shuffled order; the tag's submission rank decides among equals. */
    int rank[NPRIO];
    for (int k = 0; k < NPRIO; k++) {
        int i = perm[k];
        rank[i] = k;
        EchobeatsTask t = eb_task(eb_order_work, &tags[i], NULL, 1);
        t.priority = prio[i];
        EB_SUBMIT(m, &t);
    }
    tu_gate_open(&g.gate);
    CHECK(echobeats_synchronize(m, 10000));
    CHECK_EQ_I64(order.n, NPRIO);
    int bad = 0;
    for (int k = 1; k < order.n; k++) {
        int a = order.tags[k - 1], b = order.tags[k];
        bool ok = prio[a] > prio[b] || (prio[a] == prio[b] && rank[a] < rank[b]);
        if (!ok && bad++ < 5)
            CHECKF(ok, "position %d: task %d (priority %g, rank %d) ran before task %d (priority %g, rank %d)", k, a,
                   (double)prio[a], rank[a], b, (double)prio[b], rank[b]);
    }
    CHECK_EQ_I64(bad, 0);
    echobeats_free(m);
    eb_order_destroy(&order);
    tu_gate_destroy(&g.gate);
}

enum { NFIFO = 200 };

static void fifo_among_equals(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    EbGateTask g;
    eb_block_stream(m, 1, &g);
    EbOrder order;
    eb_order_init(&order);
    static EbTag tags[NFIFO];
    for (int i = 0; i < NFIFO; i++) {
        tags[i].order = &order;
        tags[i].tag = i;
        tags[i].rc = 0;
        EchobeatsTask t = eb_task(eb_order_work, &tags[i], NULL, 5);
        t.priority = 0.25f;
        EB_SUBMIT(m, &t);
    }
    tu_gate_open(&g.gate);
    CHECK(echobeats_wait_stream(m, 1, 10000));
    CHECK_EQ_I64(order.n, NFIFO);
    int first_bad = -1;
    for (int i = 0; i < order.n; i++)
        if (order.tags[i] != i) {
            first_bad = i;
            break;
        }
    CHECKF(first_bad < 0, "position %d holds task %d", first_bad, first_bad < 0 ? 0 : order.tags[first_bad]);
    echobeats_free(m);
    eb_order_destroy(&order);
    tu_gate_destroy(&g.gate);
}

static void streams_are_independent(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    EbGateTask g;
    uint64_t blocker = eb_block_stream(m, 0, &g);
    for (int s = 1; s < 3; s++) {
        EbCounter c;
        EchobeatsTask t = eb_counter_task(&c, 0, eb_step_of_stream(s));
        uint64_t id = EB_SUBMIT(m, &t);
        EB_WAIT(m, id, ECHOBEATS_TASK_COMPLETED);
        CHECK(echobeats_wait_stream(m, s, 10000));
        EB_CHECK_RUNS_DESTROYS(&c, 1, 1);
    }
    CHECK(!echobeats_wait_stream(m, 0, 0));
    CHECK_EQ_I64(echobeats_wait_task(m, blocker, 0, NULL), ECHOBEATS_TASK_TIMEOUT);
    tu_gate_open(&g.gate);
    EB_WAIT(m, blocker, ECHOBEATS_TASK_COMPLETED);
    echobeats_free(m);
    tu_gate_destroy(&g.gate);
}

/* Lane tasks: record the order and the most that ran at once. */
typedef struct {
    EbTag tag;
    atomic_int *running;
    atomic_int *max_running;
} LaneCtx;

static int lane_work(void *ctx)
{
    LaneCtx *l = (LaneCtx *)ctx;
    int now = atomic_fetch_add(l->running, 1) + 1;
    int seen = atomic_load(l->max_running);
    while (now > seen && !atomic_compare_exchange_weak(l->max_running, &seen, now)) {
    }
    tu_busy_work((uint64_t)l->tag.tag, 2000);
    eb_order_work(&l->tag);
    atomic_fetch_sub(l->running, 1);
    return 0;
}

enum { NLANE = 40 };

static void ordered_lane(void)
{
    const int workers[] = {1, 4};
    for (int w = 0; w < 2; w++) {
        EchobeatsManager *m = eb_create(workers[w]);
        if (m == NULL)
            continue;
        EbOrder order;
        eb_order_init(&order);
        atomic_int running, max_running;
        atomic_init(&running, 0);
        atomic_init(&max_running, 0);
        static LaneCtx ctx[NLANE];
        /* Block one worker so that the lane tasks queue up first. */
        EbGateTask g;
        eb_block_stream(m, 2, &g);
        for (int i = 0; i < NLANE; i++) {
            ctx[i].tag.order = &order;
            ctx[i].tag.tag = i;
            ctx[i].tag.rc = 0;
            ctx[i].running = &running;
            ctx[i].max_running = &max_running;
            EchobeatsTask t = eb_task(lane_work, &ctx[i], NULL, 12);
            t.layer = ECHOBEATS_LAYER_CUDA_STREAM;
            t.priority = (float)((i * 13) % 7); /* ignored by the lane */
            EB_SUBMIT(m, &t);
        }
        tu_gate_open(&g.gate);
        CHECK(echobeats_wait_stream(m, 2, 10000));
        CHECK_EQ_I64(order.n, NLANE);
        int first_bad = -1;
        for (int i = 0; i < order.n; i++)
            if (order.tags[i] != i) {
                first_bad = i;
                break;
            }
        CHECKF(first_bad < 0, "%d workers: lane position %d holds task %d", workers[w], first_bad,
               first_bad < 0 ? 0 : order.tags[first_bad]);
        CHECKF(atomic_load(&max_running) == 1, "%d workers: %d lane tasks ran at once", workers[w],
               atomic_load(&max_running));
        CHECK_EQ_I64(echobeats_ordered_lane_kind(m), ECHOBEATS_LANE_CPU);
        echobeats_free(m);
        eb_order_destroy(&order);
        tu_gate_destroy(&g.gate);
    }
}

static void data_loader_layer(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    EbGateTask g;
    eb_block_stream(m, 0, &g);
    EbCounter c;
    eb_counter_init(&c, 0);
    for (int i = 0; i < 10; i++) {
        EchobeatsTask t = eb_task(eb_count_work, &c, eb_count_destroy, 1);
        t.layer = ECHOBEATS_LAYER_DATA_LOADER;
        uint64_t id = EB_SUBMIT(m, &t);
        EchobeatsTaskResult r;
        CHECK_EQ_I64(echobeats_wait_task(m, id, 10000, &r), ECHOBEATS_TASK_COMPLETED);
        CHECK_EQ_I64(r.stream, ECHOBEATS_STREAM_CEREBRAL);
    }
    EB_CHECK_RUNS_DESTROYS(&c, 10, 10);
    /* Stream 0 is still busy with the blocker. */
    CHECK(!echobeats_wait_stream(m, 0, 0));
    tu_gate_open(&g.gate);
    CHECK(echobeats_wait_stream(m, 0, 10000));
    EchobeatsMetrics met;
    echobeats_get_metrics(m, &met);
    CHECK_EQ_I64(met.streams[0].tasks_completed, 11);
    echobeats_free(m);
    tu_gate_destroy(&g.gate);
}

enum { NCHAIN = 40 };

static void dependency_chain(void)
{
    EchobeatsManager *m = eb_create(2);
    if (m == NULL)
        return;
    EbOrder order;
    eb_order_init(&order);
    static EbTag tags[NCHAIN];
    uint64_t ids[NCHAIN];
    /* Submitted last-first would need future ids, so submit in order but
     * give later tasks higher priority: without the dependencies they would
     * overtake. The first task waits at a gate so that all are queued. */
    EbGateTask g;
    eb_gate_task_init(&g);
    EchobeatsTask gt = eb_task(eb_gate_work, &g, eb_gate_destroy, 1);
    uint64_t head = EB_SUBMIT(m, &gt);
    for (int i = 0; i < NCHAIN; i++) {
        tags[i].order = &order;
        tags[i].tag = i;
        tags[i].rc = 0;
        EchobeatsTask t = eb_task(eb_order_work, &tags[i], NULL, 1 + i % 12);
        t.priority = (float)i;
        uint64_t dep = i == 0 ? head : ids[i - 1];
        t.dependencies = &dep;
        t.dependency_count = 1;
        ids[i] = EB_SUBMIT(m, &t);
    }
    tu_gate_wait_started(&g.gate, 10000);
    CHECK_EQ_I64(order.n, 0);
    tu_gate_open(&g.gate);
    EB_WAIT(m, ids[NCHAIN - 1], ECHOBEATS_TASK_COMPLETED);
    CHECK(echobeats_synchronize(m, 10000));
    CHECK_EQ_I64(order.n, NCHAIN);
    for (int i = 0; i < order.n; i++)
        if (order.tags[i] != i) {
            CHECKF(false, "chain position %d holds task %d", i, order.tags[i]);
            break;
        }
    echobeats_free(m);
    eb_order_destroy(&order);
    tu_gate_destroy(&g.gate);
}

static void dependency_diamond(void)
{
    EchobeatsManager *m = eb_create(2);
    if (m == NULL)
        return;
    EbOrder order;
    eb_order_init(&order);
    EbTag tb = {&order, 1, 0}, tc = {&order, 2, 0}, td = {&order, 3, 0};
    EbGateTask a;
    uint64_t a_id = eb_block_stream(m, 0, &a); /* A: running until opened */
    EchobeatsTask t = eb_task(eb_order_work, &tb, NULL, 2);
    t.dependencies = &a_id;
    t.dependency_count = 1;
    uint64_t b_id = EB_SUBMIT(m, &t);
    t = eb_task(eb_order_work, &tc, NULL, 3);
    t.dependencies = &a_id;
    t.dependency_count = 1;
    uint64_t c_id = EB_SUBMIT(m, &t);
    uint64_t bc[2] = {c_id, b_id};
    EbCounter dcount;
    eb_counter_init(&dcount, 0);
    t = eb_task(eb_order_work, &td, NULL, 5);
    t.dependencies = bc;
    t.dependency_count = 2;
    uint64_t d_id = EB_SUBMIT(m, &t);

    /* Pending tasks count in their streams' queue depth. */
    EchobeatsMetrics met;
    echobeats_get_metrics(m, &met);
    CHECK_EQ_I64(met.streams[0].current_queue_depth, 0);
    CHECK_EQ_I64(met.streams[1].current_queue_depth, 2);
    CHECK_EQ_I64(met.streams[2].current_queue_depth, 1);
    CHECK_EQ_I64(echobeats_wait_task(m, d_id, 0, NULL), ECHOBEATS_TASK_TIMEOUT);
    CHECK(!echobeats_wait_stream(m, 1, 0));

    tu_gate_open(&a.gate);
    EB_WAIT(m, d_id, ECHOBEATS_TASK_COMPLETED);
    CHECK(echobeats_synchronize(m, 10000));
    CHECK_EQ_I64(order.n, 3);
    int pb = eb_order_pos(&order, 1), pc = eb_order_pos(&order, 2), pd = eb_order_pos(&order, 3);
    CHECK(pb >= 0 && pc >= 0 && pd == 2);
    EB_CHECK_RUNS_DESTROYS(&a.counter, 1, 1);
    echobeats_get_metrics(m, &met);
    for (int s = 0; s < 3; s++)
        CHECK_EQ_I64(met.streams[s].current_queue_depth, 0);
    CHECK_EQ_I64(met.streams[1].max_queue_depth, 2);
    echobeats_free(m);
    eb_order_destroy(&order);
    tu_gate_destroy(&a.gate);
}

static void dependency_on_finished(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    EbCounter c;
    EchobeatsTask t = eb_counter_task(&c, 0, 1);
    uint64_t a = EB_SUBMIT(m, &t);
    uint64_t b = EB_SUBMIT(m, &t);
    EB_WAIT(m, a, ECHOBEATS_TASK_COMPLETED);
    EB_WAIT(m, b, ECHOBEATS_TASK_COMPLETED);
    uint64_t deps[4] = {a, b, a, b};
    t.dependencies = deps;
    t.dependency_count = 4;
    t.stream = ECHOBEATS_STREAM_AUTONOMIC;
    uint64_t d = EB_SUBMIT(m, &t);
    EB_WAIT(m, d, ECHOBEATS_TASK_COMPLETED);
    CHECK(echobeats_synchronize(m, 10000));
    EB_CHECK_RUNS_DESTROYS(&c, 3, 3);
    echobeats_free(m);
}

static void future_deadline(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    EbCounter c;
    EchobeatsTask t = eb_counter_task(&c, 0, 7);
    t.deadline_ns = echobeats_now_ns() + 30LL * 1000000000LL;
    uint64_t id = EB_SUBMIT(m, &t);
    t.deadline_ns = INT64_MAX;
    uint64_t id2 = EB_SUBMIT(m, &t);
    EB_WAIT(m, id, ECHOBEATS_TASK_COMPLETED);
    EB_WAIT(m, id2, ECHOBEATS_TASK_COMPLETED);
    CHECK(echobeats_synchronize(m, 10000));
    EB_CHECK_RUNS_DESTROYS(&c, 2, 2);
    echobeats_free(m);
}

int main(void)
{
    tu_begin(120);
    EB_RUN(priority_order, 30);
    EB_RUN(fifo_among_equals, 30);
    EB_RUN(streams_are_independent, 30);
    EB_RUN(ordered_lane, 30);
    EB_RUN(data_loader_layer, 30);
    EB_RUN(dependency_chain, 30);
    EB_RUN(dependency_diamond, 30);
    EB_RUN(dependency_on_finished, 30);
    EB_RUN(future_deadline, 30);
    return tu_finish("test_echobeats_scheduling");
}
