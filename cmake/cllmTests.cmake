# Tests of libcllm, included by the top-level CMakeLists.txt when
# CLLM_BUILD_TESTS is ON. Registers with CTest:
#   <stem>                  every c_tests/*.c, linked to cllm::cllm
#   asan_<stem>             the same, built with AddressSanitizer (+ LeakSanitizer)
#   cpp_<stem>              every cpp_examples/*.cpp (C++17)
#   header_c_<h>/header_cxx17_<h>/header_cxx20_<h>  every include/**.h compiles alone (C11 / C++17 / C++20, -pedantic)
#   header_cxx17_<h>_hpp/header_cxx20_<h>_hpp  every include/**.hpp compiles alone (C++17 / C++20)
#   static_consumer_smoke   a C program linked to cllm::cllm_static
#   consumer_install, consumer_find_package, consumer_pkg_config,
#   consumer_add_subdirectory   the installed / embedded library seen by other projects

set(CLLM_TEST_TIMEOUT 120 CACHE STRING "CTest TIMEOUT (seconds) of each C/C++ test")
set(_cllm_warnings -Wall -Wextra -Werror)
set(_cllm_asan_flags -fsanitize=address -fno-omit-frame-pointer)
set(_cllm_asan_env "ASAN_OPTIONS=detect_leaks=1:abort_on_error=1")
set(_cllm_lsan_supp "${CMAKE_CURRENT_SOURCE_DIR}/c_tests/lsan.supp")

# AddressSanitizer available with this compiler?
include(CheckCSourceCompiles)
set(CMAKE_REQUIRED_FLAGS "-fsanitize=address -fno-omit-frame-pointer")
set(CMAKE_REQUIRED_LINK_OPTIONS -fsanitize=address)
check_c_source_compiles("int main(void) { return 0; }" CLLM_HAVE_ASAN)
unset(CMAKE_REQUIRED_FLAGS)
unset(CMAKE_REQUIRED_LINK_OPTIONS)
option(CLLM_ASAN_TESTS "Also build the C tests with AddressSanitizer (asan_<stem>)" ${CLLM_HAVE_ASAN})

# cllm_add_test_executable(<name> <source> <lib> [ASAN] [CXX])
function(cllm_add_test_executable name source lib)
  cmake_parse_arguments(PARSE_ARGV 3 _t "ASAN;CXX" "" "")
  add_executable(${name} "${source}")
  target_link_libraries(${name} PRIVATE ${lib} Threads::Threads)
  target_include_directories(${name} PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}/c_tests")
  # test_version compares cllm_version() with the package version here.
  target_compile_definitions(${name} PRIVATE CLLM_CARGO_TOML="${CMAKE_CURRENT_SOURCE_DIR}/Cargo.toml")
  target_compile_options(${name} PRIVATE ${_cllm_warnings})
  if(_t_CXX)
    set_target_properties(${name} PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON CXX_EXTENSIONS OFF)
  else()
    set_target_properties(${name} PROPERTIES C_STANDARD 11 C_STANDARD_REQUIRED ON)
  endif()
  if(_t_ASAN)
    target_compile_options(${name} PRIVATE ${_cllm_asan_flags})
    target_link_options(${name} PRIVATE ${_cllm_asan_flags})
  endif()
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${CLLM_TEST_TIMEOUT})
  if(_t_ASAN)
    set(_env "${_cllm_asan_env}")
    if(EXISTS "${_cllm_lsan_supp}")
      list(APPEND _env "LSAN_OPTIONS=suppressions=${_cllm_lsan_supp}:print_suppressions=0")
    endif()
    set_tests_properties(${name} PROPERTIES ENVIRONMENT "${_env}")
  endif()
endfunction()

