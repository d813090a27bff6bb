/* test_mini_runtime_mlp.c: schedules from mr_schedule_build on the
 * mini_runtime engine (ported from the original project's end-to-end MLP
 * tests), in three modes -- sequential, threaded, threaded with two compute
 * threads -- with bit-identical results across them.
 *
 *   mlp_1_layer              y = relu(x . w), 32x32; schedule of 4 ops
 *   mlp_1_layer_padded       40x50 . 50x70 (no multiples of 32), ReLU
 *   mlp_3_layers             the reference MLP (x 128x128, w1 128x64 ReLU,
 *                            w2 64x32 ReLU, w3 32x32): 99 ops (39 LOAD,
 *                            44 EXEC, 16 STORE), peak SRAM <= 52 KiB;
 *                            h1, h2 and out against an f64 reference;
 *                            mr_engine_execute_schedule and mr_engine_execute
 *                            on mr_schedule_ops give the same bits
 *   mlp_stats_match          per-run op counts equal the schedule's, in all
 *                            modes
 *   mlp_shared_engine_4_threads  one threaded engine, 4 threads x 100 runs
 *   mlp_schedule_on_small_sram  a schedule on an engine with too little SRAM
 *                            is refused (OUT_OF_RANGE); building for too
 *                            little SRAM is refused
 *   mlp_repeated_1000_threaded  1000 runs per threaded mode, intermediate and
 *                            output tensors reset to a sentinel before each:
 *                            the same bits every time, equal to sequential
 */
#include "test_util.h"
#include "mr_test_util.h"

/* One reference layer in double: out = a . b (ReLU optional); mag = |a|.|b|
 * chained through the magnitudes of the inputs (an error bound's scale). */
static void ref_layer(const double *a, const double *amag, const double *b, size_t rows, size_t inner, size_t cols,
                      bool relu, double *out, double *mag)
{
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) {
            double s = 0, m = 0;
            for (size_t k = 0; k < inner; k++) {
                s += a[i * inner + k] * b[k * cols + j];
                m += amag[i * inner + k] * fabs(b[k * cols + j]);
            }
            out[i * cols + j] = relu && s < 0 ? 0 : s;
            mag[i * cols + j] = m;
        }
}

static double *to_double(const float *p, size_t n, bool absolute)
{
    double *d = malloc(n * sizeof *d);
    if (d != NULL)
        for (size_t i = 0; i < n; i++)
            d[i] = absolute ? fabs((double)p[i]) : (double)p[i];
    return d;
}

/* Tolerance of the checks against the f64 reference: the worst-case float
 * error of a chain of sums of up to 128 + 64 + 32 products is ~1.4e-5 * mag. */
#define REF_REL 2e-5

/* ---- generic layer chains ----------------------------------------------------- */

typedef struct {
    const char *name;
    size_t rows, cols;
    bool input; /* set from random data (otherwise produced by a layer) */
} TensorSpec;

typedef struct {
    int a, b, out; /* indices into the tensor list */
    bool relu;
} LayerSpec;

typedef struct {
    const char *name;
    const TensorSpec *tensors;
    int ntensors;
    const LayerSpec *layers;
    int nlayers;
    size_t sram;
    /* expected schedule facts (ops == 0: not checked) */
    size_t ops, loads, executes, stores, peak_max;
} Net;

static const TensorSpec MLP3_TENSORS[] = {
    {"x", 128, 128, true}, {"w1", 128, 64, true}, {"h1", 128, 64, false}, {"w2", 64, 32, true},
    {"h2", 128, 32, false}, {"w3", 32, 32, true}, {"out", 128, 32, false},
};
static const LayerSpec MLP3_LAYERS[] = {{0, 1, 2, true}, {2, 3, 4, true}, {4, 5, 6, false}};
static const Net MLP3 = {"mlp_3_layers", MLP3_TENSORS, 7, MLP3_LAYERS, 3, 256 * 1024, 99, 39, 44, 16, 53248};

