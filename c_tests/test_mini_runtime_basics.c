/* test_mini_runtime_basics.c: the mini_runtime engine through its C ABI on
 * small hand-written schedules (ported from the original project's
 * tests/test_runtime.py and tests/test_threaded_runtime.py).
 *
 * Every scenario runs in three modes -- sequential, threaded with one compute
 * thread, threaded with two -- and its output must be bit-identical across
 * the modes, besides being right against a double-precision reference
 * computed here.
 *
 *   tensor_registration_ids        ids 0, 1, 2 in order; lookups; duplicates
 *   set_get_roundtrip_32x32 / _padded_48x48 (padding reads as zero)
 *   set_get_shape_mismatch         another shape / unknown name rejected
 *   single_tile_identity           C = A . I == A exactly
 *   single_tile_random             C = A . B against the f64 reference
 *   accumulation_over_k            EXEC k=0 then k=1 on one accumulator; k=0
 *                                  zeroes it again on the next run
 *   relu_zeros_negatives / relu_preserves_positives / relu_mixed
 *   matmul_64x64                   2x2x2 tiles, the original manual schedule
 *   stats_count_and_reset          counts, accumulation, reset, rejected
 *                                  schedules not counted
 *   trace_*                        write_trace without / with trace
 */
#include "test_util.h"

#include <math.h>

#define TD 32
#define TF (TD * TD)
#define TB 4096u

/* ---- modes ------------------------------------------------------------------ */

typedef struct {
    const char *name;
    uint8_t threaded;
    uint32_t compute_threads;
} Mode;

static const Mode MODES[] = {
    {"sequential", 0, 1},
    {"threaded", 1, 1},
    {"threaded-2", 1, 2},
};
#define NMODES ((int)(sizeof MODES / sizeof MODES[0]))

static MrEngine *engine_at(const char *file, int line, const Mode *m, size_t sram, bool trace)
{
    MrEngineConfig c = mr_engine_config_default();
    c.sram_bytes = sram;
    c.threaded = m->threaded;
    c.compute_threads = m->compute_threads;
    c.trace = trace ? 1 : 0;
    MrEngine *e = mr_engine_create(&c);
    tu_check(e != NULL, file, line, "mr_engine_create", "mode %s: %s", m->name, tu_err());
    return e;
}
#define ENGINE(m, sram, trace) engine_at(__FILE__, __LINE__, (m), (sram), (trace))

/* Registers a tensor and checks its id. */
static void reg_at(const char *file, int line, MrEngine *e, const char *name, size_t rows, size_t cols, int64_t id)
{
    int64_t got = mr_engine_register_tensor(e, name, rows, cols);
    tu_check(got == id, file, line, "mr_engine_register_tensor", "'%s' %zux%zu: got %lld, expected %lld (%s)", name,
             rows, cols, (long long)got, (long long)id, got < 0 ? tu_err() : "");
}
#define REG(e, name, rows, cols, id) reg_at(__FILE__, __LINE__, (e), (name), (rows), (cols), (id))

#define OK(expr)                                                                                                       \
    do {                                                                                                               \
        int ok_rc_ = (expr);                                                                                           \
        CHECKF(ok_rc_ == MR_OK, "%s returned %d: %s", #expr, ok_rc_, tu_err());                                        \
    } while (0)

/* ---- data and references -------------------------------------------------- */

/* Uniform floats in [-scale, scale), deterministic in `seed`. */
static void fill_random(float *p, size_t n, uint64_t seed, float scale)
{
    uint64_t st = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (size_t i = 0; i < n; i++) {
        double u = (double)(tu_rand_next(&st) >> 11) / 9007199254740992.0; /* [0, 1) */
        p[i] = (float)((u * 2.0 - 1.0) * scale);
    }
}

static void fill_value(float *p, size_t n, float v)
{
    for (size_t i = 0; i < n; i++)
        p[i] = v;
}

static void fill_identity(float *p, size_t dim, float diag)
{
    fill_value(p, dim * dim, 0.0f);
    for (size_t i = 0; i < dim; i++)
        p[i * dim + i] = diag;
}

/* ref = a (rows x inner) . b (inner x cols) in double; mag = |a| . |b|. */
static void ref_matmul(const float *a, const float *b, size_t rows, size_t inner, size_t cols, double *ref, double *mag)
{
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) {
            double s = 0, m = 0;
            for (size_t k = 0; k < inner; k++) {
                double p = (double)a[i * inner + k] * (double)b[k * cols + j];
                s += p;
                m += fabs(p);
            }
            ref[i * cols + j] = s;
            mag[i * cols + j] = m;
        }
}

