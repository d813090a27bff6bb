/* test_echobeats_metrics.c: the Echobeats metrics are real and add up, and
 * the configuration queries work.
 *
 *   metrics_add_up          3 submitting threads x 900 tasks (successes,
 *                           failures, expiries, failed dependencies, every
 *                           layer, random priorities): per stream submitted
 *                           = completed + failed, and each count is exactly
 *                           what was submitted; execution times consistent
 *   queue_wait_is_measured  tasks held 20 ms behind a blocked worker report
 *                           >= 20 ms of queue wait each, and the stream sum
 *   contention_is_counted   4 threads submitting to one stream find its
 *                           queue lock taken at least once
 *   reset_metrics           everything zero (minimum UINT64_MAX), current
 *                           queue depth still true
 *   recommended_config      the design's table scaled to the usable CPUs
 *   numa_affinity           a summary; workers pinned before their first
 *                           task, inside the process's CPUs, disjoint per
 *                           stream when the summary says so
 *   realtime_priority       enabling real-time priority succeeds or fails
 *                           with a message, never crashes; the pool works on
 *   log_callback            silent by default; messages go to the callback
 */
#include "test_util.h"
#include "eb_test_util.h"

#include <sched.h>

enum { SUBMITTERS = 3, PER_SUBMITTER = 900 };

typedef struct {
    EchobeatsManager *m;
    uint64_t seed;
    atomic_int *runs;
    atomic_int *destroys;
    /* per stream: expected outcomes */
    long completed[3], failed[3], expired[3], ran[3];
} Submitter;

static void *submitter_main(void *arg)
{
    Submitter *s = (Submitter *)arg;
    uint64_t st = s->seed;
    uint64_t last_failed = 0;
    for (int i = 0; i < PER_SUBMITTER; i++) {
        uint64_t r = tu_rand_next(&st);
        int32_t step = 1 + (int32_t)(r % 12);
        EbHeapCtx *h = eb_heap_counter(s->runs, s->destroys);
        EchobeatsTask t = eb_task(eb_heap_work, h, eb_heap_destroy, step);
        t.layer = (int)((r >> 8) % 5);
        t.priority = (float)((r >> 16) % 100) / 10.0f - 5.0f;
        int kind = (int)((r >> 24) % 4);
        int stream = t.stream;
        if (kind == 1) {
            /* fails when run */
            t.work = eb_count_work;
            EbCounter *c = (EbCounter *)malloc(sizeof *c);
            eb_counter_init(c, 3);
            free(h);
            t.context = c;
            t.destroy_context = free;
            s->failed[stream]++;
            s->ran[stream]++;
        } else if (kind == 2) {
            t.deadline_ns = 1;
            s->failed[stream]++;
            s->expired[stream]++;
        } else if (kind == 3 && last_failed != 0) {
            t.dependencies = &last_failed;
            t.dependency_count = 1;
            s->failed[stream]++;
        } else {
            s->completed[stream]++;
            s->ran[stream]++;
        }
        uint64_t id = echobeats_submit(s->m, &t);
        if (id == 0) {
            CHECKF(false, "submit: %s", tu_err());
            continue;
        }
        if (kind == 1)
            last_failed = id;
    }
    return NULL;
}

