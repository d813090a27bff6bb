/* eb_test_util.h: shared helpers of the Echobeats C tests
 * (c_tests/test_echobeats_*.c).
 *
 * Include it right after test_util.h. Every helper is `static`; checks made
 * by a macro are reported at the caller's file:line.
 *
 *   EbCounter, eb_counter_init()   a task context counting runs and
 *                              destroy_context calls; `rc` is what the work
 *                              returns (0 = success)
 *   eb_count_work, eb_count_destroy  its work and destroy functions
 *   EB_CHECK_RUNS_DESTROYS(c, runs, destroys)  both counts, one check each
 *   eb_heap_counter()          a malloc'ed context whose destroy frees it
 *                              (ASan reports a missing or double destroy)
 *   eb_config(tps)             echobeats_config_default() with
 *                              threads_per_stream = tps (silent, draining)
 *   eb_create(tps), eb_create_cfg(&c)  a pool; NULL is one failed check
 *   eb_task(work, ctx, destroy, step)  an EchobeatsTask for `step` with the
 *                              stream and phase of the step tables, layer
 *                              INTER_OP, priority 0.5, no deadline, no
 *                              dependencies
 *   EbGateTask, eb_gate_task_init(), eb_gate_work  a task that blocks on a
 *                              TuGate until the test opens it (and counts
 *                              its runs/destroys like EbCounter)
 *   eb_counter_task(&c, rc, step)  eb_counter_init + eb_task counting into c
 *   eb_block_stream(m, stream, g)  initialises gate task g, submits it to
 *                              `stream` and waits until it runs: that
 *                              stream's single worker is busy until
 *                              tu_gate_open(&g->gate)
 *   EbShutdownBlocker, eb_block_until_shutdown(m, stream, b)  a task that
 *                              keeps `stream`'s single worker busy until a
 *                              shutdown begins (it waits at a barrier that
 *                              the shutdown destroys)
 *   EbOrder, EbTag, eb_order_*  records the order in which tagged tasks ran
 *   EB_SUBMIT(m, &t)           echobeats_submit, which must succeed (one
 *                              check; prints cllm_last_error() otherwise)
 *   EB_WAIT(m, id, status)     echobeats_wait_task(m, id, 10 s) == status
 *   EB_RUN(fn, seconds)        runs test function fn under its own watchdog
 *
 * No helper sleeps: waiting is done with the library's wait calls and
 * TuGate condition variables.
 */
#ifndef CLLM_C_TESTS_EB_TEST_UTIL_H
#define CLLM_C_TESTS_EB_TEST_UTIL_H

#ifndef CLLM_C_TESTS_TEST_UTIL_H
#error "include test_util.h before eb_test_util.h"
#endif

/* ---- counting contexts ---------------------------------------------------- */

typedef struct {
    atomic_int runs;
    atomic_int destroys;
    int rc; /* what the work returns */
} EbCounter;

static inline void eb_counter_init(EbCounter *c, int rc)
{
    atomic_init(&c->runs, 0);
    atomic_init(&c->destroys, 0);
    c->rc = rc;
}

static inline int eb_count_work(void *ctx)
{
    EbCounter *c = (EbCounter *)ctx;
    atomic_fetch_add(&c->runs, 1);
    return c->rc;
}

static inline void eb_count_destroy(void *ctx)
{
    atomic_fetch_add(&((EbCounter *)ctx)->destroys, 1);
}

static inline void eb_check_counts_at(const char *file, int line, const char *what, EbCounter *c, int runs,
                                      int destroys)
{
    char expr[160];
    snprintf(expr, sizeof expr, "%s.runs", what);
    tu_check_eq_at(file, line, expr, atomic_load(&c->runs), runs);
    snprintf(expr, sizeof expr, "%s.destroys", what);
    tu_check_eq_at(file, line, expr, atomic_load(&c->destroys), destroys);
}

#define EB_CHECK_RUNS_DESTROYS(c, runs, destroys) eb_check_counts_at(__FILE__, __LINE__, #c, (c), (runs), (destroys))

/* A heap context: destroy frees it, so that ASan/LSan see a missing (leak)
 * or repeated (double free) destroy_context. `runs` counts into *shared. */
typedef struct {
    atomic_int *shared_runs;
    atomic_int *shared_destroys;
} EbHeapCtx;

static inline int eb_heap_work(void *ctx)
{
    atomic_fetch_add(((EbHeapCtx *)ctx)->shared_runs, 1);
    return 0;
}

