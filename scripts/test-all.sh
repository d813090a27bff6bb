#!/usr/bin/env bash
# Runs every test of libcllm, failing at the first error:
#   deps     install cmake, a C/C++ compiler, make and pkg-config if missing
#   fmt      cargo fmt --check
#   clippy   cargo clippy --all-targets -- -D warnings (and the lib with --features cuda)
#   test     cargo test --release (and the Echobeats tests with --features cuda)
#   headers  include/ is what build.rs generates (committed, not stale)
#   cmake    cmake configure + build of build/ci, then ctest (C tests, ASan,
#            C++ examples, header self-containment, static link, consumers)
#   python   a fresh virtualenv in build/ci/python-venv, `pip install ./python`
#            (builds libcllm through cargo, reusing target/), then the pytest
#            suite of the mini_runtime package, run from a directory outside
#            the source tree
#
# Usage: bash scripts/test-all.sh [stage ...]     (default: all, in order)
# Environment: CLLM_CI_BUILD_DIR (default build/ci), CLLM_CI_JOBS (default 2).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
BUILD_DIR=${CLLM_CI_BUILD_DIR:-build/ci}
JOBS=${CLLM_CI_JOBS:-2}
ALL_STAGES=(deps fmt clippy test headers cmake python)

if [[ $# -gt 0 ]]; then
    STAGES=("$@")
    for s in "${STAGES[@]}"; do
        case " ${ALL_STAGES[*]} " in
            *" $s "*) ;;
            *) echo "test-all.sh: unknown stage '$s' (stages: ${ALL_STAGES[*]})" >&2; exit 2 ;;
        esac
    done
else
    STAGES=("${ALL_STAGES[@]}")
fi

# ------------------------------------------------------------------ helpers
now_ms() { date +%s%3N; }
fmt_ms() { printf '%d.%03ds' $(($1 / 1000)) $(($1 % 1000)); }

TIMINGS=()
T_START=$(now_ms)
# step <label> <command...>: runs a command and prints its wall time.
step() {
    local label=$1
    shift
    echo
    echo "==> [$label] $*"
    local t0
    t0=$(now_ms)
    "$@"
    local dt=$(($(now_ms) - t0))
    echo "<== [$label] ok in $(fmt_ms "$dt")"
    TIMINGS+=("$(printf '%-16s %10s' "$label" "$(fmt_ms "$dt")")")
}

have() { command -v "$1" >/dev/null 2>&1; }

APT_UPDATED=0
can_apt() { [[ $(id -u) -eq 0 ]] && have apt-get; }
apt_install() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

missing() {
    echo "test-all.sh: $1 is missing and cannot be installed automatically." >&2
    echo "Install it, for example: $2" >&2
    exit 1
}

# ------------------------------------------------------------------- stages
stage_deps() {
    if ! have cargo; then
        missing "the Rust toolchain (cargo)" \
            "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy"
    fi
    for comp in rustfmt clippy; do
        local probe=(cargo fmt --version)
        [[ $comp == clippy ]] && probe=(cargo clippy --version)
        if ! "${probe[@]}" >/dev/null 2>&1; then
            if have rustup; then
                rustup component add "$comp"
            else
                missing "the Rust component $comp" "rustup component add $comp"
            fi
        fi
    done

    if ! have cmake; then
        if can_apt; then
            apt_install cmake
        elif have python3 && python3 -m pip install --user cmake; then
            PATH="$(python3 -m site --user-base)/bin:$PATH"
            export PATH
        elif have pip && pip install --user cmake; then
            PATH="$HOME/.local/bin:$PATH"
            export PATH
        else
            missing "cmake (>= 3.16)" "apt-get install cmake   or   pip install cmake"
        fi
    fi
    if ! { have cc || have gcc || have clang; } || ! { have c++ || have g++ || have clang++; } ||
        ! { have make || have ninja; }; then
        if can_apt; then
            apt_install build-essential
        else
            missing "a C and C++ compiler with make" "apt-get install build-essential   (gcc, g++, make)"
        fi
    fi
    if ! { have pkg-config || have pkgconf; }; then
        if can_apt; then
            apt_install pkg-config
        else
            missing "pkg-config" "apt-get install pkg-config"
        fi
    fi
    # The python stage: python3 >= 3.8 with venv and pip (numpy, pytest,
    # setuptools and wheel then come from PyPI into a fresh virtualenv).
    if ! python_ok; then
        if can_apt; then
            apt_install python3 python3-venv python3-pip
        fi
        if ! python_ok; then
            missing "python3 (>= 3.8) with the venv module and pip" \
                "apt-get install python3 python3-venv python3-pip   (or python.org / pyenv)"
        fi
    fi
    echo "cargo:      $(cargo --version)"
    echo "cmake:      $(cmake --version | head -n1)"
    echo "C compiler: $( (cc --version 2>/dev/null || gcc --version 2>/dev/null || clang --version) | head -n1)"
    echo "pkg-config: $( (pkg-config --version 2>/dev/null || pkgconf --version) | head -n1)"
    echo "python:     $(python3 --version 2>&1)"
}