/* Every |got - ref| within rel * mag + 1e-7 (rel = 1e-5 covers a float sum
 * of up to ~160 products in the worst case). Returns the number of bad
 * elements (the first few are printed). */
static int check_close_at(const char *file, int line, const char *what, const float *got, const double *ref,
                          const double *mag, size_t n, double rel)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double tol = rel * mag[i] + 1e-7;
        if (!(fabs((double)got[i] - ref[i]) <= tol)) {
            if (bad < 3)
                tu_check(false, file, line, what, "element %zu: got %.9g, expected %.9g (tol %.3g)", i,
                         (double)got[i], ref[i], tol);
            bad++;
        }
    }
    tu_check(bad == 0, file, line, what, "%d of %zu elements outside tolerance", bad, n);
    return bad;
}
#define CHECK_CLOSE(what, got, ref, mag, n) check_close_at(__FILE__, __LINE__, (what), (got), (ref), (mag), (n), 1e-5)

/* ---- running a scenario in every mode --------------------------------------- */

/* A scenario writes its observable result (n floats) to `out`. */
typedef void (*Scenario)(const Mode *m, float *out);

static void run_modes(const char *name, Scenario fn, size_t n)
{
    float *first = malloc(n * sizeof *first);
    float *cur = malloc(n * sizeof *cur);
    if (!CHECK(first != NULL && cur != NULL)) {
        free(first);
        free(cur);
        return;
    }
    for (int i = 0; i < NMODES; i++) {
        printf("-- %s [%s]\n", name, MODES[i].name);
        fflush(stdout);
        fill_value(cur, n, NAN);
        fn(&MODES[i], cur);
        if (i == 0)
            memcpy(first, cur, n * sizeof *cur);
        else
            CHECKF(memcmp(first, cur, n * sizeof *cur) == 0, "%s: %s result differs from sequential", name,
                   MODES[i].name);
    }
    free(first);
    free(cur);
}

/* The original single-tile schedule: A -> 0, B -> 4096, EXEC into 8192,
 * STORE to tensor `c` (optionally with ReLU). */
static void single_tile_ops(MrOp ops[4], uint32_t a, uint32_t b, uint32_t c, bool relu)
{
    ops[0] = mr_op_load(a, 0, 0, 0, TB, -1);
    ops[1] = mr_op_load(b, 0, 0, TB, TB, -1);
    ops[2] = mr_op_exec(0, 0, 0, 0, TB, 2 * TB, -1);
    ops[3] = mr_op_store(c, 0, 0, 2 * TB, TB, relu);
}

/* Engine with A, B, C (ids 0, 1, 2), all 32x32, A and B set. */
static MrEngine *abc_engine(const Mode *m, const float *a, const float *b)
{
    MrEngine *e = ENGINE(m, 64 * 1024, false);
    if (e == NULL)
        return NULL;
    REG(e, "A", TD, TD, 0);
    REG(e, "B", TD, TD, 1);
    REG(e, "C", TD, TD, 2);
    OK(mr_engine_set_tensor(e, "A", a, TD, TD));
    OK(mr_engine_set_tensor(e, "B", b, TD, TD));
    return e;
}

/* Runs the single-tile schedule on A, B into `out` (C). */
static void single_tile_run(const Mode *m, const float *a, const float *b, bool relu, float *out)
{
    MrEngine *e = abc_engine(m, a, b);
    if (e == NULL)
        return;
    MrOp ops[4];
    single_tile_ops(ops, 0, 1, 2, relu);
    OK(mr_engine_execute(e, ops, 4));
    OK(mr_engine_get_tensor(e, "C", out, TD, TD));
    mr_engine_free(e);
}

