/* test_training_app_flow.c: the original app's training flow
 * (app/training_thread.c) against libcllm, and the defects it suffered.
 *
 *   app_flow_three_epochs      model, training, tokens, iterator,
 *                              threaded_training_create(training, iter, 0),
 *                              three epochs (the original hung in the
 *                              second), per-sphere stats for spheres 0..11
 *                              after each (0-based worker ids; ids past the
 *                              workers fail cleanly), gradient norm finite
 *                              and > 0, loss falling, the training fields
 *                              updated, free
 *   stats_count_every_batch    the workers' micro-batch counts add up to
 *                              every row of every batch (the original lost
 *                              all but the last batch per worker)
 *   free_in_any_order          model and training freed before the system:
 *                              the system still trains and frees cleanly
 *   run_to_run_bit_identity    two runs at 2 threads and one at 1 thread
 *                              give bit-identical parameters
 */
#include "test_util.h"
#include "tr_test_util.h"

#include <math.h>

static void app_flow_three_epochs(void)
{
    printf("-- app_flow_three_epochs\n");
    TrSetup s = tr_setup(0, 3e-3f);
    if (s.sys == NULL) {
        tr_teardown(&s);
        return;
    }
    int workers = threaded_training_get_num_workers(s.sys);
    CHECKF(workers >= 1, "workers %d", workers);
    float first = 0, last = 0;
    for (int epoch = 0; epoch < 3; epoch++) {
        float loss = threaded_train_epoch(s.sys);
        CHECKF(isfinite(loss) && loss > 0.0f, "epoch %d loss %f: %s", epoch, (double)loss, tu_err());
        if (epoch == 0)
            first = loss;
        last = loss;
        int total_batches = 0;
        for (int sphere = 0; sphere < 12; sphere++) {
            int batches = -1;
            float avg = -1.0f;
            int rc = threaded_training_get_sphere_stats(s.sys, sphere, &batches, &avg);
            if (sphere < workers) {
                CHECKF(rc == 0, "sphere %d: %s", sphere, tu_err());
                CHECKF(batches >= 0 && isfinite(avg) && avg >= 0.0f, "sphere %d: %d batches, avg %f", sphere, batches,
                       (double)avg);
                total_batches += batches;
            } else {
                CHECK_ERR(threaded_training_get_sphere_stats(s.sys, sphere, &batches, &avg), -1);
            }
        }
        CHECKF(total_batches > 0, "no batch counted after epoch %d", epoch);
        float norm = threaded_training_get_gradient_norm(s.sys);
        CHECKF(isfinite(norm) && norm > 0.0f, "gradient norm %f", (double)norm);
        CHECK_EQ_I64(s.training->current_epoch, epoch + 1);
        CHECK(s.training->current_loss == loss);
        CHECK(s.training->best_loss <= loss);
    }
    CHECKF(last < first * 0.9f, "loss did not fall: %f -> %f", (double)first, (double)last);
    CHECK(s.training->current_step > 0);
    threaded_training_print_stats(s.sys);
    tr_teardown(&s);
}

static void stats_count_every_batch(void)
{
    printf("-- stats_count_every_batch\n");
    TrSetup s = tr_setup(2, 1e-3f);
    if (s.sys == NULL) {
        tr_teardown(&s);
        return;
    }
    CHECK(threaded_train_epoch(s.sys) > 0.0f);
    /* Every row with a valid position is one micro-batch. */
    long long rows = 0;
    cllm_batch_iterator_reset(s.iter);
    CLLMBatch *b;
    while ((b = cllm_batch_iterator_next(s.iter)) != NULL) {
        for (uint32_t r = 0; r < b->batch_size; r++)
            rows += b->attention_mask[r * b->seq_len] != 0.0f;
        cllm_batch_free(b);
    }
    long long counted = 0;
    for (int w = 0; w < threaded_training_get_num_workers(s.sys); w++) {
        int n = 0;
        CHECK(threaded_training_get_sphere_stats(s.sys, w, &n, NULL) == 0);
        counted += n;
    }
    CHECK_EQ_I64(counted, rows);
    tr_teardown(&s);
}

static void free_in_any_order(void)
{
    printf("-- free_in_any_order\n");
    TrSetup s = tr_setup(2, 1e-3f);
    if (s.sys == NULL) {
        tr_teardown(&s);
        return;
    }
    cllm_free_model(s.model);
    cllm_training_free(s.training);
    cllm_batch_iterator_free(s.iter);
    s.model = NULL;
    s.training = NULL;
    s.iter = NULL;
    float loss = threaded_train_epoch(s.sys);
    CHECKF(isfinite(loss) && loss > 0.0f, "loss %f: %s", (double)loss, tu_err());
    tr_teardown(&s);
}

static int64_t params_after_two_epochs(int threads, float **out)
{
    TrSetup s = tr_setup(threads, 3e-3f);
    int64_t n = -1;
    if (s.sys != NULL) {
        CHECK(threaded_train_epoch(s.sys) > 0.0f);
        CHECK(threaded_train_epoch(s.sys) > 0.0f);
        n = (int64_t)cllm_model_num_params(s.model);
        *out = malloc((size_t)n * sizeof **out);
        CHECK_EQ_I64(cllm_model_get_params(s.model, *out, (size_t)n), n);
    }
    tr_teardown(&s);
    return n;
}

static void run_to_run_bit_identity(void)
{
    printf("-- run_to_run_bit_identity\n");
    float *a = NULL, *b = NULL, *c = NULL;
    int64_t n = params_after_two_epochs(2, &a);
    CHECK_EQ_I64(params_after_two_epochs(2, &b), n);
    CHECK_EQ_I64(params_after_two_epochs(1, &c), n);
    if (a && b && c && n > 0) {
        CHECK(memcmp(a, b, (size_t)n * sizeof *a) == 0);
        CHECK(memcmp(a, c, (size_t)n * sizeof *a) == 0);
    }
    free(a);
    free(b);
    free(c);
}

int main(void)
{
    tu_begin(240);
    app_flow_three_epochs();
    stats_count_every_batch();
    free_in_any_order();
    run_to_run_bit_identity();
    return tu_finish("test_training_app_flow");
}
