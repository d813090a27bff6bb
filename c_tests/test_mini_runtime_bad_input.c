/* test_mini_runtime_bad_input.c: the mini_runtime C ABI refuses bad input
 * with the documented status and a message, and never hangs.
 *
 *   bad_args_*             every exported function with NULL handles and
 *                          pointers, (size_t)-1 sizes, an unknown op kind, a
 *                          bad kernel value, bad configs
 *   bad_schedule_*         in each mode (sequential, threaded, threaded with
 *                          two compute threads), each under TU_WATCHDOG: an
 *                          address outside SRAM, an unknown tensor / tile,
 *                          bad bytes / alignment, a STORE with no EXEC (hung
 *                          the original), a LOAD over an open accumulator, an
 *                          EXEC reading an open accumulator, an unknown op
 *                          kind. Each bad op comes after valid ops that STORE
 *                          into the output tensor: after the rejection that
 *                          tensor still holds its sentinel, and the engine
 *                          still runs a good schedule right afterwards.
 *   many_open_accumulators 100 EXECs into 100 distinct accumulators before
 *                          the first STORE (deadlocked the original): runs,
 *                          right and bit-identical in every mode
 */
#include "test_util.h"
#include "mr_test_util.h"

#define SIZE_MAX_ ((size_t)-1)

/* ---- 1. arguments ------------------------------------------------------------- */

