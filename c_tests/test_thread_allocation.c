/* test_thread_allocation.c
 *
 * The original thread-allocation rule (tests/unit/test_thread_allocation.c
 * of the original project): 12 symmetry groups onto C cores.
 *   - 1 core: all 12 on it; 2: 6 each; 4: 3 each; 6: 2 each; 12: one each,
 *     group t on worker t; 24: the first 12 workers one group each, the
 *     others none;
 *   - for W <= 12, group g belongs to worker g mod W; with more workers,
 *     group g belongs to worker g;
 *   - every group is covered exactly once for 1,2,3,4,5,6,8,12,16,24 cores,
 *     and kissing_spheres_worker_for_group agrees with
 *     kissing_spheres_groups_for_worker;
 *   - the snprintf-like output contract (count returned even when the
 *     capacity is smaller; nothing written past capacity; NULL/0 queries
 *     the count);
 *   - bad input -> -1 with an error message;
 *   - get_num_cpu_cores() >= 1, equals cllm_usable_cpus(), and is at most
 *     the CPUs in this process's affinity mask.
 */
#include "test_util.h"

#include <sched.h>

static int groups_of(int cores, int worker, int out[12])
{
    for (int i = 0; i < 12; i++)
        out[i] = -100;
    return kissing_spheres_groups_for_worker(cores, worker, out, 12);
}

static void per_core_counts(void)
{
    struct {
        int cores, each;
    } cases[] = {{1, 12}, {2, 6}, {4, 3}, {6, 2}, {12, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int t = 0; t < cases[i].cores; t++) {
            int g[12];
            int n = groups_of(cases[i].cores, t, g);
            CHECKF(n == cases[i].each, "%d cores: worker %d has %d groups, expected %d", cases[i].cores, t, n,
                   cases[i].each);
            for (int k = 0; k < n && k < 12; k++)
                CHECKF(g[k] >= 0 && g[k] < 12 && g[k] % cases[i].cores == t,
                       "%d cores: worker %d was given group %d (expected g mod %d == %d)", cases[i].cores, t, g[k],
                       cases[i].cores, t);
        }
    }
    /* 12 cores: group t on thread t */
    for (int t = 0; t < 12; t++) {
        int g[12];
        int n = groups_of(12, t, g);
        CHECKF(n == 1 && g[0] == t, "12 cores: worker %d has %d groups, first %d (expected exactly group %d)", t, n,
               g[0], t);
    }
    /* 24 cores: the first 12 get one group (their own index), the rest none */
    for (int t = 0; t < 24; t++) {
        int g[12];
        int n = groups_of(24, t, g);
        if (t < 12)
            CHECKF(n == 1 && g[0] == t, "24 cores: worker %d has %d groups (first %d), expected group %d", t, n, g[0],
                   t);
        else
            CHECKF(n == 0, "24 cores: worker %d has %d groups, expected none", t, n);
    }
    /* 1 core: all 12, each once */
    int g[12];
    int n = groups_of(1, 0, g);
    bool seen[12] = {false};
    for (int k = 0; k < n && k < 12; k++)
        if (g[k] >= 0 && g[k] < 12)
            seen[g[k]] = true;
    for (int k = 0; k < 12; k++)
        CHECKF(seen[k], "1 core: group %d missing", k);
}