/* ---- 1. tensors ----------------------------------------------------------------- */

static void sc_registration_ids(const Mode *m, float *out)
{
    MrEngine *e = ENGINE(m, 64 * 1024, false);
    if (e == NULL)
        return;
    REG(e, "A", 32, 32, 0);
    REG(e, "B", 32, 32, 1);
    REG(e, "C", 48, 17, 2);
    CHECK_EQ_I64(mr_engine_tensor_id(e, "A"), 0);
    CHECK_EQ_I64(mr_engine_tensor_id(e, "B"), 1);
    CHECK_EQ_I64(mr_engine_tensor_id(e, "C"), 2);
    CHECK_ERR(mr_engine_tensor_id(e, "D"), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_register_tensor(e, "B", 32, 32), MR_ERR_INVALID_ARGUMENT);
    /* A failed registration does not use up an id. */
    REG(e, "D", 1, 1, 3);
    out[0] = (float)mr_engine_tensor_id(e, "D");
    mr_engine_free(e);
}

static void sc_roundtrip_32(const Mode *m, float *out)
{
    float data[TF];
    fill_random(data, TF, 1, 3.0f);
    MrEngine *e = ENGINE(m, 64 * 1024, false);
    if (e == NULL)
        return;
    REG(e, "A", TD, TD, 0);
    /* Freshly registered tensors are zero-filled. */
    OK(mr_engine_get_tensor(e, "A", out, TD, TD));
    bool zero = true;
    for (int i = 0; i < TF; i++)
        zero = zero && out[i] == 0.0f;
    CHECK(zero);
    OK(mr_engine_set_tensor(e, "A", data, TD, TD));
    OK(mr_engine_get_tensor(e, "A", out, TD, TD));
    CHECK(memcmp(out, data, sizeof data) == 0);
    mr_engine_free(e);
}

/* 48x48 = 1.5 tiles each way: round-trips exactly, and tile (1, 1) holds
 * A[32..47][32..47] with zero padding (read through a schedule: C = T . I). */
#define P48 48
static void sc_roundtrip_48(const Mode *m, float *out)
{
    float data[P48 * P48], eye[TF];
    fill_random(data, P48 * P48, 2, 3.0f);
    fill_identity(eye, TD, 1.0f);
    MrEngine *e = ENGINE(m, 64 * 1024, false);
    if (e == NULL)
        return;
    REG(e, "A", P48, P48, 0);
    REG(e, "I", TD, TD, 1);
    REG(e, "C", TD, TD, 2);
    OK(mr_engine_set_tensor(e, "A", data, P48, P48));
    OK(mr_engine_set_tensor(e, "I", eye, TD, TD));
    float back[P48 * P48];
    OK(mr_engine_get_tensor(e, "A", back, P48, P48));
    CHECK(memcmp(back, data, sizeof data) == 0);

    MrOp ops[4] = {
        mr_op_load(0, 1, 1, 0, TB, -1),
        mr_op_load(1, 0, 0, TB, TB, -1),
        mr_op_exec(0, 0, 0, 0, TB, 2 * TB, -1),
        mr_op_store(2, 0, 0, 2 * TB, TB, false),
    };
    OK(mr_engine_execute(e, ops, 4));
    OK(mr_engine_get_tensor(e, "C", out, TD, TD));
    int bad = 0;
    for (int i = 0; i < TD; i++)
        for (int j = 0; j < TD; j++) {
            float want = (i < 16 && j < 16) ? data[(32 + i) * P48 + 32 + j] : 0.0f;
            bad += out[i * TD + j] != want;
        }
    CHECKF(bad == 0, "%d elements of the padded tile differ", bad);
    /* Tile (2, 0) of a 48-row tensor does not exist. */
    MrOp past = mr_op_load(0, 2, 0, 0, TB, -1);
    CHECK_ERR(mr_engine_execute(e, &past, 1), MR_ERR_OUT_OF_RANGE);
    mr_engine_free(e);
}