static void metrics_add_up(void)
{
    EchobeatsConfig cfg = eb_config(2);
    cfg.max_queue_depth = 100000;
    EchobeatsManager *m = eb_create_cfg(&cfg);
    if (m == NULL)
        return;
    atomic_int runs, destroys;
    atomic_init(&runs, 0);
    atomic_init(&destroys, 0);
    Submitter s[SUBMITTERS];
    pthread_t th[SUBMITTERS];
    memset(s, 0, sizeof s);
    for (int i = 0; i < SUBMITTERS; i++) {
        s[i].m = m;
        s[i].seed = 1234567ULL * (uint64_t)(i + 1);
        s[i].runs = &runs;
        s[i].destroys = &destroys;
        CHECK(pthread_create(&th[i], NULL, submitter_main, &s[i]) == 0);
    }
    for (int i = 0; i < SUBMITTERS; i++)
        pthread_join(th[i], NULL);
    CHECK(echobeats_synchronize(m, 30000));
    EchobeatsMetrics met;
    CHECK_EQ_I64(echobeats_get_metrics(m, &met), ECHOBEATS_OK);
    long total = 0, total_ok = 0;
    for (int st = 0; st < 3; st++) {
        long completed = 0, failed = 0, expired = 0, ran = 0;
        for (int i = 0; i < SUBMITTERS; i++) {
            completed += s[i].completed[st];
            failed += s[i].failed[st];
            expired += s[i].expired[st];
            ran += s[i].ran[st];
        }
        const EchobeatsStreamMetrics *x = &met.streams[st];
        CHECK_EQ_I64(x->tasks_submitted, completed + failed);
        CHECK_EQ_I64(x->tasks_submitted, x->tasks_completed + x->tasks_failed);
        CHECK_EQ_I64(x->tasks_completed, completed);
        CHECK_EQ_I64(x->tasks_failed, failed);
        CHECK_EQ_I64(x->tasks_expired, expired);
        CHECK_EQ_I64(x->tasks_cancelled, 0);
        CHECK_EQ_I64(x->tasks_run, ran);
        CHECK_EQ_I64(x->current_queue_depth, 0);
        CHECK(x->max_queue_depth >= 1);
        CHECK(x->min_execution_us <= x->max_execution_us);
        CHECK(x->total_execution_us >= x->max_execution_us);
        CHECK(x->total_execution_us <= x->tasks_run * (x->max_execution_us + 1));
        total += completed + failed;
        total_ok += completed;
    }
    CHECK_EQ_I64(total, SUBMITTERS * PER_SUBMITTER);
    CHECK_EQ_I64(atomic_load(&runs), total_ok);
    echobeats_free(m);
    /* Heap contexts of the eb_heap kind were each destroyed once (the
     * failing kind is freed by free()). */
    CHECK(atomic_load(&destroys) <= total);
}

static void queue_wait_is_measured(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    EbGateTask g;
    eb_block_stream(m, 1, &g);
    uint64_t ids[10];
    EbCounter c;
    eb_counter_init(&c, 0);
    for (int i = 0; i < 10; i++) {
        EchobeatsTask t = eb_task(eb_count_work, &c, eb_count_destroy, 2);
        ids[i] = EB_SUBMIT(m, &t);
    }
    int64_t until = echobeats_now_ns() + 20000000;
    while (echobeats_now_ns() < until)
        echobeats_wait_task(m, ids[0], 1, NULL);
    tu_gate_open(&g.gate);
    CHECK(echobeats_wait_stream(m, 1, 10000));
    for (int i = 0; i < 10; i++) {
        EchobeatsTaskResult r;
        CHECK_EQ_I64(echobeats_wait_task(m, ids[i], 0, &r), ECHOBEATS_TASK_COMPLETED);
        CHECKF(r.queue_wait_us >= 20000, "task %d waited %llu us", i, (unsigned long long)r.queue_wait_us);
    }
    EchobeatsMetrics met;
    echobeats_get_metrics(m, &met);
    CHECKF(met.streams[1].queue_wait_us >= 200000, "queue_wait_us %llu",
           (unsigned long long)met.streams[1].queue_wait_us);
    CHECK_EQ_I64(met.streams[1].max_queue_depth, 10);
    CHECK_EQ_I64(met.streams[1].tasks_run, 11);
    echobeats_free(m);
    tu_gate_destroy(&g.gate);
}

typedef struct {
    EchobeatsManager *m;
    int n;
} Flood;

static int nothing(void *ctx)
{
    (void)ctx;
    return 0;
}

static void *flood_main(void *arg)
{
    Flood *f = (Flood *)arg;
    for (int i = 0; i < f->n; i++)
        if (echobeats_submit_for_step(f->m, nothing, NULL, NULL, 2, 0.5f) == 0)
            break;
    return NULL;
}

static void contention_is_counted(void)
{
    EchobeatsConfig cfg = eb_config(2);
    cfg.max_queue_depth = 1 << 20;
    EchobeatsManager *m = eb_create_cfg(&cfg);
    if (m == NULL)
        return;
    EchobeatsMetrics met;
    for (int round = 0; round < 20; round++) {
        Flood f = {m, 20000};
        pthread_t th[4];
        for (int i = 0; i < 4; i++)
            CHECK(pthread_create(&th[i], NULL, flood_main, &f) == 0);
        for (int i = 0; i < 4; i++)
            pthread_join(th[i], NULL);
        CHECK(echobeats_synchronize(m, 30000));
        echobeats_get_metrics(m, &met);
        if (met.streams[1].contention_events > 0)
            break;
    }
    CHECKF(met.streams[1].contention_events > 0, "no contention seen in %llu tasks",
           (unsigned long long)met.streams[1].tasks_submitted);
    CHECK_EQ_I64(met.streams[1].tasks_submitted, met.streams[1].tasks_completed);
    echobeats_free(m);
}

