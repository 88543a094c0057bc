#!/usr/bin/env python3
"""Side-by-side table of kiln's attention benchmark and the PyTorch peers (sdpa_peers.py).

Reads kiln_<pass>.json and peers_<pass>.json from a results directory (gpu_run.sh writes them),
prints per-row TFLOP/s for the first pass and geometric means for every pass (the short table
last), and writes attention_bench.md and attention_bench.json there.

  python3 bench/attention/report.py out/attention
"""
import glob, json, math, os, sys


def geomean(xs):
    xs = [x for x in xs if x]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def fmt(x, w=7):
    return f"{x:{w}.1f}" if isinstance(x, (int, float)) else f"{'-':>{w}}"


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "out/attention"
    passes = []
    for kf in sorted(glob.glob(os.path.join(d, "kiln_*.json"))):
        name = os.path.basename(kf)[5:-5]
        try:
            kiln = json.load(open(kf))
        except Exception:
            # A pass cut short leaves a partial file: one row per line, take the complete ones.
            lines = open(kf).read().splitlines()
            try:
                kiln = json.loads(lines[0] + "]}")
            except Exception as e:
                print(f"# {name}: unreadable kiln json ({e})")
                continue
            for ln in lines[1:]:
                try:
                    kiln["rows"].append(json.loads(ln.strip().rstrip(",")))
                except Exception:
                    pass
            print(f"# {name}: partial, {len(kiln['rows'])} rows")
        peers = {}
        pf = os.path.join(d, f"peers_{name}.json")
        if os.path.exists(pf):
            for r in json.load(open(pf))["rows"]:
                peers[(r["B"], r["S"], r["N"], r["H"])] = r
        rows = []
        for r in kiln["rows"]:
            p = peers.get((r["B"], r["S"], r["N"], r["H"]), {})
            best_var = max(r.get("variants", {}).items(), key=lambda kv: kv[1], default=(None, None))
            rows.append(dict(r, fa2=p.get("flash"), eff=p.get("efficient"), cudnn=p.get("cudnn"), best_variant=best_var[0],
                             best_variant_tflops=best_var[1]))
        passes.append((name, kiln, rows))
    order = ["fp16_qkv_sep", "fp16_kv_packed", "fp16_qkv_packed", "fp16_qkv_sep_causal", "bf16_qkv_sep"]
    passes.sort(key=lambda p: order.index(p[0]) if p[0] in order else 99)

    md = []
    for name, kiln, rows in passes:
        md.append(f"### {name} ({kiln.get('device', '')})\n")
        md.append("| B,S,N,H | kiln | kernel | unfused | best tile | FA2 | mem-efficient | cuDNN | kiln/FA2 | kiln/cuDNN |")
        md.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            rf = "-" if not r.get("fa2") else f"{r['kiln'] / r['fa2']:.2f}"
            rc = "-" if not r.get("cudnn") else f"{r['kiln'] / r['cudnn']:.2f}"
            bv = f"{r['best_variant']} {r['best_variant_tflops']:.1f}" if r.get("best_variant") else ""
            md.append(f"| {r['B']},{r['S']},{r['N']},{r['H']} | {r['kiln']:.1f} | {r['kernel']} | "
                      f"{fmt(r.get('unfused'), 0).strip()} | {bv} | {fmt(r.get('fa2'), 0).strip()} | "
                      f"{fmt(r.get('eff'), 0).strip()} | {fmt(r.get('cudnn'), 0).strip()} | {rf} | {rc} |")
        md.append("")

    summary = []
    for name, kiln, rows in passes:
        g = lambda k: geomean([r.get(k) for r in rows])
        gk = g("kiln")
        # Geomeans over the rows where a peer number exists, so ratios compare like with like.
        both_f = [(r["kiln"], r["fa2"]) for r in rows if r.get("fa2")]
        both_c = [(r["kiln"], r["cudnn"]) for r in rows if r.get("cudnn")]
        summary.append(dict(name=name, rows=len(rows), kiln=gk, unfused=g("unfused"), best_tile=g("best_variant_tflops"),
                            fa2=geomean([b for _, b in both_f]), eff=g("eff"), cudnn=geomean([b for _, b in both_c]),
                            vs_fa2=geomean([a / b for a, b in both_f]), vs_cudnn=geomean([a / b for a, b in both_c])))
    # One fixed choice per head size (what a default table can express): the variant with the best
    # geomean over every row of that head size in all passes that swept variants.
    per_h = {}
    for name, _, rows in passes:
        for r in rows:
            for v, t in r.get("variants", {}).items():
                per_h.setdefault(r["H"], {}).setdefault(v, []).append(t)
    choice = {}
    for h, vs in per_h.items():
        n_rows = max(len(t) for t in vs.values())
        full = {v: geomean(t) for v, t in vs.items() if len(t) == n_rows}
        if full:
            choice[h] = max(full.items(), key=lambda kv: kv[1])[0]
    for s_ in summary:
        rows = next(r for n, _, r in passes if n == s_["name"])
        tuned = [r["variants"][choice[r["H"]]] for r in rows if r.get("variants") and choice.get(r["H"]) in r["variants"]]
        s_["tuned"] = geomean(tuned) if len(tuned) == len(rows) else None
        both = [(r["variants"][choice[r["H"]]], r["cudnn"]) for r in rows
                if r.get("cudnn") and r.get("variants") and choice.get(r["H"]) in r["variants"]]
        s_["tuned_vs_cudnn"] = geomean([a / b for a, b in both]) if both else None
    md.append("### Default per head size chosen from the sweep\n")
    md.append("| H | kernel |")
    md.append("|---|---|")
    for h in sorted(choice):
        md.append(f"| {h} | {choice[h]} |")
    md.append("")
    md.append("### Geometric means (TFLOP/s)\n")
    md.append("| pass | rows | kiln | kiln best tile | kiln unfused | FA2 | mem-efficient | cuDNN | kiln/FA2 | kiln/cuDNN |")
    md.append("|---|---|---|---|---|---|---|---|---|---|")
    for s in summary:
        r1 = "-" if s["vs_fa2"] is None else f"{s['vs_fa2']:.2f}"
        r2 = "-" if s["vs_cudnn"] is None else f"{s['vs_cudnn']:.2f}"
        md.append(f"| {s['name']} | {s['rows']} | {fmt(s['kiln'], 0).strip()} | {fmt(s['best_tile'], 0).strip()} | "
                  f"{fmt(s['unfused'], 0).strip()} | {fmt(s['fa2'], 0).strip()} | {fmt(s['eff'], 0).strip()} | "
                  f"{fmt(s['cudnn'], 0).strip()} | {r1} | {r2} |")
    open(os.path.join(d, "attention_bench.md"), "w").write("\n".join(md) + "\n")
    json.dump({"passes": [dict(name=n, rows=r) for n, _, r in passes], "summary": summary},
              open(os.path.join(d, "attention_bench.json"), "w"), indent=1)

    # Console: per-row table of the first pass, then the short summary last.
    if passes:
        name, _, rows = passes[0]
        print(f"\n{name}: TFLOP/s")
        print(f"{'B,S,N,H':>16} {'kiln':>7} {'unfus':>7} {'best':>7} {'FA2':>7} {'memeff':>7} {'cuDNN':>7}  kernel")
        for r in rows:
            print(f"{r['B']},{r['S']},{r['N']},{r['H']}".rjust(16) + f" {fmt(r['kiln'])} {fmt(r.get('unfused'))} "
                  f"{fmt(r.get('best_variant_tflops'))} {fmt(r.get('fa2'))} {fmt(r.get('eff'))} {fmt(r.get('cudnn'))}"
                  f"  {r['kernel']}")
    if choice:
        print("\nper-head-size choice: " + ", ".join(f"H{h}: {choice[h]}" for h in sorted(choice)))
        print("tuned = geomean with that choice per row: " +
              ", ".join(f"{s_['name']} {fmt(s_['tuned'], 0).strip()} (x{s_['tuned_vs_cudnn']:.2f} cuDNN)"
                        for s_ in summary if s_.get("tuned") and s_.get("tuned_vs_cudnn")))
    # Per head size and pass: the default path, the best cp.async sm90 tile, the best TMA tile
    # (variants named "tma_"), and the peers, as geomeans over that head size's rows.
    print("\nper head size (geomean TFLOP/s): pass H rows default best-cp.async best-tma [tma tile] FA2 cuDNN")
    for name, _, rows in passes:
        for h in sorted({r["H"] for r in rows}):
            rs = [r for r in rows if r["H"] == h]
            vs = {}
            for r in rs:
                for v, t in r.get("variants", {}).items():
                    vs.setdefault(v, []).append(t)
            full = {v: geomean(t) for v, t in vs.items() if len(t) == len(rs)}
            tma = {v: g for v, g in full.items() if "tma_" in v}
            cpa = {v: g for v, g in full.items() if "flash_sm90" in v and "tma_" not in v}
            bt = max(tma.items(), key=lambda kv: kv[1], default=(None, None))
            bc = max(cpa.items(), key=lambda kv: kv[1], default=(None, None))
            print(f"{name:<20} H{h:<4} {len(rs):>2} {fmt(geomean([r['kiln'] for r in rs]))} {fmt(bc[1])} {fmt(bt[1])} "
                  f"[{bt[0] or '-'}] {fmt(geomean([r.get('fa2') for r in rs]))} {fmt(geomean([r.get('cudnn') for r in rs]))}")
    print("\ngeomean TFLOP/s      rows    kiln  best-tile unfused    FA2  memeff   cuDNN  k/FA2  k/cuDNN")
    for s in summary:
        r1 = "   -  " if s["vs_fa2"] is None else f"{s['vs_fa2']:6.2f}"
        r2 = "   -  " if s["vs_cudnn"] is None else f"{s['vs_cudnn']:6.2f}"
        print(f"{s['name']:<20} {s['rows']:>4} {fmt(s['kiln'])} {fmt(s['best_tile'])} {fmt(s['unfused'])} "
              f"{fmt(s['fa2'])} {fmt(s['eff'])} {fmt(s['cudnn'])} {r1} {r2}")


if __name__ == "__main__":
    main()
