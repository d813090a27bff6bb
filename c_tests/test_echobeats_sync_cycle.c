/* test_echobeats_sync_cycle.c: waiting for streams, synchronising them, and
 * the 12-step cycle.
 *
 *   wait_stream_sees_running   a running task (empty queue) keeps its stream
 *                              busy: wait_stream is false, honours its
 *                              timeout, and becomes true once it finished;
 *                              pending tasks count too
 *   wait_stream_wakes_waiters  threads blocked in wait_stream(-1) and
 *                              synchronize(-1) return once the task has
 *                              finished (its last write is visible)
 *   synchronize_counts         synchronize: true only when all three streams
 *                              are idle at once; sync_events counts the
 *                              successes only
 *   advance_step_counts        12 advances = 1 cycle and 3 synchronisations
 *                              (leaving 4, 8, 12); step/stream/phase/mode
 *                              follow the tables; wrapping 12 -> 1
 *   advance_step_synchronises  leaving step 4 waits for running work
 *   run_cycle_paces            target 10 ms: run_cycle takes and returns at
 *                              least 10,000 us; cycle metrics add up
 *   run_cycle_waits_for_steps  tasks submitted for every step are finished
 *                              when run_cycle returns
 *   run_cycle_unpaced          target 0: 200 cycles, counted exactly; their
 *                              recorded time matches what run_cycle returned
 *   concurrent_getters         getters and metrics from another thread while
 *                              two threads run cycles: always valid values;
 *                              cycles counted exactly
 */
#include "test_util.h"
#include "eb_test_util.h"

static void wait_stream_sees_running(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    for (int s = 0; s < 3; s++)
        CHECK(echobeats_wait_stream(m, s, 0));
    EbGateTask g;
    uint64_t blocker = eb_block_stream(m, 0, &g);
    /* The queue is empty, but the task runs: not idle. */
    EchobeatsMetrics met;
    echobeats_get_metrics(m, &met);
    CHECK_EQ_I64(met.streams[0].current_queue_depth, 0);
    CHECK(!echobeats_wait_stream(m, 0, 0));
    double t0 = tu_now();
    CHECK(!echobeats_wait_stream(m, 0, 30));
    double took = tu_now() - t0;
    CHECKF(took >= 0.029 && took < 5.0, "wait_stream(30 ms) took %.3f s", took);
    CHECK(echobeats_wait_stream(m, 1, 0));
    CHECK(echobeats_wait_stream(m, 2, 0));

    /* A task of stream 1 pending on the blocker keeps stream 1 busy. */
    EbCounter c;
    EchobeatsTask t = eb_counter_task(&c, 0, 2);
    t.dependencies = &blocker;
    t.dependency_count = 1;
    uint64_t pending = EB_SUBMIT(m, &t);
    CHECK(!echobeats_wait_stream(m, 1, 0));
    CHECK(!echobeats_wait_stream(m, 1, 5));
    CHECK(echobeats_wait_stream(m, 2, 0));

    tu_gate_open(&g.gate);
    CHECK(echobeats_wait_stream(m, 0, -1));
    CHECK(echobeats_wait_stream(m, 1, 10000));
    CHECK_EQ_I64(echobeats_wait_task(m, blocker, 0, NULL), ECHOBEATS_TASK_COMPLETED);
    CHECK_EQ_I64(echobeats_wait_task(m, pending, 0, NULL), ECHOBEATS_TASK_COMPLETED);
    EB_CHECK_RUNS_DESTROYS(&c, 1, 1);
    echobeats_free(m);
    tu_gate_destroy(&g.gate);
}

typedef struct {
    EchobeatsManager *m;
    int stream; /* -1: synchronize */
    atomic_int *finished;
    int finished_seen;
    bool ok;
} Waiter;

static void *waiter_main(void *arg)
{
    Waiter *w = (Waiter *)arg;
    w->ok = w->stream < 0 ? echobeats_synchronize(w->m, -1) : echobeats_wait_stream(w->m, w->stream, -1);
    w->finished_seen = atomic_load(w->finished);
    return NULL;
}

/* Blocks at its gate, then does some work and marks itself finished as its
 * very last action. */
