/* test_echobeats_bad_input.c: every echobeats_* function given bad input
 * returns its documented error value, sets cllm_last_error(), and never
 * crashes or hangs; a context handed to a failing submit is destroyed
 * exactly once (and not at all when the manager or work function is NULL,
 * where the caller keeps it).
 *
 *   null_manager            NULL manager for every function
 *   bad_config              negative counts, zero/absurd sizes, NaN cycle time
 *   bad_tasks               NULL task/work, step 0/13/-1/INT_MIN/INT_MAX,
 *                           stream/phase/layer out of range, NaN/inf
 *                           priority, NULL dependency array, unknown dependency
 *   bad_submit_for_step     the same for echobeats_submit_for_step
 *   unknown_ids             unknown task ids are UNKNOWN at once; unknown,
 *                           destroyed and 0 barrier ids are errors
 *   bad_out_pointers        NULL out/buffer arguments, out-of-range names,
 *                           faces and edges
 *   after_shutdown          submit/submit_for_step/create_barrier fail after
 *                           shutdown; earlier results stay readable
 */
#include "test_util.h"
#include "eb_test_util.h"

#include <float.h>
#include <limits.h>
#include <math.h>

static void null_manager(void)
{
    EbCounter c;
    EchobeatsTask t = eb_counter_task(&c, 0, 1);
    EchobeatsMetrics met;
    EchobeatsShutdownReport rep;
    EchobeatsTaskResult res;
    char buf[64];

    echobeats_free(NULL); /* a no-op */
    CHECK_ERR(echobeats_shutdown(NULL, &rep), ECHOBEATS_ERROR);
    CHECK_ERR(echobeats_submit(NULL, &t), 0);
    CHECK_ERR(echobeats_submit_for_step(NULL, eb_count_work, &c, eb_count_destroy, 1, 0.5f), 0);
    CHECK_ERR(echobeats_wait_task(NULL, 1, 0, &res), ECHOBEATS_ERROR);
    CHECK_ERR(echobeats_wait_stream(NULL, 0, 0), false);
    CHECK_ERR(echobeats_synchronize(NULL, 0), false);
    CHECK_ERR(echobeats_advance_step(NULL), -1);
    CHECK_ERR(echobeats_run_cycle(NULL), 0);
    CHECK_ERR(echobeats_current_step(NULL), -1);
    CHECK_ERR(echobeats_current_stream(NULL), -1);
    CHECK_ERR(echobeats_current_phase(NULL), -1);
    CHECK_ERR(echobeats_current_mode(NULL), -1);
    CHECK_ERR(echobeats_create_barrier(NULL, 3), 0);
    CHECK_ERR(echobeats_wait_at_barrier(NULL, 1, 0), ECHOBEATS_ERROR);
    CHECK_ERR(echobeats_destroy_barrier(NULL, 1), ECHOBEATS_ERROR);
    CHECK_ERR(echobeats_get_metrics(NULL, &met), ECHOBEATS_ERROR);
    CHECK_ERR(echobeats_reset_metrics(NULL), ECHOBEATS_ERROR);
    CHECK_ERR(echobeats_configure_numa_affinity(NULL, buf, sizeof buf), -1);
    CHECK_ERR(echobeats_enable_realtime_priority(NULL), ECHOBEATS_ERROR);
    CHECK_ERR(echobeats_ordered_lane_kind(NULL), -1);
    /* Without a manager the library never took the context. */
    EB_CHECK_RUNS_DESTROYS(&c, 0, 0);
}

