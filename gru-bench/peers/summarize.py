#!/usr/bin/env python3
"""Merges JSON lines from repeated, interleaved runs of `gru bench --json` and peers.py into one
Markdown table: per (cell, shape), the median over runs of each kernel's GFLOP/s (or time
per step), and our ratio to the fastest peer: the median over rounds of that round's ratio
(a file name ending in `_N.jsonl` is round N), then the lowest and highest ratio of any one
round. Within a round both sides of a ratio were measured seconds apart, so a round's ratio is
steadier than the ratio of two medians taken from different rounds on a machine whose speed
drifts. Without round numbers, the ratio is that of the medians.

    python3 gru-bench/peers/summarize.py runs/*.jsonl
"""
import collections
import json
import re
import statistics
import sys


def main():
    runs = collections.defaultdict(list)
    by_round = collections.defaultdict(dict)
    for path in sys.argv[1:]:
        match = re.search(r"_(\d+)\.jsonl$", path)
        round_id = match.group(1) if match else path
        with open(path) as f:
            for line in f:
                if line.strip():
                    d = json.loads(line)
                    key = (d["cell"], d["mode"], d["batch"], d["seq_len"], d["input"], d["hidden"], d["threads"])
                    runs[key + (d["kernel"],)].append(d["seconds"])
                    by_round[key + (round_id,)][d["kernel"]] = d["seconds"]
    keys = sorted({k[:-1] for k in runs}, key=lambda k: (k[1], k[2], k[5], k[0]))
    print("| cell | mode | B:T:I:H | threads | simd | onnxruntime | pytorch | simd / fastest peer (rounds' range) |")
    print("|---|---|---|---|---|---|---|---|")
    for key in keys:
        cell, mode, b, t, i, h, threads = key
        flops = 2 * (3 if cell == "gru" else 4) * h * (i + h) * b * t
        cells = []
        seconds = {}
        for kernel in ("simd", "onnxruntime", "pytorch"):
            samples = runs.get(key + (kernel,))
            if samples:
                seconds[kernel] = statistics.median(samples)
                s = seconds[kernel]
                text = f"{s * 1e6:.1f} µs" if mode == "step" else f"{flops / s / 1e9:.0f} GFLOP/s"
                cells.append(text)
            else:
                cells.append("")
        peers = [seconds[k] for k in ("onnxruntime", "pytorch") if k in seconds]
        ratio = f"{min(peers) / seconds['simd']:.2f}×" if peers and "simd" in seconds else ""
        per_round = [
            min(r[k] for k in ("onnxruntime", "pytorch") if k in r) / r["simd"]
            for (rk, r) in ((rk, r) for rk, r in by_round.items() if rk[:-1] == key)
            if "simd" in r and ("onnxruntime" in r or "pytorch" in r)
        ]
        if ratio and len(per_round) > 1:
            ratio = f"{statistics.median(per_round):.2f}× ({min(per_round):.2f}–{max(per_round):.2f})"
        print(f"| {cell} | {mode} | {b}:{t}:{i}:{h} | {threads} | " + " | ".join(cells) + f" | {ratio} |")


if __name__ == "__main__":
    main()