static void reset_metrics(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    EbCounter c;
    eb_counter_init(&c, 0);
    for (int s = 1; s <= 12; s++)
        CHECK(echobeats_submit_for_step(m, eb_count_work, &c, eb_count_destroy, s, 0.5f) != 0);
    CHECK(echobeats_run_cycle(m) > 0);
    EbGateTask g;
    eb_block_stream(m, 2, &g);
    for (int i = 0; i < 5; i++)
        CHECK(echobeats_submit_for_step(m, eb_count_work, &c, eb_count_destroy, 3, 0.5f) != 0);
    CHECK_EQ_I64(echobeats_reset_metrics(m), ECHOBEATS_OK);
    EchobeatsMetrics met;
    echobeats_get_metrics(m, &met);
    for (int s = 0; s < 3; s++) {
        const EchobeatsStreamMetrics *x = &met.streams[s];
        CHECK(x->tasks_submitted == 0 && x->tasks_completed == 0 && x->tasks_failed == 0);
        CHECK(x->tasks_expired == 0 && x->tasks_cancelled == 0 && x->tasks_run == 0);
        CHECK(x->total_execution_us == 0 && x->max_execution_us == 0 && x->queue_wait_us == 0);
        CHECK(x->contention_events == 0);
        CHECK(x->min_execution_us == UINT64_MAX);
        CHECK_EQ_I64(x->current_queue_depth, s == 2 ? 5 : 0);
        CHECK_EQ_I64(x->max_queue_depth, s == 2 ? 5 : 0);
    }
    CHECK(met.cycles_completed == 0 && met.total_cycle_us == 0 && met.sync_events == 0 && met.sync_wait_us == 0);
    tu_gate_open(&g.gate);
    CHECK(echobeats_synchronize(m, 10000));
    echobeats_get_metrics(m, &met);
    CHECK_EQ_I64(met.streams[2].tasks_completed, 6); /* the blocker and the 5 */
    CHECK_EQ_I64(met.streams[2].tasks_run, 6);
    CHECK_EQ_I64(met.sync_events, 1);
    echobeats_free(m);
    tu_gate_destroy(&g.gate);
}