static void bad_config(void)
{
    EchobeatsConfig c;
    int32_t *counts[] = {NULL, NULL, NULL, NULL, NULL, NULL};
    const char *names[] = {"threads_per_stream", "data_loader_workers", "inter_op_threads",
                           "intra_op_threads",   "cuda_streams",        "max_queue_depth"};
    for (int i = 0; i < 6; i++) {
        echobeats_config_default(&c);
        counts[0] = &c.threads_per_stream;
        counts[1] = &c.data_loader_workers;
        counts[2] = &c.inter_op_threads;
        counts[3] = &c.intra_op_threads;
        counts[4] = &c.cuda_streams;
        counts[5] = &c.max_queue_depth;
        *counts[i] = -1;
        cllm_clear_error();
        EchobeatsManager *m = echobeats_create(&c);
        CHECKF(m == NULL && tu_error_is_set(), "%s = -1 accepted", names[i]);
        echobeats_free(m);
        *counts[i] = INT32_MIN;
        m = echobeats_create(&c);
        CHECKF(m == NULL, "%s = INT32_MIN accepted", names[i]);
        echobeats_free(m);
    }
    echobeats_config_default(&c);
    c.max_queue_depth = 0;
    CHECK_NULL_ERR(echobeats_create(&c));
    echobeats_config_default(&c);
    c.cuda_streams = 4;
    CHECK_NULL_ERR(echobeats_create(&c));
    echobeats_config_default(&c);
    c.threads_per_stream = 100000;
    CHECK_NULL_ERR(echobeats_create(&c));
    const float cycles[] = {NAN, -1.0f, INFINITY, -INFINITY, FLT_MAX};
    for (int i = 0; i < 5; i++) {
        echobeats_config_default(&c);
        c.target_cycle_time_ms = cycles[i];
        cllm_clear_error();
        EchobeatsManager *m = echobeats_create(&c);
        CHECKF(m == NULL && tu_error_is_set(), "target_cycle_time_ms = %g accepted", (double)cycles[i]);
        echobeats_free(m);
    }
    echobeats_config_default(&c);
    c.result_retention = -1;
    CHECK_NULL_ERR(echobeats_create(&c));

    /* NULL config = the defaults. */
    EchobeatsManager *m = echobeats_create(NULL);
    CHECKF(m != NULL, "create(NULL): %s", tu_err());
    echobeats_free(m);
}

/* Submits `t` expecting failure; its context must be destroyed exactly once
 * and never run. */
static void expect_rejected_at(int line, EchobeatsManager *m, EchobeatsTask t, const char *what)
{
    EbCounter c;
    eb_counter_init(&c, 0);
    t.work = eb_count_work;
    t.context = &c;
    t.destroy_context = eb_count_destroy;
    cllm_clear_error();
    uint64_t id = echobeats_submit(m, &t);
    tu_check(id == 0, __FILE__, line, what, "accepted as id %" PRIu64, id);
    tu_check(tu_error_is_set(), __FILE__, line, what, "no error message");
    tu_check(atomic_load(&c.destroys) == 1 && atomic_load(&c.runs) == 0, __FILE__, line, what,
             "runs %d, destroys %d (want 0, 1)", atomic_load(&c.runs), atomic_load(&c.destroys));
}

#define expect_rejected(m, t, what) expect_rejected_at(__LINE__, (m), (t), (what))

static void bad_tasks(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    EbCounter c;
    eb_counter_init(&c, 0);

    CHECK_ERR(echobeats_submit(m, NULL), 0);
    EchobeatsTask t = eb_task(NULL, &c, eb_count_destroy, 1);
    CHECK_ERR(echobeats_submit(m, &t), 0);
    /* NULL work: the library did not take the context. */
    EB_CHECK_RUNS_DESTROYS(&c, 0, 0);

    const EchobeatsTask good = eb_task(eb_count_work, &c, eb_count_destroy, 1);
    const int32_t steps[] = {0, 13, -1, -12, 24, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        EchobeatsTask b = good;
        b.step = steps[i];
        char what[64];
        snprintf(what, sizeof what, "step %d", (int)steps[i]);
        expect_rejected(m, b, what);
    }
    /* Out-of-range stream, phase and layer, one field at a time. */
    enum { STREAM, PHASE, LAYER };
    static const struct {
        const char *what;
        int field, value;
    } fields[] = {
        {"stream -1", STREAM, -1}, {"stream 3", STREAM, 3}, {"phase -1", PHASE, -1},
        {"phase 4", PHASE, 4},     {"layer -1", LAYER, -1}, {"layer 5", LAYER, 5},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        EchobeatsTask b = good;
        int *field[] = {[STREAM] = &b.stream, [PHASE] = &b.phase, [LAYER] = &b.layer};
        *field[fields[i].field] = fields[i].value;
        expect_rejected(m, b, fields[i].what);
    }
    EchobeatsTask b = good;
    const float prios[] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 3; i++) {
        b = good;
        b.priority = prios[i];
        expect_rejected(m, b, "non-finite priority");
    }
    b = good;
    b.dependencies = NULL;
    b.dependency_count = 2;
    expect_rejected(m, b, "NULL dependencies with count 2");

    /* Unknown dependencies: 0, and ids never issued. */
    uint64_t issued = EB_SUBMIT(m, &good);
    EB_WAIT(m, issued, ECHOBEATS_TASK_COMPLETED);
    const uint64_t unknown[] = {0, issued + 1, issued + 1000, UINT64_MAX};
    for (int i = 0; i < 4; i++) {
        uint64_t deps[2] = {issued, unknown[i]};
        b = good;
        b.dependencies = deps;
        b.dependency_count = 2;
        expect_rejected(m, b, "unknown dependency");
    }
    /* The good task ran once and was destroyed once. */
    EB_CHECK_RUNS_DESTROYS(&c, 1, 1);
    /* Nothing rejected was counted. */
    EchobeatsMetrics met;
    CHECK_EQ_I64(echobeats_get_metrics(m, &met), ECHOBEATS_OK);
    CHECK_EQ_I64(met.streams[0].tasks_submitted, 1);
    CHECK_EQ_I64(met.streams[0].tasks_completed, 1);
    echobeats_free(m);
}

