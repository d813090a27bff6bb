/* test_hierarchy_structure.c
 *
 * The shape of the sphere tree, against the original numbering
 * (root 0, level 1 = 1-12, level 2 = 13-156, level 3 = 157-1884):
 *   - create(1..4): num_levels, spheres_per_level (1, 12, 144, 1728; 0 for
 *     levels below the last), total (1, 13, 157, 1885);
 *   - for every sphere: id, level, parent (root -1), children (count and
 *     ids, ascending), siblings (11 for non-root spheres of full trees,
 *     none for the root), symmetry group (level-1 sphere g -> g-1, child c
 *     of a parent -> c, root -1), debug_name non-empty, initial state
 *     SPHERE_INITIALIZING, owner worker in range, stealing enabled, empty
 *     queue, zero counters;
 *   - kissing_spheres_create_dynamic(n) for n = 1, 2, 13, 64, 157, 200,
 *     1024: levels per the dynamic rule, n spheres, partial last level,
 *     n worker threads; create_dynamic(0) -> max(usable - 1, 1) threads;
 *   - kissing_spheres_hierarchy_levels at the rule's boundaries;
 *   - kissing_spheres_default_options values and
 *     kissing_spheres_create_with_options with num_spheres / num_levels.
 * The expected structure is computed here independently from the numbering.
 */
#include "test_util.h"

static const int level_offset[5] = {0, 1, 13, 157, 1885};

static int exp_level(int id)
{
    for (int l = 3; l >= 0; l--)
        if (id >= level_offset[l])
            return l;
    return 0;
}

static int exp_parent(int id)
{
    int l = exp_level(id);
    return l == 0 ? -1 : level_offset[l - 1] + (id - level_offset[l]) / 12;
}

static int exp_group(int id)
{
    int l = exp_level(id);
    return l == 0 ? -1 : (id - level_offset[l]) % 12;
}

/* Children of `id` in a tree of the first `total` spheres. */
static int exp_children(int id, int total, int out[12])
{
    int l = exp_level(id);
    if (l >= 3)
        return 0;
    int first = level_offset[l + 1] + (id - level_offset[l]) * 12;
    int n = 0;
    for (int k = 0; k < 12; k++)
        if (first + k < total)
            out[n++] = first + k;
    return n;
}

static int exp_siblings(int id, int total, int out[11])
{
    int p = exp_parent(id);
    if (p < 0)
        return 0;
    int ch[12];
    int nc = exp_children(p, total, ch);
    int n = 0;
    for (int k = 0; k < nc; k++)
        if (ch[k] != id)
            out[n++] = ch[k];
    return n;
}

/* The ids of sphere `id`'s `what` (children or siblings): one check of the
 * count, then, if it matches, one check per id. */
static void check_ids(const char *label, int id, const char *what, int n, const int *got, int exp_n, const int *exp)
{
    CHECKF(n == exp_n, "%s: sphere %d: num_%s=%d, expected %d", label, id, what, n, exp_n);
    if (n == exp_n) {
        for (int k = 0; k < exp_n; k++)
            CHECKF(got[k] == exp[k], "%s: sphere %d: %s[%d]=%d, expected %d", label, id, what, k, got[k], exp[k]);
    }
}

/* Verifies every sphere of `sys`, which should hold the first `total`
 * spheres of the numbering in `levels` levels run by `threads` workers
 * (threads <= 0: do not check the worker count). */
