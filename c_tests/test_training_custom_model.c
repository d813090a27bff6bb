/* test_training_custom_model.c: a model written in C, trained through the
 * callback table with the library's optimizers and reduction.
 *
 *   custom_linear_model_learns_known_map
 *       The token stream alternates x, 1000 + y with y = 3x + 7. The model
 *       has two parameters (w, c) and predicts y = w x + c at positions
 *       whose input is an x; trained with AdamW and cosine decay it finds
 *       w = 3 and c = 7. The callback runs on several workers at once
 *       (counted with an atomic; its gradient buffer arrives zeroed).
 *   custom_model_bit_identical_across_threads
 *       The same training at 1 and 2 threads gives bit-identical params.
 *   custom_model_failure_fails_the_epoch
 *       A callback returning NaN fails the epoch with -1 and a message,
 *       the parameters are untouched, and the next epoch works.
 *   custom_model_params_round_trip
 *       set_params / get_params, and evaluate without training.
 */
#include "test_util.h"

#include <math.h>

typedef struct {
    atomic_long calls;
    atomic_long nonzero_grads_in;
    atomic_int fail;
    float init_w;
    /* Set by custom_model_callbacks_may_not_wait_on_their_own_epoch. */
    ThreadedTrainingSystem *_Atomic reenter;
    atomic_int reentry_refused;
    atomic_int reentry_stats_ok;
} LinearModel;

static size_t lin_num_params(void *user)
{
    (void)user;
    return 2;
}

static void lin_init(void *user, float *params, size_t n, uint64_t seed)
{
    (void)seed;
    LinearModel *m = user;
    CHECK(n == 2);
    params[0] = m->init_w;
    params[1] = 0.0f;
}

static float lin_forward_backward(void *user, const float *params, size_t n, const CLLMBatch *batch, float *grads)
{
    LinearModel *m = user;
    atomic_fetch_add(&m->calls, 1);
    if (grads[0] != 0.0f || grads[1] != 0.0f)
        atomic_fetch_add(&m->nonzero_grads_in, 1);
    if (atomic_load(&m->fail))
        return NAN;
    ThreadedTrainingSystem *self = atomic_load(&m->reenter);
    if (self != NULL) {
        /* Calls that would wait on this very epoch are refused... */
        float p[2];
        if (threaded_training_get_params(self, p, 2) == -1 && threaded_train_epoch(self) == -1.0f &&
            threaded_training_evaluate(self, NULL) == -1.0f)
            atomic_fetch_add(&m->reentry_refused, 1);
        /* ...reading the counters is fine. */
        int batches;
        if (threaded_training_get_sphere_stats(self, 0, &batches, NULL) == 0 &&
            threaded_training_get_num_workers(self) > 0)
            atomic_fetch_add(&m->reentry_stats_ok, 1);
    }
    (void)n;
    double loss = 0.0, gw = 0.0, gc = 0.0;
    int count = 0;
    for (uint32_t t = 0; t < batch->seq_len; t++) {
        uint32_t x = batch->input_ids[t], y = batch->target_ids[t];
        if (batch->attention_mask[t] == 0.0f || x >= 1000 || y < 1000)
            continue;
        double err = params[0] * (double)x + params[1] - (double)(y - 1000);
        loss += err * err;
        gw += 2.0 * err * x;
        gc += 2.0 * err;
        count++;
    }
    if (count == 0)
        return 0.0f;
    grads[0] = (float)(gw / count);
    grads[1] = (float)(gc / count);
    return (float)(loss / count);
}

static uint32_t *linear_stream(size_t *n)
{
    size_t pairs = 20 * 12;
    uint32_t *t = malloc(2 * pairs * sizeof *t);
    for (size_t i = 0; i < pairs; i++) {
        uint32_t x = (uint32_t)((i * 7) % 20);
        t[2 * i] = x;
        t[2 * i + 1] = 1000 + 3 * x + 7;
    }
    *n = 2 * pairs;
    return t;
}

static CLLMModelCallbacks linear_table(LinearModel *m)
{
    CLLMModelCallbacks cb;
    cb.user_data = m;
    cb.num_params = lin_num_params;
    cb.forward_backward = lin_forward_backward;
    cb.init_params = lin_init;
    return cb;
}

static CLLMTrainingConfig linear_config(void)
{
    CLLMTrainingConfig c = cllm_training_config_default();
    c.learning_rate = 0.3f;
    c.weight_decay = 0.0f;
    c.gradient_clip = 0.0f;
    c.num_epochs = 60;
    snprintf(c.lr_scheduler, sizeof c.lr_scheduler, "%s", "cosine");
    return c;
}

/* A system training model `m` on the linear stream (batches of 4 x 8). */
typedef struct {
    uint32_t *tokens;
    CLLMBatchIterator *it;
    ThreadedTrainingSystem *sys;
} LinearRun;

