/* test_echobeats_parallel_for.c: the intra-op parallel-for of the C ABI.
 *
 *   covers_every_index_once     0..10000 on a 2-thread intra-op pool: every
 *                               index visited exactly once
 *   works_inside_an_intra_op_task  an ECHOBEATS_LAYER_INTRA_OP task runs a
 *                               parallel loop and completes
 *   empty_and_bad_ranges        begin == end does nothing; NULL manager,
 *                               NULL body and begin > end are errors
 */
#include "test_util.h"
#include "eb_test_util.h"

#define N 10000

typedef struct {
    int hits[N];
} Hits;

static void count_hit(size_t i, void *user)
{
    Hits *h = user;
    __atomic_fetch_add(&h->hits[i], 1, __ATOMIC_RELAXED);
}

static void covers_every_index_once(void)
{
    EchobeatsConfig c = eb_config(1);
    c.intra_op_threads = 2;
    EchobeatsManager *m = eb_create_cfg(&c);
    static Hits h;
    memset(&h, 0, sizeof h);
    CHECK_EQ_I64(echobeats_parallel_for(m, 0, N, count_hit, &h), ECHOBEATS_OK);
    int wrong = 0;
    for (int i = 0; i < N; i++)
        wrong += h.hits[i] != 1;
    CHECK_EQ_I64(wrong, 0);
    echobeats_free(m);
}

typedef struct {
    EchobeatsManager *m;
    Hits *h;
} LoopTask;

static int loop_task(void *ctx)
{
    LoopTask *t = ctx;
    return echobeats_parallel_for(t->m, 0, N, count_hit, t->h);
}

static void works_inside_an_intra_op_task(void)
{
    EchobeatsManager *m = eb_create(1);
    static Hits h;
    memset(&h, 0, sizeof h);
    LoopTask lt = {m, &h};
    EchobeatsTask t = eb_task(loop_task, &lt, NULL, 3);
    t.layer = ECHOBEATS_LAYER_INTRA_OP;
    uint64_t id = EB_SUBMIT(m, &t);
    EB_WAIT(m, id, ECHOBEATS_TASK_COMPLETED);
    long sum = 0;
    for (int i = 0; i < N; i++)
        sum += h.hits[i];
    CHECK_EQ_I64(sum, N);
    echobeats_free(m);
}

static void empty_and_bad_ranges(void)
{
    EchobeatsManager *m = eb_create(1);
    static Hits h;
    memset(&h, 0, sizeof h);
    CHECK_EQ_I64(echobeats_parallel_for(m, 5, 5, count_hit, &h), ECHOBEATS_OK);
    CHECK_EQ_I64(h.hits[5], 0);
    CHECK_ERR(echobeats_parallel_for(NULL, 0, 1, count_hit, &h), ECHOBEATS_ERROR);
    CHECK_ERR(echobeats_parallel_for(m, 0, 1, NULL, &h), ECHOBEATS_ERROR);
    CHECK_ERR(echobeats_parallel_for(m, 2, 1, count_hit, &h), ECHOBEATS_ERROR);
    echobeats_free(m);
}

int main(void)
{
    tu_begin(120);
    EB_RUN(covers_every_index_once, 30);
    EB_RUN(works_inside_an_intra_op_task, 30);
    EB_RUN(empty_and_bad_ranges, 30);
    return tu_finish("test_echobeats_parallel_for");
}