static void bad_args_engine(void)
{
    printf("-- bad_args_engine\n");
    MrEngineConfig c = mr_engine_config_default();
    CHECK_EQ_I64(c.sram_bytes, 256 * 1024);
    CHECK_EQ_I64(c.trace, 0);
    CHECK_EQ_I64(c.threaded, 0);
    CHECK_EQ_I64(c.compute_threads, 1);
    CHECK_EQ_I64(c.kernel, MR_KERNEL_AUTO);

    CHECK_NULL_ERR(mr_engine_create(NULL));
    MrEngineConfig bad = c;
    bad.sram_bytes = 0;
    CHECK_NULL_ERR(mr_engine_create(&bad));
    bad.sram_bytes = 4095;
    CHECK_NULL_ERR(mr_engine_create(&bad));
    bad.sram_bytes = SIZE_MAX_;
    CHECK_NULL_ERR(mr_engine_create(&bad));
    bad.sram_bytes = ((size_t)1 << 32) + 4096;
    CHECK_NULL_ERR(mr_engine_create(&bad));
    for (int threaded = 0; threaded <= 1; threaded++) {
        bad = c;
        bad.threaded = (uint8_t)threaded;
        bad.compute_threads = 0;
        CHECK_NULL_ERR(mr_engine_create(&bad));
        bad.compute_threads = MR_MAX_COMPUTE_THREADS + 1;
        CHECK_NULL_ERR(mr_engine_create(&bad));
        bad.compute_threads = UINT32_MAX;
        CHECK_NULL_ERR(mr_engine_create(&bad));
        bad.compute_threads = 1;
        bad.kernel = 3;
        CHECK_NULL_ERR(mr_engine_create(&bad));
        bad.kernel = -2;
        CHECK_NULL_ERR(mr_engine_create(&bad));
        bad.kernel = INT32_MIN;
        CHECK_NULL_ERR(mr_engine_create(&bad));
        if (!mr_kernel_available(MR_KERNEL_AVX512)) {
            bad.kernel = MR_KERNEL_AVX512;
            CHECK_NULL_ERR(mr_engine_create(&bad));
        }
    }
    /* The smallest SRAM and the most compute threads are fine. */
    bad = c;
    bad.sram_bytes = 4096;
    bad.threaded = 1;
    bad.compute_threads = MR_MAX_COMPUTE_THREADS;
    MrEngine *edge = mr_engine_create(&bad);
    CHECKF(edge != NULL, "%s", tu_err());
    CHECK_EQ_I64(mr_engine_sram_bytes(edge), 4096);
    mr_engine_free(edge);

    mr_engine_free(NULL); /* no-op */

    MrEngine *e = mr_engine_create(&c);
    if (!CHECK(e != NULL))
        return;
    float buf[4] = {0};

    CHECK_ERR(mr_engine_register_tensor(NULL, "A", 1, 1), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_register_tensor(e, NULL, 1, 1), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_register_tensor(e, "", 1, 1), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_register_tensor(e, "A", 0, 1), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_register_tensor(e, "A", 1, 0), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_register_tensor(e, "A", SIZE_MAX_, 1), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_register_tensor(e, "A", 1, SIZE_MAX_), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_register_tensor(e, "A", SIZE_MAX_, SIZE_MAX_), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_register_tensor(e, "A", (size_t)1 << 32, (size_t)1 << 32), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_register_tensor(e, "\xff\xfe", 1, 1), MR_ERR_INVALID_ARGUMENT); /* not UTF-8 */
    /* None of those used an id. */
    CHECK_EQ_I64(mr_engine_register_tensor(e, "A", 2, 2), 0);

    CHECK_ERR(mr_engine_tensor_id(NULL, "A"), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_tensor_id(e, NULL), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_tensor_id(e, "nope"), MR_ERR_INVALID_ARGUMENT);

    /* Bad arguments of set_tensor and get_tensor alike ("A" is 2x2). */
    const struct {
        MrEngine *e;
        const char *name;
        float *buf;
        size_t rows, cols;
    } bad_xfers[] = {
        {NULL, "A", buf, 2, 2},
        {e, NULL, buf, 2, 2},
        {e, "A", NULL, 2, 2},
        {e, "A", buf, SIZE_MAX_, 2},
        {e, "A", buf, 2, SIZE_MAX_},
        {e, "A", buf, SIZE_MAX_, SIZE_MAX_},
        {e, "A", buf, 1, 4}, /* 4 floats, another shape */
        {e, "A", buf, 4, 1},
        {e, "B", buf, 2, 2}, /* unknown name */
    };
    for (size_t i = 0; i < sizeof bad_xfers / sizeof bad_xfers[0]; i++) {
        long failed_before = atomic_load(&tu_failed_count);
        CHECK_ERR(mr_engine_set_tensor(bad_xfers[i].e, bad_xfers[i].name, bad_xfers[i].buf, bad_xfers[i].rows,
                                       bad_xfers[i].cols),
                  MR_ERR_INVALID_ARGUMENT);
        CHECK_ERR(mr_engine_get_tensor(bad_xfers[i].e, bad_xfers[i].name, bad_xfers[i].buf, bad_xfers[i].rows,
                                       bad_xfers[i].cols),
                  MR_ERR_INVALID_ARGUMENT);
        if (atomic_load(&tu_failed_count) != failed_before)
            printf("   (in bad_xfers[%zu])\n", i);
    }

    MrOp op = mr_op_load(0, 0, 0, 0, TB, -1);
    CHECK_ERR(mr_engine_execute(NULL, &op, 1), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_execute(e, NULL, 1), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_execute(e, NULL, SIZE_MAX_), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_execute(e, &op, SIZE_MAX_), MR_ERR_INVALID_ARGUMENT); /* too large: not read */
    CHECK_ERR(mr_engine_execute(e, &op, SIZE_MAX_ / sizeof(MrOp) + 1), MR_ERR_INVALID_ARGUMENT);
    CHECK_OK(mr_engine_execute(e, NULL, 0));
    CHECK_OK(mr_engine_execute(e, &op, 1));
    MrOp unknown = op;
    unknown.kind = 3;
    CHECK_ERR(mr_engine_execute(e, &unknown, 1), MR_ERR_INVALID_ARGUMENT);
    unknown.kind = UINT32_MAX;
    CHECK_ERR(mr_engine_execute(e, &unknown, 1), MR_ERR_INVALID_ARGUMENT);

    CHECK_ERR(mr_engine_execute_schedule(NULL, NULL), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_execute_schedule(e, NULL), MR_ERR_INVALID_ARGUMENT);

    MrStats st;
    CHECK_ERR(mr_engine_stats(NULL, &st), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_stats(e, NULL), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_reset_stats(NULL), MR_ERR_INVALID_ARGUMENT);
    CHECK_EQ_I64(mr_engine_sram_bytes(NULL), 0);
    CHECK_EQ_I64(mr_engine_sram_bytes(e), 256 * 1024);
    CHECK_ERR(mr_engine_kernel(NULL), MR_ERR_INVALID_ARGUMENT);
    CHECK_EQ_I64(mr_engine_kernel(e), mr_kernel_active());

    CHECK_ERR(mr_engine_write_trace(NULL, "/tmp/x.json"), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_write_trace(e, NULL), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_engine_write_trace(e, "/tmp/mr-never-written.json"), MR_ERR_WRONG_STATE);

    mr_engine_free(e);
}

