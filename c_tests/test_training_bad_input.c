/* test_training_bad_input.c: every training, batch and model call refuses
 * bad input with its documented error value and a cllm_last_error()
 * message; nothing crashes or hangs.
 *
 *   bad_models         NULL / zero / inconsistent CLLMConfig
 *   bad_batches        NULL, zero sizes, no batch in the stream, a batch
 *                      larger than the token count, inconsistent batches
 *   bad_training       NULL model or config, unknown optimizer or schedule,
 *                      negative counts, a schedule without a length
 *   bad_systems        NULL training / iterator, negative threads, tokens
 *                      outside the vocabulary, rows longer than the context,
 *                      the optimizer changed after init, NULL systems in
 *                      every threaded_* call, sphere ids out of range,
 *                      max_steps reached
 *   bad_custom_models  NULL callbacks, zero parameters
 *   bad_generation     NULL / out-of-vocabulary prompts, small buffers,
 *                      bad temperature, missing or malformed checkpoints
 */
#include "test_util.h"
#include "tr_test_util.h"

static void bad_models(void)
{
    printf("-- bad_models\n");
    CHECK_NULL_ERR(cllm_create_model(NULL));
    CLLMConfig c = tr_tiny_config();
    c.vocab_size = 0;
    CHECK_NULL_ERR(cllm_create_model(&c));
    c = tr_tiny_config();
    c.num_heads = 3; /* 32 % 3 != 0 */
    CHECK_NULL_ERR(cllm_create_model(&c));
    c = tr_tiny_config();
    c.num_layers = 0;
    CHECK_NULL_ERR(cllm_create_model(&c));
    c = tr_tiny_config();
    c.max_seq_len = 0;
    CHECK_NULL_ERR(cllm_create_model(&c));
    c = tr_tiny_config();
    c.dropout = 1.5f;
    CHECK_NULL_ERR(cllm_create_model(&c));
    c = tr_tiny_config();
    c.embedding_dim = UINT32_MAX;
    c.num_heads = 1;
    CHECK_NULL_ERR(cllm_create_model(&c));
    cllm_free_model(NULL);
    CHECK_ERR(cllm_model_num_params(NULL), 0);
    CLLMConfig out;
    CHECK_ERR(cllm_model_get_config(NULL, &out), -1);
    CHECK_ERR(cllm_model_init_params(NULL, 1), -1);
    CHECK_ERR(cllm_model_get_params(NULL, NULL, 0), -1);
    c = tr_tiny_config();
    c.ff_dim = 0; /* = 4 x embedding_dim */
    CLLMModel *m = cllm_create_model(&c);
    CHECKF(m != NULL, "%s", tu_err());
    CHECK_ERR(cllm_model_get_config(m, NULL), -1);
    CHECK(cllm_model_get_config(m, &out) == 0 && out.ff_dim == 128);
    float small[4];
    CHECK_ERR(cllm_model_get_params(m, small, 4), -1);
    CHECK_ERR(cllm_model_get_params(m, NULL, (size_t)-1), -1);
    cllm_free_model(m);
}