static void sc_shape_mismatch(const Mode *m, float *out)
{
    float data[TD * 33];
    fill_random(data, TD * 33, 3, 1.0f);
    MrEngine *e = ENGINE(m, 64 * 1024, false);
    if (e == NULL)
        return;
    REG(e, "A", TD, TD, 0);
    float sentinel[TF];
    fill_value(sentinel, TF, 7.0f);
    OK(mr_engine_set_tensor(e, "A", sentinel, TD, TD));
    CHECK_ERR(mr_engine_set_tensor(e, "A", data, TD, 33), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_set_tensor(e, "A", data, 33, TD), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_set_tensor(e, "A", data, 16, 64), MR_ERR_INVALID_ARGUMENT); /* same count */
    CHECK_ERR(mr_engine_get_tensor(e, "A", data, 64, 16), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_set_tensor(e, "Z", data, TD, TD), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_get_tensor(e, "Z", data, TD, TD), MR_ERR_INVALID_ARGUMENT);
    /* Nothing changed. */
    OK(mr_engine_get_tensor(e, "A", out, TD, TD));
    CHECK(memcmp(out, sentinel, sizeof sentinel) == 0);
    mr_engine_free(e);
}

/* ---- 2. single tile ----------------------------------------------------------- */

static void sc_identity(const Mode *m, float *out)
{
    float a[TF], eye[TF];
    fill_random(a, TF, 10, 2.0f);
    fill_identity(eye, TD, 1.0f);
    single_tile_run(m, a, eye, false, out);
    int bad = 0;
    for (int i = 0; i < TF; i++)
        bad += out[i] != a[i];
    CHECKF(bad == 0, "A . I != A in %d elements", bad);
    /* And I . A == A. */
    float c2[TF];
    single_tile_run(m, eye, a, false, c2);
    bad = 0;
    for (int i = 0; i < TF; i++)
        bad += c2[i] != a[i];
    CHECKF(bad == 0, "I . A != A in %d elements", bad);
}

static void sc_random(const Mode *m, float *out)
{
    float a[TF], b[TF];
    double ref[TF], mag[TF];
    fill_random(a, TF, 11, 1.0f);
    fill_random(b, TF, 12, 1.0f);
    single_tile_run(m, a, b, false, out);
    ref_matmul(a, b, TD, TD, TD, ref, mag);
    CHECK_CLOSE("C = A . B", out, ref, mag, TF);
}

/* A is 32x64 (tiles A0, A1), B is 64x32 (B0, B1): EXEC k=0 (A0.B0) then
 * k=1 (A1.B1) into one accumulator. Run twice on one engine: k=0 must zero
 * the accumulator again (the second result equals the first). */
static void sc_accumulate(const Mode *m, float *out)
{
    float a[TD * 64], b[64 * TD];
    double ref[TF], mag[TF];
    fill_random(a, TD * 64, 13, 1.0f);
    fill_random(b, 64 * TD, 14, 1.0f);
    MrEngine *e = ENGINE(m, 64 * 1024, false);
    if (e == NULL)
        return;
    REG(e, "A", TD, 64, 0);
    REG(e, "B", 64, TD, 1);
    REG(e, "C", TD, TD, 2);
    OK(mr_engine_set_tensor(e, "A", a, TD, 64));
    OK(mr_engine_set_tensor(e, "B", b, 64, TD));
    MrOp ops[] = {
        mr_op_load(0, 0, 0, 0, TB, 0),
        mr_op_load(1, 0, 0, TB, TB, 0),
        mr_op_load(0, 0, 1, 2 * TB, TB, 1),
        mr_op_load(1, 1, 0, 3 * TB, TB, 1),
        mr_op_exec(0, 0, 0, 0, TB, 4 * TB, 0),
        mr_op_exec(0, 0, 1, 2 * TB, 3 * TB, 4 * TB, 1),
        mr_op_store(2, 0, 0, 4 * TB, TB, false),
    };
    size_t n = sizeof ops / sizeof ops[0];
    OK(mr_engine_execute(e, ops, n));
    OK(mr_engine_get_tensor(e, "C", out, TD, TD));
    ref_matmul(a, b, TD, 64, TD, ref, mag);
    CHECK_CLOSE("C = A0.B0 + A1.B1", out, ref, mag, TF);
    float again[TF];
    OK(mr_engine_execute(e, ops, n));
    OK(mr_engine_get_tensor(e, "C", again, TD, TD));
    CHECKF(memcmp(again, out, sizeof again) == 0, "second run differs: k == 0 did not zero the accumulator");

    /* Only k = 0 of the pair: C = A0 . B0. */
    float half[TF];
    double ref0[TF], mag0[TF];
    float a0[TF], b0[TF];
    for (int i = 0; i < TD; i++)
        for (int j = 0; j < TD; j++) {
            a0[i * TD + j] = a[i * 64 + j];
            b0[i * TD + j] = b[i * TD + j];
        }
    MrOp first[] = {ops[0], ops[1], ops[4], ops[6]};
    OK(mr_engine_execute(e, first, 4));
    OK(mr_engine_get_tensor(e, "C", half, TD, TD));
    ref_matmul(a0, b0, TD, TD, TD, ref0, mag0);
    CHECK_CLOSE("C = A0.B0", half, ref0, mag0, TF);
    mr_engine_free(e);
}

