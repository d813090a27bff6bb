/* test_echobeats_context_ownership.c: after a submit with a non-NULL
 * manager, task and work function, destroy_context runs exactly once, in
 * every path. Contexts are counted and most are malloc'ed and freed by
 * destroy_context, so that the asan_ build also reports a missing (leak) or
 * repeated (double free) destroy.
 *
 *   ran_and_succeeded        COMPLETED: runs 1, destroys 1
 *   ran_and_failed           nonzero work result: FAILED, destroys 1
 *   failed_submits           rejected submits destroy at once
 *   expired_deadline         past deadline, and a deadline passing while
 *                            queued: EXPIRED, never run, destroys 1
 *   failed_dependency        a failing dependency: dependents (a chain of
 *                            three) FAILED, never run, destroys 1 each
 *   cancelled_at_shutdown    drain_on_shutdown = 0: queued and pending tasks
 *                            CANCELLED, never run, destroys 1; the report
 *                            counts them
 *   drained_at_shutdown      drain_on_shutdown = 1: queued tasks run at
 *                            shutdown
 *   freed_with_queued_tasks  echobeats_free on a pool with queued tasks
 *                            (drain and cancel): every context destroyed
 *   many_heap_contexts       2,000 heap contexts over all paths at once
 */
#include "test_util.h"
#include "eb_test_util.h"

#include <math.h>

static void ran_and_succeeded(void)
{
    EchobeatsManager *m = eb_create(2);
    if (m == NULL)
        return;
    EbCounter c;
    EchobeatsTask t = eb_counter_task(&c, 0, 1);
    uint64_t id = EB_SUBMIT(m, &t);
    EB_WAIT(m, id, ECHOBEATS_TASK_COMPLETED);
    CHECK(echobeats_synchronize(m, 10000));
    EB_CHECK_RUNS_DESTROYS(&c, 1, 1);

    /* A NULL destroy_context is allowed. */
    EbCounter n;
    eb_counter_init(&n, 0);
    t = eb_task(eb_count_work, &n, NULL, 2);
    id = EB_SUBMIT(m, &t);
    EB_WAIT(m, id, ECHOBEATS_TASK_COMPLETED);
    EB_CHECK_RUNS_DESTROYS(&n, 1, 0);

    /* submit_for_step, every step. */
    atomic_int runs, destroys;
    atomic_init(&runs, 0);
    atomic_init(&destroys, 0);
    for (int32_t s = 1; s <= 12; s++) {
        EbHeapCtx *h = eb_heap_counter(&runs, &destroys);
        CHECK(echobeats_submit_for_step(m, eb_heap_work, h, eb_heap_destroy, s, (float)s) != 0);
    }
    CHECK(echobeats_synchronize(m, 10000));
    CHECK_EQ_I64(atomic_load(&runs), 12);
    CHECK_EQ_I64(atomic_load(&destroys), 12);
    echobeats_free(m);
    EB_CHECK_RUNS_DESTROYS(&c, 1, 1);
}

static void ran_and_failed(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    const int rcs[] = {1, -1, 7, ECHOBEATS_ERROR};
    for (int i = 0; i < 4; i++) {
        EbCounter c;
        EchobeatsTask t = eb_counter_task(&c, rcs[i], 3);
        uint64_t id = EB_SUBMIT(m, &t);
        EchobeatsTaskResult r;
        CHECK_EQ_I64(echobeats_wait_task(m, id, 10000, &r), ECHOBEATS_TASK_FAILED);
        CHECK_EQ_I64(r.status, ECHOBEATS_TASK_FAILED);
        CHECK(echobeats_synchronize(m, 10000));
        EB_CHECK_RUNS_DESTROYS(&c, 1, 1);
    }
    EchobeatsMetrics met;
    echobeats_get_metrics(m, &met);
    CHECK_EQ_I64(met.streams[2].tasks_failed, 4);
    CHECK_EQ_I64(met.streams[2].tasks_run, 4);
    echobeats_free(m);
}

