/* test_mini_runtime_random_schedules.c: random valid schedules on the
 * mini_runtime engine, checked bit for bit against a model written here and
 * across the three modes (sequential, threaded, threaded with two compute
 * threads).
 *
 * The model: DRAM tensors as plain arrays; SRAM as tiles that read as zero
 * until written in the schedule (the engine's documented behaviour); LOAD
 * copies a tile; EXEC zeroes the accumulator when k == 0 and then calls
 * mr_matmul_tile with the engine's own kernel (the engine's EXEC is that
 * kernel, so results are bit-identical); STORE applies ReLU in place when
 * asked and copies the tile out.
 *
 * The generator only makes schedules the engine must accept: no LOAD over an
 * open accumulator, no EXEC reading an open accumulator or its own
 * accumulator, STOREs only from accumulators. It does exercise everything
 * else: reloading a slot an EXEC still reads (WAR in SRAM), STOREs into
 * tiles later LOADed (RAW through DRAM) and LOADs of tiles later
 * overwritten, accumulators continued with k > 0 across other work,
 * accumulating onto loaded data (k > 0 on a fresh slot), several STOREs
 * from one accumulator (with and without ReLU), closed accumulators read as
 * operands, many accumulators open at once.
 *
 *   random_schedules_vs_model   1000 schedules x 3 modes (see MR_FUZZ_* below)
 */
#include "test_util.h"
#include "mr_test_util.h"

#define NT 4 /* tensors */
#define TT 2 /* tiles per side of each tensor (64x64) */
#define DIM (TT * TD)
#define MAX_SLOTS 256
#define MAX_OPS_LIMIT 4096

/* Size of the run, overridable from the environment:
 *   MR_FUZZ_SLOTS      SRAM tiles (default 40, at most 256)
 *   MR_FUZZ_MAX_OPS    ops per schedule, below this (default 400, >= 11)
 *   MR_FUZZ_SCHEDULES  schedules (default 600)
 * The defaults make schedules longer than the threaded engine's pool of
 * physical tiles (SRAM tiles + 64), so renamed tiles are reused within a
 * run (this once found an EXEC with k != 0 on a never-written accumulator
 * starting from a reused tile's stale data instead of zero). */
static int g_slots = 40, g_max_ops = 400, g_schedules = 600;

static int env_int(const char *name, int def, int lo, int hi)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0')
        return def;
    long x = strtol(v, NULL, 10);
    return x < lo ? lo : x > hi ? hi : (int)x;
}

enum { EMPTY, DATA, ACC_OPEN, ACC_CLOSED };

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    return (uint32_t)(tu_rand_next(&rng_state) % n);
}

static float rnd_float(void)
{
    return (float)(mrt_uniform(&rng_state) * 2.0 - 1.0);
}

/* A random valid schedule of `n` ops; returns n. */
static size_t generate(MrOp *ops, size_t max)
{
    int state[MAX_SLOTS] = {0};
    const uint32_t slots = (uint32_t)g_slots;
    size_t n = 0;
    size_t target = 10 + rnd((uint32_t)(max - 10));
    while (n < target) {
        uint32_t kind = rnd(10);
        if (kind < 4) { /* LOAD */
            uint32_t s = rnd(slots);
            if (state[s] == ACC_OPEN)
                continue;
            ops[n++] = mr_op_load(rnd(NT), rnd(TT), rnd(TT), s * TB, TB, (int32_t)rnd(3) - 1);
            state[s] = DATA;
        } else if (kind < 8) { /* EXEC */
            uint32_t a = rnd(slots), b = rnd(slots), acc = rnd(slots);
            if (state[a] == ACC_OPEN || state[b] == ACC_OPEN || acc == a || acc == b)
                continue;
            uint32_t k = state[acc] == ACC_OPEN ? 1 + rnd(3) : (rnd(4) == 0 ? 1 : 0);
            if (rnd(8) == 0)
                k = 0; /* restart an open accumulator now and then */
            ops[n++] = mr_op_exec(rnd(TT), rnd(TT), k, a * TB, b * TB, acc * TB, (int32_t)(k % 2));
            state[acc] = ACC_OPEN;
        } else { /* STORE */
            uint32_t s = rnd(slots);
            if (state[s] != ACC_OPEN && state[s] != ACC_CLOSED)
                continue;
            ops[n++] = mr_op_store(rnd(NT), rnd(TT), rnd(TT), s * TB, TB, rnd(2) == 1);
            state[s] = ACC_CLOSED;
        }
    }
    return n;
}