/* ---- 3. ReLU ------------------------------------------------------------------- */

static void sc_relu_negatives(const Mode *m, float *out)
{
    float a[TF], b[TF];
    fill_value(a, TF, 1.0f);
    fill_value(b, TF, -1.0f); /* A . B = -32 everywhere */
    single_tile_run(m, a, b, true, out);
    int bad = 0;
    for (int i = 0; i < TF; i++)
        bad += out[i] != 0.0f;
    CHECKF(bad == 0, "%d elements not zeroed by ReLU", bad);
    /* Without ReLU: -32. */
    float plain[TF];
    single_tile_run(m, a, b, false, plain);
    bad = 0;
    for (int i = 0; i < TF; i++)
        bad += plain[i] != -32.0f;
    CHECKF(bad == 0, "%d elements != -32 without ReLU", bad);
}

static void sc_relu_positives(const Mode *m, float *out)
{
    float a[TF], eye[TF];
    fill_identity(a, TD, 5.0f);
    fill_identity(eye, TD, 1.0f);
    single_tile_run(m, a, eye, true, out);
    int bad = 0;
    for (int i = 0; i < TF; i++)
        bad += out[i] != a[i];
    CHECKF(bad == 0, "%d elements changed by ReLU", bad);
}

/* Random signs: the ReLU result is exactly max(0, plain result). */
static void sc_relu_mixed(const Mode *m, float *out)
{
    float a[TF], b[TF], plain[TF];
    fill_random(a, TF, 15, 1.0f);
    fill_random(b, TF, 16, 1.0f);
    single_tile_run(m, a, b, false, plain);
    single_tile_run(m, a, b, true, out);
    int bad = 0, neg = 0;
    for (int i = 0; i < TF; i++) {
        bad += out[i] != (plain[i] > 0.0f ? plain[i] : 0.0f);
        neg += plain[i] < 0.0f;
    }
    CHECKF(bad == 0, "%d elements differ from max(0, A.B)", bad);
    CHECKF(neg > 100, "only %d negative values: the test data is too one-sided", neg);
}

/* ---- 4. 64x64 ------------------------------------------------------------------ */

