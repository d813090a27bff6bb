/* test_training_batches_checkpoints.c: the batch iterator's windows from C
 * against hand-computed values, and checkpoint round trips.
 *
 *   iterator_windows_match_hand_computed  21 tokens, B=2, T=3: four batches,
 *                              inputs/targets/mask of the first and the
 *                              padded last, end of pass, reset, drop_last
 *   shuffle_is_a_reproducible_permutation  every batch once per pass, the
 *                              same order for the same inputs, a new order
 *                              after reset
 *   checkpoint_round_trip_gives_identical_loss  train, save; a fresh model
 *                              and training loaded from the file evaluate
 *                              to the identical loss and hold identical
 *                              parameters and step; training continues
 *                              identically from either
 *   model_save_load_generates_the_same_text  same seed, same text
 */
#include "test_util.h"
#include "tr_test_util.h"

static void iterator_windows_match_hand_computed(void)
{
    printf("-- iterator_windows_match_hand_computed\n");
    uint32_t tokens[21];
    for (uint32_t i = 0; i < 21; i++)
        tokens[i] = i + 1;
    CLLMBatchIterator *it = cllm_batch_iterator_create(tokens, 21, 2, 3, 0, 0);
    CHECK(it != NULL);
    CHECK_EQ_I64(cllm_batch_iterator_num_batches(it), 4);
    CLLMBatch *b = cllm_batch_iterator_next(it);
    CHECK(b != NULL && b->batch_size == 2 && b->seq_len == 3 && b->num_valid_tokens == 6);
    for (int i = 0; b && i < 6; i++) {
        CHECK_EQ_I64(b->input_ids[i], i + 1);
        CHECK_EQ_I64(b->target_ids[i], i + 2);
        CHECK(b->attention_mask[i] == 1.0f);
    }
    CHECK(cllm_batch_validate(b) == 1);
    cllm_batch_free(b);
    cllm_batch_free(cllm_batch_iterator_next(it));
    cllm_batch_free(cllm_batch_iterator_next(it));
    b = cllm_batch_iterator_next(it); /* positions 18, 19 valid */
    CHECK(b != NULL && b->num_valid_tokens == 2);
    if (b) {
        CHECK(b->input_ids[0] == 19 && b->target_ids[0] == 20 && b->input_ids[1] == 20 && b->target_ids[1] == 21);
        for (int i = 2; i < 6; i++)
            CHECK(b->input_ids[i] == 0 && b->target_ids[i] == 0 && b->attention_mask[i] == 0.0f);
        CHECK(cllm_batch_validate(b) == 1);
    }
    cllm_batch_free(b);
    cllm_clear_error();
    CHECK(cllm_batch_iterator_next(it) == NULL);
    CHECK(cllm_last_error() == NULL); /* the end of a pass is not an error */
    cllm_batch_iterator_reset(it);
    b = cllm_batch_iterator_next(it);
    CHECK(b != NULL && b->input_ids[0] == 1);
    cllm_batch_free(b);
    cllm_batch_iterator_free(it);
    it = cllm_batch_iterator_create(tokens, 21, 2, 3, 0, 1);
    CHECK_EQ_I64(cllm_batch_iterator_num_batches(it), 3);
    cllm_batch_iterator_free(it);
}

/* First input of each batch of one pass. */
static void pass_order(CLLMBatchIterator *it, uint32_t *firsts, int n)
{
    for (int i = 0; i < n; i++) {
        CLLMBatch *b = cllm_batch_iterator_next(it);
        firsts[i] = b ? b->input_ids[0] : UINT32_MAX;
        cllm_batch_free(b);
    }
    CHECK(cllm_batch_iterator_next(it) == NULL);
}

static void shuffle_is_a_reproducible_permutation(void)
{
    printf("-- shuffle_is_a_reproducible_permutation\n");
    enum { N = 50 };
    uint32_t tokens[N * 4 + 1];
    for (uint32_t i = 0; i <= N * 4; i++)
        tokens[i] = i;
    CLLMBatchIterator *a = cllm_batch_iterator_create(tokens, N * 4 + 1, 1, 4, 1, 1);
    CLLMBatchIterator *b = cllm_batch_iterator_create(tokens, N * 4 + 1, 1, 4, 1, 1);
    uint32_t fa[N], fb[N], fc[N];
    pass_order(a, fa, N);
    pass_order(b, fb, N);
    CHECK(memcmp(fa, fb, sizeof fa) == 0);
    int seen[N] = {0}, in_order = 1;
    for (int i = 0; i < N; i++) {
        if (fa[i] % 4 == 0 && fa[i] / 4 < N)
            seen[fa[i] / 4]++;
        in_order &= fa[i] == (uint32_t)(4 * i);
    }
    for (int i = 0; i < N; i++)
        CHECK_EQ_I64(seen[i], 1);
    CHECK(!in_order);
    cllm_batch_iterator_reset(a);
    pass_order(a, fc, N);
    CHECK(memcmp(fa, fc, sizeof fa) != 0);
    cllm_batch_iterator_free(a);
    cllm_batch_iterator_free(b);
}