static const TensorSpec MLP1_TENSORS[] = {{"x", 32, 32, true}, {"w", 32, 32, true}, {"y", 32, 32, false}};
static const LayerSpec MLP1_LAYERS[] = {{0, 1, 2, true}};
static const Net MLP1 = {"mlp_1_layer", MLP1_TENSORS, 3, MLP1_LAYERS, 1, 64 * 1024, 4, 2, 1, 1, 3 * 4096};

static const TensorSpec PAD_TENSORS[] = {{"x", 40, 50, true}, {"w", 50, 70, true}, {"y", 40, 70, false}};
static const Net MLP1_PADDED = {"mlp_1_layer_padded", PAD_TENSORS, 3, MLP1_LAYERS, 1, 64 * 1024, 0, 0, 0, 0, 0};

#define MAX_T 8

/* A net on one engine: its tensors registered (ids 0..n-1) and inputs set. */
typedef struct {
    const Net *net;
    MrEngine *e;
    MrSchedule *s;
    float *data[MAX_T]; /* inputs: the data set; others: scratch for results */
} Run;

static MrMatmulLayer layer_of(const Net *n, int i)
{
    const LayerSpec *l = &n->layers[i];
    MrMatmulLayer m;
    memset(&m, 0, sizeof m);
    m.a = (MrTensorRef){(uint32_t)l->a, n->tensors[l->a].rows, n->tensors[l->a].cols};
    m.b = (MrTensorRef){(uint32_t)l->b, n->tensors[l->b].rows, n->tensors[l->b].cols};
    m.out = (MrTensorRef){(uint32_t)l->out, n->tensors[l->out].rows, n->tensors[l->out].cols};
    m.relu = l->relu ? 1 : 0;
    return m;
}

static MrSchedule *build(const Net *n)
{
    MrMatmulLayer layers[MAX_T];
    for (int i = 0; i < n->nlayers; i++)
        layers[i] = layer_of(n, i);
    MrSchedule *s = mr_schedule_build(layers, (size_t)n->nlayers, n->sram);
    CHECKF(s != NULL, "mr_schedule_build(%s): %s", n->name, tu_err());
    return s;
}

static bool run_open(Run *r, const Net *n, const MrtMode *m)
{
    memset(r, 0, sizeof *r);
    r->net = n;
    r->e = mrt_engine(m, n->sram);
    r->s = build(n);
    if (r->e == NULL || r->s == NULL)
        return false;
    for (int i = 0; i < n->ntensors; i++) {
        const TensorSpec *t = &n->tensors[i];
        r->data[i] = malloc(t->rows * t->cols * sizeof(float));
        if (!CHECK(r->data[i] != NULL))
            return false;
        if (t->input)
            mrt_fill_random(r->data[i], t->rows * t->cols, 1000 + (uint64_t)i, 0.3f);
        MRT_TENSOR(r->e, t->name, t->rows, t->cols, i, t->input ? r->data[i] : NULL);
    }
    return true;
}

static void run_close(Run *r)
{
    mr_schedule_free(r->s);
    mr_engine_free(r->e);
    for (int i = 0; i < MAX_T; i++)
        free(r->data[i]);
    memset(r, 0, sizeof *r);
}

/* Fills every non-input tensor with NaN, so a run that skipped a STORE shows. */
static void poison_outputs(Run *r)
{
    for (int i = 0; i < r->net->ntensors; i++) {
        const TensorSpec *t = &r->net->tensors[i];
        if (!t->input) {
            mrt_fill_value(r->data[i], t->rows * t->cols, NAN);
            CHECK_OK(mr_engine_set_tensor(r->e, t->name, r->data[i], t->rows, t->cols));
        }
    }
}

/* Reads every non-input tensor, concatenated, into `out` (returns floats). */
static size_t read_outputs(Run *r, float *out)
{
    size_t off = 0;
    for (int i = 0; i < r->net->ntensors; i++) {
        const TensorSpec *t = &r->net->tensors[i];
        if (!t->input) {
            CHECK_OK(mr_engine_get_tensor(r->e, t->name, out + off, t->rows, t->cols));
            off += t->rows * t->cols;
        }
    }
    return off;
}