static void verify_tree(KissingSpheresSystem *sys, const char *label, int total, int levels, int threads)
{
    CHECKF(kissing_spheres_total_spheres(sys) == total, "%s: total_spheres=%d, expected %d", label,
           kissing_spheres_total_spheres(sys), total);
    CHECKF(kissing_spheres_num_levels(sys) == levels, "%s: num_levels=%d, expected %d", label,
           kissing_spheres_num_levels(sys), levels);
    int workers = kissing_spheres_worker_threads(sys);
    if (threads > 0)
        CHECKF(workers == threads, "%s: worker_threads=%d, expected %d", label, workers, threads);
    else
        CHECKF(workers >= 1, "%s: worker_threads=%d", label, workers);
    for (int l = 0; l < 4; l++) {
        int lo = level_offset[l], hi = level_offset[l + 1];
        int expected = total <= lo ? 0 : (total < hi ? total - lo : hi - lo);
        CHECKF(kissing_spheres_spheres_per_level(sys, l) == expected, "%s: spheres_per_level(%d)=%d, expected %d",
               label, l, kissing_spheres_spheres_per_level(sys, l), expected);
    }
    CHECKF(kissing_spheres_spheres_per_level(sys, 4) == -1, "%s: spheres_per_level(4) should be -1", label);
    CHECKF(kissing_spheres_spheres_per_level(sys, -1) == -1, "%s: spheres_per_level(-1) should be -1", label);
    CHECKF(kissing_spheres_sphere_info(sys, total, &(KissingSphereInfo){0}) == KS_ERROR,
           "%s: sphere_info(%d) (one past the last) should fail", label, total);

    for (int w = 0; w < workers && w < 64; w++) {
        int home = kissing_spheres_worker_home(sys, w);
        CHECKF(home >= 0 && home < total, "%s: worker_home(%d)=%d out of range", label, w, home);
    }
    CHECKF(kissing_spheres_worker_home(sys, workers) == -1, "%s: worker_home(%d) should be -1", label, workers);

    for (int id = 0; id < total; id++) {
        KissingSphereInfo info;
        memset(&info, 0xAB, sizeof info);
        int rc = kissing_spheres_sphere_info(sys, id, &info);
        CHECKF(rc == KS_OK, "%s: sphere_info(%d) returned %d: %s", label, id, rc, tu_err());
        if (rc != KS_OK)
            continue;
        CHECKF(info.sphere_id == id, "%s: sphere %d: sphere_id=%d", label, id, info.sphere_id);
        CHECKF(info.level == exp_level(id), "%s: sphere %d: level=%d, expected %d", label, id, info.level,
               exp_level(id));
        CHECKF(info.parent_id == exp_parent(id), "%s: sphere %d: parent=%d, expected %d", label, id, info.parent_id,
               exp_parent(id));
        CHECKF(info.symmetry_group == exp_group(id), "%s: sphere %d: group=%d, expected %d", label, id,
               info.symmetry_group, exp_group(id));

        int ch[12];
        int nc = exp_children(id, total, ch);
        check_ids(label, id, "children", info.num_children, info.children, nc, ch);
        int sib[11];
        int ns = exp_siblings(id, total, sib);
        check_ids(label, id, "siblings", info.num_siblings, info.siblings, ns, sib);
        CHECKF(info.state == SPHERE_INITIALIZING, "%s: sphere %d: state=%d before start, expected %d", label, id,
               info.state, SPHERE_INITIALIZING);
        CHECKF(info.owner_worker >= 0 && info.owner_worker < workers, "%s: sphere %d: owner_worker=%d of %d", label,
               id, info.owner_worker, workers);
        CHECKF(info.stealing_enabled, "%s: sphere %d: stealing should be enabled by default", label, id);
        CHECKF(info.work_queue_size == 0, "%s: sphere %d: work_queue_size=%" PRIu64, label, id,
               info.work_queue_size);
        size_t len = strnlen(info.debug_name, sizeof info.debug_name);
        CHECKF(len > 0 && len < sizeof info.debug_name, "%s: sphere %d: debug_name empty or not NUL-terminated",
               label, id);

        KissingSphereStats st;
        memset(&st, 0xAB, sizeof st);
        CHECKF(kissing_spheres_sphere_stats(sys, id, &st) == KS_OK, "%s: sphere_stats(%d): %s", label, id, tu_err());
        CHECKF(st.items_processed == 0 && st.items_failed == 0 && st.busy_ns == 0 && st.stolen_from == 0 &&
                   st.stolen_to == 0 && st.messages_sent == 0 && st.messages_received == 0 && st.queue_size == 0 &&
                   st.mailbox_size == 0,
               "%s: sphere %d: a fresh sphere has non-zero counters", label, id);
    }
}