typedef struct {
    EbGateTask g;
    atomic_int finished;
} SlowTask;

static int slow_work(void *ctx)
{
    SlowTask *s = (SlowTask *)ctx;
    eb_gate_work(&s->g);
    tu_busy_work(7, 200000);
    atomic_store(&s->finished, 1);
    return 0;
}

static void wait_stream_wakes_waiters(void)
{
    EchobeatsManager *m = eb_create(2);
    if (m == NULL)
        return;
    SlowTask s;
    eb_gate_task_init(&s.g);
    atomic_init(&s.finished, 0);
    EchobeatsTask t = eb_task(slow_work, &s, NULL, 3);
    EB_SUBMIT(m, &t);
    tu_gate_wait_started(&s.g.gate, 10000);
    enum { NW = 4 };
    Waiter w[NW];
    pthread_t th[NW];
    for (int i = 0; i < NW; i++) {
        w[i].m = m;
        w[i].stream = i < 2 ? 2 : -1;
        w[i].finished = &s.finished;
        w[i].finished_seen = -1;
        w[i].ok = false;
        CHECK(pthread_create(&th[i], NULL, waiter_main, &w[i]) == 0);
    }
    tu_gate_open(&s.g.gate);
    for (int i = 0; i < NW; i++) {
        pthread_join(th[i], NULL);
        CHECKF(w[i].ok, "waiter %d", i);
        CHECKF(w[i].finished_seen == 1, "waiter %d returned before the task finished", i);
    }
    echobeats_free(m);
    tu_gate_destroy(&s.g.gate);
}

static void synchronize_counts(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    EchobeatsMetrics met;
    CHECK(echobeats_synchronize(m, 0));
    CHECK(echobeats_synchronize(m, -1));
    echobeats_get_metrics(m, &met);
    CHECK_EQ_I64(met.sync_events, 2);
    for (int s = 0; s < 3; s++) {
        EbGateTask g;
        eb_block_stream(m, s, &g);
        double t0 = tu_now();
        CHECK(!echobeats_synchronize(m, 20));
        double took = tu_now() - t0;
        CHECKF(took >= 0.019 && took < 5.0, "synchronize(20 ms) took %.3f s", took);
        CHECK(!echobeats_synchronize(m, 0));
        tu_gate_open(&g.gate);
        CHECK(echobeats_synchronize(m, 10000));
        tu_gate_destroy(&g.gate);
    }
    echobeats_get_metrics(m, &met);
    CHECK_EQ_I64(met.sync_events, 5);
    echobeats_free(m);
}

static void check_step_state_at(int line, EchobeatsManager *m, int32_t step)
{
    tu_check_eq_at(__FILE__, line, "current_step", echobeats_current_step(m), step);
    tu_check_eq_at(__FILE__, line, "current_stream", echobeats_current_stream(m), echobeats_stream_for_step(step));
    tu_check_eq_at(__FILE__, line, "current_phase", echobeats_current_phase(m), echobeats_phase_for_step(step));
    tu_check_eq_at(__FILE__, line, "current_mode", echobeats_current_mode(m), echobeats_mode_for_step(step));
}

static void advance_step_counts(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    check_step_state_at(__LINE__, m, 1);
    EchobeatsMetrics met;
    for (int cycle = 1; cycle <= 3; cycle++) {
        for (int32_t s = 2; s <= 12; s++) {
            CHECK_EQ_I64(echobeats_advance_step(m), s);
            check_step_state_at(__LINE__, m, s);
        }
        echobeats_get_metrics(m, &met);
        CHECK_EQ_I64(met.cycles_completed, cycle - 1);
        CHECK_EQ_I64(met.sync_events, 3 * (cycle - 1) + 2); /* left 4 and 8 */
        CHECK_EQ_I64(echobeats_advance_step(m), 1);
        check_step_state_at(__LINE__, m, 1);
        echobeats_get_metrics(m, &met);
        CHECK_EQ_I64(met.cycles_completed, cycle);
        CHECK_EQ_I64(met.sync_events, 3 * cycle);
    }
    /* The modes of one cycle: 7 expressive, 5 reflective. */
    int expressive = 0;
    for (int32_t s = 1; s <= 12; s++)
        expressive += echobeats_mode_for_step(s) == ECHOBEATS_MODE_EXPRESSIVE;
    CHECK_EQ_I64(expressive, 7);
    echobeats_free(m);
}

