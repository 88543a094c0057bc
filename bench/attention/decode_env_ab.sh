#!/usr/bin/env bash
# A/B of a decode setting (issue 13): kiln's harness on the sweep's decode and speculative rows
# with the environment variable $VAR set to each of $VALUES in turn ("-" leaves it unset), and
# cuDNN on the same rows in the same call. Every run checks its outputs first (bench_sweep).
#
#   VAR=KILN_DECODE_KERNEL VALUES="- simt mma" bash bench/attention/decode_env_ab.sh
#                                  # on the GPU machine, carry the build-carry tarballs
#
# A value with "=" in it is a comma-separated list of assignments instead, e.g.
#   VAR=KILN_DECODE_STREAMK VALUES="0 1 KILN_DECODE_STREAMK=1,KILN_DECODE_KERNEL=mma"
# and is labelled with "=" and "," turned into "-" and "_".
#
# Results under $OUT: kiln_<label>.jsonl, peers.jsonl, table.txt (the table printed last).
# Used for the L2-prefetch and split-waves trials (KILN_DECODE_PREFETCH, KILN_DECODE_WAVES: both
# lost and were removed, bench/results/attention/decode_*_2026-12-07/); a trial adds its variable.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/out/decode_env_ab}
DTYPE=${DTYPE:-fp16}
IDS=${IDS:-$(seq -s, 0 30)}
VAR=${VAR:-KILN_DECODE_KERNEL}
VALUES=${VALUES:-- simt mma}
SHAPES=${SHAPES:-$ROOT/bench/attention/sweep_shapes.csv}
BIN=${SWEEP_BIN:-/tmp/kiln-attn/attn}
mkdir -p "$OUT"
[ -n "${KILN_LIBRARY:-}" ] || source scripts/gpu/env.sh
[ -x "$BIN/bench_sweep" ] || { mkdir -p /tmp/kiln-attn && tar -C /tmp/kiln-attn -xJf build-carry/attn.tar.xz; }
LABELS=()
for d in $VALUES; do
    label=$d
    if [ "$d" = - ]; then
        envset=(env -u "$VAR")
    elif [[ "$d" == *=* ]]; then
        IFS=, read -ra assign <<< "$d"
        envset=(env "${assign[@]}")
        label=$(printf %s "$d" | tr '=,' '-_')
    else
        envset=(env "$VAR=$d")
    fi
    LABELS+=("$label")
    "${envset[@]}" timeout 120 "$BIN/bench_sweep" --shapes "$SHAPES" --dtype "$DTYPE" --ids "$IDS" \
        --json "$OUT/kiln_$label.jsonl" > "$OUT/kiln_$label.log" 2>&1
    echo "$VAR=$d rc=$?"
done
timeout 150 python3 bench/attention/sweep_peers.py --shapes "$SHAPES" --dtype "$DTYPE" --backends cudnn --ids "$IDS" \
    --json "$OUT/peers.jsonl" > "$OUT/peers.log" 2>&1
echo "cudnn rc=$?"
python3 - "$OUT" "${LABELS[@]}" <<'EOF' | tee "$OUT/table.txt"
import json, math, os, sys
out, ds = sys.argv[1], sys.argv[2:]
def load(path):
    r = {}
    for line in open(path) if os.path.exists(path) else []:
        x = json.loads(line)
        if "id" in x:
            r[x["id"]] = x
    return r
kiln = {d: load(os.path.join(out, f"kiln_{d}.jsonl")) for d in ds}
cud = {i: x for i, x in load(os.path.join(out, "peers.jsonl")).items() if x.get("ms")}
ids = sorted(kiln[ds[0]])
print(f"{'id':>3} {'kernel':38} " + " ".join(f"{d + ' us':>9}" for d in ds) + f" {'cudnn us':>9} " +
      " ".join(f"{'xcud ' + d:>9}" for d in ds))
logs = {d: [] for d in ds}
for i in ids:
    ms = {d: kiln[d].get(i, {}).get("ms") for d in ds}
    ok = all(kiln[d].get(i, {}).get("ok") for d in ds)
    c = cud.get(i, {}).get("ms")
    xs = {d: (c / ms[d] if c and ms[d] else float("nan")) for d in ds}
    for d in ds:
        if xs[d] == xs[d]:
            logs[d].append(math.log(xs[d]))
    print(f"{i:>3} {kiln[ds[0]][i]['kernel'][:38]:38} " + " ".join(f"{(ms[d] or float('nan')) * 1e3:9.1f}" for d in ds) +
          f" {(c or float('nan')) * 1e3:9.1f} " + " ".join(f"{xs[d]:9.3f}" for d in ds) + ("" if ok else "  CHECK FAILED"))
for d in ds:
    v = logs[d]
    if v:
        print(f"# {d}: geomean x cuDNN {math.exp(sum(v) / len(v)):.3f} over {len(v)} rows, "
              f"{sum(1 for x in v if x < math.log(0.9))} below 0.9")
EOF
