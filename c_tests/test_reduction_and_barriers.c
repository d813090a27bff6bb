/* test_reduction_and_barriers.c
 *
 * Gradient-style reduction (a TODO in the original) and the barriers:
 *   - buffer_len = 1000; callbacks accumulate, for item i, the vector
 *     values[k] = ((i*31 + k) % 97) * 0.001f into the sphere they run on;
 *     after wait, kissing_spheres_reduce gives the total, which must match
 *     a sequential double sum (within float tolerance); 5 runs; reduce
 *     zeroes the buffers (a second reduce gives zeros);
 *   - determinism: fixed per-sphere inputs (values of very different
 *     magnitudes, so that summation order shows in the bits) accumulated
 *     directly from the main thread in a shuffled order of spheres, or
 *     from 4 pthreads filling disjoint spheres concurrently: 5 runs, the
 *     reduced results must be bit-identical;
 *   - epoch barrier: 2 workers, one item enqueued on a sphere owned by each
 *     worker with stealing disabled on both; both callbacks call
 *     kissing_spheres_epoch_barrier and get 0 and the same epoch (epoch 1
 *     first); a lone caller gets KS_TIMEOUT and the barrier stays usable;
 *   - level barrier: the same for the workers' home level (generation from
 *     1); a wrong level (-1, a level without worker homes, 4) -> -1.
 */
#include "test_util.h"

enum { BUF = 1000 };

static double dabs(double x) { return x < 0 ? -x : x; }

/* ---- reduction through the scheduler ------------------------------------ */

typedef struct {
    KissingSpheresSystem *sys;
    atomic_int failures;
} AccCtx;

static float item_value(uint64_t i, int k) { return (float)((i * 31 + (uint64_t)k) % 97) * 0.001f; }

static void acc_cb(uint64_t item, int sphere_id, void *user_data)
{
    AccCtx *c = user_data;
    float v[BUF];
    for (int k = 0; k < BUF; k++)
        v[k] = item_value(item, k);
    if (kissing_spheres_accumulate(c->sys, sphere_id, v, BUF) != KS_OK)
        atomic_fetch_add(&c->failures, 1);
}

static void scheduled_reduction(void)
{
    enum { N = 3000, RUNS = 5 };
    KissingSpheresSystem *sys = tu_create_buffers(3, BUF);
    if (sys == NULL)
        return;
    CHECK_EQ_I64(kissing_spheres_buffer_len(sys), BUF);
    AccCtx c = {.sys = sys};
    CHECK_EQ_I64(kissing_spheres_set_work_callback(sys, acc_cb, &c), KS_OK);
    CHECK_EQ_I64(kissing_spheres_start(sys), KS_OK);

    static double expected[BUF];
    for (int k = 0; k < BUF; k++) {
        double s = 0;
        for (uint64_t i = 0; i < N; i++)
            s += (double)item_value(i, k);
        expected[k] = s;
    }
    static float out[BUF];
    for (int run = 0; run < RUNS; run++) {
        CHECK_EQ_I64(kissing_spheres_distribute_range(sys, 0, N), KS_OK);
        CHECKF(kissing_spheres_wait(sys, 20000) == KS_OK, "run %d: wait: %s", run, tu_err());
        CHECK_EQ_I64(atomic_load(&c.failures), 0);
        for (int k = 0; k < BUF; k++)
            out[k] = -1.0f;
        CHECKF(kissing_spheres_reduce(sys, out, BUF) == KS_OK, "run %d: reduce: %s", run, tu_err());
        int bad = 0, first_bad = -1;
        double worst = 0;
        for (int k = 0; k < BUF; k++) {
            double err = dabs((double)out[k] - expected[k]);
            double rel = err / (expected[k] > 1 ? expected[k] : 1);
            if (rel > worst)
                worst = rel;
            if (rel > 1e-3) {
                if (bad++ == 0)
                    first_bad = k;
            }
        }
        CHECKF(bad == 0, "run %d: %d of %d reduced values off (first k=%d: %.6f vs %.6f)", run, bad, BUF, first_bad,
               first_bad >= 0 ? (double)out[first_bad] : 0.0, first_bad >= 0 ? expected[first_bad] : 0.0);
        if (run == 0)
            printf("reduce through the scheduler: worst relative error %.2e\n", worst);
        /* reduce zeroed every buffer */
        CHECK_EQ_I64(kissing_spheres_reduce(sys, out, BUF), KS_OK);
        int nonzero = 0;
        for (int k = 0; k < BUF; k++)
            nonzero += out[k] != 0.0f;
        CHECKF(nonzero == 0, "run %d: a second reduce gave %d non-zero values", run, nonzero);
    }
    CHECK_EQ_I64(kissing_spheres_stop(sys), KS_OK);
    kissing_spheres_free(sys);
}

