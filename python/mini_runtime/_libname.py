"""File name of the libcllm shared library on this platform.

The one definition for both sides: _native loads this file from the package
directory, and setup.py (which must not import the package: that loads the
library it is about to build) runs this module by path to know what cargo
builds and what to bundle. Keep it free of imports from the package.
"""

import sys

if sys.platform == "darwin":
    LIBRARY_NAME = "libcllm.dylib"
elif sys.platform == "win32":
    LIBRARY_NAME = "cllm.dll"
else:
    LIBRARY_NAME = "libcllm.so"
