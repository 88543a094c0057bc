#!/usr/bin/env bash
# Where one attention kernel spends its time, on the GPU machine: Nsight Compute sections (when
# the machine has ncu) for one launch of the default kernel on ROW, then the SASS opcode
# histogram of FUNC (cuobjdump). Output under $OUT (default out/profile).
#   KILN_PREBUILT=build-carry ROW=4,4096,32,128 bash bench/attention/profile_kernel.sh
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=${KILN_PREBUILT:-$ROOT/build-gpu}
OUT=${OUT:-$ROOT/out/profile}
ROW=${ROW:-4,4096,32,128}
FUNC=${FUNC:-_ZN9kiln_sm9021flash_sm90_tma_kernelI6__halfLi128ELi128ELi1ELi2ELb1ELb1EEEvNS_9TmaParamsE}
mkdir -p "$OUT"
find_tool() {
    command -v "$1" 2>/dev/null || ls /usr/local/cuda/bin/"$1" /usr/local/cuda-*/bin/"$1" /opt/nvidia/nsight-compute/*/"$1" \
        2>/dev/null | head -1
}
NCU=$(find_tool ncu)
if [ -n "$NCU" ]; then
    timeout ${NCU_TIMEOUT:-150} "$NCU" --kernel-name regex:flash_sm90 --launch-skip 5 --launch-count 1 \
        --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
        --section InstructionStats --section MemoryWorkloadAnalysis \
        "$B/bench_attention" --configs "$ROW" > "$OUT/ncu.txt" 2>&1
    echo "ncu rc=$?"
    grep -E "Duration|SM Busy|Issue Slots Busy|Executed Ipc|Warp Cycles Per Issued|Stall|No Eligible|Active Warps|Eligible Warps|Compute \(SM\) Throughput|Memory Throughput|L2 Hit|Tensor|Pipe" "$OUT/ncu.txt" | head -60
else
    echo "no ncu on this machine"
fi
CUOBJ=$(find_tool cuobjdump)
if [ -n "$CUOBJ" ]; then
    "$CUOBJ" -sass -fun "$FUNC" "$B/bench_attention" > "$OUT/kernel.sass" 2>&1
    echo "SASS opcodes of $FUNC ($(grep -c '/\*[0-9a-f]*\*/' "$OUT/kernel.sass") lines):"
    grep -oE '/\*[0-9a-f]{4,}\*/ +(@!?U?P[0-9T] +)?[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*' "$OUT/kernel.sass" |
        awk '{print $NF}' | sed 's/\..*//' | sort | uniq -c | sort -rn | head -30 | tr '\n' ' '
    echo
else
    echo "no cuobjdump on this machine"
fi