/* ---- determinism ---------------------------------------------------------- */

static const float magnitudes[7] = {1e-3f, 1e4f, 1.0f, 3e-2f, 7e2f, 1e-1f, 5e3f};

static int vectors_of(int sphere) { return 1 + sphere % 4; }

static void sphere_vector(int sphere, int j, float *v)
{
    float mag = magnitudes[(sphere + j) % 7];
    for (int k = 0; k < BUF; k++) {
        int r = (sphere * 131 + j * 71 + k * 17) % 1000 - 500;
        v[k] = mag * (float)r / 499.0f + 1e-4f * (float)(k % 13);
    }
}

static int fill_sphere(KissingSpheresSystem *sys, int sphere)
{
    float v[BUF];
    int failures = 0;
    for (int j = 0; j < vectors_of(sphere); j++) {
        sphere_vector(sphere, j, v);
        if (kissing_spheres_accumulate(sys, sphere, v, BUF) != KS_OK)
            failures++;
    }
    return failures;
}

typedef struct {
    KissingSpheresSystem *sys;
    const int *order;
    int from, to;
    int failures;
} FillArg;

static void *filler(void *arg)
{
    FillArg *a = arg;
    for (int i = a->from; i < a->to; i++)
        a->failures += fill_sphere(a->sys, a->order[i]);
    return NULL;
}

static void deterministic_reduce(void)
{
    enum { RUNS = 5, FILLERS = 4 };
    KissingSpheresSystem *sys = tu_create_buffers(3, BUF);
    if (sys == NULL)
        return;
    int total = kissing_spheres_total_spheres(sys);
    int *order = malloc((size_t)total * sizeof *order);
    static float first[BUF], out[BUF];
    /* double reference and the scale of the terms */
    static double ref[BUF], scale[BUF];
    float v[BUF];
    for (int s = 0; s < total; s++)
        for (int j = 0; j < vectors_of(s); j++) {
            sphere_vector(s, j, v);
            for (int k = 0; k < BUF; k++) {
                ref[k] += (double)v[k];
                scale[k] += dabs((double)v[k]);
            }
        }

    for (int run = 0; run < RUNS; run++) {
        for (int s = 0; s < total; s++)
            order[s] = s;
        tu_shuffle_int(order, total, 0x1234u + (uint64_t)run * 7919u);
        int failures = 0;
        if (run % 2 == 0) {
            for (int i = 0; i < total; i++)
                failures += fill_sphere(sys, order[i]);
        } else {
            pthread_t th[FILLERS];
            FillArg args[FILLERS];
            for (int t = 0; t < FILLERS; t++) {
                args[t] = (FillArg){sys, order, total * t / FILLERS, total * (t + 1) / FILLERS, 0};
                CHECK(pthread_create(&th[t], NULL, filler, &args[t]) == 0);
            }
            for (int t = 0; t < FILLERS; t++) {
                pthread_join(th[t], NULL);
                failures += args[t].failures;
            }
        }
        CHECKF(failures == 0, "run %d: %d accumulate calls failed", run, failures);
        CHECKF(kissing_spheres_reduce(sys, run == 0 ? first : out, BUF) == KS_OK, "run %d: reduce: %s", run,
               tu_err());
        if (run == 0) {
            int bad = 0;
            for (int k = 0; k < BUF; k++)
                if (dabs((double)first[k] - ref[k]) > 1e-5 * scale[k] + 1e-6)
                    bad++;
            CHECKF(bad == 0, "deterministic input: %d reduced values far from the double reference", bad);
        } else {
            int differ = 0, first_k = -1;
            for (int k = 0; k < BUF; k++)
                if (memcmp(&out[k], &first[k], sizeof(float)) != 0) {
                    if (differ++ == 0)
                        first_k = k;
                }
            CHECKF(differ == 0,
                   "run %d (%s): %d reduced values differ bitwise from run 0 (first k=%d: %.9g vs %.9g) although "
                   "every sphere held the same buffer",
                   run, run % 2 ? "4 threads" : "shuffled", differ, first_k, first_k >= 0 ? (double)out[first_k] : 0.0,
                   first_k >= 0 ? (double)first[first_k] : 0.0);
        }
    }
    /* How order-sensitive is this input? (information only) */
    float naive[BUF] = {0};
    for (int s = total - 1; s >= 0; s--)
        for (int j = 0; j < vectors_of(s); j++) {
            sphere_vector(s, j, v);
            for (int k = 0; k < BUF; k++)
                naive[k] += v[k];
        }
    int sensitive = 0;
    for (int k = 0; k < BUF; k++)
        sensitive += memcmp(&naive[k], &first[k], sizeof(float)) != 0;
    printf("determinism: %d of %d values would differ with another summation order\n", sensitive, BUF);
    free(order);
    kissing_spheres_free(sys);
}