static size_t outputs_len(const Net *n)
{
    size_t len = 0;
    for (int i = 0; i < n->ntensors; i++)
        if (!n->tensors[i].input)
            len += n->tensors[i].rows * n->tensors[i].cols;
    return len;
}

/* Checks every produced tensor (as read by read_outputs) against the f64
 * reference of the chain. */
static void check_reference(Run *r, const float *outs)
{
    const Net *n = r->net;
    double *val[MAX_T] = {0}, *mag[MAX_T] = {0};
    for (int i = 0; i < n->ntensors; i++)
        if (n->tensors[i].input) {
            size_t cnt = n->tensors[i].rows * n->tensors[i].cols;
            val[i] = to_double(r->data[i], cnt, false);
            mag[i] = to_double(r->data[i], cnt, true);
        }
    for (int li = 0; li < n->nlayers; li++) {
        const LayerSpec *l = &n->layers[li];
        const TensorSpec *ta = &n->tensors[l->a], *tb = &n->tensors[l->b];
        size_t cnt = ta->rows * tb->cols;
        val[l->out] = malloc(cnt * sizeof(double));
        mag[l->out] = malloc(cnt * sizeof(double));
        if (CHECK(val[l->out] && mag[l->out] && val[l->a] && val[l->b]))
            ref_layer(val[l->a], mag[l->a], val[l->b], ta->rows, ta->cols, tb->cols, l->relu, val[l->out],
                      mag[l->out]);
    }
    size_t off = 0;
    for (int i = 0; i < n->ntensors; i++) {
        const TensorSpec *t = &n->tensors[i];
        if (!t->input) {
            char what[96];
            snprintf(what, sizeof what, "%s: tensor %s vs f64 reference", n->name, t->name);
            if (val[i] != NULL)
                MRT_CHECK_CLOSE(what, outs + off, val[i], mag[i], t->rows * t->cols, REF_REL);
            off += t->rows * t->cols;
        }
    }
    for (int i = 0; i < MAX_T; i++) {
        free(val[i]);
        free(mag[i]);
    }
}

/* Builds the schedule of the Net `ctx`, checks its facts, runs it (both entry
 * points) and checks the reference; returns the outputs in `outs`. */
static void net_in_mode(const MrtMode *m, float *outs, const void *ctx)
{
    const Net *n = ctx;
    Run r;
    if (!run_open(&r, n, m)) {
        run_close(&r);
        return;
    }
    MrScheduleInfo info;
    CHECK_OK(mr_schedule_info(r.s, &info));
    CHECK_EQ_I64(info.ops, mr_schedule_len(r.s));
    CHECK_EQ_I64(info.loads + info.executes + info.stores, info.ops);
    CHECK(info.peak_sram_bytes <= n->sram);
    if (n->ops != 0) {
        CHECK_EQ_I64(info.ops, n->ops);
        CHECK_EQ_I64(info.loads, n->loads);
        CHECK_EQ_I64(info.executes, n->executes);
        CHECK_EQ_I64(info.stores, n->stores);
        CHECKF(info.peak_sram_bytes <= n->peak_max, "peak %zu > %zu", info.peak_sram_bytes, n->peak_max);
    }
    /* The op list agrees with the counts. */
    const MrOp *ops = mr_schedule_ops(r.s);
    size_t count[3] = {0, 0, 0};
    for (size_t i = 0; ops != NULL && i < info.ops; i++)
        if (ops[i].kind <= MR_OP_STORE)
            count[ops[i].kind]++;
    CHECK_EQ_I64(count[MR_OP_LOAD], info.loads);
    CHECK_EQ_I64(count[MR_OP_EXEC], info.executes);
    CHECK_EQ_I64(count[MR_OP_STORE], info.stores);

    poison_outputs(&r);
    CHECK_OK(mr_engine_execute_schedule(r.e, r.s));
    size_t len = read_outputs(&r, outs);
    check_reference(&r, outs);

    MrStats st;
    CHECK_OK(mr_engine_stats(r.e, &st));
    CHECK_EQ_I64(st.loads, info.loads);
    CHECK_EQ_I64(st.executes, info.executes);
    CHECK_EQ_I64(st.stores, info.stores);

    /* The same ops through mr_engine_execute: the same bits. */
    float *again = malloc(len * sizeof *again);
    if (CHECK(again != NULL)) {
        poison_outputs(&r);
        CHECK_OK(mr_engine_execute(r.e, ops, mr_schedule_len(r.s)));
        read_outputs(&r, again);
        CHECKF(memcmp(again, outs, len * sizeof *again) == 0, "%s: mr_engine_execute differs from _schedule",
               n->name);
    }
    free(again);
    run_close(&r);
}

