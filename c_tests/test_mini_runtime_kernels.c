/* test_mini_runtime_kernels.c: the 32x32 tile kernels of mini_runtime
 * (mr_matmul_tile, mr_matmul_tile_relu, mr_relu_tile), ported from the
 * original project's tests/test_kernels.cpp, for every kernel this CPU runs
 * (and MR_KERNEL_AUTO); plus engines pinned to each kernel.
 *
 *   kernel_info                 availability, names, the active kernel
 *   kernel_<k>_identity_left / _right, _accumulation, _zero_a,
 *   kernel_<k>_random_vs_f64    C0 + A.B against a double reference
 *   kernel_<k>_agrees_with_reference   within 1e-4 relative (several scales)
 *   kernel_<k>_relu / _fused    ReLU exact; fused == matmul then ReLU
 *   kernel_aliasing_rejected    C == A, C == B, C overlapping: refused, C
 *                               untouched
 *   engine_kernel_<k>           an engine created with that kernel reports
 *                               it, computes A.B right, sequential and
 *                               threaded agree bit for bit
 */
#include "test_util.h"
#include "mr_test_util.h"

typedef MrtTile Tile;

static void fill_value(Tile *t, float v)
{
    mrt_fill_value(t->v, TF, v);
}

static void fill_identity(Tile *t)
{
    mrt_fill_identity(t->v, TD, 1.0f);
}

static int count_diff(const Tile *x, const Tile *y)
{
    return mrt_count_diff(x->v, y->v, TF);
}

/* c0 + a . b in double, and the magnitude |c0| + |a|.|b|. */
static void ref_tile(const Tile *c0, const Tile *a, const Tile *b, double *ref, double *mag)
{
    mrt_ref_matmul(c0->v, a->v, b->v, TD, TD, TD, ref, mag);
}

typedef struct {
    int32_t code;
    const char *label;
} Kernel;

static const Kernel KERNELS[] = {
    {MR_KERNEL_REFERENCE, "reference"},
    {MR_KERNEL_AVX2, "avx2"},
    {MR_KERNEL_AVX512, "avx512"},
    {MR_KERNEL_AUTO, "auto"},
};
#define NKERNELS ((int)(sizeof KERNELS / sizeof KERNELS[0]))

static void kernel_info(void)
{
    printf("-- kernel_info\n");
    CHECK(mr_kernel_available(MR_KERNEL_REFERENCE));
    CHECK(mr_kernel_available(MR_KERNEL_AUTO));
    int32_t active = mr_kernel_active();
    CHECK(active == MR_KERNEL_REFERENCE || active == MR_KERNEL_AVX2 || active == MR_KERNEL_AVX512);
    CHECK(mr_kernel_available(active));
    /* The active kernel is the best available one. */
    if (mr_kernel_available(MR_KERNEL_AVX512))
        CHECK_EQ_I64(active, MR_KERNEL_AVX512);
    else if (mr_kernel_available(MR_KERNEL_AVX2))
        CHECK_EQ_I64(active, MR_KERNEL_AVX2);
    else
        CHECK_EQ_I64(active, MR_KERNEL_REFERENCE);
    const char *r = mr_kernel_name(MR_KERNEL_REFERENCE), *a2 = mr_kernel_name(MR_KERNEL_AVX2),
               *a5 = mr_kernel_name(MR_KERNEL_AVX512), *au = mr_kernel_name(MR_KERNEL_AUTO);
    CHECK(r != NULL && strcmp(r, "Reference") == 0);
    CHECK(a2 != NULL && strcmp(a2, "AVX2+FMA") == 0);
    CHECK(a5 != NULL && strcmp(a5, "AVX-512") == 0);
    CHECK(au != NULL && mr_kernel_name(active) != NULL && strcmp(au, mr_kernel_name(active)) == 0);
    printf("   active kernel: %s; AVX2 %s, AVX-512 %s\n", au ? au : "?",
           mr_kernel_available(MR_KERNEL_AVX2) ? "yes" : "no", mr_kernel_available(MR_KERNEL_AVX512) ? "yes" : "no");
}