#define D64 64
static void sc_64x64(const Mode *m, float *out)
{
    float a[D64 * D64], b[D64 * D64];
    fill_random(a, D64 * D64, 20, 1.0f);
    fill_random(b, D64 * D64, 21, 1.0f);
    MrEngine *e = ENGINE(m, 256 * 1024, false);
    if (e == NULL)
        return;
    REG(e, "A", D64, D64, 0);
    REG(e, "B", D64, D64, 1);
    REG(e, "C", D64, D64, 2);
    OK(mr_engine_set_tensor(e, "A", a, D64, D64));
    OK(mr_engine_set_tensor(e, "B", b, D64, D64));
    /* The original layout: A at 0x0000, B at 0x1000, the four
     * accumulators from 0x2000; A and B are reloaded for every k. */
    MrOp ops[32];
    size_t n = 0;
    for (uint32_t mi = 0; mi < 2; mi++)
        for (uint32_t ni = 0; ni < 2; ni++) {
            uint32_t acc = 0x2000 + (mi * 2 + ni) * TB;
            for (uint32_t k = 0; k < 2; k++) {
                ops[n++] = mr_op_load(0, mi, k, 0x0000, TB, -1);
                ops[n++] = mr_op_load(1, k, ni, 0x1000, TB, -1);
                ops[n++] = mr_op_exec(mi, ni, k, 0x0000, 0x1000, acc, -1);
            }
            ops[n++] = mr_op_store(2, mi, ni, acc, TB, false);
        }
    CHECK_EQ_I64(n, 28);
    OK(mr_engine_execute(e, ops, n));
    OK(mr_engine_get_tensor(e, "C", out, D64, D64));
    double ref[D64 * D64], mag[D64 * D64];
    ref_matmul(a, b, D64, D64, D64, ref, mag);
    CHECK_CLOSE("C = A . B (64x64)", out, ref, mag, D64 * D64);
    MrStats s;
    OK(mr_engine_stats(e, &s));
    CHECK_EQ_I64(s.loads, 16);
    CHECK_EQ_I64(s.executes, 8);
    CHECK_EQ_I64(s.stores, 4);
    mr_engine_free(e);
}

/* ---- 5. stats ------------------------------------------------------------------ */

static void sc_stats(const Mode *m, float *out)
{
    float a[TF], b[TF];
    fill_random(a, TF, 30, 1.0f);
    fill_random(b, TF, 31, 1.0f);
    MrEngine *e = abc_engine(m, a, b);
    if (e == NULL)
        return;
    MrStats s;
    OK(mr_engine_stats(e, &s));
    CHECK_EQ_I64(s.loads + s.executes + s.stores + s.total_ns + s.dma_busy_ns + s.compute_busy_ns, 0);

    MrOp ops[4];
    single_tile_ops(ops, 0, 1, 2, false);
    OK(mr_engine_execute(e, ops, 4));
    OK(mr_engine_stats(e, &s));
    CHECK_EQ_I64(s.loads, 2);
    CHECK_EQ_I64(s.executes, 1);
    CHECK_EQ_I64(s.stores, 1);
    CHECK(s.total_ns > 0);
    CHECK(s.total_ns >= s.overlap_ns);
    if (!m->threaded)
        CHECK_EQ_I64(s.overlap_ns, 0);

    /* They accumulate over calls. */
    OK(mr_engine_execute(e, ops, 4));
    OK(mr_engine_stats(e, &s));
    CHECK_EQ_I64(s.loads, 4);
    CHECK_EQ_I64(s.executes, 2);
    CHECK_EQ_I64(s.stores, 2);

    /* A rejected schedule runs nothing, so counts nothing. */
    MrOp bad[5];
    memcpy(bad, ops, sizeof ops);
    bad[4] = mr_op_load(0, 0, 0, 1u << 30, TB, -1);
    CHECK_ERR(mr_engine_execute(e, bad, 5), MR_ERR_OUT_OF_RANGE);
    OK(mr_engine_stats(e, &s));
    CHECK_EQ_I64(s.loads, 4);
    CHECK_EQ_I64(s.executes, 2);
    CHECK_EQ_I64(s.stores, 2);

    /* An empty schedule is fine and counts no op. */
    OK(mr_engine_execute(e, NULL, 0));
    OK(mr_engine_stats(e, &s));
    CHECK_EQ_I64(s.loads + s.executes + s.stores, 8);

    OK(mr_engine_reset_stats(e));
    OK(mr_engine_stats(e, &s));
    CHECK_EQ_I64(s.loads, 0);
    CHECK_EQ_I64(s.executes, 0);
    CHECK_EQ_I64(s.stores, 0);
    CHECK_EQ_I64(s.dma_busy_ns + s.compute_busy_ns + s.overlap_ns + s.total_ns + s.dma_stalls + s.compute_stalls, 0);

    OK(mr_engine_execute(e, ops, 4));
    OK(mr_engine_stats(e, &s));
    CHECK_EQ_I64(s.loads, 2);
    CHECK_EQ_I64(s.executes, 1);
    CHECK_EQ_I64(s.stores, 1);
    OK(mr_engine_get_tensor(e, "C", out, TD, TD));
    mr_engine_free(e);
}