static void coverage(void)
{
    static const int cores_list[] = {1, 2, 3, 4, 5, 6, 8, 12, 16, 24};
    for (size_t i = 0; i < sizeof cores_list / sizeof cores_list[0]; i++) {
        int cores = cores_list[i];
        int covered[12] = {0};
        int total = 0;
        for (int t = 0; t < cores; t++) {
            int g[12];
            int n = groups_of(cores, t, g);
            CHECKF(n >= 0 && n <= 12, "%d cores: worker %d: count %d", cores, t, n);
            for (int k = 0; k < n && k < 12; k++) {
                CHECKF(g[k] >= 0 && g[k] < 12, "%d cores: worker %d: group id %d", cores, t, g[k]);
                if (g[k] >= 0 && g[k] < 12) {
                    covered[g[k]]++;
                    int owner = kissing_spheres_worker_for_group(cores, g[k]);
                    CHECKF(owner == t, "%d cores: worker_for_group(%d)=%d but groups_for_worker(%d) lists it", cores,
                           g[k], owner, t);
                }
            }
            total += n > 0 ? n : 0;
        }
        for (int k = 0; k < 12; k++)
            CHECKF(covered[k] == 1, "%d cores: group %d covered %d times", cores, k, covered[k]);
        CHECKF(total == 12, "%d cores: %d group assignments in total", cores, total);
        for (int grp = 0; grp < 12; grp++) {
            int expected = cores <= 12 ? grp % cores : grp;
            CHECKF(kissing_spheres_worker_for_group(cores, grp) == expected, "worker_for_group(%d, %d)=%d, expected %d",
                   cores, grp, kissing_spheres_worker_for_group(cores, grp), expected);
        }
    }
}

static void output_contract(void)
{
    /* capacity smaller than the count: returns the count, writes capacity */
    int buf[4] = {-7, -7, -7, -7};
    int n = kissing_spheres_groups_for_worker(1, 0, buf, 2);
    CHECKF(n == 12, "groups_for_worker(1, 0, buf, 2) returned %d, expected 12 (the full count)", n);
    CHECKF(buf[0] >= 0 && buf[0] < 12 && buf[1] >= 0 && buf[1] < 12, "the first 2 groups were not written");
    CHECKF(buf[2] == -7 && buf[3] == -7, "groups_for_worker wrote past the capacity");
    CHECKF(kissing_spheres_groups_for_worker(2, 1, NULL, 0) == 6, "groups_for_worker(2, 1, NULL, 0) should count 6");
    CHECKF(kissing_spheres_groups_for_worker(24, 20, NULL, 0) == 0, "groups_for_worker(24, 20, NULL, 0) should be 0");
}

static void bad_input(void)
{
    int buf[12];
    CHECK_ERR(kissing_spheres_groups_for_worker(0, 0, buf, 12), -1);
    CHECK_ERR(kissing_spheres_groups_for_worker(-1, 0, buf, 12), -1);
    CHECK_ERR(kissing_spheres_groups_for_worker(2, 2, buf, 12), -1);
    CHECK_ERR(kissing_spheres_groups_for_worker(2, -1, buf, 12), -1);
    CHECK_ERR(kissing_spheres_groups_for_worker(2, 0, buf, -1), -1);
    CHECK_ERR(kissing_spheres_groups_for_worker(2, 0, NULL, 5), -1);
    CHECK_ERR(kissing_spheres_worker_for_group(0, 0), -1);
    CHECK_ERR(kissing_spheres_worker_for_group(-3, 0), -1);
    CHECK_ERR(kissing_spheres_worker_for_group(2, 12), -1);
    CHECK_ERR(kissing_spheres_worker_for_group(2, -1), -1);
}

static void cpu_count(void)
{
    int n = get_num_cpu_cores();
    int usable = cllm_usable_cpus();
    CHECKF(n >= 1, "get_num_cpu_cores()=%d", n);
    CHECKF(n == usable, "get_num_cpu_cores()=%d, cllm_usable_cpus()=%d", n, usable);
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int mask = CPU_COUNT(&set);
        CHECKF(usable <= mask, "cllm_usable_cpus()=%d > %d CPUs in the affinity mask", usable, mask);
        printf("usable CPUs: %d (affinity mask: %d, online: %ld)\n", usable, mask, sysconf(_SC_NPROCESSORS_ONLN));
    }
    /* A system built with defaults uses that many workers. */
    KissingSpheresSystem *sys = tu_create_levels(2);
    if (sys != NULL) {
        CHECKF(kissing_spheres_worker_threads(sys) == usable, "create(2): %d workers, %d usable CPUs",
               kissing_spheres_worker_threads(sys), usable);
        kissing_spheres_free(sys);
    }
}

int main(void)
{
    tu_begin(60);
    per_core_counts();
    coverage();
    output_contract();
    bad_input();
    cpu_count();
    return tu_finish("test_thread_allocation");
}