static void failed_submits(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    atomic_int runs, destroys;
    atomic_init(&runs, 0);
    atomic_init(&destroys, 0);
    int rejected = 0;
    for (int i = 0; i < 8; i++) {
        EchobeatsTask t = eb_task(eb_heap_work, eb_heap_counter(&runs, &destroys), eb_heap_destroy, 1);
        uint64_t bad_dep = 1000000;
        switch (i) {
        case 0: t.step = 0; break;
        case 1: t.step = 13; break;
        case 2: t.stream = 9; break;
        case 3: t.phase = 9; break;
        case 4: t.layer = 9; break;
        case 5: t.priority = NAN; break;
        case 6: t.dependencies = &bad_dep; t.dependency_count = 1; break;
        default: t.dependencies = NULL; t.dependency_count = 1; break;
        }
        rejected += echobeats_submit(m, &t) == 0;
    }
    CHECK_EQ_I64(rejected, 8);
    CHECK_EQ_I64(atomic_load(&runs), 0);
    CHECK_EQ_I64(atomic_load(&destroys), 8);
    /* A full stream (reject_when_full; the waiting form is in
     * test_echobeats_backpressure.c). */
    {
        EchobeatsConfig cfg = eb_config(1);
        cfg.max_queue_depth = 2;
        cfg.reject_when_full = 1;
        EchobeatsManager *f = eb_create_cfg(&cfg);
        if (f == NULL) {
            echobeats_free(m);
            return;
        }
        EbGateTask g;
        eb_block_stream(f, 0, &g);
        atomic_init(&runs, 0);
        atomic_init(&destroys, 0);
        for (int i = 0; i < 2; i++) {
            EchobeatsTask t = eb_task(eb_heap_work, eb_heap_counter(&runs, &destroys), eb_heap_destroy, 1);
            CHECK(echobeats_submit(f, &t) != 0);
        }
        EchobeatsTask t = eb_task(eb_heap_work, eb_heap_counter(&runs, &destroys), eb_heap_destroy, 1);
        CHECK_ERR(echobeats_submit(f, &t), 0);
        CHECK_EQ_I64(atomic_load(&destroys), 1);
        CHECK_ERR(echobeats_submit_for_step(f, eb_heap_work, eb_heap_counter(&runs, &destroys), eb_heap_destroy, 4,
                                            0.5f),
                  0);
        CHECK_EQ_I64(atomic_load(&destroys), 2);
        tu_gate_open(&g.gate);
        CHECK(echobeats_synchronize(f, 10000));
        CHECK_EQ_I64(atomic_load(&runs), 2);
        CHECK_EQ_I64(atomic_load(&destroys), 4);
        echobeats_free(f);
        EB_CHECK_RUNS_DESTROYS(&g.counter, 1, 1);
        tu_gate_destroy(&g.gate);
    }
    echobeats_free(m);
}

static void expired_deadline(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    /* Already past at submission. */
    const int64_t past[] = {1, echobeats_now_ns() - 1, INT64_MIN};
    for (int i = 0; i < 3; i++) {
        EbCounter c;
        EchobeatsTask t = eb_counter_task(&c, 0, 1);
        t.deadline_ns = past[i];
        uint64_t id = EB_SUBMIT(m, &t);
        EchobeatsTaskResult r;
        CHECK_EQ_I64(echobeats_wait_task(m, id, 10000, &r), ECHOBEATS_TASK_EXPIRED);
        CHECK_EQ_I64(r.execution_us, 0);
        CHECK(echobeats_synchronize(m, 10000));
        EB_CHECK_RUNS_DESTROYS(&c, 0, 1);
    }
    /* Passes while queued behind a blocked worker. */
    EbGateTask g;
    eb_block_stream(m, 0, &g);
    EbCounter late, fine;
    eb_counter_init(&late, 0);
    eb_counter_init(&fine, 0);
    EchobeatsTask t = eb_task(eb_count_work, &late, eb_count_destroy, 1);
    const int64_t late_deadline = echobeats_now_ns() + 2000000; /* 2 ms */
    t.deadline_ns = late_deadline;
    uint64_t late_id = EB_SUBMIT(m, &t);
    t = eb_task(eb_count_work, &fine, eb_count_destroy, 1);
    t.deadline_ns = echobeats_now_ns() + 60LL * 1000000000LL;
    uint64_t fine_id = EB_SUBMIT(m, &t);
    /* The late task cannot start while the worker is blocked: wait (with
     * the library's timed wait) until its deadline has certainly passed. */
    while (echobeats_now_ns() <= late_deadline + 1000000)
        CHECK_EQ_I64(echobeats_wait_task(m, late_id, 1, NULL), ECHOBEATS_TASK_TIMEOUT);
    tu_gate_open(&g.gate);
    EB_WAIT(m, late_id, ECHOBEATS_TASK_EXPIRED);
    EB_WAIT(m, fine_id, ECHOBEATS_TASK_COMPLETED);
    CHECK(echobeats_synchronize(m, 10000));
    EB_CHECK_RUNS_DESTROYS(&late, 0, 1);
    EB_CHECK_RUNS_DESTROYS(&fine, 1, 1);
    EchobeatsMetrics met;
    echobeats_get_metrics(m, &met);
    CHECK_EQ_I64(met.streams[0].tasks_expired, 4);
    CHECK_EQ_I64(met.streams[0].tasks_failed, 4);
    echobeats_free(m);
    tu_gate_destroy(&g.gate);
}

