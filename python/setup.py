"""pip install ./python — builds libkiln with CMake (from the repository root) and ships it inside
the `kiln` package, so `import kiln` works without KILN_LIBRARY."""
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class BuildWithLibrary(build_py):
    def run(self):
        build_dir = os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build"))
        subprocess.check_call(["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release"])
        subprocess.check_call(["cmake", "--build", build_dir, "--target", "kiln", "-j", str(os.cpu_count() or 2)])
        super().run()
        dest = os.path.join(self.build_lib, "kiln")
        os.makedirs(dest, exist_ok=True)
        shutil.copy2(os.path.join(build_dir, "libkiln.so"), os.path.join(dest, "libkiln.so"))


setup(
    name="kiln",
    version="0.1.0",
    description="kiln: an ONNX inference runtime in C (Python binding)",
    packages=["kiln"],
    package_dir={"kiln": "kiln"},
    install_requires=["numpy"],
    cmdclass={"build_py": BuildWithLibrary},
    zip_safe=False,
)
