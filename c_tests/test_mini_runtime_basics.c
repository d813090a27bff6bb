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
#include "mr_test_util.h"

/* ---- engines ------------------------------------------------------------------ */

/* Engine with A, B, C (ids 0, 1, 2), all 32x32, A and B set. */
static MrEngine *abc_engine(const MrtMode *m, const float *a, const float *b)
{
    MrEngine *e = mrt_engine(m, 64 * 1024);
    if (e != NULL)
        MRT_ABC(e, a, b);
    return e;
}

/* Random A (rows x inner, from `seed`) and B (inner x cols, from seed + 1),
 * both in [-1, 1), into a and b; then an engine with `sram` bytes of SRAM and
 * tensors A, B, C (rows x cols), ids 0, 1, 2, A and B set. NULL when the
 * engine could not be created (one failed check). */
static MrEngine *matmul_engine(const MrtMode *m, size_t sram, float *a, float *b, size_t rows, size_t inner,
                               size_t cols, uint64_t seed)
{
    mrt_fill_random(a, rows * inner, seed, 1.0f);
    mrt_fill_random(b, inner * cols, seed + 1, 1.0f);
    MrEngine *e = mrt_engine(m, sram);
    if (e != NULL) {
        MRT_TENSOR(e, "A", rows, inner, 0, a);
        MRT_TENSOR(e, "B", inner, cols, 1, b);
        MRT_TENSOR(e, "C", rows, cols, 2, NULL);
    }
    return e;
}

/* Runs the single-tile schedule on A, B into `out` (C). */
static void single_tile_run(const MrtMode *m, const float *a, const float *b, bool relu, float *out)
{
    MrEngine *e = abc_engine(m, a, b);
    if (e == NULL)
        return;
    MrOp ops[4];
    mrt_single_tile_ops(ops, 0, 1, 2, relu);
    CHECK_OK(mr_engine_execute(e, ops, 4));
    CHECK_OK(mr_engine_get_tensor(e, "C", out, TD, TD));
    mr_engine_free(e);
}

/* ---- 1. tensors ----------------------------------------------------------------- */

static void sc_registration_ids(const MrtMode *m, float *out)
{
    MrEngine *e = mrt_engine(m, 64 * 1024);
    if (e == NULL)
        return;
    MRT_TENSOR(e, "A", 32, 32, 0, NULL);
    MRT_TENSOR(e, "B", 32, 32, 1, NULL);
    MRT_TENSOR(e, "C", 48, 17, 2, NULL);
    CHECK_EQ_I64(mr_engine_tensor_id(e, "A"), 0);
    CHECK_EQ_I64(mr_engine_tensor_id(e, "B"), 1);
    CHECK_EQ_I64(mr_engine_tensor_id(e, "C"), 2);
    CHECK_ERR(mr_engine_tensor_id(e, "D"), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_register_tensor(e, "B", 32, 32), MR_ERR_INVALID_ARGUMENT);
    /* A failed registration does not use up an id. */
    MRT_TENSOR(e, "D", 1, 1, 3, NULL);
    out[0] = (float)mr_engine_tensor_id(e, "D");
    mr_engine_free(e);
}

static void sc_roundtrip_32(const MrtMode *m, float *out)
{
    float data[TF];
    mrt_fill_random(data, TF, 1, 3.0f);
    MrEngine *e = mrt_engine(m, 64 * 1024);
    if (e == NULL)
        return;
    MRT_TENSOR(e, "A", TD, TD, 0, NULL);
    /* Freshly registered tensors are zero-filled. */
    CHECK_OK(mr_engine_get_tensor(e, "A", out, TD, TD));
    bool zero = true;
    for (int i = 0; i < TF; i++)
        zero = zero && out[i] == 0.0f;
    CHECK(zero);
    CHECK_OK(mr_engine_set_tensor(e, "A", data, TD, TD));
    CHECK_OK(mr_engine_get_tensor(e, "A", out, TD, TD));
    CHECK(memcmp(out, data, sizeof data) == 0);
    mr_engine_free(e);
}

/* 48x48 = 1.5 tiles each way: round-trips exactly, and tile (1, 1) holds
 * A[32..47][32..47] with zero padding (read through a schedule: C = T . I). */
