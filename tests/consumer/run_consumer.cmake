# Consumer tests of libcllm, run by CTest as `cmake -D... -P run_consumer.cmake`.
#
# MODE=install           cmake --install BUILD_DIR --prefix PREFIX
# MODE=find_package      configure/build/run find_package/ against PREFIX
# MODE=pkg_config        compile find_package/main.c with pkg-config against PREFIX
# MODE=add_subdirectory  configure/build/run add_subdirectory/ (reusing the
#                        cargo target dir CARGO_TARGET_DIR of the main build)
#
# Other inputs: SOURCE_DIR (repo root), WORK_DIR (scratch dir of the test),
# GENERATOR, MAKE_PROGRAM, C_COMPILER, LIBDIR (relative install libdir),
# PKG_CONFIG, VERSION, CARGO_PROFILE.
cmake_minimum_required(VERSION 3.16)

function(run)
  string(REPLACE ";" " " _shown "${ARGN}")
  message(STATUS "run: ${_shown}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc)
  if(NOT _rc STREQUAL "0")
    message(FATAL_ERROR "failed (${_rc}): ${_shown}")
  endif()
endfunction()

# Arguments that make a sub-configure use the same toolchain as the main build.
set(_configure_args -G "${GENERATOR}" "-DCMAKE_C_COMPILER=${C_COMPILER}" -DCMAKE_BUILD_TYPE=Release)
if(MAKE_PROGRAM)
  list(APPEND _configure_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()

set(_main_c "${SOURCE_DIR}/tests/consumer/find_package/main.c")

if(MODE STREQUAL "install")
  file(REMOVE_RECURSE "${PREFIX}")
  run("${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}")
  foreach(_f "${LIBDIR}/libcllm.so" "${LIBDIR}/libcllm.a" "include/cllm.h"
             "include/cllm_common.h" "include/cllm_kissing_spheres_threading.h"
             "${LIBDIR}/cmake/cllm/cllmConfig.cmake" "${LIBDIR}/cmake/cllm/cllmConfigVersion.cmake"
             "${LIBDIR}/pkgconfig/cllm.pc")
    if(NOT EXISTS "${PREFIX}/${_f}")
      message(FATAL_ERROR "not installed: ${PREFIX}/${_f}")
    endif()
  endforeach()

elseif(MODE STREQUAL "find_package")
  file(REMOVE_RECURSE "${WORK_DIR}")
  run("${CMAKE_COMMAND}" -S "${SOURCE_DIR}/tests/consumer/find_package" -B "${WORK_DIR}"
      ${_configure_args} "-DCMAKE_PREFIX_PATH=${PREFIX}" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
  run("${CMAKE_COMMAND}" --build "${WORK_DIR}")
  run("${WORK_DIR}/consumer")
  run("${WORK_DIR}/consumer_static")

elseif(MODE STREQUAL "pkg_config")
  file(REMOVE_RECURSE "${WORK_DIR}")
  file(MAKE_DIRECTORY "${WORK_DIR}")
  set(ENV{PKG_CONFIG_PATH} "${PREFIX}/${LIBDIR}/pkgconfig")
  foreach(_query modversion cflags libs static_libs libdir)
    if(_query STREQUAL "static_libs")
      set(_args --static --libs-only-l)
    elseif(_query STREQUAL "libdir")
      set(_args --variable=libdir)
    else()
      set(_args --${_query})
    endif()
    execute_process(COMMAND "${PKG_CONFIG}" ${_args} cllm RESULT_VARIABLE _rc
                    OUTPUT_VARIABLE _out OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(NOT _rc STREQUAL "0")
      message(FATAL_ERROR "pkg-config ${_args} cllm failed (PKG_CONFIG_PATH=$ENV{PKG_CONFIG_PATH})")
    endif()
    message(STATUS "pkg-config ${_args} cllm: ${_out}")
    separate_arguments(_pc_${_query} UNIX_COMMAND "${_out}")
  endforeach()
  if(NOT _pc_modversion STREQUAL VERSION)
    message(FATAL_ERROR "pkg-config says version ${_pc_modversion}, expected ${VERSION}")
  endif()
  # cc main.c $(pkg-config --cflags --libs cllm), run with LD_LIBRARY_PATH.
  run("${C_COMPILER}" -std=c11 -Wall -Wextra -Werror ${_pc_cflags} "${_main_c}" ${_pc_libs}
      -o "${WORK_DIR}/consumer")
  run("${CMAKE_COMMAND}" -E env "LD_LIBRARY_PATH=${_pc_libdir}" "${WORK_DIR}/consumer")
  # Static link: libcllm.a plus Libs.private.
  list(REMOVE_ITEM _pc_static_libs -lcllm)
  run("${C_COMPILER}" -std=c11 -Wall -Wextra -Werror ${_pc_cflags} "${_main_c}"
      "${_pc_libdir}/libcllm.a" ${_pc_static_libs} -o "${WORK_DIR}/consumer_static")
  run("${WORK_DIR}/consumer_static")

elseif(MODE STREQUAL "add_subdirectory")
  file(REMOVE_RECURSE "${WORK_DIR}")
  run("${CMAKE_COMMAND}" -S "${SOURCE_DIR}/tests/consumer/add_subdirectory" -B "${WORK_DIR}"
      ${_configure_args} "-DCLLM_SOURCE_DIR=${SOURCE_DIR}"
      "-DCLLM_CARGO_TARGET_DIR=${CARGO_TARGET_DIR}" "-DCLLM_CARGO_PROFILE=${CARGO_PROFILE}")
  run("${CMAKE_COMMAND}" --build "${WORK_DIR}")
  run("${WORK_DIR}/consumer")

else()
  message(FATAL_ERROR "run_consumer.cmake: unknown MODE '${MODE}'")
endif()