static int busy_task(void *ctx)
{
    (void)ctx;
    tu_busy_work(11, 3000000);
    return 0;
}

static void advance_step_synchronises(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    for (int i = 0; i < 3; i++)
        echobeats_advance_step(m);
    CHECK_EQ_I64(echobeats_current_step(m), 4);
    /* Work in another stream than the step's. */
    EchobeatsTask t = eb_task(busy_task, NULL, NULL, 3);
    uint64_t id = EB_SUBMIT(m, &t);
    CHECK_EQ_I64(echobeats_advance_step(m), 5);
    CHECK_EQ_I64(echobeats_wait_task(m, id, 0, NULL), ECHOBEATS_TASK_COMPLETED);
    /* Not leaving an Integration step: no synchronisation. */
    id = EB_SUBMIT(m, &t);
    EchobeatsMetrics before, after;
    echobeats_get_metrics(m, &before);
    CHECK_EQ_I64(echobeats_advance_step(m), 6);
    echobeats_get_metrics(m, &after);
    CHECK_EQ_I64(after.sync_events, before.sync_events);
    EB_WAIT(m, id, ECHOBEATS_TASK_COMPLETED);
    echobeats_free(m);
}

static void run_cycle_paces(void)
{
    EchobeatsConfig cfg = eb_config(1);
    cfg.target_cycle_time_ms = 10.0f;
    EchobeatsManager *m = eb_create_cfg(&cfg);
    if (m == NULL)
        return;
    uint64_t sum = 0;
    for (int i = 0; i < 5; i++) {
        double t0 = tu_now();
        uint64_t us = echobeats_run_cycle(m);
        double took = tu_now() - t0;
        CHECKF(us >= 10000, "run_cycle returned %llu us (target 10 ms)", (unsigned long long)us);
        CHECKF(took >= 0.0099, "run_cycle took %.4f s (target 10 ms)", took);
        CHECKF(took < 5.0, "run_cycle took %.3f s", took);
        sum += us;
        CHECK_EQ_I64(echobeats_current_step(m), 1);
    }
    EchobeatsMetrics met;
    echobeats_get_metrics(m, &met);
    CHECK_EQ_I64(met.cycles_completed, 5);
    CHECK_EQ_I64(met.sync_events, 15);
    CHECKF(met.total_cycle_us + 5 >= sum && met.total_cycle_us <= sum + 5, "total_cycle_us %llu, returned sum %llu",
           (unsigned long long)met.total_cycle_us, (unsigned long long)sum);
    echobeats_free(m);
}

static void run_cycle_waits_for_steps(void)
{
    EchobeatsConfig cfg = eb_config(1);
    cfg.target_cycle_time_ms = 0.0f;
    EchobeatsManager *m = eb_create_cfg(&cfg);
    if (m == NULL)
        return;
    uint64_t ids[12];
    for (int32_t s = 1; s <= 12; s++) {
        ids[s - 1] = echobeats_submit_for_step(m, busy_task, NULL, NULL, s, 0.5f);
        CHECK(ids[s - 1] != 0);
    }
    CHECK(echobeats_run_cycle(m) > 0);
    for (int i = 0; i < 12; i++) {
        EchobeatsTaskResult r;
        CHECK_EQ_I64(echobeats_wait_task(m, ids[i], 0, &r), ECHOBEATS_TASK_COMPLETED);
        CHECK_EQ_I64(r.step, i + 1);
        CHECK_EQ_I64(r.stream, echobeats_stream_for_step(i + 1));
        CHECK_EQ_I64(r.phase, echobeats_phase_for_step(i + 1));
    }
    echobeats_free(m);
}