static void checkpoint_round_trip_gives_identical_loss(void)
{
    printf("-- checkpoint_round_trip_gives_identical_loss\n");
    char path[] = "/tmp/cllm_ckpt_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    TrSetup a = tr_setup(2, 3e-3f);
    TrSetup b = tr_setup(1, 3e-3f);
    if (a.sys == NULL || b.sys == NULL) {
        tr_teardown(&a);
        tr_teardown(&b);
        return;
    }
    CHECK(threaded_train_epoch(a.sys) > 0.0f);
    CHECKF(cllm_training_save_checkpoint(a.training, path) == 0, "%s", tu_err());
    float loss_a = threaded_training_evaluate(a.sys, a.iter);
    CHECKF(cllm_training_load_checkpoint(b.training, path) == 0, "%s", tu_err());
    float loss_b = threaded_training_evaluate(b.sys, b.iter);
    CHECKF(loss_a == loss_b && loss_a > 0.0f, "%.9g vs %.9g", (double)loss_a, (double)loss_b);
    CHECK_EQ_I64(b.training->current_step, a.training->current_step);
    size_t n = cllm_model_num_params(a.model);
    float *pa = malloc(n * sizeof *pa), *pb = malloc(n * sizeof *pb);
    CHECK_EQ_I64(cllm_model_get_params(a.model, pa, n), (int64_t)n);
    CHECK_EQ_I64(cllm_model_get_params(b.model, pb, n), (int64_t)n);
    CHECK(memcmp(pa, pb, n * sizeof *pa) == 0);
    /* The optimizer state came along: one more epoch each stays identical. */
    CHECK(threaded_train_epoch(a.sys) == threaded_train_epoch(b.sys));
    cllm_model_get_params(a.model, pa, n);
    cllm_model_get_params(b.model, pb, n);
    CHECK(memcmp(pa, pb, n * sizeof *pa) == 0);
    /* A checkpoint of another shape is refused. */
    CLLMConfig other = tr_tiny_config();
    other.embedding_dim = 16;
    CLLMModel *om = cllm_create_model(&other);
    CLLMTrainingConfig tc = tr_training_config(1e-3f);
    CLLMTraining *ot = cllm_training_init(om, &tc);
    CHECK_ERR(cllm_training_load_checkpoint(ot, path), -1);
    cllm_training_free(ot);
    cllm_free_model(om);
    free(pa);
    free(pb);
    tr_teardown(&a);
    tr_teardown(&b);
    unlink(path);
}

static void model_save_load_generates_the_same_text(void)
{
    printf("-- model_save_load_generates_the_same_text\n");
    char path[] = "/tmp/cllm_model_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    CLLMConfig c = tr_tiny_config();
    CLLMModel *m = cllm_create_model(&c);
    CHECK(cllm_model_init_params(m, 99) == 0);
    CHECKF(cllm_model_save(m, path) == 0, "%s", tu_err());
    CLLMModel *l = cllm_model_load(path);
    CHECKF(l != NULL, "%s", tu_err());
    CLLMConfig lc;
    CHECK(cllm_model_get_config(l, &lc) == 0);
    CHECK(lc.embedding_dim == c.embedding_dim && lc.num_layers == c.num_layers && lc.vocab_size == 256);
    char t1[41], t2[41];
    CHECK_EQ_I64(cllm_generate_text(m, "the ", 40, 0.8f, 5, t1, sizeof t1), 40);
    CHECK_EQ_I64(cllm_generate_text(l, "the ", 40, 0.8f, 5, t2, sizeof t2), 40);
    CHECK(memcmp(t1, t2, sizeof t1) == 0);
    cllm_free_model(m);
    cllm_free_model(l);
    unlink(path);
}

int main(void)
{
    tu_begin(120);
    iterator_windows_match_hand_computed();
    shuffle_is_a_reproducible_permutation();
    checkpoint_round_trip_gives_identical_loss();
    model_save_load_generates_the_same_text();
    return tu_finish("test_training_batches_checkpoints");
}
