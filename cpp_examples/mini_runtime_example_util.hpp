// mini_runtime_example_util.hpp: the check counter shared by the
// mini_runtime C++ examples (cpp_examples/mini_runtime_*.cpp). Each example
// is a program of its own, so the counter is per program.
//
//   expect(ok, what)   one check; a failure is counted and printed
//   finish()           prints "all checks passed" or "FAILED"; returns the
//                      exit status (0 only when every check passed)
#ifndef CLLM_CPP_EXAMPLES_MINI_RUNTIME_EXAMPLE_UTIL_HPP
#define CLLM_CPP_EXAMPLES_MINI_RUNTIME_EXAMPLE_UTIL_HPP

#include <cstdio>
#include <string>

namespace mini_runtime_example {

inline int g_failures = 0;

inline void expect(bool ok, const std::string& what)
{
    if (!ok) {
        ++g_failures;
        std::printf("FAIL: %s\n", what.c_str());
    }
}

inline int finish()
{
    std::printf("%s\n", g_failures == 0 ? "all checks passed" : "FAILED");
    return g_failures == 0 ? 0 : 1;
}

}  // namespace mini_runtime_example

#endif  // CLLM_CPP_EXAMPLES_MINI_RUNTIME_EXAMPLE_UTIL_HPP