static void run_cycle_unpaced(void)
{
    EchobeatsConfig cfg = eb_config(1);
    cfg.target_cycle_time_ms = 0.0f;
    EchobeatsManager *m = eb_create_cfg(&cfg);
    if (m == NULL)
        return;
    uint64_t sum = 0;
    double t0 = tu_now();
    for (int i = 0; i < 200; i++) {
        uint64_t us = echobeats_run_cycle(m);
        CHECK(us >= 1);
        sum += us;
    }
    double wall = tu_now() - t0;
    EchobeatsMetrics met;
    echobeats_get_metrics(m, &met);
    CHECK_EQ_I64(met.cycles_completed, 200);
    CHECK_EQ_I64(met.sync_events, 600);
    /* The cycle metrics record what run_cycle returns ("which is also what
     * the cycle metrics record"): short cycles must not round down to 0 us,
     * or cycles / total cycle time becomes a wild rate. Allowed: 1 us of
     * rounding a cycle upwards, at most half of the total downwards. */
    CHECKF(2 * met.total_cycle_us >= sum && met.total_cycle_us <= sum + 200,
           "total_cycle_us %llu, sum of run_cycle results %llu over 200 cycles (%.6f s)",
           (unsigned long long)met.total_cycle_us, (unsigned long long)sum, wall);
    echobeats_free(m);
}

typedef struct {
    EchobeatsManager *m;
    atomic_int *stop;
    long reads;
    long bad;
} Getter;

static void *getter_main(void *arg)
{
    Getter *g = (Getter *)arg;
    while (!atomic_load(g->stop)) {
        int32_t step = echobeats_current_step(g->m);
        int stream = echobeats_current_stream(g->m);
        int phase = echobeats_current_phase(g->m);
        int mode = echobeats_current_mode(g->m);
        EchobeatsMetrics met;
        int rc = echobeats_get_metrics(g->m, &met);
        if (step < 1 || step > 12 || stream < 0 || stream > 2 || phase < 0 || phase > 3 || mode < 0 || mode > 1 ||
            rc != ECHOBEATS_OK || met.cycles_completed > 1000)
            g->bad++;
        g->reads++;
    }
    return NULL;
}

typedef struct {
    EchobeatsManager *m;
    int cycles;
} Runner;

static void *runner_main(void *arg)
{
    Runner *r = (Runner *)arg;
    for (int i = 0; i < r->cycles; i++)
        echobeats_run_cycle(r->m);
    return NULL;
}

static void concurrent_getters(void)
{
    EchobeatsConfig cfg = eb_config(1);
    cfg.target_cycle_time_ms = 0.2f;
    EchobeatsManager *m = eb_create_cfg(&cfg);
    if (m == NULL)
        return;
    atomic_int stop;
    atomic_init(&stop, 0);
    Getter g = {m, &stop, 0, 0};
    Runner r = {m, 100};
    pthread_t tg, tr1, tr2;
    CHECK(pthread_create(&tg, NULL, getter_main, &g) == 0);
    CHECK(pthread_create(&tr1, NULL, runner_main, &r) == 0);
    CHECK(pthread_create(&tr2, NULL, runner_main, &r) == 0);
    pthread_join(tr1, NULL);
    pthread_join(tr2, NULL);
    atomic_store(&stop, 1);
    pthread_join(tg, NULL);
    CHECK(g.reads > 0);
    CHECK_EQ_I64(g.bad, 0);
    EchobeatsMetrics met;
    echobeats_get_metrics(m, &met);
    CHECK_EQ_I64(met.cycles_completed, 200);
    CHECK_EQ_I64(echobeats_current_step(m), 1);
    echobeats_free(m);
}

int main(void)
{
    tu_begin(120);
    EB_RUN(wait_stream_sees_running, 30);
    EB_RUN(wait_stream_wakes_waiters, 30);
    EB_RUN(synchronize_counts, 30);
    EB_RUN(advance_step_counts, 30);
    EB_RUN(advance_step_synchronises, 30);
    EB_RUN(run_cycle_paces, 30);
    EB_RUN(run_cycle_waits_for_steps, 30);
    EB_RUN(run_cycle_unpaced, 30);
    EB_RUN(concurrent_getters, 60);
    return tu_finish("test_echobeats_sync_cycle");
}