/* ---- sphere states around a reduction ----------------------------------- */

/* Spheres whose state is not `want` (first bad state in *first). */
static int states_not(KissingSpheresSystem *sys, int want, int *first)
{
    int bad = 0;
    *first = -1;
    for (int s = 0; s < kissing_spheres_total_spheres(sys); s++) {
        KissingSphereInfo info = {.state = -1};
        if (kissing_spheres_sphere_info(sys, s, &info) != KS_OK || info.state != want) {
            if (bad++ == 0)
                *first = info.state;
        }
    }
    return bad;
}

/* A reduction does not change what the lifecycle states say: a system
 * never started stays SPHERE_INITIALIZING ("created, never started"), a
 * stopped one SPHERE_TERMINATED ("stopped"). */
static void states_after_reduce(void)
{
    KissingSpheresSystem *sys = tu_create_buffers(2, 4);
    if (sys == NULL)
        return;
    float v[4] = {1, 2, 3, 4}, out[4];
    int first;
    CHECK_EQ_I64(kissing_spheres_accumulate(sys, 3, v, 4), KS_OK);
    CHECK_EQ_I64(kissing_spheres_reduce(sys, out, 4), KS_OK);
    CHECKF(out[0] == 1.0f && out[3] == 4.0f, "reduce of one sphere: %g .. %g", (double)out[0], (double)out[3]);
    int bad = states_not(sys, SPHERE_INITIALIZING, &first);
    CHECKF(bad == 0, "never started, after reduce: %d spheres in state %d instead of SPHERE_INITIALIZING", bad, first);
    CHECK_EQ_I64(kissing_spheres_start(sys), KS_OK);
    CHECK_EQ_I64(kissing_spheres_stop(sys), KS_OK);
    bad = states_not(sys, SPHERE_TERMINATED, &first);
    CHECKF(bad == 0, "after stop: %d spheres in state %d instead of SPHERE_TERMINATED", bad, first);
    CHECK_EQ_I64(kissing_spheres_accumulate(sys, 3, v, 4), KS_OK);
    CHECK_EQ_I64(kissing_spheres_reduce(sys, out, 4), KS_OK);
    bad = states_not(sys, SPHERE_TERMINATED, &first);
    CHECKF(bad == 0, "stopped, after reduce: %d spheres in state %d instead of SPHERE_TERMINATED", bad, first);
    kissing_spheres_free(sys);
}

/* ---- barriers ------------------------------------------------------------- */

enum {
    IT_EPOCH_A = 10,
    IT_EPOCH_B = 11,
    IT_EPOCH_ALONE = 12,
    IT_EPOCH2_A = 13,
    IT_EPOCH2_B = 14,
    IT_LEVEL_A = 20,
    IT_LEVEL_B = 21,
    IT_LEVEL2_A = 22,
    IT_LEVEL2_B = 23,
    IT_LEVEL_WRONG_FIRST = 30, /* 30 + index into wrong_levels */
};

typedef struct {
    KissingSpheresSystem *sys;
    int level;
    int wrong_levels[4];
    int n_wrong;
    int rc[64];
    uint64_t gen[64];
    bool err[64];
    int sphere[64];
} BCtx;