# python3 >= 3.8 that can make a virtualenv with pip in it.
python_ok() {
    have python3 && python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 8))' >/dev/null 2>&1
}

stage_fmt() { step fmt cargo fmt --check; }

stage_clippy() {
    step clippy cargo clippy --all-targets -- -D warnings
    # The optional CUDA support must build (it loads the driver at run time).
    step clippy-cuda cargo clippy --lib --features cuda -- -D warnings
}

stage_test() {
    step cargo-test cargo test --release
    # With `cuda`, on a machine without a GPU, the pool must fall back to
    # ordered CPU lanes.
    step cargo-test-cuda cargo test --release --features cuda --test echobeats
}

check_headers() {
    if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        echo "not a git checkout: header freshness not checked"
        return 0
    fi
    local stale=0
    if ! git diff --exit-code -- include/; then
        stale=1
    fi
    local untracked
    untracked=$(git status --porcelain --untracked-files=all -- include/)
    if [[ -n $untracked ]]; then
        echo "$untracked"
        stale=1
    fi
    if [[ $stale -ne 0 ]]; then
        echo "headers are stale: run cargo build and commit include/" >&2
        return 1
    fi
    echo "include/ is up to date"
}

stage_headers() {
    # build.rs regenerates include/ (a no-op after `cargo test --release`).
    step cargo-build cargo build --release --lib
    step headers check_headers
}

run_ctest() { (cd "$BUILD_DIR" && ctest --output-on-failure -j"$JOBS"); }

stage_cmake() {
    step cmake-configure cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
    step cmake-build cmake --build "$BUILD_DIR" -j"$JOBS"
    # (cd instead of `ctest --test-dir`, which needs CMake >= 3.20)
    step ctest run_ctest
}

# python: the mini_runtime package (python/) in a fresh virtualenv. pip
# builds libcllm with `cargo build --release --lib` into CARGO_TARGET_DIR
# (default: this repository's target/, where the headers stage already
# built it, so nothing is compiled twice).
python_venv() {
    rm -rf "$PY_VENV"
    python3 -m venv "$PY_VENV"
    if ! "$PY_VENV/bin/python" -m pip install --quiet --disable-pip-version-check numpy pytest; then
        echo "test-all.sh: pip could not install numpy and pytest: the python stage needs PyPI," >&2
        echo "or PIP_INDEX_URL / PIP_FIND_LINKS naming a mirror with numpy, pytest, setuptools and wheel." >&2
        return 1
    fi
}

python_install() {
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}" \
        "$PY_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$ROOT/python"
}

python_test() {
    # From an empty directory outside the source tree: `import mini_runtime`
    # must find the installed package and the libcllm bundled in it.
    # (set -e does not apply inside a subshell on the left of ||: chain with &&.)
    local run_dir rc=0
    run_dir=$(mktemp -d)
    (
        cd "$run_dir" &&
            "$PY_VENV/bin/python" -c 'import os, sys, mini_runtime as m, mini_runtime._native as n
src = os.path.realpath(sys.argv[1])
assert not os.path.realpath(m.__file__).startswith(src + os.sep), m.__file__
print("imported", m.__file__, "with", n.library_path, "kernel", m.get_active_kernel_name())' "$ROOT/python" &&
            timeout 900 "$PY_VENV/bin/python" -m pytest -q -p no:cacheprovider "$ROOT/python/tests"
    ) || rc=$?
    rm -rf "$run_dir"
    return $rc
}

stage_python() {
    mkdir -p "$BUILD_DIR"
    PY_VENV="$(cd "$BUILD_DIR" && pwd)/python-venv"
    step python-venv python_venv
    step python-install python_install
    step python-test python_test
}

# --------------------------------------------------------------------- main
for s in "${STAGES[@]}"; do
    if [[ $s == deps ]]; then
        step deps stage_deps
    else
        "stage_$s"
    fi
done

echo
echo "== timings ($ROOT)"
for line in "${TIMINGS[@]}"; do echo "  $line"; done
echo "  $(printf '%-16s %10s' total "$(fmt_ms $(($(now_ms) - T_START)))")"
echo "test-all.sh: all stages passed (${STAGES[*]})"
