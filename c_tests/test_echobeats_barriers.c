/* test_echobeats_barriers.c: echobeats barriers.
 *
 *   n_threads_many_rounds    5 threads x 200 rounds on one reusable barrier:
 *                            nobody leaves a round before all arrived
 *   single_party             a barrier of 1 never waits
 *   timeout_withdraws        a timed-out waiter withdraws its arrival: a
 *                            later lone waiter times out again, a full set
 *                            passes
 *   destroy_wakes_waiters    destroying a barrier releases its waiters with
 *                            ECHOBEATS_ERROR; waiting on it afterwards is an
 *                            error at once
 *   shutdown_wakes_waiters   shutdown destroys every barrier: waiters return
 *                            ECHOBEATS_ERROR
 *   stream_tasks_meet        one task per stream meet at a 3-party barrier
 *                            (the original's use), every cycle for 20 cycles
 *   ids_are_fresh            1,000 create/destroy pairs: ids unique, a
 *                            destroyed id stays unknown
 */
#include "test_util.h"
#include "eb_test_util.h"

enum { NT = 5, ROUNDS = 200 };

typedef struct {
    EchobeatsManager *m;
    uint64_t barrier;
    int64_t timeout_ms;
    atomic_int *arrived; /* per round */
    int rounds;
    int parties;
    int bad_rc;
    int early;
    int rc; /* last result */
} Party;

static void *party_main(void *arg)
{
    Party *p = (Party *)arg;
    for (int r = 0; r < p->rounds; r++) {
        if (p->arrived != NULL)
            atomic_fetch_add(&p->arrived[r], 1);
        p->rc = echobeats_wait_at_barrier(p->m, p->barrier, p->timeout_ms);
        if (p->rc != ECHOBEATS_OK) {
            p->bad_rc++;
            continue;
        }
        if (p->arrived != NULL && atomic_load(&p->arrived[r]) != p->parties)
            p->early++;
    }
    return NULL;
}

static void n_threads_many_rounds(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    uint64_t b = echobeats_create_barrier(m, NT);
    CHECK(b != 0);
    static atomic_int arrived[ROUNDS];
    for (int r = 0; r < ROUNDS; r++)
        atomic_init(&arrived[r], 0);
    Party p[NT];
    pthread_t th[NT];
    for (int i = 0; i < NT; i++) {
        p[i] = (Party){m, b, -1, arrived, ROUNDS, NT, 0, 0, 99};
        CHECK(pthread_create(&th[i], NULL, party_main, &p[i]) == 0);
    }
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        CHECKF(p[i].bad_rc == 0, "thread %d: %d waits failed", i, p[i].bad_rc);
        CHECKF(p[i].early == 0, "thread %d left %d rounds before everybody arrived", i, p[i].early);
    }
    CHECK_EQ_I64(echobeats_destroy_barrier(m, b), ECHOBEATS_OK);
    echobeats_free(m);
}

static void single_party(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    uint64_t b = echobeats_create_barrier(m, 1);
    CHECK(b != 0);
    for (int i = 0; i < 100; i++)
        CHECK_EQ_I64(echobeats_wait_at_barrier(m, b, -1), ECHOBEATS_OK);
    echobeats_free(m);
}

static void timeout_withdraws(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    uint64_t b = echobeats_create_barrier(m, 2);
    double t0 = tu_now();
    CHECK_EQ_I64(echobeats_wait_at_barrier(m, b, 20), ECHOBEATS_TIMEOUT);
    double took = tu_now() - t0;
    CHECKF(took >= 0.019 && took < 5.0, "wait_at_barrier(20 ms) took %.3f s", took);
    /* Withdrawn: alone again, it times out again. */
    CHECK_EQ_I64(echobeats_wait_at_barrier(m, b, 0), ECHOBEATS_TIMEOUT);
    CHECK_EQ_I64(echobeats_wait_at_barrier(m, b, 5), ECHOBEATS_TIMEOUT);
    /* A full set passes. */
    Party p[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        p[i] = (Party){m, b, 10000, NULL, 3, 2, 0, 0, 99};
        CHECK(pthread_create(&th[i], NULL, party_main, &p[i]) == 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_I64(p[i].bad_rc, 0);
    }
    echobeats_free(m);
}

static void destroy_wakes_waiters(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    uint64_t b = echobeats_create_barrier(m, 4);
    Party p[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        p[i] = (Party){m, b, -1, NULL, 1, 4, 0, 0, 99};
        CHECK(pthread_create(&th[i], NULL, party_main, &p[i]) == 0);
    }
    /* Whether a thread is already waiting or arrives after the destroy, it
     * gets an error: never a hang. */
    CHECK_EQ_I64(echobeats_destroy_barrier(m, b), ECHOBEATS_OK);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_I64(p[i].rc, ECHOBEATS_ERROR);
    }
    CHECK_ERR(echobeats_wait_at_barrier(m, b, -1), ECHOBEATS_ERROR);
    CHECK_ERR(echobeats_wait_at_barrier(m, b, 0), ECHOBEATS_ERROR);
    CHECK_ERR(echobeats_destroy_barrier(m, b), ECHOBEATS_ERROR);
    echobeats_free(m);
}