#define P48 48
static void sc_roundtrip_48(const MrtMode *m, float *out)
{
    float data[P48 * P48], eye[TF];
    mrt_fill_random(data, P48 * P48, 2, 3.0f);
    mrt_fill_identity(eye, TD, 1.0f);
    MrEngine *e = mrt_engine(m, 64 * 1024);
    if (e == NULL)
        return;
    MRT_TENSOR(e, "A", P48, P48, 0, data);
    MRT_TENSOR(e, "I", TD, TD, 1, eye);
    MRT_TENSOR(e, "C", TD, TD, 2, NULL);
    float back[P48 * P48];
    CHECK_OK(mr_engine_get_tensor(e, "A", back, P48, P48));
    CHECK(memcmp(back, data, sizeof data) == 0);

    MrOp ops[4];
    mrt_single_tile_ops(ops, 0, 1, 2, false);
    ops[0] = mr_op_load(0, 1, 1, 0, TB, -1); /* tile (1, 1) of A */
    CHECK_OK(mr_engine_execute(e, ops, 4));
    CHECK_OK(mr_engine_get_tensor(e, "C", out, TD, TD));
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

static void sc_shape_mismatch(const MrtMode *m, float *out)
{
    float data[TD * 33];
    mrt_fill_random(data, TD * 33, 3, 1.0f);
    MrEngine *e = mrt_engine(m, 64 * 1024);
    if (e == NULL)
        return;
    MRT_TENSOR(e, "A", TD, TD, 0, NULL);
    float sentinel[TF];
    mrt_fill_value(sentinel, TF, 7.0f);
    CHECK_OK(mr_engine_set_tensor(e, "A", sentinel, TD, TD));
    CHECK_ERR(mr_engine_set_tensor(e, "A", data, TD, 33), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_set_tensor(e, "A", data, 33, TD), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_set_tensor(e, "A", data, 16, 64), MR_ERR_INVALID_ARGUMENT); /* same count */
    CHECK_ERR(mr_engine_get_tensor(e, "A", data, 64, 16), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_set_tensor(e, "Z", data, TD, TD), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_get_tensor(e, "Z", data, TD, TD), MR_ERR_INVALID_ARGUMENT);
    /* Nothing changed. */
    CHECK_OK(mr_engine_get_tensor(e, "A", out, TD, TD));
    CHECK(memcmp(out, sentinel, sizeof sentinel) == 0);
    mr_engine_free(e);
}

/* ---- 2. single tile ----------------------------------------------------------- */

static void sc_identity(const MrtMode *m, float *out)
{
    float a[TF], eye[TF];
    mrt_fill_random(a, TF, 10, 2.0f);
    mrt_fill_identity(eye, TD, 1.0f);
    single_tile_run(m, a, eye, false, out);
    int bad = mrt_count_diff(out, a, TF);
    CHECKF(bad == 0, "A . I != A in %d elements", bad);
    /* And I . A == A. */
    float c2[TF];
    single_tile_run(m, eye, a, false, c2);
    bad = mrt_count_diff(c2, a, TF);
    CHECKF(bad == 0, "I . A != A in %d elements", bad);
}

static void sc_random(const MrtMode *m, float *out)
{
    float a[TF], b[TF];
    double ref[TF], mag[TF];
    mrt_fill_random(a, TF, 11, 1.0f);
    mrt_fill_random(b, TF, 12, 1.0f);
    single_tile_run(m, a, b, false, out);
    mrt_ref_matmul(NULL, a, b, TD, TD, TD, ref, mag);
    MRT_CHECK_CLOSE("C = A . B", out, ref, mag, TF, 1e-5);
}

/* A is 32x64 (tiles A0, A1), B is 64x32 (B0, B1): EXEC k=0 (A0.B0) then
 * k=1 (A1.B1) into one accumulator. Run twice on one engine: k=0 must zero
 * the accumulator again (the second result equals the first). */
static void sc_accumulate(const MrtMode *m, float *out)
{
    float a[TD * 64], b[64 * TD];
    double ref[TF], mag[TF];
    MrEngine *e = matmul_engine(m, 64 * 1024, a, b, TD, 64, TD, 13);
    if (e == NULL)
        return;
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
    CHECK_OK(mr_engine_execute(e, ops, n));
    CHECK_OK(mr_engine_get_tensor(e, "C", out, TD, TD));
    mrt_ref_matmul(NULL, a, b, TD, 64, TD, ref, mag);
    MRT_CHECK_CLOSE("C = A0.B0 + A1.B1", out, ref, mag, TF, 1e-5);
    float again[TF];
    CHECK_OK(mr_engine_execute(e, ops, n));
    CHECK_OK(mr_engine_get_tensor(e, "C", again, TD, TD));
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
    CHECK_OK(mr_engine_execute(e, first, 4));
    CHECK_OK(mr_engine_get_tensor(e, "C", half, TD, TD));
    mrt_ref_matmul(NULL, a0, b0, TD, TD, TD, ref0, mag0);
    MRT_CHECK_CLOSE("C = A0.B0", half, ref0, mag0, TF, 1e-5);
    mr_engine_free(e);
}

/* ---- 3. ReLU ------------------------------------------------------------------- */

static void sc_relu_negatives(const MrtMode *m, float *out)
{
    float a[TF], b[TF];
    mrt_fill_value(a, TF, 1.0f);
    mrt_fill_value(b, TF, -1.0f); /* A . B = -32 everywhere */
    single_tile_run(m, a, b, true, out);
    int bad = mrt_count_not(out, TF, 0.0f);
    CHECKF(bad == 0, "%d elements not zeroed by ReLU", bad);
    /* Without ReLU: -32. */
    float plain[TF];
    single_tile_run(m, a, b, false, plain);
    bad = mrt_count_not(plain, TF, -32.0f);
    CHECKF(bad == 0, "%d elements != -32 without ReLU", bad);
}

static void sc_relu_positives(const MrtMode *m, float *out)
{
    float a[TF], eye[TF];
    mrt_fill_identity(a, TD, 5.0f);
    mrt_fill_identity(eye, TD, 1.0f);
    single_tile_run(m, a, eye, true, out);
    int bad = mrt_count_diff(out, a, TF);
    CHECKF(bad == 0, "%d elements changed by ReLU", bad);
}

/* Random signs: the ReLU result is exactly max(0, plain result). */
static void sc_relu_mixed(const MrtMode *m, float *out)
{
    float a[TF], b[TF], plain[TF];
    mrt_fill_random(a, TF, 15, 1.0f);
    mrt_fill_random(b, TF, 16, 1.0f);
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
static void sc_64x64(const MrtMode *m, float *out)
{
    float a[D64 * D64], b[D64 * D64];
    MrEngine *e = matmul_engine(m, 256 * 1024, a, b, D64, D64, D64, 20);
    if (e == NULL)
        return;
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
    CHECK_OK(mr_engine_execute(e, ops, n));
    CHECK_OK(mr_engine_get_tensor(e, "C", out, D64, D64));
    double ref[D64 * D64], mag[D64 * D64];
    mrt_ref_matmul(NULL, a, b, D64, D64, D64, ref, mag);
    MRT_CHECK_CLOSE("C = A . B (64x64)", out, ref, mag, D64 * D64, 1e-5);
    MrStats s;
    CHECK_OK(mr_engine_stats(e, &s));
    CHECK_EQ_I64(s.loads, 16);
    CHECK_EQ_I64(s.executes, 8);
    CHECK_EQ_I64(s.stores, 4);
    mr_engine_free(e);
}

/* ---- 5. stats ------------------------------------------------------------------ */

static void sc_stats(const MrtMode *m, float *out)
{
    float a[TF], b[TF];
    MrEngine *e = matmul_engine(m, 64 * 1024, a, b, TD, TD, TD, 30);
    if (e == NULL)
        return;
    MrStats s;
    CHECK_OK(mr_engine_stats(e, &s));
    CHECK_EQ_I64(s.loads + s.executes + s.stores + s.total_ns + s.dma_busy_ns + s.compute_busy_ns, 0);

    MrOp ops[4];
    mrt_single_tile_ops(ops, 0, 1, 2, false);
    CHECK_OK(mr_engine_execute(e, ops, 4));
    CHECK_OK(mr_engine_stats(e, &s));
    CHECK_EQ_I64(s.loads, 2);
    CHECK_EQ_I64(s.executes, 1);
    CHECK_EQ_I64(s.stores, 1);
    CHECK(s.total_ns > 0);
    CHECK(s.total_ns >= s.overlap_ns);
    if (!m->threaded)
        CHECK_EQ_I64(s.overlap_ns, 0);

    /* They accumulate over calls. */
    CHECK_OK(mr_engine_execute(e, ops, 4));
    CHECK_OK(mr_engine_stats(e, &s));
    CHECK_EQ_I64(s.loads, 4);
    CHECK_EQ_I64(s.executes, 2);
    CHECK_EQ_I64(s.stores, 2);

    /* A rejected schedule runs nothing, so counts nothing. */
    MrOp bad[5];
    memcpy(bad, ops, sizeof ops);
    bad[4] = mr_op_load(0, 0, 0, 1u << 30, TB, -1);
    CHECK_ERR(mr_engine_execute(e, bad, 5), MR_ERR_OUT_OF_RANGE);
    CHECK_OK(mr_engine_stats(e, &s));
    CHECK_EQ_I64(s.loads, 4);
    CHECK_EQ_I64(s.executes, 2);
    CHECK_EQ_I64(s.stores, 2);

    /* An empty schedule is fine and counts no op. */
    CHECK_OK(mr_engine_execute(e, NULL, 0));
    CHECK_OK(mr_engine_stats(e, &s));
    CHECK_EQ_I64(s.loads + s.executes + s.stores, 8);

    CHECK_OK(mr_engine_reset_stats(e));
    CHECK_OK(mr_engine_stats(e, &s));
    CHECK_EQ_I64(s.loads, 0);
    CHECK_EQ_I64(s.executes, 0);
    CHECK_EQ_I64(s.stores, 0);
    CHECK_EQ_I64(s.dma_busy_ns + s.compute_busy_ns + s.overlap_ns + s.total_ns + s.dma_stalls + s.compute_stalls, 0);

    CHECK_OK(mr_engine_execute(e, ops, 4));
    CHECK_OK(mr_engine_stats(e, &s));
    CHECK_EQ_I64(s.loads, 2);
    CHECK_EQ_I64(s.executes, 1);
    CHECK_EQ_I64(s.stores, 1);
    CHECK_OK(mr_engine_get_tensor(e, "C", out, TD, TD));
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

static void sc_trace(const MrtMode *m, float *out)
{
    float a[TF], b[TF];
    mrt_fill_random(a, TF, 40, 1.0f);
    mrt_fill_random(b, TF, 41, 1.0f);
    MrOp ops[4];
    mrt_single_tile_ops(ops, 0, 1, 2, false);

    char path[] = "/tmp/mr_trace_XXXXXX";
    int fd = mkstemp(path);
    if (!CHECKF(fd >= 0, "mkstemp: %s", strerror(errno)))
        return;
    close(fd);

    /* Without trace: MR_ERR_WRONG_STATE, and the file is left alone. */
    MrEngine *plain = abc_engine(m, a, b);
    if (plain != NULL) {
        CHECK_OK(mr_engine_execute(plain, ops, 4));
        CHECK_ERR(mr_engine_write_trace(plain, path), MR_ERR_WRONG_STATE);
        size_t len = 1;
        char *text = read_file(path, &len);
        CHECK(text != NULL && len == 0);
        free(text);
        mr_engine_free(plain);
    }

    /* With trace. */
    MrEngine *e = mrt_engine_traced(m, 64 * 1024);
    if (e != NULL) {
        MRT_ABC(e, a, b);
        CHECK_OK(mr_engine_execute(e, ops, 4));
        CHECK_OK(mr_engine_write_trace(e, path));
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
        CHECK_OK(mr_engine_get_tensor(e, "C", out, TD, TD));
        mr_engine_free(e);
    }
    unlink(path);
}

/* ---- main ------------------------------------------------------------------- */

typedef struct {
    const char *name;
    void (*fn)(const MrtMode *m, float *out);
    size_t out_len; /* floats the scenario writes to `out` */
} Scenario;

static const Scenario SCENARIOS[] = {
    {"tensor_registration_ids", sc_registration_ids, 1},
    {"set_get_roundtrip_32x32", sc_roundtrip_32, TF},
    {"set_get_roundtrip_padded_48x48", sc_roundtrip_48, TF},
    {"set_get_shape_mismatch", sc_shape_mismatch, TF},
    {"single_tile_identity", sc_identity, TF},
    {"single_tile_random", sc_random, TF},
    {"accumulation_over_k", sc_accumulate, TF},
    {"relu_zeros_negatives", sc_relu_negatives, TF},
    {"relu_preserves_positives", sc_relu_positives, TF},
    {"relu_mixed", sc_relu_mixed, TF},
    {"matmul_64x64", sc_64x64, D64 * D64},
    {"stats_count_and_reset", sc_stats, TF},
    {"trace_without_and_with_trace", sc_trace, TF},
};

/* mrt_run_modes callback: ctx is the Scenario. */
static void run_scenario(const MrtMode *m, float *out, const void *ctx)
{
    ((const Scenario *)ctx)->fn(m, out);
}

int main(void)
{
    tu_begin(120);
    for (size_t i = 0; i < sizeof SCENARIOS / sizeof SCENARIOS[0]; i++)
        mrt_run_modes(SCENARIOS[i].name, run_scenario, &SCENARIOS[i], SCENARIOS[i].out_len);
    return tu_finish("test_mini_runtime_basics");
}