/* A net in every mode, bit-identical across the modes. */
static void net_all_modes(const Net *n)
{
    mrt_run_modes(n->name, net_in_mode, n, outputs_len(n));
}

/* Stats per run equal the schedule's counts, in every mode, and are the
 * same in every mode (the original test_stats_match). */
static void test_stats_match(void)
{
    uint64_t counts[MRT_NMODES][3];
    for (int i = 0; i < MRT_NMODES; i++) {
        printf("-- mlp_stats_match [%s]\n", MRT_MODES[i].name);
        Run r;
        memset(counts[i], 0, sizeof counts[i]);
        if (run_open(&r, &MLP3, &MRT_MODES[i])) {
            for (int k = 0; k < 3; k++)
                CHECK_OK(mr_engine_execute_schedule(r.e, r.s));
            MrStats st;
            CHECK_OK(mr_engine_stats(r.e, &st));
            counts[i][0] = st.loads;
            counts[i][1] = st.executes;
            counts[i][2] = st.stores;
            CHECK_EQ_I64(st.loads, 3 * 39);
            CHECK_EQ_I64(st.executes, 3 * 44);
            CHECK_EQ_I64(st.stores, 3 * 16);
            CHECK(st.total_ns > 0);
            CHECK(st.dma_busy_ns > 0 || st.compute_busy_ns > 0);
            if (!MRT_MODES[i].threaded)
                CHECK_EQ_I64(st.overlap_ns, 0);
        }
        run_close(&r);
        if (i > 0)
            CHECK(memcmp(counts[i], counts[0], sizeof counts[0]) == 0);
    }
}

/* 1000 runs in each threaded mode; every run must give the sequential bits. */
#define REPEATS 1000
static void test_repeated(void)
{
    size_t len = outputs_len(&MLP3);
    float *want = malloc(len * sizeof *want), *got = malloc(len * sizeof *got);
    if (!CHECK(want != NULL && got != NULL)) {
        free(want);
        free(got);
        return;
    }
    Run r;
    if (run_open(&r, &MLP3, &MRT_MODES[0])) {
        CHECK_OK(mr_engine_execute_schedule(r.e, r.s));
        read_outputs(&r, want);
    }
    run_close(&r);
    for (int i = 1; i < MRT_NMODES; i++) {
        printf("-- mlp_repeated_%d_threaded [%s]\n", REPEATS, MRT_MODES[i].name);
        fflush(stdout);
        if (!run_open(&r, &MLP3, &MRT_MODES[i])) {
            run_close(&r);
            continue;
        }
        int differing = 0, failed = 0;
        double t0 = tu_now();
        for (int k = 0; k < REPEATS; k++) {
            poison_outputs(&r);
            int rc = mr_engine_execute_schedule(r.e, r.s);
            if (rc != MR_OK) {
                if (failed++ == 0)
                    CHECKF(false, "run %d: %d %s", k, rc, tu_err());
                continue;
            }
            read_outputs(&r, got);
            if (memcmp(got, want, len * sizeof *got) != 0 && differing++ == 0)
                CHECKF(false, "run %d of %d differs from sequential", k, REPEATS);
        }
        CHECKF(differing == 0 && failed == 0, "%d runs differed, %d failed", differing, failed);
        MrStats st;
        CHECK_OK(mr_engine_stats(r.e, &st));
        CHECK_EQ_I64(st.executes, (uint64_t)REPEATS * 44);
        printf("   %d runs in %.3f s; dma busy %.1f ms, compute busy %.1f ms, overlap %.1f ms, stalls %llu/%llu\n",
               REPEATS, tu_now() - t0, st.dma_busy_ns / 1e6, st.compute_busy_ns / 1e6, st.overlap_ns / 1e6,
               (unsigned long long)st.dma_stalls, (unsigned long long)st.compute_stalls);
        run_close(&r);
    }
    free(want);
    free(got);
}

