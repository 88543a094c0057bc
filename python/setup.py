"""pip install ./python — builds libkiln with CMake (from the repository root) and ships it inside
the `kiln` package, so `import kiln` works without KILN_LIBRARY. Also builds the extension
kiln._native (the fast path of InferenceSession.run) against that libkiln, when Python's headers
and numpy are there; without them, or if it fails to compile, the package uses ctypes only."""
import os
import shutil
import subprocess
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
_built = {}


def build_libkiln():
    """Configures and builds libkiln once per setup.py run (build_py and build_ext both need it)."""
    build_dir = os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build"))
    if build_dir not in _built:
        subprocess.check_call(["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release"])
        subprocess.check_call(["cmake", "--build", build_dir, "--target", "kiln", "-j", str(os.cpu_count() or 2)])
        _built[build_dir] = True
    return build_dir


class BuildWithLibrary(build_py):
    def run(self):
        build_dir = build_libkiln()
        super().run()
        dest = os.path.join(self.build_lib, "kiln")
        os.makedirs(dest, exist_ok=True)
        shutil.copy2(os.path.join(build_dir, "libkiln.so"), os.path.join(dest, "libkiln.so"))


class BuildExtWithLibrary(build_ext):
    def run(self):
        build_dir = build_libkiln()
        for ext in self.extensions:
            ext.library_dirs.append(build_dir)
        super().run()


def native_extensions():
    """kiln._native, or nothing where it cannot be built here."""
    include = sysconfig.get_paths().get("include")
    if not include or not os.path.exists(os.path.join(include, "Python.h")):
        return []
    try:
        import numpy
    except ImportError:
        return []
    return [Extension(
        "kiln._native",
        sources=["kiln/_native.c"],
        include_dirs=[os.path.join(ROOT, "include"), numpy.get_include()],
        libraries=["kiln"],
        # the libkiln.so shipped beside it in the package
        extra_link_args=["-Wl,-rpath,$ORIGIN"],
        extra_compile_args=["-O2"],
        optional=True,  # a failed compile leaves the ctypes path, not a failed install
    )]


setup(
    name="kiln",
    version="0.1.0",
    description="kiln: an ONNX inference runtime in C (Python binding)",
    packages=["kiln", "kiln.onnxruntime", "kiln.onnxruntime.capi"],
    package_dir={"kiln": "kiln"},
    install_requires=["numpy"],
    ext_modules=native_extensions(),
    cmdclass={"build_py": BuildWithLibrary, "build_ext": BuildExtWithLibrary},
    zip_safe=False,
)