static inline void eb_heap_destroy(void *ctx)
{
    EbHeapCtx *h = (EbHeapCtx *)ctx;
    atomic_fetch_add(h->shared_destroys, 1);
    free(h);
}

static inline EbHeapCtx *eb_heap_counter(atomic_int *runs, atomic_int *destroys)
{
    EbHeapCtx *h = (EbHeapCtx *)malloc(sizeof *h);
    if (h != NULL) {
        h->shared_runs = runs;
        h->shared_destroys = destroys;
    }
    return h;
}

/* ---- pools and tasks -------------------------------------------------------- */

static inline EchobeatsConfig eb_config(int threads_per_stream)
{
    EchobeatsConfig c;
    echobeats_config_default(&c);
    c.threads_per_stream = threads_per_stream;
    c.data_loader_workers = 2;
    c.intra_op_threads = 2;
    return c;
}

static inline EchobeatsManager *eb_create_cfg_at(const char *file, int line, const EchobeatsConfig *c)
{
    EchobeatsManager *m = echobeats_create(c);
    tu_check(m != NULL, file, line, "echobeats_create(&cfg) != NULL", "%s", tu_err());
    return m;
}

#define eb_create_cfg(c) eb_create_cfg_at(__FILE__, __LINE__, (c))

static inline EchobeatsManager *eb_create_at(const char *file, int line, int threads_per_stream)
{
    EchobeatsConfig c = eb_config(threads_per_stream);
    return eb_create_cfg_at(file, line, &c);
}

#define eb_create(tps) eb_create_at(__FILE__, __LINE__, (tps))

static inline EchobeatsTask eb_task(EchobeatsTaskFn work, void *ctx, EchobeatsDestroyFn destroy, int32_t step)
{
    EchobeatsTask t;
    memset(&t, 0, sizeof t);
    t.work = work;
    t.context = ctx;
    t.destroy_context = destroy;
    t.stream = echobeats_stream_for_step(step);
    t.phase = echobeats_phase_for_step(step);
    t.step = step;
    t.priority = 0.5f;
    t.layer = ECHOBEATS_LAYER_INTER_OP;
    t.deadline_ns = 0;
    t.dependencies = NULL;
    t.dependency_count = 0;
    return t;
}

/* A step of each stream: Cerebral 1, Somatic 2, Autonomic 3. */
static inline int32_t eb_step_of_stream(int stream)
{
    return stream + 1;
}

/* eb_counter_init(c, rc), then a task for `step` that counts into *c. */
static inline EchobeatsTask eb_counter_task(EbCounter *c, int rc, int32_t step)
{
    eb_counter_init(c, rc);
    return eb_task(eb_count_work, c, eb_count_destroy, step);
}

static inline uint64_t eb_submit_at(const char *file, int line, const char *expr, EchobeatsManager *m,
                                    const EchobeatsTask *t)
{
    uint64_t id = echobeats_submit(m, t);
    tu_check(id != 0, file, line, expr, "submit failed: %s", tu_err());
    return id;
}

#define EB_SUBMIT(m, t) eb_submit_at(__FILE__, __LINE__, "EB_SUBMIT(" #m ", " #t ")", (m), (t))

#define EB_WAIT(m, id, status)                                                                     \
    tu_check_eq_at(__FILE__, __LINE__, "wait_task(" #id ") == " #status,                          \
                   echobeats_wait_task((m), (id), 10000, NULL), (status))

/* ---- gate tasks ------------------------------------------------------------ */

typedef struct {
    TuGate gate;
    EbCounter counter;
} EbGateTask;

static inline void eb_gate_task_init(EbGateTask *g)
{
    tu_gate_init(&g->gate);
    eb_counter_init(&g->counter, 0);
}

static inline int eb_gate_work(void *ctx)
{
    EbGateTask *g = (EbGateTask *)ctx;
    atomic_fetch_add(&g->counter.runs, 1);
    tu_gate_wait(&g->gate, 20000);
    return 0;
}

static inline void eb_gate_destroy(void *ctx)
{
    atomic_fetch_add(&((EbGateTask *)ctx)->counter.destroys, 1);
}

/* Waits (10 s at most) until `gate` is marked started and checks that it is;
 * `submitted` false (the submit failed) skips the wait. */
static inline void eb_check_started_at(const char *file, int line, const char *what, TuGate *gate, bool submitted)
{
    if (submitted)
        tu_gate_wait_started(gate, 10000);
    pthread_mutex_lock(&gate->m);
    bool started = gate->started;
    pthread_mutex_unlock(&gate->m);
    tu_check(started, file, line, what, "%s", "");
}