static void kernel_cases(const Kernel *k)
{
    /* An unavailable kernel falls back to the best below it: still right. */
    printf("-- kernel_%s (%s)\n", k->label, mr_kernel_available(k->code) ? "available" : "falls back");
    static Tile a, b, c, c0, want;
    static double ref[TF], mag[TF];

    /* identity left: I . B == B; right: A . I == A (exact). */
    fill_identity(&a);
    mrt_fill_random(b.v, TF, 1, 1.0f);
    fill_value(&c, 0.0f);
    CHECK_OK(mr_matmul_tile(c.v, a.v, b.v, k->code));
    CHECKF(count_diff(&c, &b) == 0, "%s identity_left", k->label);
    mrt_fill_random(a.v, TF, 2, 1.0f);
    fill_identity(&b);
    fill_value(&c, 0.0f);
    CHECK_OK(mr_matmul_tile(c.v, a.v, b.v, k->code));
    CHECKF(count_diff(&c, &a) == 0, "%s identity_right", k->label);

    /* accumulation: C = 1, A = B = I -> 2 on the diagonal, 1 elsewhere. */
    fill_value(&c, 1.0f);
    fill_identity(&a);
    fill_identity(&b);
    CHECK_OK(mr_matmul_tile(c.v, a.v, b.v, k->code));
    int bad = 0;
    for (int i = 0; i < TD; i++)
        for (int j = 0; j < TD; j++)
            bad += c.v[i * TD + j] != (i == j ? 2.0f : 1.0f);
    CHECKF(bad == 0, "%s accumulation: %d wrong", k->label, bad);

    /* zero A: C unchanged. */
    mrt_fill_random(c.v, TF, 3, 1.0f);
    c0 = c;
    fill_value(&a, 0.0f);
    mrt_fill_random(b.v, TF, 4, 1.0f);
    CHECK_OK(mr_matmul_tile(c.v, a.v, b.v, k->code));
    CHECKF(count_diff(&c, &c0) == 0, "%s zero_a", k->label);

    /* random with a nonzero C, at several scales, vs f64 and vs the
     * reference kernel (1e-4 relative, as the original). */
    const float scales[] = {0.1f, 1.0f, 100.0f, 1e-4f};
    for (size_t si = 0; si < sizeof scales / sizeof scales[0]; si++) {
        float s = scales[si];
        mrt_fill_random(a.v, TF, 10 + si, s);
        mrt_fill_random(b.v, TF, 20 + si, s);
        mrt_fill_random(c0.v, TF, 30 + si, s * s);
        c = c0;
        CHECK_OK(mr_matmul_tile(c.v, a.v, b.v, k->code));
        ref_tile(&c0, &a, &b, ref, mag);
        Tile r = c0;
        CHECK_OK(mr_matmul_tile(r.v, a.v, b.v, MR_KERNEL_REFERENCE));
        int far = 0, disagree = 0;
        for (int i = 0; i < TF; i++) {
            far += !(fabs(c.v[i] - ref[i]) <= 1e-5 * mag[i] + 1e-30);
            disagree += !(fabs((double)c.v[i] - r.v[i]) <= 1e-4 * fabs((double)r.v[i]) + 1e-5 * mag[i]);
        }
        CHECKF(far == 0, "%s random (scale %g): %d elements off the f64 reference", k->label, (double)s, far);
        CHECKF(disagree == 0, "%s random (scale %g): %d elements disagree with Reference", k->label, (double)s,
               disagree);
    }

    /* ten accumulations in a row. */
    mrt_fill_random(a.v, TF, 40, 0.05f);
    mrt_fill_random(b.v, TF, 41, 0.05f);
    fill_value(&c, 0.0f);
    fill_value(&want, 0.0f);
    for (int it = 0; it < 10; it++) {
        CHECK_OK(mr_matmul_tile(c.v, a.v, b.v, k->code));
        CHECK_OK(mr_matmul_tile(want.v, a.v, b.v, MR_KERNEL_REFERENCE));
    }
    bad = 0;
    for (int i = 0; i < TF; i++)
        bad += !(fabsf(c.v[i] - want.v[i]) <= 1e-3f * fabsf(want.v[i]) + 1e-4f);
    CHECKF(bad == 0, "%s multiple_iterations: %d", k->label, bad);

    /* ReLU: exactly max(0, x); positives and zeros unchanged. */
    mrt_fill_random(c.v, TF, 50, 1.0f);
    c0 = c;
    CHECK_OK(mr_relu_tile(c.v, k->code));
    bad = 0;
    for (int i = 0; i < TF; i++)
        bad += c.v[i] != (c0.v[i] > 0.0f ? c0.v[i] : 0.0f);
    CHECKF(bad == 0, "%s relu_mixed: %d", k->label, bad);
    for (int i = 0; i < TF; i++)
        c.v[i] = -(float)(i + 1);
    CHECK_OK(mr_relu_tile(c.v, k->code));
    bad = mrt_count_not(c.v, TF, 0.0f);
    CHECKF(bad == 0, "%s relu_negative: %d", k->label, bad);

    /* Fused == matmul then ReLU with the same kernel, bit for bit. */
    mrt_fill_random(a.v, TF, 60, 0.1f);
    mrt_fill_random(b.v, TF, 61, 0.1f);
    mrt_fill_random(c0.v, TF, 62, 0.01f);
    c = c0;
    want = c0;
    CHECK_OK(mr_matmul_tile_relu(c.v, a.v, b.v, k->code));
    CHECK_OK(mr_matmul_tile(want.v, a.v, b.v, k->code));
    CHECK_OK(mr_relu_tile(want.v, k->code));
    CHECKF(count_diff(&c, &want) == 0, "%s fused", k->label);
}