static LinearRun linear_run(LinearModel *m, int threads, int shuffle)
{
    LinearRun r;
    size_t n;
    r.tokens = linear_stream(&n);
    r.it = cllm_batch_iterator_create(r.tokens, n, 4, 8, shuffle, 0);
    CHECKF(r.it != NULL, "%s", tu_err());
    CLLMModelCallbacks cb = linear_table(m);
    CLLMTrainingConfig c = linear_config();
    r.sys = threaded_training_create_custom(&cb, &c, r.it, threads);
    CHECKF(r.sys != NULL, "%s", tu_err());
    return r;
}

static void linear_run_free(LinearRun *r)
{
    threaded_training_free(r->sys);
    cllm_batch_iterator_free(r->it);
    free(r->tokens);
}

/* Trains `epochs` epochs at `threads`; writes the params; returns the last loss. */
static float train_linear(int threads, int epochs, float params[2], LinearModel *m)
{
    LinearRun r = linear_run(m, threads, 1);
    ThreadedTrainingSystem *sys = r.sys;
    float loss = -1.0f;
    for (int e = 0; sys != NULL && e < epochs; e++) {
        loss = threaded_train_epoch(sys);
        CHECKF(loss >= 0.0f, "epoch %d: %s", e, tu_err());
    }
    CHECK_EQ_I64(threaded_training_get_params(sys, params, 2), 2);
    linear_run_free(&r);
    return loss;
}

static void custom_linear_model_learns_known_map(void)
{
    printf("-- custom_linear_model_learns_known_map\n");
    LinearModel m = {.init_w = 0.5f};
    float p[2] = {0, 0};
    float loss = train_linear(2, 60, p, &m);
    printf("w = %f, c = %f, loss %g, %ld calls\n", (double)p[0], (double)p[1], (double)loss, atomic_load(&m.calls));
    CHECKF(fabsf(p[0] - 3.0f) < 0.02f && fabsf(p[1] - 7.0f) < 0.2f, "w %f c %f", (double)p[0], (double)p[1]);
    CHECKF(loss < 0.05f, "final loss %f", (double)loss);
    CHECK(atomic_load(&m.calls) > 0);
    CHECK_EQ_I64(atomic_load(&m.nonzero_grads_in), 0);
}

static void custom_model_bit_identical_across_threads(void)
{
    printf("-- custom_model_bit_identical_across_threads\n");
    LinearModel m1 = {.init_w = 0.5f}, m2 = {.init_w = 0.5f};
    float a[2], b[2];
    train_linear(1, 5, a, &m1);
    train_linear(2, 5, b, &m2);
    CHECK(memcmp(a, b, sizeof a) == 0);
}

static void custom_model_failure_fails_the_epoch(void)
{
    printf("-- custom_model_failure_fails_the_epoch\n");
    LinearModel m = {.init_w = 0.5f};
    LinearRun r = linear_run(&m, 2, 0);
    ThreadedTrainingSystem *sys = r.sys;
    atomic_store(&m.fail, 1);
    CHECK_ERR(threaded_train_epoch(sys), -1);
    float p[2];
    CHECK_EQ_I64(threaded_training_get_params(sys, p, 2), 2);
    CHECK(p[0] == 0.5f && p[1] == 0.0f);
    atomic_store(&m.fail, 0);
    CHECK(threaded_train_epoch(sys) >= 0.0f);
    linear_run_free(&r);
}

static void custom_model_params_round_trip(void)
{
    printf("-- custom_model_params_round_trip\n");
    LinearModel m = {.init_w = 0.0f};
    LinearRun r = linear_run(&m, 2, 0);
    ThreadedTrainingSystem *sys = r.sys;
    const float exact[2] = {3.0f, 7.0f};
    CHECK(threaded_training_set_params(sys, exact, 2) == 0);
    float loss = threaded_training_evaluate(sys, r.it);
    CHECKF(loss == 0.0f, "loss at the exact map %f (%s)", (double)loss, tu_err());
    float back[2];
    CHECK_EQ_I64(threaded_training_get_params(sys, back, 2), 2);
    CHECK(memcmp(back, exact, sizeof back) == 0);
    CHECK_ERR(threaded_training_set_params(sys, exact, 3), -1);
    CHECK_ERR(threaded_training_get_params(sys, back, 1), -1);
    linear_run_free(&r);
}

static void custom_model_callbacks_may_not_wait_on_their_own_epoch(void)
{
    printf("-- custom_model_callbacks_may_not_wait_on_their_own_epoch\n");
    LinearModel m = {.init_w = 0.5f};
    LinearRun r = linear_run(&m, 2, 0);
    atomic_store(&m.reenter, r.sys);
    CHECK(threaded_train_epoch(r.sys) >= 0.0f);
    long calls = atomic_load(&m.calls);
    CHECK(calls > 0);
    CHECK_EQ_I64(atomic_load(&m.reentry_refused), calls);
    CHECK_EQ_I64(atomic_load(&m.reentry_stats_ok), calls);
    linear_run_free(&r);
}

int main(void)
{
    tu_begin(120);
    custom_linear_model_learns_known_map();
    custom_model_bit_identical_across_threads();
    custom_model_failure_fails_the_epoch();
    custom_model_params_round_trip();
    custom_model_callbacks_may_not_wait_on_their_own_epoch();
    return tu_finish("test_training_custom_model");
}