static void bad_batches(void)
{
    printf("-- bad_batches\n");
    uint32_t tokens[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    CHECK_NULL_ERR(cllm_batch_create(0, 4));
    CHECK_NULL_ERR(cllm_batch_create(4, 0));
    CHECK_NULL_ERR(cllm_batch_create(UINT32_MAX, UINT32_MAX));
    CHECK_NULL_ERR(cllm_batch_create(UINT32_MAX, 1)); /* 48 GB: more than the process may use */
    CHECK_NULL_ERR(cllm_batch_iterator_create(tokens, 10, UINT32_MAX, 1, 0, 0)); /* (uint32_t)-1 rows */
    CHECK_NULL_ERR(cllm_batch_iterator_create(NULL, 10, 2, 2, 0, 0));
    CHECK_NULL_ERR(cllm_batch_iterator_create(tokens, 0, 2, 2, 0, 0));
    CHECK_NULL_ERR(cllm_batch_iterator_create(tokens, 1, 1, 1, 0, 0)); /* no target */
    CHECK_NULL_ERR(cllm_batch_iterator_create(tokens, 10, 0, 2, 0, 0));
    CHECK_NULL_ERR(cllm_batch_iterator_create(tokens, 10, 2, 0, 0, 0));
    CHECK_NULL_ERR(cllm_batch_iterator_create(tokens, 10, 4, 4, 0, 1)); /* batch larger than the tokens */
    CHECK_NULL_ERR(cllm_batch_iterator_create(tokens, (size_t)-1, 2, 2, 0, 0));
    cllm_batch_free(NULL);
    cllm_batch_iterator_free(NULL);
    cllm_clear_error();
    cllm_batch_iterator_reset(NULL);
    CHECK(tu_error_is_set());
    CHECK_NULL_ERR(cllm_batch_iterator_next(NULL));
    CHECK_ERR(cllm_batch_iterator_num_batches(NULL), 0);
    CHECK_ERR(cllm_batch_validate(NULL), 0);

    CLLMBatch *b = cllm_batch_create(2, 3);
    CHECK(b != NULL && cllm_batch_validate(b) == 1);
    b->num_valid_tokens = 1;
    CHECK_ERR(cllm_batch_validate(b), 0);
    b->num_valid_tokens = 0;
    b->input_ids[2] = 5; /* padding must hold token 0 */
    CHECK_ERR(cllm_batch_validate(b), 0);
    b->input_ids[2] = 0;
    b->attention_mask[0] = 0.5f;
    CHECK_ERR(cllm_batch_validate(b), 0);
    b->attention_mask[0] = 0.0f;
    uint32_t *saved = b->target_ids;
    b->target_ids = NULL;
    CHECK_ERR(cllm_batch_validate(b), 0);
    b->target_ids = saved;
    cllm_batch_free(b);
}

static void bad_training(void)
{
    printf("-- bad_training\n");
    CLLMConfig mc = tr_tiny_config();
    CLLMModel *m = cllm_create_model(&mc);
    CLLMTrainingConfig tc = tr_training_config(1e-3f);
    CHECK_NULL_ERR(cllm_training_init(NULL, &tc));
    CHECK_NULL_ERR(cllm_training_init(m, NULL));
    snprintf(tc.optimizer, sizeof tc.optimizer, "%s", "lion");
    CHECK_NULL_ERR(cllm_training_init(m, &tc));
    tc = tr_training_config(1e-3f);
    memset(tc.optimizer, 'a', sizeof tc.optimizer); /* no NUL */
    CHECK_NULL_ERR(cllm_training_init(m, &tc));
    tc = tr_training_config(1e-3f);
    snprintf(tc.lr_scheduler, sizeof tc.lr_scheduler, "%s", "exponential");
    CHECK_NULL_ERR(cllm_training_init(m, &tc));
    tc = tr_training_config(1e-3f);
    snprintf(tc.lr_scheduler, sizeof tc.lr_scheduler, "%s", "cosine");
    tc.num_epochs = 0;
    tc.max_steps = 0;
    CHECK_NULL_ERR(cllm_training_init(m, &tc)); /* no length for the decay */
    tc = tr_training_config(-1.0f);
    CHECK_NULL_ERR(cllm_training_init(m, &tc));
    tc = tr_training_config(1e-3f);
    tc.gradient_accumulation_steps = -2;
    CHECK_NULL_ERR(cllm_training_init(m, &tc));
    tc = tr_training_config(1e-3f);
    tc.warmup_steps = -1;
    CHECK_NULL_ERR(cllm_training_init(m, &tc));
    tc = tr_training_config(1e-3f);
    tc.gradient_clip = -1.0f;
    CHECK_NULL_ERR(cllm_training_init(m, &tc));
    cllm_training_free(NULL);
    CHECK_ERR(cllm_training_save_checkpoint(NULL, "x"), -1);
    CHECK_ERR(cllm_training_load_checkpoint(NULL, "x"), -1);
    cllm_free_model(m);
}

static void bad_systems(void)
{
    printf("-- bad_systems\n");
    TrSetup s = tr_setup(2, 1e-3f);
    if (s.sys == NULL) {
        tr_teardown(&s);
        return;
    }
    CHECK_NULL_ERR(threaded_training_create(NULL, s.iter, 0));
    CHECK_NULL_ERR(threaded_training_create(s.training, NULL, 0));
    CHECK_NULL_ERR(threaded_training_create(s.training, s.iter, -1));
    CHECK_NULL_ERR(threaded_training_create(s.training, s.iter, 1 << 20));
    /* Rows longer than the model's context (32). */
    CLLMBatchIterator *long_rows = cllm_batch_iterator_create(s.tokens, 500, 2, 64, 0, 0);
    CHECK_NULL_ERR(threaded_training_create(s.training, long_rows, 1));
    cllm_batch_iterator_free(long_rows);
    /* Tokens outside the vocabulary of 256. */
    uint32_t big[40];
    for (int i = 0; i < 40; i++)
        big[i] = (uint32_t)(i * 10);
    CLLMBatchIterator *oov = cllm_batch_iterator_create(big, 40, 1, 8, 0, 0);
    CHECK_NULL_ERR(threaded_training_create(s.training, oov, 1));
    /* The optimizer may not change after init. */
    snprintf(s.training->config.optimizer, sizeof s.training->config.optimizer, "%s", "sgd");
    CHECK_NULL_ERR(threaded_training_create(s.training, s.iter, 1));
    snprintf(s.training->config.optimizer, sizeof s.training->config.optimizer, "%s", "unknown");
    CHECK_NULL_ERR(threaded_training_create(s.training, s.iter, 1));
    snprintf(s.training->config.optimizer, sizeof s.training->config.optimizer, "%s", "adamw");

    CHECK_ERR(threaded_train_epoch(NULL), -1);
    CHECK_ERR(threaded_train_epoch_lockfree(NULL, 0), -1);
    CHECK_ERR(threaded_training_get_gradient_norm(NULL), -1);
    CHECK_ERR(threaded_training_get_num_workers(NULL), -1);
    int n;
    float l;
    CHECK_ERR(threaded_training_get_sphere_stats(NULL, 0, &n, &l), -1);
    CHECK_ERR(threaded_training_get_sphere_stats(s.sys, -1, &n, &l), -1);
    CHECK_ERR(threaded_training_get_sphere_stats(s.sys, 2, &n, &l), -1);
    CHECK(threaded_training_get_sphere_stats(s.sys, 0, NULL, NULL) == 0);
    CHECK_ERR(threaded_training_evaluate(NULL, s.iter), -1);
    CHECK_ERR(threaded_training_evaluate(s.sys, NULL), -1);
    CHECK_ERR(threaded_training_evaluate(s.sys, oov), -1);
    CHECK_ERR(threaded_training_get_params(NULL, NULL, 0), -1);
    CHECK_ERR(threaded_training_set_params(s.sys, NULL, 5), -1);
    threaded_training_print_stats(NULL);
    threaded_training_free(NULL);
    cllm_batch_iterator_free(oov);
    tr_teardown(&s);

    /* max_steps: the epoch stops there; the next one is refused. */
    CLLMConfig mc = tr_tiny_config();
    CLLMModel *m = cllm_create_model(&mc);
    CLLMTrainingConfig tc = tr_training_config(1e-3f);
    tc.max_steps = 2;
    CLLMTraining *t = cllm_training_init(m, &tc);
    size_t nt;
    uint32_t *tokens = tr_corpus(4, &nt);
    CLLMBatchIterator *it = cllm_batch_iterator_create(tokens, nt, 2, 16, 0, 0);
    ThreadedTrainingSystem *sys = threaded_training_create(t, it, 2);
    CHECKF(sys != NULL, "%s", tu_err());
    CHECK(threaded_train_epoch(sys) > 0.0f);
    CHECK_EQ_I64(t->current_step, 2);
    CHECK_ERR(threaded_train_epoch(sys), -1);
    threaded_training_free(sys);

    /* An absurd accumulation count is one step per epoch, not an abort. */
    tc = tr_training_config(1e-3f);
    tc.gradient_accumulation_steps = INT32_MAX;
    CLLMTraining *t2 = cllm_training_init(m, &tc);
    sys = threaded_training_create(t2, it, 2);
    CHECKF(sys != NULL, "%s", tu_err());
    CHECK(threaded_train_epoch(sys) > 0.0f);
    CHECK_EQ_I64(t2->current_step, 1);
    threaded_training_free(sys);
    cllm_training_free(t2);

    cllm_batch_iterator_free(it);
    cllm_training_free(t);
    cllm_free_model(m);
    free(tokens);
}

static size_t zero_params(void *u)
{
    (void)u;
    return 0;
}

static size_t huge_params(void *u)
{
    (void)u;
    return (size_t)1 << 40;
}

static float never_called(void *u, const float *p, size_t n, const CLLMBatch *b, float *g)
{
    (void)u, (void)p, (void)n, (void)b, (void)g;
    return 0.0f;
}

static void bad_custom_models(void)
{
    printf("-- bad_custom_models\n");
    uint32_t tokens[20] = {0};
    CLLMBatchIterator *it = cllm_batch_iterator_create(tokens, 20, 2, 4, 0, 0);
    CLLMTrainingConfig tc = tr_training_config(1e-3f);
    CLLMModelCallbacks cb = {0};
    CHECK_NULL_ERR(threaded_training_create_custom(NULL, &tc, it, 1));
    CHECK_NULL_ERR(threaded_training_create_custom(&cb, &tc, it, 1)); /* NULL callbacks */
    cb.num_params = zero_params;
    CHECK_NULL_ERR(threaded_training_create_custom(&cb, &tc, it, 1)); /* no forward_backward */
    CHECK_NULL_ERR(threaded_training_create_custom(&cb, NULL, it, 1));
    cb.num_params = huge_params; /* 4 TiB of parameters: refused, not an abort */
    cb.forward_backward = never_called;
    CHECK_NULL_ERR(threaded_training_create_custom(&cb, &tc, it, 1));
    cllm_batch_iterator_free(it);
}

static void bad_generation(void)
{
    printf("-- bad_generation\n");
    CLLMConfig mc = tr_tiny_config();
    CLLMModel *m = cllm_create_model(&mc);
    uint32_t prompt[2] = {'a', 300};
    uint32_t out[8];
    char text[16];
    CHECK_ERR(cllm_generate_tokens(NULL, prompt, 1, 4, 1.0f, 1, out, 8), -1);
    CHECK_ERR(cllm_generate_tokens(m, NULL, 1, 4, 1.0f, 1, out, 8), -1);
    CHECK_ERR(cllm_generate_tokens(m, prompt, 0, 4, 1.0f, 1, out, 8), -1);
    CHECK_ERR(cllm_generate_tokens(m, prompt, 2, 4, 1.0f, 1, out, 8), -1); /* 300 >= 256 */
    CHECK_ERR(cllm_generate_tokens(m, prompt, 1, 9, 1.0f, 1, out, 8), -1); /* out too small */
    CHECK_ERR(cllm_generate_tokens(m, prompt, 1, 4, -1.0f, 1, out, 8), -1);
    CHECK_EQ_I64(cllm_generate_tokens(m, prompt, 1, 4, 0.0f, 1, out, 8), 4);
    CHECK_ERR(cllm_generate_text(m, NULL, 4, 1.0f, 1, text, sizeof text), -1);
    CHECK_ERR(cllm_generate_text(m, "ab", 16, 1.0f, 1, text, sizeof text), -1); /* no room for the NUL */
    CHECK_EQ_I64(cllm_generate_text(m, "ab", 15, 1.0f, 1, text, sizeof text), 15);
    CHECK_EQ_I64(strlen(text) <= 15, 1);
    CHECK_ERR(cllm_model_save(m, NULL), -1);
    CHECK_ERR(cllm_model_save(NULL, "/tmp/x.safetensors"), -1);
    CHECK_ERR(cllm_model_save(m, "/nonexistent-dir/x.safetensors"), -1);
    CHECK_NULL_ERR(cllm_model_load(NULL));
    CHECK_NULL_ERR(cllm_model_load("/nonexistent-dir/x.safetensors"));
    char path[] = "/tmp/cllm_bad_ckpt_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) {
        const char junk[] = "\x10\x00\x00\x00\x00\x00\x00\x00{not json at all";
        CHECK(write(fd, junk, sizeof junk) == (ssize_t)sizeof junk);
        close(fd);
        CHECK_NULL_ERR(cllm_model_load(path));
        unlink(path);
    }
    /* A tiny file whose metadata claims a model of 2^31 parameters and has
     * no tensors: refused from the header, without allocating the model. */
    char big[] = "/tmp/cllm_big_ckpt_XXXXXX";
    fd = mkstemp(big);
    CHECK(fd >= 0);
    if (fd >= 0) {
        const char meta[] = "{\"__metadata__\":{\"format\":\"cllm-checkpoint-1\",\"model\":\"transformer\","
                            "\"vocab_size\":\"256\",\"embedding_dim\":\"8192\",\"num_layers\":\"2\","
                            "\"num_heads\":\"8\",\"ff_dim\":\"32768\",\"max_seq_len\":\"64\"}}";
        uint64_t len = sizeof meta - 1;
        CHECK(write(fd, &len, sizeof len) == (ssize_t)sizeof len);
        CHECK(write(fd, meta, len) == (ssize_t)len);
        close(fd);
        CHECK_NULL_ERR(cllm_model_load(big));
        CHECKF(strstr(tu_err(), "missing") != NULL, "%s", tu_err());
        unlink(big);
    }
    /* A long context is fine for generation: activations are sized to
     * the prompt and the tokens asked for, not to max_seq_len. */
    CLLMConfig lc = {256, 64, 2, 4, 0, 16384, 0.0f};
    CLLMModel *lm = cllm_create_model(&lc);
    CHECKF(lm != NULL, "%s", tu_err());
    CHECK_EQ_I64(cllm_generate_text(lm, "ab", 4, 1.0f, 1, text, sizeof text), 4);
    cllm_free_model(lm);
    cllm_free_model(m);
}

int main(void)
{
    tu_begin(120);
    bad_models();
    bad_batches();
    bad_training();
    bad_systems();
    bad_custom_models();
    bad_generation();
    return tu_finish("test_training_bad_input");
}