/* The model: runs `ops` on `dram` (NT tensors of DIM x DIM, row-major). */
static void model_run(const MrOp *ops, size_t n, float dram[NT][DIM * DIM], int32_t kernel)
{
    static MrtTile sram[MAX_SLOTS];
    memset(sram, 0, (size_t)g_slots * sizeof sram[0]);
    for (size_t i = 0; i < n; i++) {
        const MrOp *op = &ops[i];
        if (op->kind == MR_OP_LOAD) {
            const MrLoad *l = &op->op.load;
            float *dst = sram[l->dst_addr / TB].v;
            for (int r = 0; r < TD; r++)
                memcpy(dst + r * TD, &dram[l->tensor_id][(l->tile_row * TD + r) * DIM + l->tile_col * TD],
                       TD * sizeof(float));
        } else if (op->kind == MR_OP_EXEC) {
            const MrExec *e = &op->op.exec;
            float *acc = sram[e->acc_addr / TB].v;
            if (e->k == 0)
                memset(acc, 0, TB);
            int rc = mr_matmul_tile(acc, sram[e->a_addr / TB].v, sram[e->b_addr / TB].v, kernel);
            if (rc != MR_OK)
                CHECKF(false, "model: mr_matmul_tile %d: %s", rc, tu_err());
        } else {
            const MrStore *s = &op->op.store;
            float *src = sram[s->src_addr / TB].v;
            /* The kernels' ReLU keeps NaN and -0.0 (values overflow in long
             * chains of EXECs on stored accumulators). */
            if (s->apply_relu)
                for (int j = 0; j < TF; j++)
                    if (src[j] < 0.0f)
                        src[j] = 0.0f;
            for (int r = 0; r < TD; r++)
                memcpy(&dram[s->tensor_id][(s->tile_row * TD + r) * DIM + s->tile_col * TD], src + r * TD,
                       TD * sizeof(float));
        }
    }
}

static const char *NAMES[NT] = {"T0", "T1", "T2", "T3"};

int main(void)
{
    tu_begin(240);
    g_slots = env_int("MR_FUZZ_SLOTS", g_slots, 3, MAX_SLOTS);
    g_max_ops = env_int("MR_FUZZ_MAX_OPS", g_max_ops, 11, MAX_OPS_LIMIT);
    g_schedules = env_int("MR_FUZZ_SCHEDULES", g_schedules, 1, 1000000);
    static MrOp ops[MAX_OPS_LIMIT];
    static float init[NT][DIM * DIM], want[NT][DIM * DIM], got[DIM * DIM];
    MrEngine *engines[MRT_NMODES];
    int32_t kernel = MR_KERNEL_AUTO;
    for (int m = 0; m < MRT_NMODES; m++) {
        engines[m] = mrt_engine(&MRT_MODES[m], (size_t)g_slots * TB);
        if (engines[m] == NULL)
            return tu_finish("test_mini_runtime_random_schedules");
        for (int t = 0; t < NT; t++)
            MRT_TENSOR(engines[m], NAMES[t], DIM, DIM, t, NULL);
        kernel = mr_engine_kernel(engines[m]);
    }
    printf("-- random_schedules_vs_model: %d schedules of < %d ops, %d SRAM tiles, kernel %s\n", g_schedules,
           g_max_ops, g_slots, mr_kernel_name(kernel));

    long total_ops = 0;
    int mismatches = 0, rejected = 0;
    for (int sc = 0; sc < g_schedules; sc++) {
        rng_state = 0x5EED0000ULL + (uint64_t)sc;
        size_t n = generate(ops, (size_t)g_max_ops);
        total_ops += (long)n;
        for (int t = 0; t < NT; t++)
            for (int j = 0; j < DIM * DIM; j++)
                init[t][j] = rnd_float();
        memcpy(want, init, sizeof init);
        model_run(ops, n, want, kernel);

        for (int m = 0; m < MRT_NMODES; m++) {
            MrEngine *e = engines[m];
            for (int t = 0; t < NT; t++)
                mr_engine_set_tensor(e, NAMES[t], init[t], DIM, DIM);
            int rc = mr_engine_execute(e, ops, n);
            if (rc != MR_OK) {
                if (rejected++ < 5)
                    CHECKF(false, "schedule %d [%s] rejected: %d %s", sc, MRT_MODES[m].name, rc, tu_err());
                continue;
            }
            for (int t = 0; t < NT; t++) {
                if (mr_engine_get_tensor(e, NAMES[t], got, DIM, DIM) != MR_OK) {
                    CHECKF(false, "get_tensor: %s", tu_err());
                    continue;
                }
                if (memcmp(got, want[t], sizeof got) != 0) {
                    if (mismatches++ < 5) {
                        int first = -1;
                        for (int j = 0; j < DIM * DIM && first < 0; j++)
                            if (memcmp(&got[j], &want[t][j], sizeof(float)) != 0)
                                first = j;
                        CHECKF(false, "schedule %d (%zu ops) [%s]: tensor %s differs from the model at %d: %g vs %g",
                               sc, n, MRT_MODES[m].name, NAMES[t], first, (double)got[first], (double)want[t][first]);
                    }
                }
            }
        }
    }
    CHECKF(mismatches == 0 && rejected == 0, "%d mismatches, %d rejected schedules", mismatches, rejected);

    /* Stats: every op of every schedule counted once per mode. */
    for (int m = 0; m < MRT_NMODES; m++) {
        MrStats st;
        CHECK_EQ_I64(mr_engine_stats(engines[m], &st), MR_OK);
        CHECK_EQ_I64(st.loads + st.executes + st.stores, total_ops);
        mr_engine_free(engines[m]);
    }
    printf("   %ld ops per mode\n", total_ops);
    return tu_finish("test_mini_runtime_random_schedules");
}
