/* test_version.c
 *
 * cllm_version():
 *   - non-NULL, static (the same pointer on every call), "MAJOR.MINOR.PATCH"
 *     made of digits;
 *   - equals the string built from CLLM_VERSION_MAJOR/MINOR/PATCH and
 *     equals CLLM_VERSION_STRING (header and library agree);
 *   - equals the `version = "..."` of the [package] section of Cargo.toml.
 *     The path comes from the macro CLLM_CARGO_TOML (the build passes
 *     -DCLLM_CARGO_TOML="<absolute path>"); without it, that comparison is
 *     skipped with a note.
 */
#include "test_util.h"

#include <ctype.h>

static bool is_semver(const char *v)
{
    int parts = 0;
    const char *p = v;
    while (*p) {
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
        parts++;
        if (*p == '.')
            p++;
        else if (*p == '\0')
            break;
        else if (*p == '-' || *p == '+')
            return parts == 3; /* pre-release / build metadata */
        else
            return false;
    }
    return parts == 3;
}

#ifdef CLLM_CARGO_TOML
/* The version of the [package] section, or false. */
static bool cargo_package_version(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    char line[1024];
    bool in_package = false, found = false;
    while (fgets(line, sizeof line, f) != NULL) {
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '[') {
            in_package = strncmp(p, "[package]", 9) == 0;
            continue;
        }
        if (!in_package || strncmp(p, "version", 7) != 0)
            continue;
        p += 7;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != '=')
            continue;
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != '"')
            continue;
        p++;
        char *end = strchr(p, '"');
        if (end == NULL || (size_t)(end - p) >= cap)
            continue;
        memcpy(out, p, (size_t)(end - p));
        out[end - p] = '\0';
        found = true;
        break;
    }
    fclose(f);
    return found;
}
#endif

int main(void)
{
    TU_WATCHDOG(60);
    const char *v = cllm_version();
    CHECK(v != NULL);
    if (v == NULL)
        return TU_SUMMARY();
    printf("cllm_version() = \"%s\"\n", v);
    CHECKF(cllm_version() == v, "cllm_version() is not a static string (pointer changed)");
    CHECKF(is_semver(v), "\"%s\" is not MAJOR.MINOR.PATCH", v);

    char built[64];
    snprintf(built, sizeof built, "%d.%d.%d", CLLM_VERSION_MAJOR, CLLM_VERSION_MINOR, CLLM_VERSION_PATCH);
    CHECKF(strcmp(v, built) == 0, "cllm_version() \"%s\" != CLLM_VERSION_MAJOR.MINOR.PATCH \"%s\"", v, built);
    CHECKF(strcmp(v, CLLM_VERSION_STRING) == 0, "cllm_version() \"%s\" != CLLM_VERSION_STRING \"%s\"", v,
           CLLM_VERSION_STRING);
    CHECKF(strcmp(built, CLLM_VERSION_STRING) == 0, "header macros disagree: \"%s\" vs CLLM_VERSION_STRING \"%s\"",
           built, CLLM_VERSION_STRING);

#ifdef CLLM_CARGO_TOML
    char cargo[128];
    bool ok = cargo_package_version(CLLM_CARGO_TOML, cargo, sizeof cargo);
    CHECKF(ok, "no version = \"...\" in the [package] section of %s", CLLM_CARGO_TOML);
    if (ok)
        CHECKF(strcmp(v, cargo) == 0, "cllm_version() \"%s\" != Cargo.toml version \"%s\"", v, cargo);
#else
    printf("note: CLLM_CARGO_TOML not defined; Cargo.toml comparison skipped\n");
#endif
    return TU_SUMMARY();
}