/* ---- 6. trace ------------------------------------------------------------------ */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    size_t r;
    while (buf != NULL && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = realloc(buf, 2 * cap + 1);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf != NULL)
        buf[n] = '\0';
    *len = n;
    return buf;
}

static void sc_trace(const Mode *m, float *out)
{
    float a[TF], b[TF];
    fill_random(a, TF, 40, 1.0f);
    fill_random(b, TF, 41, 1.0f);
    MrOp ops[4];
    single_tile_ops(ops, 0, 1, 2, false);

    char path[] = "/tmp/mr_trace_XXXXXX";
    int fd = mkstemp(path);
    if (!CHECKF(fd >= 0, "mkstemp: %s", strerror(errno)))
        return;
    close(fd);

    /* Without trace: MR_ERR_WRONG_STATE, and the file is left alone. */
    MrEngine *plain = abc_engine(m, a, b);
    if (plain != NULL) {
        OK(mr_engine_execute(plain, ops, 4));
        CHECK_ERR(mr_engine_write_trace(plain, path), MR_ERR_WRONG_STATE);
        size_t len = 1;
        char *text = read_file(path, &len);
        CHECK(text != NULL && len == 0);
        free(text);
        mr_engine_free(plain);
    }

    /* With trace. */
    MrEngine *e = ENGINE(m, 64 * 1024, true);
    if (e != NULL) {
        REG(e, "A", TD, TD, 0);
        REG(e, "B", TD, TD, 1);
        REG(e, "C", TD, TD, 2);
        OK(mr_engine_set_tensor(e, "A", a, TD, TD));
        OK(mr_engine_set_tensor(e, "B", b, TD, TD));
        OK(mr_engine_execute(e, ops, 4));
        OK(mr_engine_write_trace(e, path));
        size_t len = 0;
        char *text = read_file(path, &len);
        if (CHECK(text != NULL)) {
            CHECKF(len > 0 && text[0] == '{', "trace starts with '%c'", len > 0 ? text[0] : '?');
            CHECK(strstr(text, "traceEvents") != NULL);
            CHECK(strstr(text, "LOAD") != NULL);
            CHECK(strstr(text, "EXEC") != NULL);
            CHECK(strstr(text, "STORE") != NULL);
            /* Ends with the closing brace of the object. */
            size_t end = len;
            while (end > 0 && (text[end - 1] == '\n' || text[end - 1] == ' '))
                end--;
            CHECK(end > 0 && text[end - 1] == '}');
        }
        free(text);
        /* A file that cannot be written: MR_ERR_SYSTEM. */
        CHECK_ERR(mr_engine_write_trace(e, "/nonexistent-mr-dir/trace.json"), MR_ERR_SYSTEM);
        CHECK_ERR(mr_engine_write_trace(e, "/tmp"), MR_ERR_SYSTEM);
        OK(mr_engine_get_tensor(e, "C", out, TD, TD));
        mr_engine_free(e);
    }
    unlink(path);
}

int main(void)
{
    tu_begin(120);
    run_modes("tensor_registration_ids", sc_registration_ids, 1);
    run_modes("set_get_roundtrip_32x32", sc_roundtrip_32, TF);
    run_modes("set_get_roundtrip_padded_48x48", sc_roundtrip_48, TF);
    run_modes("set_get_shape_mismatch", sc_shape_mismatch, TF);
    run_modes("single_tile_identity", sc_identity, TF);
    run_modes("single_tile_random", sc_random, TF);
    run_modes("accumulation_over_k", sc_accumulate, TF);
    run_modes("relu_zeros_negatives", sc_relu_negatives, TF);
    run_modes("relu_preserves_positives", sc_relu_positives, TF);
    run_modes("relu_mixed", sc_relu_mixed, TF);
    run_modes("matmul_64x64", sc_64x64, D64 * D64);
    run_modes("stats_count_and_reset", sc_stats, TF);
    run_modes("trace_without_and_with_trace", sc_trace, TF);
    return tu_finish("test_mini_runtime_basics");
}
