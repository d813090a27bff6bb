/* mr_test_util.h: shared helpers of the mini_runtime C tests
 * (c_tests/test_mini_runtime_*.c).
 *
 * Include it right after test_util.h (which must come first). Like
 * test_util.h, every helper is `static`; checks are reported at the
 * caller's file:line where a macro says so.
 *
 *   TD, TF, TB                 a tile: TD x TD floats, TF floats, TB bytes
 *   MrtTile                    one 64-byte aligned tile
 *   MrtMode, MRT_MODES, MRT_NMODES  the engine modes every test runs in:
 *                              sequential, threaded, threaded with two
 *                              compute threads (MRT_MODES[0] is sequential)
 *   CHECK_OK(expr)             expr returns MR_OK (else prints the error)
 *   mrt_config(m, sram)        the default config in mode m with that SRAM
 *   mrt_engine(m, sram), mrt_engine_traced(m, sram)
 *                              an engine in mode m; NULL is one failed check
 *   MRT_TENSOR(e, name, rows, cols, id, data)
 *                              registers a tensor, checks its id, sets it
 *                              from data unless data is NULL
 *   MRT_ABC(e, a, b)           tensors A, B, C (ids 0..2, TD x TD), A and B
 *                              set from a and b
 *   mrt_single_tile_ops(ops, a, b, c, relu)  the 4-op schedule C = A . B on
 *                              one tile (A at 0, B at TB, accumulator 2 TB)
 *   mrt_uniform(&state)        a double in [0, 1) from tu_rand_next
 *   mrt_fill_random(), mrt_fill_value(), mrt_fill_identity()  test data
 *   mrt_count_diff(x, y, n), mrt_count_not(x, n, v)  elements x[i] != y[i]
 *                              / x[i] != v
 *   mrt_ref_matmul()           c0 + a . b and |c0| + |a| . |b| in double
 *   MRT_CHECK_CLOSE(what, got, ref, mag, n, rel)  |got - ref| <= rel * mag
 *                              + 1e-7 everywhere; one check
 *   mrt_run_modes(name, fn, ctx, n)  a scenario in every mode; its n output
 *                              floats must be bit-identical across modes
 */
#ifndef CLLM_C_TESTS_MR_TEST_UTIL_H
#define CLLM_C_TESTS_MR_TEST_UTIL_H

#ifndef CLLM_C_TESTS_TEST_UTIL_H
#error "include test_util.h before mr_test_util.h"
#endif

#include <math.h>

#define TD 32
#define TF (TD * TD)
#define TB 4096u

typedef struct {
    _Alignas(64) float v[TF];
} MrtTile;

/* ---- modes and engines ---------------------------------------------------- */

typedef struct {
    const char *name;
    uint8_t threaded;
    uint32_t compute_threads;
} MrtMode;

static const MrtMode MRT_MODES[] = {
    {"sequential", 0, 1},
    {"threaded", 1, 1},
    {"threaded-2", 1, 2},
};
#define MRT_NMODES ((int)(sizeof MRT_MODES / sizeof MRT_MODES[0]))

#define CHECK_OK(expr)                                                                                                 \
    do {                                                                                                               \
        int ok_rc_ = (expr);                                                                                           \
        CHECKF(ok_rc_ == MR_OK, "%s returned %d: %s", #expr, ok_rc_, tu_err());                                        \
    } while (0)

/* mr_engine_config_default() in mode m with `sram` bytes of SRAM. */
static inline MrEngineConfig mrt_config(const MrtMode *m, size_t sram)
{
    MrEngineConfig c = mr_engine_config_default();
    c.sram_bytes = sram;
    c.threaded = m->threaded;
    c.compute_threads = m->compute_threads;
    return c;
}

/* An engine of mrt_config(m, sram) (with trace on when asked), created as one
 * check "e != NULL" at file:line; returns it or NULL. */
static inline MrEngine *mrt_engine_at(const char *file, int line, const MrtMode *m, size_t sram, bool trace)
{
    MrEngineConfig c = mrt_config(m, sram);
    c.trace = trace ? 1 : 0;
    MrEngine *e = mr_engine_create(&c);
    tu_check(e != NULL, file, line, "e != NULL", "mr_engine_create(mode %s, sram %zu): %s", m->name, sram, tu_err());
    return e;
}
#define mrt_engine(m, sram) mrt_engine_at(__FILE__, __LINE__, (m), (sram), false)
#define mrt_engine_traced(m, sram) mrt_engine_at(__FILE__, __LINE__, (m), (sram), true)

/* Registers `name` (rows x cols) and checks that its id is `id`; then, unless
 * data is NULL, sets it from data (a second check). */
static inline void mrt_tensor_at(const char *file, int line, MrEngine *e, const char *name, size_t rows, size_t cols,
                                 int64_t id, const float *data)
{
    int64_t got = mr_engine_register_tensor(e, name, rows, cols);
    tu_check(got == id, file, line, "mr_engine_register_tensor", "'%s' %zux%zu: got %lld, expected %lld (%s)", name,
             rows, cols, (long long)got, (long long)id, got < 0 ? tu_err() : "");
    if (data != NULL) {
        int rc = mr_engine_set_tensor(e, name, data, rows, cols);
        tu_check(rc == MR_OK, file, line, "mr_engine_set_tensor", "'%s' %zux%zu returned %d: %s", name, rows, cols, rc,
                 tu_err());
    }
}
#define MRT_TENSOR(e, name, rows, cols, id, data)                                                                      \
    mrt_tensor_at(__FILE__, __LINE__, (e), (name), (rows), (cols), (id), (data))

/* Tensors A, B, C (ids 0, 1, 2), all TD x TD; A and B set from a and b. */
static inline void mrt_abc_at(const char *file, int line, MrEngine *e, const float *a, const float *b)
{
    mrt_tensor_at(file, line, e, "A", TD, TD, 0, a);
    mrt_tensor_at(file, line, e, "B", TD, TD, 1, b);
    mrt_tensor_at(file, line, e, "C", TD, TD, 2, NULL);
}
#define MRT_ABC(e, a, b) mrt_abc_at(__FILE__, __LINE__, (e), (a), (b))

/* The single-tile schedule: tile (0, 0) of tensor a -> 0, of tensor b -> TB,
 * EXEC into 2 TB, STORE to tile (0, 0) of tensor c (optionally with ReLU).
 * Returns 4, the number of ops. */
static inline size_t mrt_single_tile_ops(MrOp ops[4], uint32_t a, uint32_t b, uint32_t c, bool relu)
{
    ops[0] = mr_op_load(a, 0, 0, 0, TB, -1);
    ops[1] = mr_op_load(b, 0, 0, TB, TB, -1);
    ops[2] = mr_op_exec(0, 0, 0, 0, TB, 2 * TB, -1);
    ops[3] = mr_op_store(c, 0, 0, 2 * TB, TB, relu);
    return 4;
}

/* ---- data and references -------------------------------------------------- */

/* A uniform double in [0, 1) (53 bits of tu_rand_next). */
static inline double mrt_uniform(uint64_t *state)
{
    return (double)(tu_rand_next(state) >> 11) / 9007199254740992.0;
}

/* Uniform floats in [-scale, scale), deterministic in `seed`. */
static inline void mrt_fill_random(float *p, size_t n, uint64_t seed, float scale)
{
    uint64_t st = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (size_t i = 0; i < n; i++)
        p[i] = (float)((mrt_uniform(&st) * 2.0 - 1.0) * scale);
}

static inline void mrt_fill_value(float *p, size_t n, float v)
{
    for (size_t i = 0; i < n; i++)
        p[i] = v;
}

/* dim x dim: `diag` on the diagonal, zero elsewhere. */
static inline void mrt_fill_identity(float *p, size_t dim, float diag)
{
    mrt_fill_value(p, dim * dim, 0.0f);
    for (size_t i = 0; i < dim; i++)
        p[i * dim + i] = diag;
}

/* Elements where x[i] != y[i] (a NaN always counts). */
static inline int mrt_count_diff(const float *x, const float *y, size_t n)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += x[i] != y[i];
    return bad;
}

