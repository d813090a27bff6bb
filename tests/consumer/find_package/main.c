/* Smallest real user of an installed libcllm: checks the version, runs a
 * few items on a 2-level kissing-spheres system and checks that every item
 * was processed exactly once. Exit status 0 on success. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cllm_kissing_spheres_threading.h"

#define NUM_ITEMS 64

struct tally {
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t sum;
};

static void count_item(uint64_t item, int sphere_id, void *user_data) {
    struct tally *t = user_data;
    (void)sphere_id;
    atomic_fetch_add(&t->count, 1);
    atomic_fetch_add(&t->sum, item);
}

static int fail(const char *what) {
    const char *err = cllm_last_error();
    fprintf(stderr, "consumer: %s failed: %s\n", what, err ? err : "(no error message)");
    return 1;
}

int main(void) {
    const char *version = cllm_version();
    if (version == NULL || strcmp(version, CLLM_VERSION_STRING) != 0) {
        fprintf(stderr, "consumer: library version %s != header version %s\n",
                version ? version : "(null)", CLLM_VERSION_STRING);
        return 1;
    }

    struct tally tally;
    atomic_init(&tally.count, 0);
    atomic_init(&tally.sum, 0);

    KissingSpheresSystem *sys = kissing_spheres_create(2);
    if (sys == NULL) return fail("kissing_spheres_create(2)");

    uint64_t items[NUM_ITEMS];
    for (int i = 0; i < NUM_ITEMS; i++) items[i] = (uint64_t)i + 1;

    int rc = 0;
    if (kissing_spheres_set_work_callback(sys, count_item, &tally) != KS_OK) {
        rc = fail("kissing_spheres_set_work_callback");
    } else if (kissing_spheres_start(sys) != KS_OK) {
        rc = fail("kissing_spheres_start");
    } else if (kissing_spheres_distribute_work(sys, items, NUM_ITEMS) != KS_OK) {
        rc = fail("kissing_spheres_distribute_work");
    } else if (kissing_spheres_wait(sys, 60000) != KS_OK) {
        rc = fail("kissing_spheres_wait");
    }
    kissing_spheres_free(sys);
    if (rc != 0) return rc;

    uint64_t count = atomic_load(&tally.count);
    uint64_t sum = atomic_load(&tally.sum);
    uint64_t want_sum = (uint64_t)NUM_ITEMS * (NUM_ITEMS + 1) / 2;
    if (count != NUM_ITEMS || sum != want_sum) {
        fprintf(stderr, "consumer: processed %llu items (sum %llu), expected %d (sum %llu)\n",
                (unsigned long long)count, (unsigned long long)sum, NUM_ITEMS,
                (unsigned long long)want_sum);
        return 1;
    }
    printf("consumer: libcllm %s processed %llu items\n", version, (unsigned long long)count);
    return 0;
}
