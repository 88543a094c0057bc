#!/usr/bin/env bash
# Where kiln's decode attention loses to cuDNN (issue 13): Nsight Compute counters of one timed
# launch of kiln's decode kernel and of cuDNN's, on the sweep rows given, side by side. The
# question it answers: is the gap DRAM throughput while all SMs stream, or SMs that finish early
# (sm__cycles_active.min/avg/max against the elapsed cycles), or the split combine?
#
#   IDS=11,19,24 bash bench/attention/decode_ncu.sh     # on the GPU machine, carry ["build-carry"]
#
# Needs the sweep binaries (build-carry/attn.tar.xz) and PyTorch. Writes $OUT/ncu_<who>_<id>.csv
# and prints one line per kernel: name, grid, block, time, DRAM GB/s, % of peak DRAM, SM active
# cycles min/avg/max over elapsed.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out/decode_ncu}
IDS=${IDS:-11,19,24}
DTYPE=${DTYPE:-fp16}
SHAPES=${SHAPES:-$ROOT/bench/attention/sweep_shapes.csv}
BIN=${SWEEP_BIN:-/tmp/kiln-attn/attn}
mkdir -p "$OUT"
[ -n "${KILN_LIBRARY:-}" ] || source scripts/gpu/env.sh
[ -x "$BIN/bench_sweep" ] || { mkdir -p /tmp/kiln-attn && tar -C /tmp/kiln-attn -xJf build-carry/attn.tar.xz; }
command -v ncu >/dev/null || { echo "decode_ncu: no ncu on this machine"; exit 1; }
METRICS=gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
METRICS=$METRICS,sm__cycles_active.min,sm__cycles_active.avg,sm__cycles_active.max,sm__cycles_elapsed.max
METRICS=$METRICS,launch__grid_size,launch__block_size,launch__registers_per_thread
METRICS=$METRICS,launch__shared_mem_per_block_dynamic,sm__warps_active.avg.pct_of_peak_sustained_active
NCU=(ncu --clock-control none --csv --page raw --print-units base --metrics "$METRICS")
for id in ${IDS//,/ }; do
    # kiln: skip the check's launch and a few timed ones; the split kernel and its combine
    timeout 90 "${NCU[@]}" -k regex:decode --launch-skip 4 --launch-count 2 \
        "$BIN/bench_sweep" --shapes "$SHAPES" --dtype "$DTYPE" --ids "$id" > "$OUT/ncu_kiln_$id.csv" 2> "$OUT/ncu_kiln_$id.err"
    echo "kiln id $id rc=$?"
    # cuDNN through PyTorch: every kernel of a few calls after warm-up; the report keeps the longest
    timeout 120 "${NCU[@]}" --launch-skip 40 --launch-count 12 \
        python3 bench/attention/sweep_peers.py --shapes "$SHAPES" --dtype "$DTYPE" --backends cudnn --ids "$id" \
        --json "$OUT/peers_$id.jsonl" > "$OUT/ncu_cudnn_$id.csv" 2> "$OUT/ncu_cudnn_$id.err"
    echo "cudnn id $id rc=$?"
done
python3 - "$OUT" <<'EOF'
import csv, glob, io, os, sys
out = sys.argv[1]
def rows(path):
    txt = open(path, errors="replace").read()
    i = txt.find('"ID"')
    if i < 0:
        return []
    r = list(csv.DictReader(io.StringIO(txt[i:])))
    return [x for x in r[1:] if x.get("Kernel Name")]  # row 0: units
def f(x, k):
    try:
        return float(str(x.get(k, "nan")).replace(",", ""))
    except ValueError:
        return float("nan")
print(f"{'who':6} {'id':>3} {'kernel':44} {'grid':>7} {'blk':>4} {'us':>8} {'GB/s':>7} {'%dram':>6} {'act min/avg/max of elapsed':>28}")
for path in sorted(glob.glob(os.path.join(out, "ncu_*_*.csv"))):
    who, id_ = os.path.basename(path)[4:-4].split("_")
    rs = rows(path)
    if who == "cudnn":  # the attention kernel: the longest of the captured ones
        rs = sorted(rs, key=lambda x: -f(x, "gpu__time_duration.sum"))[:1]
    for x in rs:
        t = f(x, "gpu__time_duration.sum")  # ns
        el = f(x, "sm__cycles_elapsed.max")
        act = "/".join(f"{f(x, 'sm__cycles_active.' + s) / el:.2f}" for s in ("min", "avg", "max"))
        print(f"{who:6} {id_:>3} {x['Kernel Name'][:44]:44} {x.get('launch__grid_size', ''):>7} "
              f"{x.get('launch__block_size', ''):>4} {t / 1e3:8.1f} {f(x, 'dram__bytes_read.sum') / t:7.0f} "
              f"{f(x, 'dram__throughput.avg.pct_of_peak_sustained_elapsed'):6.1f} {act:>28}")
EOF
