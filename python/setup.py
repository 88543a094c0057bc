"""pip install ./python, pip wheel ./python — builds libkiln and the kiln command with CMake (from
the repository root) and ships them inside the `kiln` package, so `import kiln` works without
KILN_LIBRARY and `kiln` is a command. The libraries they need beyond glibc and the GCC runtime
(OpenBLAS, gfortran, zlib, the image codecs) are bundled in kiln.libs/ (wheel_libs.py), so the wheel
installs on a machine without them. Also builds the extension kiln._native (the fast path of
InferenceSession.run) against that libkiln, when Python's headers and numpy are there; without them,
or if it fails to compile, the package uses ctypes only.

Environment: KILN_CUDA=OFF|ON|AUTO is passed to CMake (unset: the build folder's setting, AUTO in a
new one: the CUDA provider when nvcc is found; OFF for a CPU-only wheel); KILN_BUILD_DIR is the CMake
build folder (default build/ of the repository)."""
import os
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import wheel_libs  # noqa: E402  (a build helper beside this file, not packaged)

_built = {}


def build_dir():
    return os.path.abspath(os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build")))


def build_libkiln():
    """Configures and builds libkiln and the kiln command (and the CUDA provider when this
    configuration has it) once per setup.py run (build_py and build_ext both need them)."""
    bdir = build_dir()
    if bdir not in _built:
        configure = ["cmake", "-S", ROOT, "-B", bdir, "-DCMAKE_BUILD_TYPE=Release"]
        cuda = os.environ.get("KILN_CUDA")
        if cuda is not None:   # else the build folder's own setting (AUTO in a new one)
            if cuda.upper() not in ("ON", "OFF", "AUTO"):
                sys.exit("kiln: KILN_CUDA must be ON, OFF or AUTO, not %r" % cuda)
            configure.append("-DKILN_CUDA=" + cuda.upper())
        subprocess.check_call(configure)
        targets = ["kiln", "kiln_cli"] + (["kiln_cuda"] if cmake_has_cuda(bdir) else [])
        subprocess.check_call(["cmake", "--build", bdir, "-j", str(os.cpu_count() or 2), "--target", *targets])
        _built[bdir] = True
    return bdir


def cmake_has_cuda(bdir):
    """Whether the configured build folder builds libkiln_cuda.so (CMakeLists.txt: KILN_CUDA not OFF
    and a CUDA compiler found)."""
    cache = {}
    with open(os.path.join(bdir, "CMakeCache.txt")) as f:
        for line in f:
            name, _, value = line.rstrip("\n").partition("=")
            cache[name.split(":")[0]] = value
    return cache.get("KILN_CUDA", "AUTO").upper() != "OFF" and \
        bool(cache.get("CMAKE_CUDA_COMPILER")) and not cache["CMAKE_CUDA_COMPILER"].endswith("NOTFOUND")


class BuildWithLibrary(build_py):
    def run(self):
        bdir = build_libkiln()
        super().run()
        dest = os.path.join(self.build_lib, "kiln")
        libs = os.path.join(self.build_lib, "kiln.libs")
        shutil.rmtree(libs, ignore_errors=True)
        os.makedirs(os.path.join(dest, "bin"), exist_ok=True)
        files = {"libkiln.so": "libkiln.so", "kiln": os.path.join("bin", "kiln")}
        # the CUDA provider of this build only: a CPU-only build must not ship a stale one
        if cmake_has_cuda(bdir):
            files["libkiln_cuda.so"] = "libkiln_cuda.so"
        elves = {}
        for src, rel in files.items():
            target = os.path.join(dest, rel)
            shutil.copy2(os.path.join(bdir, src), target)
            elves[target] = wheel_libs.runpaths(dest, libs, target)
        stale = os.path.join(dest, "libkiln_cuda.so")
        if "libkiln_cuda.so" not in files and os.path.exists(stale):
            os.remove(stale)
        wheel_libs.bundle(dest, libs, elves)


class BuildExtWithLibrary(build_ext):
    def run(self):
        bdir = build_libkiln()
        for ext in self.extensions:
            ext.library_dirs.append(bdir)
        super().run()
        # only $ORIGIN (libkiln.so beside it): no folder of the build machine (the linker may add
        # the interpreter's lib folder) stays in the installed package
        patchelf = wheel_libs.patchelf_tool()
        for ext in self.extensions:
            path = self.get_ext_fullpath(ext.name)
            if os.path.exists(path):
                subprocess.check_call([patchelf, "--set-rpath", "$ORIGIN", path])


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


class BinaryDistribution(Distribution):
    """The wheel carries native code even when kiln._native is not built: a platform wheel."""
    def has_ext_modules(self):
        return True


setup(
    name="kiln",
    version="0.1.0",
    description="kiln: an ONNX inference runtime in C (Python binding)",
    packages=["kiln", "kiln.onnxruntime", "kiln.onnxruntime.capi", "kiln.onnxruntime.training",
              "kiln.onnxruntime.training.api"],
    package_dir={"kiln": "kiln"},
    install_requires=["numpy"],
    # the CUDA runtime, cuBLAS and cuDNN for the CUDA provider (libkiln_cuda.so looks in these
    # wheels' folders first, then on the system): pip install 'kiln[cuda]'
    extras_require={"cuda": ["nvidia-cuda-runtime>=13,<14", "nvidia-cublas>=13,<14", "nvidia-cudnn-cu13>=9"]},
    entry_points={"console_scripts": ["kiln=kiln._cli:main"]},
    distclass=BinaryDistribution,
    ext_modules=native_extensions(),
    cmdclass={"build_py": BuildWithLibrary, "build_ext": BuildExtWithLibrary},
    zip_safe=False,
)