static void bad_args_ops_and_kernels(void)
{
    printf("-- bad_args_ops_and_kernels\n");
    MrOp l = mr_op_load(1, 2, 3, 64, TB, -1);
    CHECK_EQ_I64(l.kind, MR_OP_LOAD);
    CHECK(l.op.load.tensor_id == 1 && l.op.load.tile_row == 2 && l.op.load.tile_col == 3 && l.op.load.dst_addr == 64 &&
          l.op.load.bytes == TB && l.op.load.buffer == -1);
    MrOp x = mr_op_exec(1, 2, 3, 4, 5, 6, 1);
    CHECK_EQ_I64(x.kind, MR_OP_EXEC);
    CHECK(x.op.exec.m == 1 && x.op.exec.n == 2 && x.op.exec.k == 3 && x.op.exec.a_addr == 4 && x.op.exec.b_addr == 5 &&
          x.op.exec.acc_addr == 6 && x.op.exec.buffer == 1);
    MrOp s = mr_op_store(7, 8, 9, 128, TB, true);
    CHECK_EQ_I64(s.kind, MR_OP_STORE);
    CHECK(s.op.store.tensor_id == 7 && s.op.store.tile_row == 8 && s.op.store.tile_col == 9 &&
          s.op.store.src_addr == 128 && s.op.store.bytes == TB && s.op.store.apply_relu == 1);

    static float a[TF], b[TF], c[TF];
    const int32_t bad_kernels[] = {3, -2, 100, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof bad_kernels / sizeof bad_kernels[0]; i++) {
        int32_t k = bad_kernels[i];
        CHECK_ERR(mr_matmul_tile(c, a, b, k), MR_ERR_INVALID_ARGUMENT);
        CHECK_ERR(mr_matmul_tile_relu(c, a, b, k), MR_ERR_INVALID_ARGUMENT);
        CHECK_ERR(mr_relu_tile(c, k), MR_ERR_INVALID_ARGUMENT);
        CHECK(!mr_kernel_available(k));
        CHECK(mr_kernel_name(k) == NULL);
    }
    CHECK_ERR(mr_matmul_tile(NULL, a, b, MR_KERNEL_AUTO), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_matmul_tile(c, NULL, b, MR_KERNEL_AUTO), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_matmul_tile(c, a, NULL, MR_KERNEL_AUTO), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_matmul_tile_relu(NULL, a, b, MR_KERNEL_AUTO), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_matmul_tile_relu(c, NULL, b, MR_KERNEL_AUTO), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_matmul_tile_relu(c, a, NULL, MR_KERNEL_AUTO), MR_ERR_INVALID_ARGUMENT);
    CHECK_ERR(mr_relu_tile(NULL, MR_KERNEL_AUTO), MR_ERR_INVALID_ARGUMENT);

    CHECK(mr_kernel_available(MR_KERNEL_AUTO));
    CHECK(mr_kernel_available(MR_KERNEL_REFERENCE));
    CHECK(mr_kernel_name(MR_KERNEL_AUTO) != NULL);
}