static void failed_dependency(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    EbGateTask g;
    eb_block_stream(m, 1, &g);
    EbCounter bad, d1, d2, d3, other;
    eb_counter_init(&bad, 5);
    eb_counter_init(&d1, 0);
    eb_counter_init(&d2, 0);
    eb_counter_init(&d3, 0);
    eb_counter_init(&other, 0);
    EchobeatsTask t = eb_task(eb_count_work, &bad, eb_count_destroy, 2);
    uint64_t bad_id = EB_SUBMIT(m, &t);
    /* A chain bad <- d1 <- d2 <- d3 across streams, plus d3 also on an
     * independent task that succeeds. */
    t = eb_task(eb_count_work, &other, eb_count_destroy, 3);
    uint64_t other_id = EB_SUBMIT(m, &t);
    t = eb_task(eb_count_work, &d1, eb_count_destroy, 1);
    t.dependencies = &bad_id;
    t.dependency_count = 1;
    uint64_t d1_id = EB_SUBMIT(m, &t);
    t = eb_task(eb_count_work, &d2, eb_count_destroy, 3);
    t.dependencies = &d1_id;
    t.dependency_count = 1;
    uint64_t d2_id = EB_SUBMIT(m, &t);
    uint64_t deps3[2] = {other_id, d2_id};
    t = eb_task(eb_count_work, &d3, eb_count_destroy, 2);
    t.dependencies = deps3;
    t.dependency_count = 2;
    uint64_t d3_id = EB_SUBMIT(m, &t);
    /* Pending, not done. */
    CHECK_EQ_I64(echobeats_wait_task(m, d1_id, 0, NULL), ECHOBEATS_TASK_TIMEOUT);
    tu_gate_open(&g.gate);
    EB_WAIT(m, bad_id, ECHOBEATS_TASK_FAILED);
    EB_WAIT(m, d1_id, ECHOBEATS_TASK_FAILED);
    EB_WAIT(m, d2_id, ECHOBEATS_TASK_FAILED);
    EB_WAIT(m, d3_id, ECHOBEATS_TASK_FAILED);
    EB_WAIT(m, other_id, ECHOBEATS_TASK_COMPLETED);
    CHECK(echobeats_synchronize(m, 10000));
    EB_CHECK_RUNS_DESTROYS(&bad, 1, 1);
    EB_CHECK_RUNS_DESTROYS(&d1, 0, 1);
    EB_CHECK_RUNS_DESTROYS(&d2, 0, 1);
    EB_CHECK_RUNS_DESTROYS(&d3, 0, 1);
    EB_CHECK_RUNS_DESTROYS(&other, 1, 1);

    /* A dependency that had already failed: the dependent fails at once. */
    EbCounter late;
    eb_counter_init(&late, 0);
    t = eb_task(eb_count_work, &late, eb_count_destroy, 1);
    t.dependencies = &bad_id;
    t.dependency_count = 1;
    uint64_t late_id = EB_SUBMIT(m, &t);
    EB_WAIT(m, late_id, ECHOBEATS_TASK_FAILED);
    CHECK(echobeats_synchronize(m, 10000));
    EB_CHECK_RUNS_DESTROYS(&late, 0, 1);

    /* An expired dependency fails its dependent too. */
    EbCounter exp, dep;
    eb_counter_init(&exp, 0);
    eb_counter_init(&dep, 0);
    t = eb_task(eb_count_work, &exp, eb_count_destroy, 1);
    t.deadline_ns = 1;
    uint64_t exp_id = EB_SUBMIT(m, &t);
    t = eb_task(eb_count_work, &dep, eb_count_destroy, 2);
    t.dependencies = &exp_id;
    t.dependency_count = 1;
    uint64_t dep_id = EB_SUBMIT(m, &t);
    EB_WAIT(m, exp_id, ECHOBEATS_TASK_EXPIRED);
    EB_WAIT(m, dep_id, ECHOBEATS_TASK_FAILED);
    CHECK(echobeats_synchronize(m, 10000));
    EB_CHECK_RUNS_DESTROYS(&exp, 0, 1);
    EB_CHECK_RUNS_DESTROYS(&dep, 0, 1);
    echobeats_free(m);
    tu_gate_destroy(&g.gate);
}