static void shutdown_wakes_waiters(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    uint64_t b1 = echobeats_create_barrier(m, 3);
    uint64_t b2 = echobeats_create_barrier(m, 2);
    Party p[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        p[i] = (Party){m, i == 2 ? b2 : b1, -1, NULL, 1, 3, 0, 0, 99};
        CHECK(pthread_create(&th[i], NULL, party_main, &p[i]) == 0);
    }
    CHECK_EQ_I64(echobeats_shutdown(m, NULL), ECHOBEATS_OK);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_I64(p[i].rc, ECHOBEATS_ERROR);
    }
    echobeats_free(m);
}

typedef struct {
    EchobeatsManager *m;
    uint64_t barrier;
    atomic_int *ok;
} MeetCtx;

static int meet_work(void *ctx)
{
    MeetCtx *c = (MeetCtx *)ctx;
    int rc = echobeats_wait_at_barrier(c->m, c->barrier, 10000);
    if (rc == ECHOBEATS_OK)
        atomic_fetch_add(c->ok, 1);
    return rc == ECHOBEATS_OK ? 0 : 1;
}

static void stream_tasks_meet(void)
{
    EchobeatsConfig cfg = eb_config(1);
    cfg.target_cycle_time_ms = 0.0f;
    EchobeatsManager *m = eb_create_cfg(&cfg);
    if (m == NULL)
        return;
    uint64_t b = echobeats_create_barrier(m, 3);
    atomic_int ok;
    atomic_init(&ok, 0);
    MeetCtx ctx = {m, b, &ok};
    for (int cycle = 0; cycle < 20; cycle++) {
        uint64_t ids[3];
        for (int s = 0; s < 3; s++)
            ids[s] = echobeats_submit_for_step(m, meet_work, &ctx, NULL, 10 + s, 0.5f);
        CHECK(echobeats_run_cycle(m) > 0);
        for (int s = 0; s < 3; s++)
            EB_WAIT(m, ids[s], ECHOBEATS_TASK_COMPLETED);
    }
    CHECK_EQ_I64(atomic_load(&ok), 60);
    echobeats_free(m);
}

static void ids_are_fresh(void)
{
    EchobeatsManager *m = eb_create(1);
    if (m == NULL)
        return;
    uint64_t prev = 0;
    int bad = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t b = echobeats_create_barrier(m, 1 + i % 4);
        if (b == 0 || b <= prev)
            bad++;
        if (echobeats_destroy_barrier(m, b) != ECHOBEATS_OK)
            bad++;
        if (prev != 0 && echobeats_wait_at_barrier(m, prev, -1) != ECHOBEATS_ERROR)
            bad++;
        prev = b;
    }
    CHECK_EQ_I64(bad, 0);
    echobeats_free(m);
}

int main(void)
{
    tu_begin(120);
    EB_RUN(n_threads_many_rounds, 30);
    EB_RUN(single_party, 30);
    EB_RUN(timeout_withdraws, 30);
    EB_RUN(destroy_wakes_waiters, 30);
    EB_RUN(shutdown_wakes_waiters, 30);
    EB_RUN(stream_tasks_meet, 30);
    EB_RUN(ids_are_fresh, 30);
    return tu_finish("test_echobeats_barriers");
}