/* Hand-written spot checks, independent of the helper formulas. */
static void spot_checks(void)
{
    KissingSpheresSystem *sys = tu_create_levels(4);
    if (sys == NULL)
        return;
    struct {
        int id, level, parent, group, nchildren, nsiblings;
    } cases[] = {
        {0, 0, -1, -1, 12, 0},   {1, 1, 0, 0, 12, 11},    {12, 1, 0, 11, 12, 11},  {13, 2, 1, 0, 12, 11},
        {24, 2, 1, 11, 12, 11},  {25, 2, 2, 0, 12, 11},   {156, 2, 12, 11, 12, 11}, {157, 3, 13, 0, 0, 11},
        {168, 3, 13, 11, 0, 11}, {169, 3, 14, 0, 0, 11},  {1884, 3, 156, 11, 0, 11},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        KissingSphereInfo info;
        int id = cases[i].id;
        CHECK_EQ_I64(kissing_spheres_sphere_info(sys, id, &info), KS_OK);
        CHECKF(info.level == cases[i].level && info.parent_id == cases[i].parent &&
                   info.symmetry_group == cases[i].group && info.num_children == cases[i].nchildren &&
                   info.num_siblings == cases[i].nsiblings,
               "sphere %d: level %d parent %d group %d children %d siblings %d; expected %d %d %d %d %d", id,
               info.level, info.parent_id, info.symmetry_group, info.num_children, info.num_siblings,
               cases[i].level, cases[i].parent, cases[i].group, cases[i].nchildren, cases[i].nsiblings);
    }
    KissingSphereInfo root;
    CHECK_EQ_I64(kissing_spheres_sphere_info(sys, 0, &root), KS_OK);
    for (int k = 0; k < 12; k++)
        CHECKF(root.children[k] == k + 1, "root children[%d]=%d", k, root.children[k]);
    KissingSphereInfo s1;
    CHECK_EQ_I64(kissing_spheres_sphere_info(sys, 1, &s1), KS_OK);
    for (int k = 0; k < 12; k++)
        CHECKF(s1.children[k] == 13 + k, "sphere 1 children[%d]=%d", k, s1.children[k]);
    KissingSphereInfo s13;
    CHECK_EQ_I64(kissing_spheres_sphere_info(sys, 13, &s13), KS_OK);
    for (int k = 0; k < 11; k++)
        CHECKF(s13.siblings[k] == 14 + k, "sphere 13 siblings[%d]=%d", k, s13.siblings[k]);
    kissing_spheres_free(sys);
}

static void full_trees(void)
{
    static const int totals[5] = {0, 1, 13, 157, 1885};
    int usable = cllm_usable_cpus();
    for (int levels = 1; levels <= 4; levels++) {
        KissingSpheresSystem *sys = tu_create_levels(levels);
        if (sys == NULL)
            continue;
        char label[32];
        snprintf(label, sizeof label, "create(%d)", levels);
        verify_tree(sys, label, totals[levels], levels, 0);
        int w = kissing_spheres_worker_threads(sys);
        CHECKF(w <= usable, "%s: %d worker threads > %d usable CPUs", label, w, usable);
        kissing_spheres_free(sys);
    }
}

static void dynamic_trees(void)
{
    struct {
        int n, levels;
    } cases[] = {{1, 1}, {2, 2}, {13, 2}, {64, 3}, {157, 3}, {200, 4}, {1024, 4}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int n = cases[i].n;
        CHECKF(kissing_spheres_hierarchy_levels(n) == cases[i].levels, "hierarchy_levels(%d)=%d, expected %d", n,
               kissing_spheres_hierarchy_levels(n), cases[i].levels);
        KissingSpheresSystem *sys = kissing_spheres_create_dynamic(n);
        CHECKF(sys != NULL, "create_dynamic(%d): %s", n, tu_err());
        if (sys == NULL)
            continue;
        char label[40];
        snprintf(label, sizeof label, "create_dynamic(%d)", n);
        verify_tree(sys, label, n, cases[i].levels, n);
        kissing_spheres_free(sys);
    }
    /* Partial last levels, spelled out. */
    struct {
        int n, per_level[4];
    } partial[] = {{1, {1, 0, 0, 0}}, {2, {1, 1, 0, 0}}, {64, {1, 12, 51, 0}}, {200, {1, 12, 144, 43}}};
    for (size_t i = 0; i < sizeof partial / sizeof partial[0]; i++) {
        KissingSpheresSystem *sys = kissing_spheres_create_dynamic(partial[i].n);
        if (sys == NULL)
            continue; /* already reported above */
        for (int l = 0; l < 4; l++)
            CHECKF(kissing_spheres_spheres_per_level(sys, l) == partial[i].per_level[l],
                   "create_dynamic(%d): level %d has %d spheres, expected %d", partial[i].n, l,
                   kissing_spheres_spheres_per_level(sys, l), partial[i].per_level[l]);
        kissing_spheres_free(sys);
    }
    /* 64 spheres: sphere 5's children are the last three of level 2. */
    KissingSpheresSystem *sys = kissing_spheres_create_dynamic(64);
    if (sys != NULL) {
        KissingSphereInfo info;
        CHECK_EQ_I64(kissing_spheres_sphere_info(sys, 5, &info), KS_OK);
        CHECKF(info.num_children == 3 && info.children[0] == 61 && info.children[1] == 62 && info.children[2] == 63,
               "create_dynamic(64): sphere 5 has %d children (expected 61, 62, 63)", info.num_children);
        CHECK_EQ_I64(kissing_spheres_sphere_info(sys, 6, &info), KS_OK);
        CHECKF(info.num_children == 0, "create_dynamic(64): sphere 6 has %d children, expected 0", info.num_children);
        CHECK_EQ_I64(kissing_spheres_sphere_info(sys, 61, &info), KS_OK);
        CHECKF(info.num_siblings == 2, "create_dynamic(64): sphere 61 has %d siblings, expected 2",
               info.num_siblings);
        kissing_spheres_free(sys);
    }

    /* 0 = auto: usable CPUs - 1, at least 1. */
    int usable = cllm_usable_cpus();
    int want = usable - 1 > 1 ? usable - 1 : 1;
    sys = kissing_spheres_create_dynamic(0);
    CHECKF(sys != NULL, "create_dynamic(0): %s", tu_err());
    if (sys != NULL) {
        CHECKF(kissing_spheres_worker_threads(sys) == want, "create_dynamic(0): %d worker threads, expected %d",
               kissing_spheres_worker_threads(sys), want);
        CHECKF(kissing_spheres_total_spheres(sys) == want, "create_dynamic(0): %d spheres, expected %d",
               kissing_spheres_total_spheres(sys), want);
        CHECKF(kissing_spheres_num_levels(sys) == kissing_spheres_hierarchy_levels(want),
               "create_dynamic(0): %d levels", kissing_spheres_num_levels(sys));
        kissing_spheres_free(sys);
    }
    CHECK_NULL_ERR(kissing_spheres_create_dynamic(1025));
    CHECK_NULL_ERR(kissing_spheres_create_dynamic(-1));
}