enum { QUEUED = 50 };

/* Blocks stream 0, queues QUEUED tasks on it plus QUEUED/2 on other streams
 * that depend on them, then shuts down. */
static void shutdown_with_queue(int drain)
{
    EchobeatsConfig cfg = eb_config(1);
    cfg.drain_on_shutdown = (uint8_t)drain;
    EchobeatsManager *m = eb_create_cfg(&cfg);
    if (m == NULL)
        return;
    EbShutdownBlocker b;
    uint64_t blocker = eb_block_until_shutdown(m, 0, &b);
    atomic_int runs, destroys;
    atomic_init(&runs, 0);
    atomic_init(&destroys, 0);
    uint64_t ids[QUEUED + QUEUED / 2];
    int n = 0;
    for (int i = 0; i < QUEUED; i++) {
        EchobeatsTask t = eb_task(eb_heap_work, eb_heap_counter(&runs, &destroys), eb_heap_destroy, 1);
        t.priority = (float)(i % 7);
        ids[n++] = EB_SUBMIT(m, &t);
    }
    for (int i = 0; i < QUEUED / 2; i++) {
        EchobeatsTask t = eb_task(eb_heap_work, eb_heap_counter(&runs, &destroys), eb_heap_destroy, 2 + i % 2);
        t.dependencies = &ids[i];
        t.dependency_count = 1;
        ids[n++] = EB_SUBMIT(m, &t);
    }
    CHECK_EQ_I64(atomic_load(&runs), 0);
    EchobeatsShutdownReport r;
    CHECK_EQ_I64(echobeats_shutdown(m, &r), ECHOBEATS_OK);
    CHECK_EQ_I64(atomic_load(&b.result), ECHOBEATS_ERROR);
    EB_WAIT(m, blocker, ECHOBEATS_TASK_COMPLETED);
    CHECK_EQ_I64(atomic_load(&destroys), n);
    EchobeatsMetrics met;
    echobeats_get_metrics(m, &met);
    if (drain) {
        CHECK_EQ_I64(atomic_load(&runs), n);
        CHECK_EQ_I64(r.cancelled, 0);
        CHECK_EQ_I64(r.drained, n + 1);
        for (int i = 0; i < n; i++)
            CHECK_EQ_I64(echobeats_wait_task(m, ids[i], 0, NULL), ECHOBEATS_TASK_COMPLETED);
    } else {
        CHECK_EQ_I64(atomic_load(&runs), 0);
        CHECK_EQ_I64(r.cancelled, n);
        CHECK_EQ_I64(r.drained, 1); /* the running blocker */
        for (int i = 0; i < n; i++)
            CHECK_EQ_I64(echobeats_wait_task(m, ids[i], 0, NULL), ECHOBEATS_TASK_CANCELLED);
        CHECK_EQ_I64(met.streams[0].tasks_cancelled, QUEUED);
        CHECK_EQ_I64(met.streams[1].tasks_cancelled + met.streams[2].tasks_cancelled, QUEUED / 2);
    }
    CHECK_EQ_I64(r.first_call, 1);
    CHECK(r.threads_joined >= 1);
    for (int s = 0; s < 3; s++)
        CHECK_EQ_I64(met.streams[s].current_queue_depth, 0);
    echobeats_free(m);
    CHECK_EQ_I64(atomic_load(&destroys), n);
    tu_gate_destroy(&b.gate);
}