/* Elements where x[i] != v. */
static inline int mrt_count_not(const float *x, size_t n, float v)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += x[i] != v;
    return bad;
}

/* ref = c0 + a (rows x inner) . b (inner x cols) in double, and
 * mag = |c0| + |a| . |b| (an error bound's scale); c0 (rows x cols) may be
 * NULL for zero. */
static inline void mrt_ref_matmul(const float *c0, const float *a, const float *b, size_t rows, size_t inner,
                                  size_t cols, double *ref, double *mag)
{
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) {
            double s = c0 != NULL ? (double)c0[i * cols + j] : 0.0, m = fabs(s);
            for (size_t k = 0; k < inner; k++) {
                double p = (double)a[i * inner + k] * (double)b[k * cols + j];
                s += p;
                m += fabs(p);
            }
            ref[i * cols + j] = s;
            mag[i * cols + j] = m;
        }
}

/* Every |got - ref| within rel * mag + 1e-7, as one check at file:line (the
 * first few bad elements are printed too). Returns the number of bad
 * elements. */
static inline int mrt_check_close_at(const char *file, int line, const char *what, const float *got, const double *ref,
                                     const double *mag, size_t n, double rel)
{
    int bad = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double tol = rel * mag[i] + 1e-7;
        double d = fabs((double)got[i] - ref[i]);
        if (d / tol > worst)
            worst = d / tol;
        if (!(d <= tol)) {
            if (bad < 3)
                tu_check(false, file, line, what, "element %zu: got %.9g, expected %.9g (tol %.3g)", i,
                         (double)got[i], ref[i], tol);
            bad++;
        }
    }
    tu_check(bad == 0, file, line, what, "%d of %zu elements outside tolerance (worst %.2f x tol)", bad, n, worst);
    return bad;
}
#define MRT_CHECK_CLOSE(what, got, ref, mag, n, rel)                                                                   \
    mrt_check_close_at(__FILE__, __LINE__, (what), (got), (ref), (mag), (n), (rel))

/* ---- a scenario in every mode --------------------------------------------- */

/* Writes the scenario's observable result (n floats) to `out`. */
typedef void (*MrtScenario)(const MrtMode *m, float *out, const void *ctx);

/* Prints "-- <name> [<mode>]" and runs fn in each mode, its output first
 * filled with NaN; every mode's output must equal the sequential one bit for
 * bit. */
static inline void mrt_run_modes(const char *name, MrtScenario fn, const void *ctx, size_t n)
{
    float *first = malloc(n * sizeof *first);
    float *cur = malloc(n * sizeof *cur);
    if (CHECK(first != NULL && cur != NULL)) {
        for (int i = 0; i < MRT_NMODES; i++) {
            printf("-- %s [%s]\n", name, MRT_MODES[i].name);
            fflush(stdout);
            mrt_fill_value(cur, n, NAN);
            fn(&MRT_MODES[i], cur, ctx);
            if (i == 0)
                memcpy(first, cur, n * sizeof *cur);
            else
                CHECKF(memcmp(first, cur, n * sizeof *cur) == 0, "%s: %s result differs from sequential", name,
                       MRT_MODES[i].name);
        }
    }
    free(first);
    free(cur);
}

#endif /* CLLM_C_TESTS_MR_TEST_UTIL_H */