# a + b. C tests, plain and under ASan.
file(GLOB _cllm_c_tests CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/c_tests/*.c")
foreach(_src IN LISTS _cllm_c_tests)
  get_filename_component(_stem "${_src}" NAME_WE)
  cllm_add_test_executable(${_stem} "${_src}" cllm::cllm)
  if(CLLM_ASAN_TESTS)
    cllm_add_test_executable(asan_${_stem} "${_src}" cllm::cllm ASAN)
  endif()
endforeach()

# c. C++ examples.
file(GLOB _cllm_cpp_examples CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/cpp_examples/*.cpp")
foreach(_src IN LISTS _cllm_cpp_examples)
  get_filename_component(_stem "${_src}" NAME_WE)
  cllm_add_test_executable(cpp_${_stem} "${_src}" cllm::cllm CXX)
endforeach()

# d. Header self-containment: a translation unit including only the header
# (twice, to check its include guard), compiled alone with -pedantic: every
# include/**.h as C11, C++17 and C++20 (header_c_<id>, header_cxx17_<id>,
# header_cxx20_<id>, <id> without the "_h"), every C++-only include/**.hpp
# (e.g. the mini_runtime/ wrapper) as C++17 and C++20 (header_cxx17_<id>,
# header_cxx20_<id>, <id> ending in "_hpp", which keeps the names apart from
# those of the .h headers). Run by CTest with the compilers of this build, so
# it needs no build step.
if(CMAKE_C_COMPILER_ID MATCHES "GNU|Clang" AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  file(GLOB_RECURSE _cllm_c_headers CONFIGURE_DEPENDS RELATIVE "${CLLM_INCLUDE_DIR}" "${CLLM_INCLUDE_DIR}/*.h")
  file(GLOB_RECURSE _cllm_cxx_headers CONFIGURE_DEPENDS RELATIVE "${CLLM_INCLUDE_DIR}" "${CLLM_INCLUDE_DIR}/*.hpp")
  set(_cllm_hdr_dir "${CMAKE_CURRENT_BINARY_DIR}/header_check")
  foreach(_h IN LISTS _cllm_c_headers _cllm_cxx_headers)
    string(REGEX REPLACE "[^A-Za-z0-9_]" "_" _id "${_h}")
    if(_h MATCHES "\\.h$")
      string(REGEX REPLACE "_h$" "" _id "${_id}")
      set(_langs c cxx17 cxx20)
    else()
      set(_langs cxx17 cxx20)
    endif()
    set(_tu "#include \"${_h}\"\n#include \"${_h}\"\n")
    foreach(_lang IN LISTS _langs)
      if(_lang STREQUAL "c")
        set(_file "${_cllm_hdr_dir}/${_id}.c")
        set(_compile "${CMAKE_C_COMPILER}" -x c -std=c11)
      else()
        string(REPLACE "cxx" "c++" _std "${_lang}")
        set(_file "${_cllm_hdr_dir}/${_id}.cpp")
        set(_compile "${CMAKE_CXX_COMPILER}" -x c++ -std=${_std})
      endif()
      # Rewritten only when it changes, so that reconfiguring keeps its time.
      if(EXISTS "${_file}")
        file(READ "${_file}" _old)
      else()
        set(_old "")
      endif()
      if(NOT _old STREQUAL _tu)
        file(WRITE "${_file}" "${_tu}")
      endif()
      add_test(NAME header_${_lang}_${_id}
        COMMAND ${_compile} ${_cllm_warnings} -pedantic "-I${CLLM_INCLUDE_DIR}" -fsyntax-only "${_file}")
      set_tests_properties(header_${_lang}_${_id} PROPERTIES TIMEOUT 60)
    endforeach()
  endforeach()
else()
  message(STATUS "cllm: header self-containment tests need GCC or Clang; skipped")
endif()

# e. The static library links into a C program on its own.
cllm_add_test_executable(static_consumer_smoke
  "${CMAKE_CURRENT_SOURCE_DIR}/tests/consumer/find_package/main.c" cllm::cllm_static)

# f. Consumers: the installed package through find_package() and pkg-config,
# and the source tree through add_subdirectory().
if(CLLM_INSTALL)
  set(_cllm_consumer_dir "${CMAKE_CURRENT_BINARY_DIR}/consumer")
  set(_cllm_consumer_args
    "-DSOURCE_DIR=${CMAKE_CURRENT_SOURCE_DIR}"
    "-DBUILD_DIR=${CMAKE_CURRENT_BINARY_DIR}"
    "-DPREFIX=${_cllm_consumer_dir}/prefix"
    "-DLIBDIR=${CMAKE_INSTALL_LIBDIR}"
    "-DGENERATOR=${CMAKE_GENERATOR}"
    "-DMAKE_PROGRAM=${CMAKE_MAKE_PROGRAM}"
    "-DC_COMPILER=${CMAKE_C_COMPILER}"
    "-DVERSION=${PROJECT_VERSION}")
  set(_cllm_consumer_script "${CMAKE_CURRENT_SOURCE_DIR}/tests/consumer/run_consumer.cmake")

  add_test(NAME consumer_install
    COMMAND "${CMAKE_COMMAND}" ${_cllm_consumer_args} -DMODE=install -P "${_cllm_consumer_script}")
  set_tests_properties(consumer_install PROPERTIES FIXTURES_SETUP cllm_installed TIMEOUT 120)

  add_test(NAME consumer_find_package
    COMMAND "${CMAKE_COMMAND}" ${_cllm_consumer_args} -DMODE=find_package
            "-DWORK_DIR=${_cllm_consumer_dir}/find_package" -P "${_cllm_consumer_script}")
  set_tests_properties(consumer_find_package PROPERTIES FIXTURES_REQUIRED cllm_installed TIMEOUT 300)

  find_program(CLLM_PKG_CONFIG_EXECUTABLE NAMES pkg-config pkgconf)
  if(CLLM_PKG_CONFIG_EXECUTABLE)
    add_test(NAME consumer_pkg_config
      COMMAND "${CMAKE_COMMAND}" ${_cllm_consumer_args} -DMODE=pkg_config
              "-DPKG_CONFIG=${CLLM_PKG_CONFIG_EXECUTABLE}"
              "-DWORK_DIR=${_cllm_consumer_dir}/pkg_config" -P "${_cllm_consumer_script}")
    set_tests_properties(consumer_pkg_config PROPERTIES FIXTURES_REQUIRED cllm_installed TIMEOUT 300)
  else()
    message(WARNING "cllm: pkg-config not found; consumer_pkg_config is not registered")
  endif()
endif()

# Reuses the cargo target dir of this build, so cargo finds everything fresh.
add_test(NAME consumer_add_subdirectory
  COMMAND "${CMAKE_COMMAND}"
          "-DSOURCE_DIR=${CMAKE_CURRENT_SOURCE_DIR}"
          "-DGENERATOR=${CMAKE_GENERATOR}"
          "-DMAKE_PROGRAM=${CMAKE_MAKE_PROGRAM}"
          "-DC_COMPILER=${CMAKE_C_COMPILER}"
          "-DCARGO_TARGET_DIR=${CLLM_CARGO_TARGET_DIR}"
          "-DCARGO_PROFILE=${CLLM_CARGO_PROFILE}"
          "-DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/consumer/add_subdirectory"
          -DMODE=add_subdirectory -P "${CMAKE_CURRENT_SOURCE_DIR}/tests/consumer/run_consumer.cmake")
set_tests_properties(consumer_add_subdirectory PROPERTIES TIMEOUT 300)
