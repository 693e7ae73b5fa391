"""cffi API-mode builder for ``prime.crypto._tshare`` (native/tshare.h + native/tshare.c).

``setup.py`` imports this module through ``cffi_modules`` (with the repository root as
the working directory). For development, ``python prime/crypto/_build.py`` compiles the
extension in place, next to ``threshold.py``; the build outputs are gitignored.

The header is the cdef: only the text between its ``cdef-begin`` and ``cdef-end``
markers is read, so the include guard and ``#include`` lines stay out of cffi's parser.
"""

import os
import sys
from pathlib import Path

import cffi

ROOT = Path(__file__).resolve().parents[2]
NATIVE = ROOT / "native"
CDEF_BEGIN = "/* cdef-begin */"
CDEF_END = "/* cdef-end */"


def read_cdef(header: Path) -> str:
    """Returns the declarations between the cdef markers of ``header``."""
    text = header.read_text(encoding="utf-8")
    begin = text.index(CDEF_BEGIN) + len(CDEF_BEGIN)
    end = text.index(CDEF_END, begin)
    return text[begin:end]


def make_ffi(base: Path) -> cffi.FFI:
    """Builds the FFI with source paths relative to ``base``.

    setuptools wants relative source paths, and cffi compiles from the directory it is
    given, so the paths are written relative to wherever the compiler will run.
    """
    builder = cffi.FFI()
    builder.cdef(read_cdef(NATIVE / "tshare.h"))
    native = os.path.relpath(NATIVE, base)
    builder.set_source(
        "prime.crypto._tshare",
        '#include "tshare.h"',
        sources=[os.path.join(native, "tshare.c")],
        include_dirs=[native],
        libraries=["gmp"],
        extra_compile_args=["-O2"],
    )
    return builder


ffi = make_ffi(Path.cwd())


if __name__ == "__main__":
    # In-place development build: cffi changes into tmpdir (the repository root) to
    # compile, and writes prime/crypto/_tshare*.so there.
    library = make_ffi(ROOT).compile(tmpdir=str(ROOT), verbose="-v" in sys.argv)
    print(f"built {library}")