/* Initialises *g (eb_gate_task_init), submits it to `stream` and returns
 * once it runs (its id). */
static inline uint64_t eb_block_stream_at(const char *file, int line, EchobeatsManager *m, int stream, EbGateTask *g)
{
    eb_gate_task_init(g);
    EchobeatsTask t = eb_task(eb_gate_work, g, eb_gate_destroy, eb_step_of_stream(stream));
    uint64_t id = eb_submit_at(file, line, "submit gate task", m, &t);
    eb_check_started_at(file, line, "gate task started", &g->gate, id != 0);
    return id;
}

#define eb_block_stream(m, stream, g) eb_block_stream_at(__FILE__, __LINE__, (m), (stream), (g))

/* ---- a task that blocks until the pool shuts down --------------------------- */

/* Its work announces that it started, then waits at a barrier of two
 * parties that nobody else joins: shutdown destroys the barrier, the wait
 * returns ECHOBEATS_ERROR (kept in `result`) and the task ends. So the
 * stream's single worker is busy exactly until a shutdown has begun. */
typedef struct {
    EchobeatsManager *m;
    uint64_t barrier;
    TuGate gate;
    atomic_int result;
} EbShutdownBlocker;

static inline int eb_shutdown_blocker_work(void *ctx)
{
    EbShutdownBlocker *b = (EbShutdownBlocker *)ctx;
    pthread_mutex_lock(&b->gate.m);
    b->gate.started = true;
    pthread_cond_broadcast(&b->gate.cv);
    pthread_mutex_unlock(&b->gate.m);
    atomic_store(&b->result, echobeats_wait_at_barrier(b->m, b->barrier, 30000));
    return 0;
}

/* Submits the blocker to `stream` and returns once it runs (its id). */
static inline uint64_t eb_block_until_shutdown_at(const char *file, int line, EchobeatsManager *m, int stream,
                                                  EbShutdownBlocker *b)
{
    b->m = m;
    tu_gate_init(&b->gate);
    atomic_init(&b->result, 99);
    b->barrier = echobeats_create_barrier(m, 2);
    tu_check(b->barrier != 0, file, line, "create_barrier(m, 2)", "%s", tu_err());
    EchobeatsTask t = eb_task(eb_shutdown_blocker_work, b, NULL, eb_step_of_stream(stream));
    uint64_t id = eb_submit_at(file, line, "submit shutdown blocker", m, &t);
    eb_check_started_at(file, line, "shutdown blocker started", &b->gate, id != 0);
    return id;
}

#define eb_block_until_shutdown(m, stream, b) eb_block_until_shutdown_at(__FILE__, __LINE__, (m), (stream), (b))

/* ---- test functions ---------------------------------------------------------- */

/* Runs one test function under its own watchdog (a hang fails the program
 * after `seconds`), printing its name first. */
#define EB_RUN(fn, seconds)                                                                        \
    do {                                                                                           \
        TU_WATCHDOG(seconds);                                                                      \
        printf("-- %s\n", #fn);                                                                    \
        fflush(stdout);                                                                            \
        fn();                                                                                      \
    } while (0)

/* ---- run order --------------------------------------------------------------- */

#define EB_ORDER_MAX 4096

typedef struct {
    pthread_mutex_t m;
    int n;
    int tags[EB_ORDER_MAX];
} EbOrder;

typedef struct {
    EbOrder *order;
    int tag;
    int rc;
} EbTag;

static inline void eb_order_init(EbOrder *o)
{
    pthread_mutex_init(&o->m, NULL);
    o->n = 0;
}

static inline void eb_order_destroy(EbOrder *o)
{
    pthread_mutex_destroy(&o->m);
}

static inline int eb_order_work(void *ctx)
{
    EbTag *t = (EbTag *)ctx;
    pthread_mutex_lock(&t->order->m);
    if (t->order->n < EB_ORDER_MAX)
        t->order->tags[t->order->n++] = t->tag;
    pthread_mutex_unlock(&t->order->m);
    return t->rc;
}

/* Position of `tag` in the recorded order, or -1. */
static inline int eb_order_pos(EbOrder *o, int tag)
{
    pthread_mutex_lock(&o->m);
    int pos = -1;
    for (int i = 0; i < o->n; i++)
        if (o->tags[i] == tag) {
            pos = i;
            break;
        }
    pthread_mutex_unlock(&o->m);
    return pos;
}

#endif /* CLLM_C_TESTS_EB_TEST_UTIL_H */
