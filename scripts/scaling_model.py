#!/usr/bin/env python3
"""The step cost model of docs/scaling.md: one training step of N ranks, replicated versus sharded
embedding tables, from measured compute and a measured network.

    scripts/scaling_model.py fit NET.json...                 latency and bandwidth per collective
    scripts/scaling_model.py validate --net NET.json... --bench BENCH.json...
                                                             predicted against measured steps
    scripts/scaling_model.py predict --net NET.json... --bench BENCH.json [--ranks 2,4,...,1024]
                                                             samples/s for N ranks
    scripts/scaling_model.py predict --link 25:20 --bench BENCH.json
                                                             the same on a 25 Gbit/s, 20 us network
    scripts/scaling_model.py bytes BENCH.json...             predicted against measured bytes

NET.json comes from `rec-dist bench --network --json-out` (the calibration), BENCH.json from
`rec-dist bench --json-out` with a replicated and a sharded case of one model and batch. Only the
standard library is used.

The model. A step of a rank is its compute C (forward, backward, optimizer, the rest: measured by
`bench` on that rank) plus its communication, each collective costing

    t = alpha * L(N) + V / B

where V is the bytes the busiest link carries for that collective and L(N) its message rounds:

    allreduce   (ring)        V = 2 (N-1)/N * m     L = 2 ceil(log2 N)
    allgatherv  (ring)        V = (N-1) * m         L = N - 1
    alltoallv   (pairwise)    V = s                 L = N - 1

with m the bytes per rank and s what a rank sends in total. alpha and B are fitted per collective
by least squares on relative error over the calibration runs' sizes: for validation, on the runs
with the validated number of ranks; for prediction, on the 2-rank runs (where every rank has a
core of its own on the 2-core machine the figures were measured on).

What a step sends (per rank; u = distinct embedding rows in a rank's batch, d = embedding width,
measured by `bench` and independent of N at a fixed batch per rank):

    both        the dense gradients, one allreduce per bucket
    replicated  allgatherv of the rank's distinct rows, u (8 + 4d) bytes (and an 8-byte count),
                then every rank updates the union of all ranks' rows
    sharded     alltoallv of counts (8 N bytes, twice), of the remote ids (u (N-1)/N * 8 bytes),
                of their vectors back (u (N-1)/N * 4d), of the gradients to their owners
                (u (N-1)/N * (8 + 4d) bytes), and a 16-byte allreduce (clipping and the
                non-finite guard); owners update only their own rows

Overlap is ignored (the dense buckets do start during the backward pass; the model's
communication is then an upper bound, and the validation reports how close it comes).
"""
import argparse
import json
import math
import sys

COLLECTIVES = ("allreduce", "allgatherv", "alltoallv")


def rounds(collective, n):
    if n <= 1:
        return 0.0
    if collective == "allreduce":
        return 2.0 * math.ceil(math.log2(n))
    return float(n - 1)


def volume(collective, n, m):
    """Bytes over the busiest link for one call with m bytes per rank (alltoallv: sent in total)."""
    if n <= 1:
        return 0.0
    if collective == "allreduce":
        return 2.0 * (n - 1) / n * m
    if collective == "allgatherv":
        return float(n - 1) * m
    return float(m)