static void kernel_aliasing_rejected(void)
{
    printf("-- kernel_aliasing_rejected\n");
    static Tile big[2];
    float *base = big[0].v;
    static Tile b, snap;
    mrt_fill_random(base, 2 * TF, 70, 1.0f);
    mrt_fill_random(b.v, TF, 71, 1.0f);
    for (int ki = 0; ki < NKERNELS; ki++) {
        int32_t k = KERNELS[ki].code;
        snap = big[0];
        CHECK_ERR(mr_matmul_tile(base, base, b.v, k), MR_ERR_INVALID_ARGUMENT);       /* C == A */
        CHECK_ERR(mr_matmul_tile(base, b.v, base, k), MR_ERR_INVALID_ARGUMENT);       /* C == B */
        CHECK_ERR(mr_matmul_tile(base, base + 16, b.v, k), MR_ERR_INVALID_ARGUMENT);  /* A overlaps C */
        CHECK_ERR(mr_matmul_tile(base + 16, b.v, base, k), MR_ERR_INVALID_ARGUMENT);  /* B overlaps C */
        CHECK_ERR(mr_matmul_tile_relu(base, base, b.v, k), MR_ERR_INVALID_ARGUMENT);
        CHECK_ERR(mr_matmul_tile_relu(base, b.v, base + TF - 1, k), MR_ERR_INVALID_ARGUMENT);
        CHECKF(count_diff(&big[0], &snap) == 0, "kernel %d: a refused call changed C", k);
        /* Adjacent, not overlapping: fine; A == B is fine too. */
        Tile c1 = big[1];
        CHECK_OK(mr_matmul_tile(big[1].v, base, base, k));
        big[1] = c1;
    }
}

/* An engine pinned to each available kernel: right, and the same bits in
 * sequential and threaded mode. */
static void engine_kernels(void)
{
    static Tile a, b, out[2];
    double ref[TF], mag[TF];
    Tile zero;
    fill_value(&zero, 0.0f);
    mrt_fill_random(a.v, TF, 80, 1.0f);
    mrt_fill_random(b.v, TF, 81, 1.0f);
    ref_tile(&zero, &a, &b, ref, mag);
    MrOp ops[4];
    mrt_single_tile_ops(ops, 0, 1, 2, false);
    for (int ki = 0; ki < NKERNELS; ki++) {
        const Kernel *k = &KERNELS[ki];
        printf("-- engine_kernel_%s\n", k->label);
        for (int threaded = 0; threaded <= 1; threaded++) {
            MrEngineConfig c = mr_engine_config_default();
            c.kernel = k->code;
            c.threaded = (uint8_t)threaded;
            cllm_clear_error();
            MrEngine *e = mr_engine_create(&c);
            if (!mr_kernel_available(k->code)) {
                CHECK(e == NULL && tu_error_is_set());
                mr_engine_free(e);
                continue;
            }
            if (!CHECKF(e != NULL, "%s", tu_err()))
                continue;
            CHECK_EQ_I64(mr_engine_kernel(e), k->code == MR_KERNEL_AUTO ? mr_kernel_active() : k->code);
            MRT_ABC(e, a.v, b.v);
            CHECK_OK(mr_engine_execute(e, ops, 4));
            CHECK_OK(mr_engine_get_tensor(e, "C", out[threaded].v, TD, TD));
            char what[64];
            snprintf(what, sizeof what, "engine kernel %s threaded=%d: C = A . B", k->label, threaded);
            MRT_CHECK_CLOSE(what, out[threaded].v, ref, mag, TF, 1e-5);
            /* The engine's EXEC is the tile kernel: same bits as calling it. */
            Tile direct;
            fill_value(&direct, 0.0f);
            CHECK_OK(mr_matmul_tile(direct.v, a.v, b.v, k->code));
            CHECKF(count_diff(&direct, &out[threaded]) == 0, "engine kernel %s: differs from mr_matmul_tile",
                   k->label);
            mr_engine_free(e);
        }
        if (mr_kernel_available(k->code))
            CHECKF(count_diff(&out[0], &out[1]) == 0, "engine kernel %s: threaded differs", k->label);
    }
}

int main(void)
{
    tu_begin(60);
    kernel_info();
    for (int i = 0; i < NKERNELS; i++)
        kernel_cases(&KERNELS[i]);
    kernel_aliasing_rejected();
    engine_kernels();
    return tu_finish("test_mini_runtime_kernels");
}