static void hierarchy_levels_rule(void)
{
    struct {
        int n, levels;
    } cases[] = {{0, 1},   {1, 1},   {2, 2},    {12, 2},   {13, 2},      {14, 3},
                 {156, 3}, {157, 3}, {158, 4},  {1885, 4}, {100000, 4}, {INT32_MAX, 4}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECKF(kissing_spheres_hierarchy_levels(cases[i].n) == cases[i].levels, "hierarchy_levels(%d)=%d, expected %d",
               cases[i].n, kissing_spheres_hierarchy_levels(cases[i].n), cases[i].levels);
    CHECK_ERR(kissing_spheres_hierarchy_levels(-1), -1);
}

static void options(void)
{
    KissingSpheresOptions o;
    memset(&o, 0x5A, sizeof o);
    CHECK_EQ_I64(kissing_spheres_default_options(&o), KS_OK);
    CHECK_EQ_I64(o.num_levels, 2);
    CHECK_EQ_I64(o.num_spheres, 0);
    CHECK_EQ_I64(o.num_threads, 0);
    CHECK_EQ_I64(o.buffer_len, 0);
    CHECK_EQ_I64(o.mailbox_capacity, 256);
    CHECK(o.pin_threads == false);

    /* Defaults: a 2-level tree, auto threads. */
    KissingSpheresSystem *sys = kissing_spheres_create_with_options(&o);
    CHECKF(sys != NULL, "create_with_options(defaults): %s", tu_err());
    if (sys != NULL) {
        verify_tree(sys, "options(defaults)", 13, 2, 0);
        CHECKF(kissing_spheres_worker_threads(sys) <= cllm_usable_cpus(), "defaults: %d workers",
               kissing_spheres_worker_threads(sys));
        kissing_spheres_free(sys);
    }

    struct {
        int num_levels, num_spheres, num_threads, total, levels;
    } cases[] = {
        {2, 100, 3, 100, 3}, {1, 1885, 2, 1885, 4}, {4, 1, 1, 1, 1}, {3, 0, 5, 157, 3},
        {1, 0, 1, 1, 1},     {2, 14, 2, 14, 3},     {4, 13, 7, 13, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_EQ_I64(kissing_spheres_default_options(&o), KS_OK);
        o.num_levels = cases[i].num_levels;
        o.num_spheres = cases[i].num_spheres;
        o.num_threads = cases[i].num_threads;
        sys = kissing_spheres_create_with_options(&o);
        char label[64];
        snprintf(label, sizeof label, "options(levels=%d, spheres=%d, threads=%d)", o.num_levels, o.num_spheres,
                 o.num_threads);
        CHECKF(sys != NULL, "%s: %s", label, tu_err());
        if (sys == NULL)
            continue;
        verify_tree(sys, label, cases[i].total, cases[i].levels, cases[i].num_threads);
        kissing_spheres_free(sys);
    }
    CHECK_EQ_I64(kissing_spheres_default_options(&o), KS_OK);
    o.num_spheres = 1886;
    CHECK_NULL_ERR(kissing_spheres_create_with_options(&o));
}

int main(void)
{
    tu_begin(60);
    spot_checks();
    full_trees();
    dynamic_trees();
    hierarchy_levels_rule();
    options();
    return tu_finish("test_hierarchy_structure");
}
