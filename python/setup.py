"""Build step of the mini_runtime package (metadata: pyproject.toml).

build_py compiles libcllm with `cargo build --release --lib` and copies the
shared library into the package, so a wheel (or `pip install`) carries it
and `import mini_runtime` needs nothing else. The wheel is tagged
py3-none-<platform>: it holds no Python extension, only libcllm, loaded with
ctypes.

Where the crate is: $MINI_RUNTIME_CRATE_DIR, else rust/ next to this file
(in an sdist), else the parent directory (a repository checkout).
Cargo's target directory: $CARGO_TARGET_DIR when set (CI reuses the
repository's target/ so libcllm is not compiled twice), else the crate's
target/. $CARGO names the cargo binary (default: cargo on PATH).
"""

import os
import runpy
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist
from setuptools.dist import Distribution

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    try:
        from wheel.bdist_wheel import bdist_wheel
    except ImportError:
        bdist_wheel = None

HERE = os.path.dirname(os.path.abspath(__file__))

# The platform's file name of libcllm, from the package's own definition (run
# by path: importing the package would load the library being built).
LIBRARY_NAME = runpy.run_path(os.path.join(HERE, "mini_runtime", "_libname.py"))["LIBRARY_NAME"]

# What the crate needs to build its library (copied into the sdist).
CRATE_FILES = ("Cargo.toml", "Cargo.lock", "build.rs", "rustfmt.toml", "LICENSE")
CRATE_DIRS = ("src", "include")


def is_cllm_crate(path):
    manifest = os.path.join(path, "Cargo.toml")
    if not os.path.isfile(manifest):
        return False
    with open(manifest, encoding="utf-8") as f:
        return 'name = "cllm"' in f.read()


def crate_dir():
    env = os.environ.get("MINI_RUNTIME_CRATE_DIR")
    candidates = [env] if env else [os.path.join(HERE, "rust"), os.path.dirname(HERE)]
    for c in candidates:
        if is_cllm_crate(c):
            return os.path.abspath(c)
    raise SystemExit(
        "mini_runtime: cannot find the libcllm crate (looked in %s); build from a "
        "repository checkout or an sdist, or set MINI_RUNTIME_CRATE_DIR" % ", ".join(candidates)
    )


def build_libcllm():
    """Runs cargo and returns the path of the built shared library."""
    crate = crate_dir()
    cargo = os.environ.get("CARGO") or shutil.which("cargo")
    if not cargo:
        raise SystemExit(
            "mini_runtime: cargo is needed to build libcllm and is not on PATH. Install Rust "
            "(https://rustup.rs: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh) "
            "or set CARGO to the cargo binary."
        )
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(crate, "target")
    env = dict(os.environ, CARGO_TARGET_DIR=target)
    cmd = [cargo, "build", "--release", "--lib", "--manifest-path", os.path.join(crate, "Cargo.toml")]
    print("mini_runtime: " + " ".join(cmd) + "  (CARGO_TARGET_DIR=%s)" % target, flush=True)
    subprocess.check_call(cmd, env=env)
    lib = os.path.join(target, "release", LIBRARY_NAME)
    if not os.path.isfile(lib):
        raise SystemExit("mini_runtime: cargo finished but %s is missing" % lib)
    return lib


def strip_debug_info(path):
    """Drops the line tables of the release profile (debug = 1) from the
    bundled copy: 10 MB -> 1.4 MB. Symbols stay. Skipped without `strip` or
    with MINI_RUNTIME_NO_STRIP=1."""
    strip = shutil.which("strip")
    if sys.platform.startswith("linux") and strip and os.environ.get("MINI_RUNTIME_NO_STRIP") != "1":
        subprocess.check_call([strip, "--strip-debug", path])


class BuildPyWithLibcllm(build_py):
    """build_py, then libcllm into the built package."""

    def run(self):
        super().run()
        lib = build_libcllm()
        if getattr(self, "editable_mode", False):
            # An editable install imports the package from the source tree.
            dest_dir = os.path.join(HERE, "mini_runtime")
        else:
            dest_dir = os.path.join(self.build_lib, "mini_runtime")
        self.mkpath(dest_dir)
        dest = os.path.join(dest_dir, LIBRARY_NAME)
        shutil.copy2(lib, dest)
        strip_debug_info(dest)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, "mini_runtime", LIBRARY_NAME))
        return outputs


class SdistWithCrate(sdist):
    """sdist that carries the crate under rust/, so the wheel builds from it alone."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        dest = os.path.join(base_dir, "rust")
        if os.path.isdir(dest):  # made from an sdist: MANIFEST.in kept rust/
            return
        crate = crate_dir()
        os.makedirs(dest)
        for name in CRATE_FILES:
            if os.path.isfile(os.path.join(crate, name)):
                shutil.copy2(os.path.join(crate, name), os.path.join(dest, name))
        for name in CRATE_DIRS:
            shutil.copytree(
                os.path.join(crate, name),
                os.path.join(dest, name),
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "target"),
            )


class BinaryDistribution(Distribution):
    """The package carries a native library: install it as platform-specific."""

    def has_ext_modules(self):
        return True


cmdclass = {"build_py": BuildPyWithLibcllm, "sdist": SdistWithCrate}

if bdist_wheel is not None:

    class BdistWheelPy3(bdist_wheel):
        """Platform wheel, but for any Python 3: libcllm is loaded with ctypes."""

        def finalize_options(self):
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    cmdclass["bdist_wheel"] = BdistWheelPy3

setup(cmdclass=cmdclass, distclass=BinaryDistribution)
