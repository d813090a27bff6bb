/* tr_test_util.h: shared helpers of the training C tests
 * (c_tests/test_training_*.c). Include it right after test_util.h.
 *
 *   tr_corpus(&n)            a malloc'ed byte-token stream of a short,
 *                            repetitive English text (n tokens)
 *   tr_tiny_config()         a small transformer: vocab 256, C=32, 1 layer,
 *                            2 heads, ff 64, context 32
 *   tr_training_config(lr)   the default training config with AdamW at lr
 *   TrSetup, tr_setup(threads), tr_teardown()  model + training + iterator
 *                            (batch 4 x 32) + system over tr_corpus; NULL
 *                            members are failed checks at the caller's line
 */
#ifndef CLLM_C_TESTS_TR_TEST_UTIL_H
#define CLLM_C_TESTS_TR_TEST_UTIL_H

#ifndef CLLM_C_TESTS_TEST_UTIL_H
#error "include test_util.h before tr_test_util.h"
#endif

static const char tr_text[] = "the quick brown fox jumps over the lazy dog. "
                              "a small model learns the words that follow each other. ";

static inline uint32_t *tr_corpus(size_t repeats, size_t *n)
{
    size_t len = sizeof tr_text - 1;
    uint32_t *t = malloc(len * repeats * sizeof *t);
    if (t == NULL)
        abort();
    for (size_t r = 0; r < repeats; r++)
        for (size_t i = 0; i < len; i++)
            t[r * len + i] = (unsigned char)tr_text[i];
    *n = len * repeats;
    return t;
}

static inline CLLMConfig tr_tiny_config(void)
{
    CLLMConfig c = {256, 32, 1, 2, 64, 32, 0.0f};
    return c;
}

static inline CLLMTrainingConfig tr_training_config(float lr)
{
    CLLMTrainingConfig c = cllm_training_config_default();
    c.learning_rate = lr;
    snprintf(c.optimizer, sizeof c.optimizer, "%s", "adamw");
    c.weight_decay = 0.0f;
    return c;
}

typedef struct {
    CLLMModel *model;
    CLLMTraining *training;
    CLLMBatchIterator *iter;
    ThreadedTrainingSystem *sys;
    uint32_t *tokens;
} TrSetup;

/* The original app's flow up to threaded_training_create(training, iter, threads). */
static inline TrSetup tr_setup_at(const char *file, int line, int threads, float lr)
{
    TrSetup s = {0};
    CLLMConfig mc = tr_tiny_config();
    s.model = cllm_create_model(&mc);
    tu_check(s.model != NULL, file, line, "cllm_create_model", "%s", tu_err());
    CLLMTrainingConfig tc = tr_training_config(lr);
    s.training = cllm_training_init(s.model, &tc);
    tu_check(s.training != NULL, file, line, "cllm_training_init", "%s", tu_err());
    if (s.training == NULL)
        return s;
    size_t n = 0;
    s.tokens = tr_corpus(12, &n);
    s.training->tokens = s.tokens;
    s.training->num_tokens = n;
    s.training->config.batch_size = 4; /* the app may lower it */
    s.iter = cllm_batch_iterator_create(s.training->tokens, s.training->num_tokens,
                                        (uint32_t)s.training->config.batch_size, 32, 0, 0);
    tu_check(s.iter != NULL, file, line, "cllm_batch_iterator_create", "%s", tu_err());
    s.sys = threaded_training_create(s.training, s.iter, threads);
    tu_check(s.sys != NULL, file, line, "threaded_training_create", "%s", tu_err());
    return s;
}
#define tr_setup(threads, lr) tr_setup_at(__FILE__, __LINE__, (threads), (lr))

static inline void tr_teardown(TrSetup *s)
{
    threaded_training_free(s->sys);
    cllm_batch_iterator_free(s->iter);
    cllm_training_free(s->training);
    cllm_free_model(s->model);
    free(s->tokens);
    memset(s, 0, sizeof *s);
}

#endif /* CLLM_C_TESTS_TR_TEST_UTIL_H */
