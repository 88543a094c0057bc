#!/usr/bin/env python3
"""Whether the softmax overlaps the P·V GEMM in the compiled sm90 kernels: for every kernel in the
given objects or binaries, and every main-loop wait for Q·Kᵀ ('WARPGROUP.DEPBAR.LE gsb0, 0x1'),
how many MUFU.EX2 (the softmax's exponentials) come before the following wait for P·V
('... 0x0'). "66/66" at BN 128: all of them overlap P·V; "0/66": ptxas put the wait first.

  python3 bench/attention/sass_overlap.py build-gpu/obj/flash_sm90_tma_e.o

Needs cuobjdump: the CUDA toolkit's, or PyPI's nvidia-cuda-cuobjdump wheel (CUOBJDUMP=path).
"""
import os, re, shutil, subprocess, sys


def main():
    tool = os.environ.get("CUOBJDUMP") or shutil.which("cuobjdump") or "/usr/local/cuda/bin/cuobjdump"
    for obj in sys.argv[1:]:
        out = subprocess.run([tool, "-sass", obj], capture_output=True, text=True, check=True).stdout
        for func in re.split(r"\n\s+Function : ", out)[1:]:
            name = func.split("\n", 1)[0].strip()
            ins = re.findall(r"/\*[0-9a-f]{4,}\*/\s+([^;]*);", func)
            counts = []
            for i, x in enumerate(ins):
                if "DEPBAR.LE gsb0, 0x1" not in x:
                    continue
                j, before = i + 1, 0
                while j < len(ins) and "DEPBAR.LE gsb0, 0x0" not in ins[j]:
                    before += "MUFU.EX2" in ins[j]
                    j += 1
                k, after = j + 1, 0
                while k < len(ins) and "HGMMA" not in ins[k] and "DEPBAR.LE gsb0, 0x1" not in ins[k]:
                    after += "MUFU.EX2" in ins[k]
                    k += 1
                counts.append(f"{before}/{before + after}")
            if counts:
                print(f"{name}: EX2 before the P·V wait: {' '.join(counts)}")


if __name__ == "__main__":
    main()