static void bad_args_schedule(void)
{
    printf("-- bad_args_schedule\n");
    MrTensorRef x = {0, 32, 32}, w = {1, 32, 32}, y = {2, 32, 32};
    MrMatmulLayer good = {x, w, y, 1};
    CHECK_NULL_ERR(mr_schedule_build(NULL, 1, 65536));
    CHECK_NULL_ERR(mr_schedule_build(NULL, SIZE_MAX_, 65536));
    CHECK_NULL_ERR(mr_schedule_build(&good, SIZE_MAX_, 65536));
    CHECK_NULL_ERR(mr_schedule_build(&good, 1, 0));
    CHECK_NULL_ERR(mr_schedule_build(&good, 1, 3 * 4096 - 64)); /* one EXEC needs 3 tiles */
    CHECK_NULL_ERR(mr_schedule_build(&good, 1, SIZE_MAX_));
    MrMatmulLayer l = good;
    l.b.rows = 33; /* inner dimensions differ */
    CHECK_NULL_ERR(mr_schedule_build(&l, 1, 65536));
    l = good;
    l.out.cols = 64; /* wrong output shape */
    CHECK_NULL_ERR(mr_schedule_build(&l, 1, 65536));
    l = good;
    l.a.rows = 0;
    CHECK_NULL_ERR(mr_schedule_build(&l, 1, 65536));
    l = good;
    l.a.rows = SIZE_MAX_;
    l.out.rows = SIZE_MAX_;
    CHECK_NULL_ERR(mr_schedule_build(&l, 1, 65536));
    l = good;
    l.out = l.a; /* writes its own input */
    CHECK_NULL_ERR(mr_schedule_build(&l, 1, 65536));
    MrMatmulLayer two[2] = {good, good};
    two[1].a = (MrTensorRef){2, 32, 64}; /* tensor 2 with two shapes */
    CHECK_NULL_ERR(mr_schedule_build(two, 2, 65536));

    /* count 0: an empty schedule (or a refusal with a message). */
    cllm_clear_error();
    MrSchedule *empty = mr_schedule_build(NULL, 0, 65536);
    CHECK(empty != NULL ? mr_schedule_len(empty) == 0 : tu_error_is_set());
    mr_schedule_free(empty);

    CHECK_EQ_I64(mr_schedule_len(NULL), 0);
    CHECK(mr_schedule_ops(NULL) == NULL);
    MrScheduleInfo info;
    CHECK_ERR(mr_schedule_info(NULL, &info), MR_ERR_INVALID_ARGUMENT);
    MrSchedule *s = mr_schedule_build(&good, 1, 65536);
    if (CHECKF(s != NULL, "%s", tu_err())) {
        CHECK_ERR(mr_schedule_info(s, NULL), MR_ERR_INVALID_ARGUMENT);
        CHECK_OK(mr_schedule_info(s, &info));
        CHECK_EQ_I64(info.ops, 4);
        /* The schedule names tensors 0..2: on an engine without them it is
         * refused as out of range. */
        MrEngineConfig c = mr_engine_config_default();
        MrEngine *e = mr_engine_create(&c);
        if (CHECK(e != NULL)) {
            CHECK_ERR(mr_engine_execute_schedule(e, s), MR_ERR_OUT_OF_RANGE);
            mr_engine_free(e);
        }
    }
    mr_schedule_free(s);
    mr_schedule_free(NULL); /* no-op */
}

/* ---- 2. schedules ------------------------------------------------------------- */

#define SENTINEL 12345.0f

/* Engine with A, B (random) and C (sentinel), ids 0..2, 32x32 each. */
static MrEngine *sched_engine(const MrtMode *m, size_t sram, float *a, float *b)
{
    MrEngine *e = mrt_engine(m, sram);
    if (e == NULL)
        return NULL;
    mrt_fill_random(a, TF, 77, 1.0f);
    mrt_fill_random(b, TF, 78, 1.0f);
    MRT_ABC(e, a, b);
    float sentinel[TF];
    mrt_fill_value(sentinel, TF, SENTINEL);
    CHECK_OK(mr_engine_set_tensor(e, "C", sentinel, TD, TD));
    return e;
}