static void bad_submit_for_step(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    const int32_t steps[] = {0, 13, -1, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        EbCounter c;
        eb_counter_init(&c, 0);
        CHECK_ERR(echobeats_submit_for_step(m, eb_count_work, &c, eb_count_destroy, steps[i], 0.5f), 0);
        EB_CHECK_RUNS_DESTROYS(&c, 0, 1);
    }
    EbCounter c;
    eb_counter_init(&c, 0);
    CHECK_ERR(echobeats_submit_for_step(m, eb_count_work, &c, eb_count_destroy, 1, NAN), 0);
    EB_CHECK_RUNS_DESTROYS(&c, 0, 1);
    eb_counter_init(&c, 0);
    CHECK_ERR(echobeats_submit_for_step(m, NULL, &c, eb_count_destroy, 1, 0.5f), 0);
    EB_CHECK_RUNS_DESTROYS(&c, 0, 0);
    /* A good one for every step. */
    eb_counter_init(&c, 0);
    for (int32_t s = 1; s <= 12; s++)
        CHECK(echobeats_submit_for_step(m, eb_count_work, &c, eb_count_destroy, s, 0.5f) != 0);
    CHECK(echobeats_synchronize(m, 10000));
    EB_CHECK_RUNS_DESTROYS(&c, 12, 12);
    echobeats_free(m);
}

static void unknown_ids(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    EchobeatsTaskResult res;
    double t0 = tu_now();
    CHECK_EQ_I64(echobeats_wait_task(m, 0, 10000, &res), ECHOBEATS_TASK_UNKNOWN);
    CHECK_EQ_I64(echobeats_wait_task(m, 1, 10000, &res), ECHOBEATS_TASK_UNKNOWN);
    CHECK_EQ_I64(echobeats_wait_task(m, 12345, -1, NULL), ECHOBEATS_TASK_UNKNOWN);
    CHECK_EQ_I64(echobeats_wait_task(m, UINT64_MAX, -1, NULL), ECHOBEATS_TASK_UNKNOWN);
    CHECKF(tu_now() - t0 < 2.0, "UNKNOWN took %.3f s (must be at once)", tu_now() - t0);

    /* Barriers: 0, never created, destroyed. */
    CHECK_ERR(echobeats_wait_at_barrier(m, 0, 1000), ECHOBEATS_ERROR);
    CHECK_ERR(echobeats_wait_at_barrier(m, 777, -1), ECHOBEATS_ERROR);
    CHECK_ERR(echobeats_destroy_barrier(m, 777), ECHOBEATS_ERROR);
    CHECK_ERR(echobeats_create_barrier(m, 0), 0);
    CHECK_ERR(echobeats_create_barrier(m, -1), 0);
    CHECK_ERR(echobeats_create_barrier(m, INT32_MIN), 0);
    uint64_t b = echobeats_create_barrier(m, 2);
    CHECK(b != 0);
    CHECK_EQ_I64(echobeats_destroy_barrier(m, b), ECHOBEATS_OK);
    t0 = tu_now();
    CHECK_ERR(echobeats_wait_at_barrier(m, b, -1), ECHOBEATS_ERROR);
    CHECK_ERR(echobeats_destroy_barrier(m, b), ECHOBEATS_ERROR);
    CHECKF(tu_now() - t0 < 2.0, "waiting at a destroyed barrier took %.3f s", tu_now() - t0);

    /* Streams out of range. */
    CHECK_ERR(echobeats_wait_stream(m, 3, 0), false);
    CHECK_ERR(echobeats_wait_stream(m, -1, -1), false);
    echobeats_free(m);
}

