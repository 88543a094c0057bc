"""The 8-bit product's AMX-INT8 blocks (src/cpu/kernels/qgemm_amx.c) on any x86-64 CPU: the file is
compiled with KQG_AMX_EMULATE, which puts scalar tiles in place of the tile instructions, under
AddressSanitizer, and tests/kernels/qgemm_amx_blocks.c checks 16- and 32-row blocks of one and two
panels over K4 from 1 to 100 (the K tail's padded copy, A's slack past its last row) against sums
read off the packed layouts. On a CPU with AMX-INT8 the real tiles run in tests/test_int8_kernels.py
(scripts/gpu/cpu_isa_tests.sh on the GPU machine's Sapphire Rapids)."""
import os
import shutil
import subprocess

import pytest

from util import ROOT


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_amx_blocks_emulated(tmp_path):
    exe = tmp_path / "qgemm_amx_blocks"
    cmd = ["gcc", "-std=c11", "-O1", "-g", "-DKQG_AMX_EMULATE", "-fsanitize=address,undefined",
           "-fno-sanitize-recover=all", "-I" + os.path.join(ROOT, "src"),
           os.path.join(ROOT, "tests", "kernels", "qgemm_amx_blocks.c"),
           os.path.join(ROOT, "src", "cpu", "kernels", "qgemm_amx.c"), "-o", str(exe)]
    subprocess.run(cmd, check=True)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1")
    env.pop("LD_PRELOAD", None)
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