static void cancelled_at_shutdown(void)
{
    shutdown_with_queue(0);
}

static void drained_at_shutdown(void)
{
    shutdown_with_queue(1);
}

/* echobeats_free alone (no shutdown first): the free runs the shutdown. */
static void freed_with_queued_tasks(void)
{
    for (int drain = 0; drain <= 1; drain++) {
        EchobeatsConfig cfg = eb_config(1);
        cfg.drain_on_shutdown = (uint8_t)drain;
        EchobeatsManager *m = eb_create_cfg(&cfg);
        if (m == NULL)
            continue;
        EbShutdownBlocker b;
        eb_block_until_shutdown(m, 2, &b);
        atomic_int runs, destroys;
        atomic_init(&runs, 0);
        atomic_init(&destroys, 0);
        for (int i = 0; i < 20; i++) {
            EchobeatsTask t = eb_task(eb_heap_work, eb_heap_counter(&runs, &destroys), eb_heap_destroy, 3);
            t.layer = i % 2 ? ECHOBEATS_LAYER_CUDA_STREAM : ECHOBEATS_LAYER_INTER_OP;
            EB_SUBMIT(m, &t);
        }
        echobeats_free(m);
        CHECK_EQ_I64(atomic_load(&destroys), 20);
        CHECK_EQ_I64(atomic_load(&runs), drain ? 20 : 0);
        tu_gate_destroy(&b.gate);
    }
}

/* Heap contexts through every path at once; ASan checks each is freed once. */
static void many_heap_contexts(void)
{
    EchobeatsConfig cfg = eb_config(2);
    cfg.drain_on_shutdown = 0;
    EchobeatsManager *m = eb_create_cfg(&cfg);
    if (m == NULL)
        return;
    atomic_int runs, destroys;
    atomic_init(&runs, 0);
    atomic_init(&destroys, 0);
    int submitted = 0;
    uint64_t prev = 0;
    for (int i = 0; i < 2000; i++) {
        EchobeatsTask t = eb_task(eb_heap_work, eb_heap_counter(&runs, &destroys), eb_heap_destroy, 1 + i % 12);
        t.layer = i % 5;
        t.priority = (float)(i % 3);
        if (i % 11 == 0)
            t.deadline_ns = 1;
        if (i % 13 == 0)
            t.step = 0; /* rejected */
        if (i % 4 == 0 && prev != 0) {
            t.dependencies = &prev;
            t.dependency_count = 1;
        }
        uint64_t id = echobeats_submit(m, &t);
        if (id != 0) {
            submitted++;
            prev = id;
        }
    }
    CHECK(submitted > 1500);
    echobeats_free(m);
    CHECK_EQ_I64(atomic_load(&destroys), 2000);
    CHECK(atomic_load(&runs) <= submitted);
}

int main(void)
{
    tu_begin(120);
    EB_RUN(ran_and_succeeded, 30);
    EB_RUN(ran_and_failed, 30);
    EB_RUN(failed_submits, 30);
    EB_RUN(expired_deadline, 30);
    EB_RUN(failed_dependency, 30);
    EB_RUN(cancelled_at_shutdown, 30);
    EB_RUN(drained_at_shutdown, 30);
    EB_RUN(freed_with_queued_tasks, 30);
    EB_RUN(many_heap_contexts, 60);
    return tu_finish("test_echobeats_context_ownership");
}