static int clamp_i(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static void recommended_config(void)
{
    EchobeatsRecommendedConfig r;
    CHECK_EQ_I64(echobeats_recommended_config(&r), ECHOBEATS_OK);
    int cpus = cllm_usable_cpus();
    CHECK_EQ_I64(r.usable_cpus, cpus);
    CHECK_EQ_I64(r.inter_op_threads, 3 * clamp_i(cpus / 3, 1, 4));
    CHECK_EQ_I64(r.intra_op_threads, clamp_i(cpus, 1, 12));
    CHECK_EQ_I64(r.data_loader_workers, clamp_i(3 * cpus / 4, 1, 9));
    CHECK_EQ_I64(r.cuda_streams, 3);
    printf("   recommended on %d CPUs: inter-op %d, intra-op %d, data loaders %d, CUDA streams %d\n", cpus,
           r.inter_op_threads, r.intra_op_threads, r.data_loader_workers, r.cuda_streams);
}

typedef struct {
    cpu_set_t set;
    int got;
} AffinityProbe;

static int probe_affinity(void *ctx)
{
    AffinityProbe *p = (AffinityProbe *)ctx;
    CPU_ZERO(&p->set);
    p->got = sched_getaffinity(0, sizeof p->set, &p->set) == 0;
    return 0;
}

static void numa_affinity(void)
{
    cpu_set_t process;
    CPU_ZERO(&process);
    CHECK(sched_getaffinity(0, sizeof process, &process) == 0);
    EchobeatsConfig cfg = eb_config(2);
    cfg.enable_numa_affinity = 1;
    EchobeatsManager *m = eb_create_cfg(&cfg);
    if (m == NULL)
        return;
    /* First task of each stream: the worker pinned itself before it. */
    AffinityProbe p[3];
    for (int s = 0; s < 3; s++) {
        memset(&p[s], 0, sizeof p[s]);
        EchobeatsTask t = eb_task(probe_affinity, &p[s], NULL, eb_step_of_stream(s));
        uint64_t id = EB_SUBMIT(m, &t);
        EB_WAIT(m, id, ECHOBEATS_TASK_COMPLETED);
        CHECK(p[s].got);
    }
    char summary[512];
    int64_t n = echobeats_configure_numa_affinity(m, summary, sizeof summary);
    CHECKF(n > 0 && n < (int64_t)sizeof summary, "summary length %lld", (long long)n);
    printf("   NUMA: %s\n", summary);
    for (int s = 0; s < 3; s++) {
        int count = CPU_COUNT(&p[s].set);
        cpu_set_t outside;
        CPU_XOR(&outside, &p[s].set, &process);
        CPU_AND(&outside, &outside, &p[s].set);
        CHECKF(count >= 1 && CPU_COUNT(&outside) == 0, "stream %d pinned to %d CPUs, %d outside the process's", s,
               count, CPU_COUNT(&outside));
        if (CPU_COUNT(&process) > 1)
            CHECKF(count < CPU_COUNT(&process) || strstr(summary, "NUMA nodes") != NULL,
                   "stream %d not pinned (%d CPUs)", s, count);
    }
    if (strstr(summary, "disjoint") != NULL)
        for (int a = 0; a < 3; a++)
            for (int b = a + 1; b < 3; b++) {
                cpu_set_t both;
                CPU_AND(&both, &p[a].set, &p[b].set);
                CHECKF(CPU_COUNT(&both) == 0, "streams %d and %d share CPUs", a, b);
            }
    /* The pool still works. */
    CHECK(echobeats_submit_for_step(m, nothing, NULL, NULL, 4, 0.5f) != 0);
    CHECK(echobeats_synchronize(m, 10000));
    echobeats_free(m);
}

static void realtime_priority(void)
{
    for (int at_start = 0; at_start <= 1; at_start++) {
        EchobeatsConfig cfg = eb_config(1);
        cfg.enable_realtime_priority = (uint8_t)at_start;
        EchobeatsManager *m = eb_create_cfg(&cfg);
        if (m == NULL)
            continue;
        if (!at_start) {
            /* Workers running, then the switch. */
            CHECK(echobeats_submit_for_step(m, nothing, NULL, NULL, 1, 0.5f) != 0);
            CHECK(echobeats_synchronize(m, 10000));
        }
        cllm_clear_error();
        int rc = echobeats_enable_realtime_priority(m);
        CHECK(rc == ECHOBEATS_OK || (rc == ECHOBEATS_ERROR && tu_error_is_set()));
        printf("   real-time priority: %s\n", rc == ECHOBEATS_OK ? "enabled" : tu_err());
        EbCounter c;
        eb_counter_init(&c, 0);
        for (int s = 1; s <= 12; s++)
            CHECK(echobeats_submit_for_step(m, eb_count_work, &c, eb_count_destroy, s, 0.5f) != 0);
        CHECK(echobeats_synchronize(m, 10000));
        EB_CHECK_RUNS_DESTROYS(&c, 12, 12);
        echobeats_free(m);
    }
}

typedef struct {
    pthread_mutex_t m;
    int calls;
    int bad_level;
    char last[256];
} LogSink;

static void log_fn(int level, const char *message, void *user)
{
    LogSink *s = (LogSink *)user;
    pthread_mutex_lock(&s->m);
    s->calls++;
    if (level < ECHOBEATS_LOG_DEBUG || level > ECHOBEATS_LOG_WARNING || message == NULL)
        s->bad_level++;
    else
        snprintf(s->last, sizeof s->last, "%s", message);
    pthread_mutex_unlock(&s->m);
}

static void log_callback(void)
{
    LogSink sink;
    pthread_mutex_init(&sink.m, NULL);
    sink.calls = 0;
    sink.bad_level = 0;
    sink.last[0] = '\0';
    EchobeatsConfig cfg = eb_config(1);
    cfg.log = log_fn;
    cfg.log_user_data = &sink;
    EchobeatsManager *m = eb_create_cfg(&cfg);
    if (m == NULL)
        return;
    CHECK(echobeats_configure_numa_affinity(m, NULL, 0) > 0); /* logs what it did */
    EbCounter c;
    eb_counter_init(&c, 9);
    CHECK(echobeats_submit_for_step(m, eb_count_work, &c, eb_count_destroy, 2, 0.5f) != 0);
    CHECK(echobeats_synchronize(m, 10000));
    echobeats_free(m);
    CHECKF(sink.calls >= 1, "log called %d times", sink.calls);
    CHECK_EQ_I64(sink.bad_level, 0);
    printf("   last log message: %s\n", sink.last);
    pthread_mutex_destroy(&sink.m);
}

int main(void)
{
    tu_begin(240);
    EB_RUN(metrics_add_up, 60);
    EB_RUN(queue_wait_is_measured, 30);
    EB_RUN(contention_is_counted, 120);
    EB_RUN(reset_metrics, 30);
    EB_RUN(recommended_config, 30);
    EB_RUN(numa_affinity, 30);
    EB_RUN(realtime_priority, 30);
    EB_RUN(log_callback, 30);
    return tu_finish("test_echobeats_metrics");
}