typedef struct {
    const char *name;
    int expect;
    MrOp tail[4]; /* appended after the good prefix */
    size_t ntail;
} BadCase;

#define SRAM (64 * 1024u)

static void bad_schedules_in_mode(const MrtMode *m)
{
    MrOp acc_store = mr_op_store(2, 0, 0, 5 * TB, TB, false);
    const BadCase cases[] = {
        {"load_address_past_sram", MR_ERR_OUT_OF_RANGE, {mr_op_load(0, 0, 0, SRAM, TB, -1)}, 1},
        {"load_address_tile_crosses_end", MR_ERR_OUT_OF_RANGE, {mr_op_load(0, 0, 0, SRAM - 64, TB, -1)}, 1},
        {"load_address_u32_max", MR_ERR_OUT_OF_RANGE, {mr_op_load(0, 0, 0, 0xFFFFFFC0u, TB, -1)}, 1},
        {"exec_acc_past_sram", MR_ERR_OUT_OF_RANGE, {mr_op_exec(0, 0, 0, 0, TB, SRAM, -1)}, 1},
        {"exec_a_past_sram", MR_ERR_OUT_OF_RANGE, {mr_op_exec(0, 0, 0, SRAM + TB, TB, 3 * TB, -1)}, 1},
        {"store_src_past_sram", MR_ERR_OUT_OF_RANGE, {mr_op_store(2, 0, 0, 0xFFFFF000u, TB, false)}, 1},
        {"load_unknown_tensor", MR_ERR_OUT_OF_RANGE, {mr_op_load(99, 0, 0, 0, TB, -1)}, 1},
        {"store_unknown_tensor", MR_ERR_OUT_OF_RANGE,
         {mr_op_exec(0, 0, 0, 0, TB, 5 * TB, -1), mr_op_store(UINT32_MAX, 0, 0, 5 * TB, TB, false)}, 2},
        {"load_tile_row_outside", MR_ERR_OUT_OF_RANGE, {mr_op_load(0, 1, 0, 0, TB, -1)}, 1},
        {"load_tile_col_outside", MR_ERR_OUT_OF_RANGE, {mr_op_load(0, 0, UINT32_MAX, 0, TB, -1)}, 1},
        {"store_tile_outside", MR_ERR_OUT_OF_RANGE,
         {mr_op_exec(0, 0, 0, 0, TB, 5 * TB, -1), mr_op_store(2, 0, 1, 5 * TB, TB, false)}, 2},
        {"load_bytes_not_4096", MR_ERR_INVALID_ARGUMENT, {mr_op_load(0, 0, 0, 0, 2048, -1)}, 1},
        {"store_bytes_zero", MR_ERR_INVALID_ARGUMENT,
         {mr_op_exec(0, 0, 0, 0, TB, 5 * TB, -1), mr_op_store(2, 0, 0, 5 * TB, 0, false)}, 2},
        {"load_misaligned", MR_ERR_INVALID_ARGUMENT, {mr_op_load(0, 0, 0, 32, TB, -1)}, 1},
        {"exec_misaligned", MR_ERR_INVALID_ARGUMENT, {mr_op_exec(0, 0, 0, 0, TB, 5 * TB + 4, -1)}, 1},
        {"store_without_exec", MR_ERR_INVALID_ARGUMENT, {mr_op_store(2, 0, 0, 5 * TB, TB, false)}, 1},
        {"store_from_operand", MR_ERR_INVALID_ARGUMENT, {mr_op_store(2, 0, 0, 0, TB, true)}, 1},
        {"store_inside_accumulator", MR_ERR_INVALID_ARGUMENT,
         {mr_op_exec(0, 0, 0, 0, TB, 5 * TB, -1), mr_op_store(2, 0, 0, 5 * TB + 64, TB, false)}, 2},
        {"load_over_open_accumulator", MR_ERR_INVALID_ARGUMENT,
         {mr_op_exec(0, 0, 0, 0, TB, 5 * TB, -1), mr_op_load(0, 0, 0, 5 * TB, TB, -1), acc_store}, 3},
        {"load_over_open_accumulator_partly", MR_ERR_INVALID_ARGUMENT,
         {mr_op_exec(0, 0, 0, 0, TB, 5 * TB, -1), mr_op_load(0, 0, 0, 5 * TB - 64, TB, -1), acc_store}, 3},
        {"exec_reads_open_accumulator", MR_ERR_INVALID_ARGUMENT,
         {mr_op_exec(0, 0, 0, 0, TB, 5 * TB, -1), mr_op_exec(0, 0, 0, 5 * TB, TB, 6 * TB, -1), acc_store}, 3},
        {"exec_operand_is_own_accumulator", MR_ERR_INVALID_ARGUMENT, {mr_op_exec(0, 0, 0, 5 * TB, TB, 5 * TB, -1)}, 1},
        {"unknown_op_kind", MR_ERR_INVALID_ARGUMENT, {{7, {.load = {0, 0, 0, 0, TB, -1}}}}, 1},
    };
    const size_t ncases = sizeof cases / sizeof cases[0];
    float a[TF], b[TF], got[TF];
    double ref[TF], mag[TF];
    for (size_t ci = 0; ci < ncases; ci++) {
        const BadCase *bc = &cases[ci];
        printf("-- bad_schedule_%s [%s]\n", bc->name, m->name);
        fflush(stdout);
        TU_WATCHDOG(30);
        MrEngine *e = sched_engine(m, SRAM, a, b);
        if (e == NULL)
            continue;
        /* A valid prefix that STOREs into C: if a rejected schedule ran
         * partly, C would change. */
        MrOp ops[8];
        size_t n = mrt_single_tile_ops(ops, 0, 1, 2, false);
        memcpy(ops + n, bc->tail, bc->ntail * sizeof(MrOp));
        n += bc->ntail;
        cllm_clear_error();
        int rc = mr_engine_execute(e, ops, n);
        CHECKF(rc == bc->expect, "%s [%s]: got %d, expected %d (%s)", bc->name, m->name, rc, bc->expect, tu_err());
        CHECKF(tu_error_is_set(), "%s: no message", bc->name);
        /* The message names the op. */
        if (rc != MR_OK) {
            const char *msg = tu_err();
            CHECKF(strstr(msg, "op ") != NULL, "%s: message '%s' names no op", bc->name, msg);
        }
        /* No tensor changed. */
        CHECK_OK(mr_engine_get_tensor(e, "C", got, TD, TD));
        int changed = 0;
        for (int i = 0; i < TF; i++)
            changed += got[i] != SENTINEL;
        CHECKF(changed == 0, "%s [%s]: rejected schedule changed %d elements of C", bc->name, m->name, changed);
        CHECK_OK(mr_engine_get_tensor(e, "A", got, TD, TD));
        CHECK(memcmp(got, a, sizeof got) == 0);
        MrStats st;
        CHECK_OK(mr_engine_stats(e, &st));
        CHECK_EQ_I64(st.loads + st.executes + st.stores, 0);

        /* The engine still works: the good prefix alone gives C = A . B. */
        CHECK_OK(mr_engine_execute(e, ops, 4));
        CHECK_OK(mr_engine_get_tensor(e, "C", got, TD, TD));
        char what[128];
        snprintf(what, sizeof what, "%s [%s]: C = A . B after the error", bc->name, m->name);
        mrt_ref_matmul(NULL, a, b, TD, TD, TD, ref, mag);
        MRT_CHECK_CLOSE(what, got, ref, mag, TF, 1e-5);
        /* And a second bad schedule after a good one is still refused. */
        CHECK_EQ_I64(mr_engine_execute(e, ops, n), bc->expect);
        mr_engine_free(e);
    }
    TU_WATCHDOG(120);
}