/* One threaded engine shared by 4 threads (calls on one engine are
 * serialised by the library): every run gives the sequential bits. */
typedef struct {
    Run *r;
    const float *want;
    atomic_int bad;
} Shared;

static void *shared_worker(void *arg)
{
    Shared *sh = arg;
    float *got = malloc(128 * 32 * sizeof *got);
    for (int i = 0; got != NULL && i < 100; i++) {
        if (mr_engine_execute_schedule(sh->r->e, sh->r->s) != MR_OK ||
            mr_engine_get_tensor(sh->r->e, "out", got, 128, 32) != MR_OK ||
            memcmp(got, sh->want, 128 * 32 * sizeof *got) != 0)
            atomic_fetch_add(&sh->bad, 1);
    }
    free(got);
    return NULL;
}

static void test_shared_engine(void)
{
    printf("-- mlp_shared_engine_4_threads\n");
    for (int i = 1; i < MRT_NMODES; i++) {
        Run r;
        static float want[128 * 32];
        if (run_open(&r, &MLP3, &MRT_MODES[0])) {
            CHECK_OK(mr_engine_execute_schedule(r.e, r.s));
            CHECK_OK(mr_engine_get_tensor(r.e, "out", want, 128, 32));
        }
        run_close(&r);
        if (!run_open(&r, &MLP3, &MRT_MODES[i])) {
            run_close(&r);
            continue;
        }
        Shared sh = {&r, want, 0};
        pthread_t th[4];
        int started = 0;
        for (int t = 0; t < 4; t++)
            if (CHECK(pthread_create(&th[t], NULL, shared_worker, &sh) == 0))
                started++;
        for (int t = 0; t < started; t++)
            pthread_join(th[t], NULL);
        CHECKF(atomic_load(&sh.bad) == 0, "[%s] %d runs failed or differed", MRT_MODES[i].name, atomic_load(&sh.bad));
        MrStats st;
        CHECK_OK(mr_engine_stats(r.e, &st));
        CHECK_EQ_I64(st.executes, (uint64_t)started * 100 * 44);
        run_close(&r);
    }
}

/* A schedule may be executed on another engine with the same tensor ids,
 * and freeing it while engines live is fine; an engine with too little
 * SRAM for the schedule's addresses rejects it (OUT_OF_RANGE). */
static void test_schedule_on_small_engine(void)
{
    printf("-- mlp_schedule_on_small_sram\n");
    for (int i = 0; i < MRT_NMODES; i++) {
        Run r;
        if (run_open(&r, &MLP3, &MRT_MODES[i])) {
            MrEngine *small = mrt_engine(&MRT_MODES[i], 8192);
            if (small != NULL) {
                for (int t = 0; t < MLP3.ntensors; t++)
                    mr_engine_register_tensor(small, MLP3.tensors[t].name, MLP3.tensors[t].rows,
                                              MLP3.tensors[t].cols);
                CHECK_ERR(mr_engine_execute_schedule(small, r.s), MR_ERR_OUT_OF_RANGE);
                mr_engine_free(small);
            }
            /* A schedule built for too little SRAM is refused, with the need. */
            MrMatmulLayer layers[3];
            for (int l = 0; l < 3; l++)
                layers[l] = layer_of(&MLP3, l);
            CHECK_NULL_ERR(mr_schedule_build(layers, 3, 8192));
        }
        run_close(&r);
    }
}

int main(void)
{
    tu_begin(300);
    net_all_modes(&MLP1);
    net_all_modes(&MLP1_PADDED);
    net_all_modes(&MLP3);
    test_stats_match();
    test_schedule_on_small_engine();
    test_shared_engine();
    test_repeated();
    return tu_finish("test_mini_runtime_mlp");
}
