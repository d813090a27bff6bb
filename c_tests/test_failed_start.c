/* A start that cannot create all its worker threads fails cleanly: it
 * returns -1 with a message, runs nothing, leaves every queued item in place
 * and leaves no thread behind; a later start runs everything exactly once.
 *
 * Thread creation is made to fail by lowering RLIMIT_AS just above what the
 * process uses, so that a new thread's stack cannot be mapped. Under
 * AddressSanitizer (which reserves terabytes of address space) the limit
 * cannot be applied, and the test says so and passes without checking. */
#include "test_util.h"

#include <sys/resource.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

enum { ITEMS = 5000, THREADS = 16 };

#ifndef UNDER_ASAN

static atomic_int runs[ITEMS];

static void count_run(uint64_t item, int sphere_id, void *user_data)
{
    (void)sphere_id;
    (void)user_data;
    atomic_fetch_add(&runs[item], 1);
}

/* Bytes of address space mapped now, from /proc/self/statm (pages). */
static long long mapped_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long long pages = -1;
    if (f != NULL) {
        if (fscanf(f, "%lld", &pages) != 1)
            pages = -1;
        fclose(f);
    }
    return pages < 0 ? -1 : pages * sysconf(_SC_PAGESIZE);
}
#endif

int main(void)
{
    tu_begin(60);
#ifdef UNDER_ASAN
    printf("skipped under AddressSanitizer: RLIMIT_AS cannot be lowered\n");
    return tu_finish("test_failed_start");
#else
    /* Worker stacks are 2 MiB unless RUST_MIN_STACK says otherwise; fix it
     * before the library creates its first thread, so that the limit below
     * means the same on every machine. */
    setenv("RUST_MIN_STACK", "2097152", 1);
    KissingSpheresOptions o = tu_options(2, THREADS);
    KissingSpheresSystem *sys = tu_create_opts(&o);
    if (sys == NULL)
        return tu_finish("test_failed_start");
    CHECK_EQ_I64(kissing_spheres_set_work_callback(sys, count_run, NULL), KS_OK);
    CHECK_EQ_I64(kissing_spheres_distribute_range(sys, 0, ITEMS), KS_OK);
    int threads_before = tu_os_thread_count();

    /* Room for about a dozen more 2 MiB thread stacks, not for 16. */
    struct rlimit old;
    CHECK(getrlimit(RLIMIT_AS, &old) == 0);
    long long used = mapped_bytes();
    CHECK(used > 0);
    struct rlimit tight = old;
    tight.rlim_cur = (rlim_t)(used + 3 * 8 * 1024 * 1024 + 4 * 1024 * 1024);
    CHECK(setrlimit(RLIMIT_AS, &tight) == 0);
    cllm_clear_error();
    int rc = kissing_spheres_start(sys);
    CHECK(setrlimit(RLIMIT_AS, &old) == 0);

    CHECK_EQ_I64(rc, KS_ERROR);
    CHECKF(tu_error_is_set(), "no error message after the failed start");
    printf("failed start: %s\n", tu_err());
    CHECK_EQ_I64(kissing_spheres_is_running(sys), 0);
    CHECK_EQ_I64(kissing_spheres_pending(sys), ITEMS);
    int ran = 0;
    for (int i = 0; i < ITEMS; i++)
        ran += atomic_load(&runs[i]);
    CHECKF(ran == 0, "%d items ran during the failed start", ran);
    CHECK_EQ_I64(tu_os_thread_count(), threads_before);

    /* With the limit back, the same system starts and runs everything once. */
    CHECK_EQ_I64(kissing_spheres_start(sys), KS_OK);
    CHECK_EQ_I64(kissing_spheres_wait(sys, 30000), KS_OK);
    CHECK_EQ_I64(kissing_spheres_stop(sys), KS_OK);
    int once = 0;
    for (int i = 0; i < ITEMS; i++)
        once += atomic_load(&runs[i]) == 1;
    CHECK_EQ_I64(once, ITEMS);
    kissing_spheres_free(sys);
    return tu_finish("test_failed_start");
#endif
}