static void barrier_cb(uint64_t item, int sphere_id, void *user_data)
{
    BCtx *c = user_data;
    if (item >= 64)
        return;
    uint64_t g = 0;
    int rc;
    cllm_clear_error();
    switch (item) {
    case IT_EPOCH_A:
    case IT_EPOCH_B:
    case IT_EPOCH2_A:
    case IT_EPOCH2_B:
        rc = kissing_spheres_epoch_barrier(c->sys, 5000, &g);
        break;
    case IT_EPOCH_ALONE:
        rc = kissing_spheres_epoch_barrier(c->sys, 50, &g);
        break;
    case IT_LEVEL_A:
    case IT_LEVEL_B:
    case IT_LEVEL2_A:
    case IT_LEVEL2_B:
        rc = kissing_spheres_level_barrier(c->sys, c->level, 5000, &g);
        break;
    default:
        if (item >= IT_LEVEL_WRONG_FIRST && item < (uint64_t)(IT_LEVEL_WRONG_FIRST + c->n_wrong))
            rc = kissing_spheres_level_barrier(c->sys, c->wrong_levels[item - IT_LEVEL_WRONG_FIRST], 100, &g);
        else
            return;
        break;
    }
    c->rc[item] = rc;
    c->gen[item] = g;
    c->err[item] = tu_error_is_set();
    c->sphere[item] = sphere_id;
}

/* A sphere owned by `worker`, preferring leaves. */
static int sphere_of_worker(KissingSpheresSystem *sys, int worker)
{
    int total = kissing_spheres_total_spheres(sys), any = -1;
    for (int s = 0; s < total; s++) {
        KissingSphereInfo info;
        if (kissing_spheres_sphere_info(sys, s, &info) != KS_OK || info.owner_worker != worker)
            continue;
        if (info.num_children == 0)
            return s;
        if (any < 0)
            any = s;
    }
    return any;
}

static void run_pair(BCtx *c, int sa, int sb, uint64_t ia, uint64_t ib)
{
    c->rc[ia] = c->rc[ib] = 12345;
    CHECK_EQ_I64(kissing_spheres_enqueue(c->sys, sa, &ia, 1), KS_OK);
    CHECK_EQ_I64(kissing_spheres_enqueue(c->sys, sb, &ib, 1), KS_OK);
    CHECKF(kissing_spheres_wait(c->sys, 20000) == KS_OK, "wait after items %" PRIu64 "/%" PRIu64 ": %s", ia, ib,
           tu_err());
}