static void bad_out_pointers(void)
{
    CHECK_ERR(echobeats_config_default(NULL), ECHOBEATS_ERROR);
    CHECK_ERR(echobeats_recommended_config(NULL), ECHOBEATS_ERROR);
    CHECK_ERR(echobeats_triadic_face(0, NULL), ECHOBEATS_ERROR);
    int32_t face[3] = {7, 7, 7};
    CHECK_ERR(echobeats_triadic_face(4, face), ECHOBEATS_ERROR);
    CHECK(face[0] == 0 && face[1] == 0 && face[2] == 0);
    CHECK_ERR(echobeats_triadic_face(-1, face), ECHOBEATS_ERROR);
    CHECK_ERR(echobeats_triadic_face(INT32_MIN, face), ECHOBEATS_ERROR);
    CHECK_EQ_I64(echobeats_dyadic_edge(0, 0), -1);
    CHECK_EQ_I64(echobeats_dyadic_edge(-1, 2), -1);
    CHECK_EQ_I64(echobeats_dyadic_edge(3, 4), -1);
    CHECK_EQ_I64(echobeats_dyadic_edge(INT32_MIN, INT32_MAX), -1);
    CHECK_NULL_ERR(echobeats_stream_name(3));
    CHECK_NULL_ERR(echobeats_stream_name(-1));
    CHECK_NULL_ERR(echobeats_phase_name(4));
    CHECK_NULL_ERR(echobeats_mode_name(2));
    CHECK_NULL_ERR(echobeats_layer_name(5));
    CHECK_NULL_ERR(echobeats_layer_name(-1));

    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    CHECK_ERR(echobeats_get_metrics(m, NULL), ECHOBEATS_ERROR);
    CHECK_ERR(echobeats_configure_numa_affinity(m, NULL, 16), -1);
    /* NULL with capacity 0 is the length query. */
    int64_t n = echobeats_configure_numa_affinity(m, NULL, 0);
    CHECKF(n > 0, "summary length %lld: %s", (long long)n, tu_err());
    char small[4];
    CHECK_EQ_I64(echobeats_configure_numa_affinity(m, small, sizeof small), n);
    CHECK(small[3] == '\0');
    CHECK_EQ_I64(echobeats_shutdown(m, NULL), ECHOBEATS_OK);
    echobeats_free(m);
}

static void after_shutdown(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    EbCounter ran;
    EchobeatsTask t = eb_counter_task(&ran, 0, 2);
    uint64_t before = EB_SUBMIT(m, &t);
    uint64_t barrier = echobeats_create_barrier(m, 2);
    CHECK(barrier != 0);

    EchobeatsShutdownReport r;
    CHECK_EQ_I64(echobeats_shutdown(m, &r), ECHOBEATS_OK);
    CHECK_EQ_I64(r.first_call, 1);
    CHECK_EQ_I64(r.complete, 1);

    EbCounter c;
    eb_counter_init(&c, 0);
    t = eb_task(eb_count_work, &c, eb_count_destroy, 1);
    CHECK_ERR(echobeats_submit(m, &t), 0);
    EB_CHECK_RUNS_DESTROYS(&c, 0, 1);
    eb_counter_init(&c, 0);
    CHECK_ERR(echobeats_submit_for_step(m, eb_count_work, &c, eb_count_destroy, 5, 1.0f), 0);
    EB_CHECK_RUNS_DESTROYS(&c, 0, 1);
    CHECK_ERR(echobeats_create_barrier(m, 3), 0);
    /* Shutdown destroyed the barriers. */
    CHECK_ERR(echobeats_wait_at_barrier(m, barrier, -1), ECHOBEATS_ERROR);

    /* The task submitted before ran (drain) and its result is readable. */
    EchobeatsTaskResult res;
    CHECK_EQ_I64(echobeats_wait_task(m, before, 0, &res), ECHOBEATS_TASK_COMPLETED);
    CHECK_EQ_I64(res.id, before);
    EB_CHECK_RUNS_DESTROYS(&ran, 1, 1);

    /* Idempotent. */
    CHECK_EQ_I64(echobeats_shutdown(m, &r), ECHOBEATS_OK);
    CHECK_EQ_I64(r.first_call, 0);
    CHECK(echobeats_wait_stream(m, 0, 0));
    CHECK(echobeats_synchronize(m, 0));
    echobeats_free(m);
}

int main(void)
{
    tu_begin(60);
    EB_RUN(null_manager, 30);
    EB_RUN(bad_config, 30);
    EB_RUN(bad_tasks, 30);
    EB_RUN(bad_submit_for_step, 30);
    EB_RUN(unknown_ids, 30);
    EB_RUN(bad_out_pointers, 30);
    EB_RUN(after_shutdown, 30);
    return tu_finish("test_echobeats_bad_input");
}