/* 100 accumulators opened (EXEC k = 0) before any STORE; each EXEC reads a
 * freshly loaded B tile at one address (so the LOAD must wait for the EXEC
 * before it), then 100 STOREs, ReLU on odd tiles. SRAM: 102 tiles exactly. */
#define NACC 100
#define WIDE (NACC * TD)
static void many_open_accumulators(const MrtMode *m, float *c, const void *ctx)
{
    (void)ctx;
    TU_WATCHDOG(60);
    float *a = malloc(TF * sizeof *a), *b = malloc((size_t)TD * WIDE * sizeof *b);
    double *ref = malloc((size_t)TD * WIDE * sizeof *ref), *mag = malloc((size_t)TD * WIDE * sizeof *mag);
    MrOp *ops = malloc((1 + 3 * NACC) * sizeof *ops);
    MrEngine *e = mrt_engine(m, (2 + NACC) * (size_t)TB);
    if (CHECK(a && b && ref && mag && ops) && e != NULL) {
        mrt_fill_random(a, TF, 90, 1.0f);
        mrt_fill_random(b, (size_t)TD * WIDE, 91, 1.0f);
        MRT_TENSOR(e, "A", TD, TD, 0, a);
        MRT_TENSOR(e, "B", TD, WIDE, 1, b);
        MRT_TENSOR(e, "C", TD, WIDE, 2, NULL);
        size_t n = 0;
        ops[n++] = mr_op_load(0, 0, 0, 0, TB, -1);
        for (uint32_t j = 0; j < NACC; j++) {
            ops[n++] = mr_op_load(1, 0, j, TB, TB, (int32_t)(j % 2));
            ops[n++] = mr_op_exec(0, j, 0, 0, TB, (2 + j) * TB, (int32_t)(j % 2));
        }
        for (uint32_t j = 0; j < NACC; j++)
            ops[n++] = mr_op_store(2, 0, j, (2 + j) * TB, TB, j % 2 == 1);
        CHECK_OK(mr_engine_execute(e, ops, n));
        CHECK_OK(mr_engine_get_tensor(e, "C", c, TD, WIDE));
        mrt_ref_matmul(NULL, a, b, TD, TD, WIDE, ref, mag);
        for (size_t i = 0; i < (size_t)TD * WIDE; i++)
            if ((i % WIDE / TD) % 2 == 1 && ref[i] < 0) /* ReLU on odd tiles */
                ref[i] = 0;
        char what[64];
        snprintf(what, sizeof what, "many_open_accumulators [%s]: C", m->name);
        MRT_CHECK_CLOSE(what, c, ref, mag, (size_t)TD * WIDE, 1e-5);
        MrStats st;
        CHECK_OK(mr_engine_stats(e, &st));
        CHECK_EQ_I64(st.loads, 1 + NACC);
        CHECK_EQ_I64(st.executes, NACC);
        CHECK_EQ_I64(st.stores, NACC);
        /* One more tile of accumulators than SRAM holds: refused, not hung. */
        MrOp over = mr_op_exec(0, 0, 0, 0, TB, (2 + NACC) * TB, -1);
        CHECK_ERR(mr_engine_execute(e, &over, 1), MR_ERR_OUT_OF_RANGE);
    }
    mr_engine_free(e);
    free(a);
    free(b);
    free(ref);
    free(mag);
    free(ops);
    TU_WATCHDOG(120);
}

int main(void)
{
    tu_begin(120);
    bad_args_engine();
    bad_args_ops_and_kernels();
    bad_args_schedule();
    for (int i = 0; i < MRT_NMODES; i++)
        bad_schedules_in_mode(&MRT_MODES[i]);
    mrt_run_modes("many_open_accumulators", many_open_accumulators, NULL, (size_t)TD * WIDE);
    return tu_finish("test_mini_runtime_bad_input");
}
