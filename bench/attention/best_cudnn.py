#!/usr/bin/env python3
"""kiln against cuDNN per row, where cuDNN's figure for a row varies from run to run: for each pass,
the geometric mean of kiln / cuDNN in the kiln run's own call and against the best cuDNN figure seen
for that row in any of the given result folders (peers_<pass>.json from sdpa_peers.py).

  python3 bench/attention/best_cudnn.py bench/results/attention \\
      bench/results/attention bench/attention/results_persist/runs/*
"""
import glob, json, math, os, sys

PASSES = ["fp16_qkv_sep", "fp16_kv_packed", "fp16_qkv_packed", "fp16_qkv_sep_causal", "bf16_qkv_sep"]


def rows(path):
    return {(r["B"], r["S"], r["N"], r["H"]): r for r in json.load(open(path))["rows"]}


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def main():
    kiln_dir, peer_dirs = sys.argv[1], sys.argv[2:] or [sys.argv[1]]
    print("| pass | kiln | cuDNN (same call) | kiln/cuDNN | kiln/best cuDNN | rows below best | runs per row |")
    print("|---|---|---|---|---|---|---|")
    for p in PASSES:
        kf, sf = os.path.join(kiln_dir, f"kiln_{p}.json"), os.path.join(kiln_dir, f"peers_{p}.json")
        if not (os.path.exists(kf) and os.path.exists(sf)):
            continue
        kiln, same = rows(kf), rows(sf)
        best, runs = {}, {}
        for d in peer_dirs:
            f = os.path.join(d, f"peers_{p}.json")
            if not os.path.exists(f):
                continue
            for key, r in rows(f).items():
                if r.get("cudnn"):
                    best[key] = max(best.get(key, 0.0), r["cudnn"])
                    runs[key] = runs.get(key, 0) + 1
        keys = [k for k in kiln if same.get(k, {}).get("cudnn") and k in best]
        same_ratio = geomean([kiln[k]["kiln"] / same[k]["cudnn"] for k in keys])
        best_ratio = geomean([kiln[k]["kiln"] / best[k] for k in keys])
        below = sum(kiln[k]["kiln"] < best[k] for k in keys)
        n = [runs[k] for k in keys]
        print(f"| {p} | {geomean([kiln[k]['kiln'] for k in keys]):.1f} | {geomean([same[k]['cudnn'] for k in keys]):.1f} | "
              f"{same_ratio:.2f} | {best_ratio:.2f} | {below}/{len(keys)} | {min(n)}-{max(n)} |")


if __name__ == "__main__":
    main()
