"""Builds the fused layer kernel (src/fsd_inference/kernel/fused.c) as a plain shared
library beside its Python module, during `pip install` (editable installs build it in
place). Everything else about the package is in pyproject.toml.

The library has no Python ABI (ctypes loads it), so it is named libfsdkernel.so rather
than with an extension-module suffix. It is optional: without a C compiler the install
goes on and the kernel falls back to SciPy. The flags matter for the results:
-ffp-contract=off (no fused multiply-add) and no -ffast-math keep every product and sum
rounded exactly as SciPy's csr_matmat rounds them.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNEL_FLAGS = ["-O3", "-std=c11", "-ffp-contract=off", "-fno-fast-math", "-fno-math-errno"]


class BuildPlainLibrary(build_ext):
    def get_ext_filename(self, fullname: str) -> str:
        return os.path.join(*fullname.split(".")) + ".so"

    def get_export_symbols(self, ext: Extension) -> list[str]:
        return list(ext.export_symbols or [])


setup(
    ext_modules=[
        Extension(
            "fsd_inference.kernel.libfsdkernel",
            sources=["src/fsd_inference/kernel/fused.c"],
            depends=["src/fsd_inference/kernel/fused_layer.h"],
            extra_compile_args=KERNEL_FLAGS,
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildPlainLibrary},
)