def fit(measurements, ranks=None):
    """alpha (s) and B (bytes/s) per collective: weighted least squares of t = alpha L + V / B,
    each point weighted by 1/t (relative error), over the measurements of `ranks` ranks (all
    rank counts when None)."""
    params = {}
    for c in COLLECTIVES:
        pts = [(rounds(c, m["ranks"]), volume(c, m["ranks"], m["bytes_per_rank"]), m["median_ms"] / 1e3)
               for m in measurements if m["collective"] == c and m["ranks"] > 1 and (ranks is None or m["ranks"] == ranks)]
        if len(pts) < 2:
            raise SystemExit(f"scaling_model: need at least 2 calibration points of {c} on 2 or more ranks")
        # Normal equations of min sum ((a L + b V - t) / t)^2 over a, b (b = 1/B).
        s_ll = sum((l / t) ** 2 for l, v, t in pts)
        s_vv = sum((v / t) ** 2 for l, v, t in pts)
        s_lv = sum(l * v / t ** 2 for l, v, t in pts)
        s_l = sum(l / t for l, v, t in pts)
        s_v = sum(v / t for l, v, t in pts)
        det = s_ll * s_vv - s_lv ** 2
        a = (s_l * s_vv - s_v * s_lv) / det
        b = (s_ll * s_v - s_lv * s_l) / det
        a, b = max(a, 1e-7), max(b, 1e-13)
        errors = sorted(abs(a * l + b * v - t) / t for l, v, t in pts)
        params[c] = {"alpha_s": a, "bandwidth_Bps": 1.0 / b, "points": len(pts),
                     "median_rel_error": errors[len(errors) // 2], "max_rel_error": errors[-1]}
    return params


def cost(params, collective, n, m):
    p = params[collective]
    return p["alpha_s"] * rounds(collective, n) + volume(collective, n, m) / p["bandwidth_Bps"]


def load(paths):
    out = []
    for p in paths:
        with open(p) as f:
            out.append(json.load(f))
    return out


def calibration(paths):
    return [m for report in load(paths) for m in report["measurements"]]


class Workload:
    """What one model at one batch per rank computes and sends: a replicated and a sharded case
    of a bench report."""

    def __init__(self, rep, shd):
        self.rep, self.shd = rep, shd
        self.batch = self.rep["batch_per_rank"]
        self.dense_buckets = [4 * c for c in self.rep["dense_buckets"]]
        rows = self.rep["embedding_rows"]
        # The embedding width: the replicated exchange sends 8 + 4d bytes per row (a 64-bit row).
        self.u = self.rep["embedding_rows_local"]
        self.d = round((self.rep["bytes_embedding_sent_per_step"] / max(self.u, 1) - 8) / 4) if self.u else 16
        self.table_rows = rows

    def bytes(self, mode, n):
        """Per-rank bytes as bench counts them (sent; the replicated case also received)."""
        u, d = self.u, self.d
        remote = u * (n - 1) / n
        if mode == "replicated":
            # Received: the allgatherv's whole buffer, the rank's own block included.
            return {"dense": sum(self.dense_buckets), "sent": u * (8 + 4 * d), "received": n * u * (8 + 4 * d)}
        return {"dense": sum(self.dense_buckets),
                "lookup": 8 * n + remote * 8 + remote * 4 * d,
                "gradients": 8 * n + u * (8 + 4 * d)}

    def union_rows(self, n):
        """Expected distinct rows of n ranks' batches: n u draws over the tables' rows."""
        r = self.table_rows
        return r * (1 - math.exp(-n * self.u / r))

    def communication(self, params, mode, n):
        t = sum(cost(params, "allreduce", n, b) for b in self.dense_buckets)
        if n <= 1:
            return t
        u, d = self.u, self.d
        remote = u * (n - 1) / n
        if mode == "replicated":
            return t + cost(params, "allgatherv", n, 8) + cost(params, "allgatherv", n, u * (8 + 4 * d))
        return (t + 2 * cost(params, "alltoallv", n, 8 * (n - 1)) + cost(params, "alltoallv", n, remote * 8)
                + cost(params, "alltoallv", n, remote * 4 * d) + cost(params, "alltoallv", n, remote * (8 + 4 * d))
                + cost(params, "allreduce", n, 16))

    @staticmethod
    def compute_ms(r):
        return r["step_ms"] - r["comm_exposed_ms"]

    def step_ms(self, params, mode, n, compute_from=None):
        """Predicted ms per step on n ranks: compute measured in `compute_from` (a bench result of
        this mode), the replicated optimizer scaled to the union of rows, plus communication."""
        r = compute_from or (self.rep if mode == "replicated" else self.shd)
        c = self.compute_ms(r)
        if mode == "replicated" and compute_from is None:
            measured_union = self.union_rows(r["ranks"])
            c += r["optimizer_ms"] * (self.union_rows(n) / measured_union - 1)
        return c + self.communication(params, mode, n) * 1e3


def workloads(report):
    """The report's (replicated, sharded) pairs of one model and batch, as Workloads."""
    out = []
    for rep in report["results"]:
        if rep["embedding_sharding"] != "replicated":
            continue
        for shd in report["results"]:
            if (shd["embedding_sharding"] != "replicated" and shd["model"] == rep["model"]
                    and shd["batch_per_rank"] == rep["batch_per_rank"]):
                out.append(Workload(rep, shd))
                break
    if not out:
        raise SystemExit("scaling_model: a bench report needs a replicated and a sharded case of one model and batch")
    return out


def label(r):
    mode = r["embedding_sharding"]
    return f"{r['model']}:{r['batch_per_rank']}" + ("" if mode == "replicated" else ":" + mode)


def cmd_fit(args):
    measurements = calibration(args.net)
    for n in sorted({m["ranks"] for m in measurements if m["ranks"] > 1}):
        print_fit(f"{n} ranks", fit(measurements, n))
    print_fit("all", fit(measurements))


def print_fit(what, params):
    for c, p in params.items():
        print(f"{what:9s} {c:10s} alpha {p['alpha_s'] * 1e6:8.1f} us  bandwidth {p['bandwidth_Bps'] * 8 / 1e9:6.2f} Gbit/s"
              f"  ({p['points']} points; relative error median {p['median_rel_error']:.0%}, max {p['max_rel_error']:.0%})")


def cmd_validate(args):
    measurements = calibration(args.net)
    print("| ranks | case | measured ms/step | predicted ms/step | error |")
    print("|---:|---|---:|---:|---:|")
    worst = 0.0
    for report in load(args.bench):
        for w in workloads(report):
            for mode, r in (("replicated", w.rep), ("sharded", w.shd)):
                n = r["ranks"]
                params = fit(measurements, n)   # the network as measured with this many ranks
                predicted = w.compute_ms(r) + w.communication(params, mode, n) * 1e3
                err = predicted / r["step_ms"] - 1
                worst = max(worst, abs(err))
                print(f"| {n} | {label(r)} | {r['step_ms']:.1f} | {predicted:.1f} | {err:+.0%} |")
    print(f"\nlargest error {worst:.0%}")
    return worst


def cmd_predict(args):
    if args.link:
        gbit, us = (float(x) for x in args.link.split(":"))
        params = {c: {"alpha_s": us * 1e-6, "bandwidth_Bps": gbit * 1e9 / 8} for c in COLLECTIVES}
        where = f"a {gbit:g} Gbit/s link with {us:g} us per message round"
    else:
        params = fit(calibration(args.net), args.calibration_ranks)
        where = f"the network fitted to the {args.calibration_ranks}-rank calibration"
    report = load([args.bench])[0]
    ranks = [int(x) for x in args.ranks.split(",")]
    for w in workloads(report):
        print(f"\n{label(w.rep)} against {label(w.shd)}, compute measured on {w.rep['ranks']} ranks, {where}\n")
        print(f"| ranks | replicated samples/s | sharded samples/s | sharded / replicated | replicated MB gathered per step | sharded MB sent per step |")
        print("|---:|---:|---:|---:|---:|---:|")
        for n in ranks:
            rep = w.step_ms(params, "replicated", n)
            shd = w.step_ms(params, "sharded", n)
            br, bs = w.bytes("replicated", n), w.bytes("sharded", n)
            print(f"| {n} | {n * w.batch / rep * 1e3:,.0f} | {n * w.batch / shd * 1e3:,.0f} | {rep / shd:.2f} "
                  f"| {br['received'] / 1e6:.2f} | {(bs['lookup'] + bs['gradients']) / 1e6:.2f} |")


def cmd_bytes(args):
    worst = 0.0
    for w in (w for report in load(args.bench) for w in workloads(report)):
        n = w.rep["ranks"]
        pr, ps = w.bytes("replicated", n), w.bytes("sharded", n)
        pairs = [("dense", pr["dense"], w.rep["bytes_dense_per_step"]),
                 ("replicated sent", pr["sent"], w.rep["bytes_embedding_sent_per_step"]),
                 ("replicated received", pr["received"], w.rep["bytes_embedding_received_per_step"]),
                 ("sharded lookup", ps["lookup"], w.shd["bytes_sharded_lookup_per_step"]),
                 ("sharded gradients", ps["gradients"], w.shd["bytes_sharded_gradients_per_step"])]
        for what, predicted, measured in pairs:
            err = predicted / measured - 1 if measured else (0.0 if predicted == 0 else float("inf"))
            worst = max(worst, abs(err))
            print(f"{label(w.shd)} on {n} ranks: {what:20s} predicted {predicted:12.0f} measured {measured:12d} error {err:+.2%}")
    print(f"largest error {worst:.2%}")
    if args.tolerance is not None and worst > args.tolerance:
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit")
    f.add_argument("net", nargs="+")
    v = sub.add_parser("validate")
    v.add_argument("--net", nargs="+", required=True)
    v.add_argument("--bench", nargs="+", required=True)
    p = sub.add_parser("predict")
    p.add_argument("--net", nargs="+")
    p.add_argument("--bench", required=True)
    p.add_argument("--link", help="GBIT:US: instead of the calibration, every collective on a link of GBIT Gbit/s "
                                  "and US microseconds per message round (a cluster this machine cannot shape)")
    p.add_argument("--ranks", default="1,2,4,8,16,32,64,128,256,512,1024")
    p.add_argument("--calibration-ranks", type=int, default=2,
                   help="fit the network on the calibration runs of this many ranks (default 2: one core per rank here)")
    b = sub.add_parser("bytes")
    b.add_argument("bench", nargs="+")
    b.add_argument("--tolerance", type=float, help="exit 1 when a prediction is off by more than this fraction")
    args = ap.parse_args()
    if args.command == "predict" and not args.net and not args.link:
        ap.error("predict needs --net NET.json... (a calibration) or --link GBIT:US")
    {"fit": cmd_fit, "validate": cmd_validate, "predict": cmd_predict, "bytes": cmd_bytes}[args.command](args)


if __name__ == "__main__":
    main()