static void barriers(void)
{
    KissingSpheresSystem *sys = tu_create(2, 2);
    if (sys == NULL)
        return;
    CHECK_EQ_I64(kissing_spheres_worker_threads(sys), 2);
    int sa = sphere_of_worker(sys, 0), sb = sphere_of_worker(sys, 1);
    CHECKF(sa >= 0 && sb >= 0 && sa != sb, "spheres of workers 0 / 1: %d / %d", sa, sb);
    if (sa < 0 || sb < 0 || sa == sb) {
        kissing_spheres_free(sys);
        return;
    }
    CHECK_EQ_I64(kissing_spheres_set_stealing(sys, sa, false), KS_OK);
    CHECK_EQ_I64(kissing_spheres_set_stealing(sys, sb, false), KS_OK);
    BCtx *c = calloc(1, sizeof *c);
    c->sys = sys;
    CHECK_EQ_I64(kissing_spheres_set_work_callback(sys, barrier_cb, c), KS_OK);
    CHECK_EQ_I64(kissing_spheres_start(sys), KS_OK);

    /* epoch barrier: both workers meet */
    run_pair(c, sa, sb, IT_EPOCH_A, IT_EPOCH_B);
    CHECKF(c->rc[IT_EPOCH_A] == 0 && c->rc[IT_EPOCH_B] == 0, "epoch barrier: returned %d and %d",
           c->rc[IT_EPOCH_A], c->rc[IT_EPOCH_B]);
    CHECKF(c->gen[IT_EPOCH_A] == c->gen[IT_EPOCH_B], "epoch barrier: epochs %" PRIu64 " and %" PRIu64 " differ",
           c->gen[IT_EPOCH_A], c->gen[IT_EPOCH_B]);
    CHECKF(c->gen[IT_EPOCH_A] == 1, "first epoch is %" PRIu64 ", expected 1", c->gen[IT_EPOCH_A]);
    CHECKF(c->sphere[IT_EPOCH_A] == sa && c->sphere[IT_EPOCH_B] == sb, "items ran on spheres %d / %d, expected %d / %d",
           c->sphere[IT_EPOCH_A], c->sphere[IT_EPOCH_B], sa, sb);

    /* alone: times out, and the barrier stays usable */
    uint64_t alone = IT_EPOCH_ALONE;
    c->rc[alone] = 12345;
    CHECK_EQ_I64(kissing_spheres_enqueue(sys, sa, &alone, 1), KS_OK);
    int wrc = kissing_spheres_wait(sys, 5000);
    CHECKF(wrc == KS_OK, "one item enqueued on sphere %d (worker 0, stealing disabled) did not finish in 5 s: wait "
           "returned %d, pending %lld", sa, wrc, (long long)kissing_spheres_pending(sys));
    CHECKF(c->rc[alone] == KS_TIMEOUT, "epoch barrier with one of two workers returned %d, expected KS_TIMEOUT",
           c->rc[alone]);
    run_pair(c, sa, sb, IT_EPOCH2_A, IT_EPOCH2_B);
    CHECKF(c->rc[IT_EPOCH2_A] == 0 && c->rc[IT_EPOCH2_B] == 0, "epoch barrier after a timeout: returned %d and %d",
           c->rc[IT_EPOCH2_A], c->rc[IT_EPOCH2_B]);
    CHECKF(c->gen[IT_EPOCH2_A] == c->gen[IT_EPOCH2_B] && c->gen[IT_EPOCH2_A] > c->gen[IT_EPOCH_A],
           "epoch barrier after a timeout: epochs %" PRIu64 " / %" PRIu64 " (previous %" PRIu64 ")",
           c->gen[IT_EPOCH2_A], c->gen[IT_EPOCH2_B], c->gen[IT_EPOCH_A]);

    /* level barrier at the workers' home level */
    KissingSphereInfo h0, h1;
    CHECK_EQ_I64(kissing_spheres_sphere_info(sys, kissing_spheres_worker_home(sys, 0), &h0), KS_OK);
    CHECK_EQ_I64(kissing_spheres_sphere_info(sys, kissing_spheres_worker_home(sys, 1), &h1), KS_OK);
    if (h0.level == h1.level) {
        c->level = h0.level;
        run_pair(c, sa, sb, IT_LEVEL_A, IT_LEVEL_B);
        CHECKF(c->rc[IT_LEVEL_A] == 0 && c->rc[IT_LEVEL_B] == 0, "level barrier (level %d): returned %d and %d",
               c->level, c->rc[IT_LEVEL_A], c->rc[IT_LEVEL_B]);
        CHECKF(c->gen[IT_LEVEL_A] == c->gen[IT_LEVEL_B] && c->gen[IT_LEVEL_A] == 1,
               "level barrier: generations %" PRIu64 " / %" PRIu64 ", expected 1 / 1", c->gen[IT_LEVEL_A],
               c->gen[IT_LEVEL_B]);
        run_pair(c, sa, sb, IT_LEVEL2_A, IT_LEVEL2_B);
        CHECKF(c->rc[IT_LEVEL2_A] == 0 && c->rc[IT_LEVEL2_B] == 0 && c->gen[IT_LEVEL2_A] == 2 &&
                   c->gen[IT_LEVEL2_B] == 2,
               "second level barrier: rc %d/%d generation %" PRIu64 "/%" PRIu64 " (expected 0/0, 2/2)",
               c->rc[IT_LEVEL2_A], c->rc[IT_LEVEL2_B], c->gen[IT_LEVEL2_A], c->gen[IT_LEVEL2_B]);
    } else {
        printf("note: worker homes are on levels %d and %d; two-party level barrier not tested\n", h0.level,
               h1.level);
    }
    /* wrong levels */
    c->n_wrong = 0;
    c->wrong_levels[c->n_wrong++] = -1;
    c->wrong_levels[c->n_wrong++] = 4;
    c->wrong_levels[c->n_wrong++] = h0.level == 0 ? 1 : 0;
    for (int i = 0; i < c->n_wrong; i++) {
        uint64_t it = (uint64_t)(IT_LEVEL_WRONG_FIRST + i);
        c->rc[it] = 12345;
        CHECK_EQ_I64(kissing_spheres_enqueue(sys, sa, &it, 1), KS_OK);
    }
    CHECK_EQ_I64(kissing_spheres_wait(sys, 20000), KS_OK);
    for (int i = 0; i < c->n_wrong; i++) {
        int it = IT_LEVEL_WRONG_FIRST + i;
        CHECKF(c->rc[it] == -1 && c->err[it], "level_barrier(level %d) from a worker whose home is on level %d "
               "returned %d (error set: %d), expected -1", c->wrong_levels[i], h0.level, c->rc[it], c->err[it]);
    }
    CHECK_EQ_I64(kissing_spheres_stop(sys), KS_OK);
    kissing_spheres_free(sys);
    free(c);
}

int main(void)
{
    tu_begin(60);
    scheduled_reduction();
    deterministic_reduce();
    states_after_reduce();
    barriers();
    return tu_finish("test_reduction_and_barriers");
}
