#!/usr/bin/env python3
"""Merges JSON lines from repeated, interleaved runs of `gru bench --json` and peers.py into one
Markdown table: per (cell, shape), the median over runs of each kernel's GFLOP/s (or time
per step), and our ratio to the fastest peer: the median over rounds of that round's ratio
(a file name ending in `_N.jsonl` is round N), then the lowest and highest ratio of any one
round. Within a round both sides of a ratio were measured seconds apart, so a round's ratio is
steadier than the ratio of two medians taken from different rounds on a machine whose speed
drifts. Without round numbers, the ratio is that of the medians.

Three more tables follow: the simd GRU's time over the simd LSTM's (median of the rounds' own
ratios); the ratio to the fastest peer over odd rounds (peers run first) and even rounds
(simd runs first) apart; and the ratio to each peer alone, the median of the rounds' ratios to
that peer. On a noisy machine the faster of two peers in one round is the faster of two noisy
draws, so the first table's ratio leans towards the peers; the ratio to each peer alone does
not.

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
    keys = sorted({k[:-1] for k in runs}, key=lambda k: (k[1], k[2], k[5], k[0], k[6]))
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
            for r in rounds_of(by_round, key).values()
            if "simd" in r and ("onnxruntime" in r or "pytorch" in r)
        ]
        if ratio and len(per_round) > 1:
            ratio = f"{statistics.median(per_round):.2f}× ({min(per_round):.2f}–{max(per_round):.2f})"
        print(f"| {cell} | {mode} | {b}:{t}:{i}:{h} | {threads} | " + " | ".join(cells) + f" | {ratio} |")

    gru_over_lstm(by_round)
    by_order(by_round, keys)
    by_peer(by_round, keys)


def rounds_of(by_round, key):
    """The rounds' timings of one (cell, shape, threads) key, by round id."""
    return {rk[-1]: r for rk, r in by_round.items() if rk[:-1] == key}


def gru_over_lstm(by_round):
    """The simd GRU's time over the simd LSTM's per shape: the median of the rounds' own
    ratios (both cells of a shape run in the same round), then their range."""
    ratios = collections.defaultdict(list)
    for (cell, mode, b, t, i, h, threads, round_id), r in by_round.items():
        other = by_round.get(("lstm", mode, b, t, i, h, threads, round_id), {})
        if cell == "gru" and "simd" in r and "simd" in other:
            ratios[(mode, b, t, i, h, threads)].append(r["simd"] / other["simd"])
    if not ratios:
        return
    print()
    print("| mode | B:T:I:H | threads | GRU time / LSTM time (rounds' range) |")
    print("|---|---|---|---|")
    for (mode, b, t, i, h, threads), v in sorted(ratios.items()):
        print(f"| {mode} | {b}:{t}:{i}:{h} | {threads} | "
              f"{statistics.median(v):.2f} ({min(v):.2f}–{max(v):.2f}) |")


def by_order(by_round, keys):
    """rounds.sh runs the peers first in odd rounds and simd first in even ones: the median
    ratio to the fastest peer over each kind of round, to show what the order does."""
    rows = []
    for key in keys:
        split = {1: [], 0: []}
        for round_id, r in rounds_of(by_round, key).items():
            if round_id.isdigit() and "simd" in r:
                peers = [r[k] for k in ("onnxruntime", "pytorch") if k in r]
                if peers:
                    split[int(round_id) % 2].append(min(peers) / r["simd"])
        if split[1] and split[0]:
            rows.append((key, statistics.median(split[1]), statistics.median(split[0])))
    if not rows:
        return
    print()
    print("| cell | mode | B:T:I:H | threads | ratio, peers first (odd rounds) | ratio, simd first (even rounds) |")
    print("|---|---|---|---|---|---|")
    for (cell, mode, b, t, i, h, threads), odd, even in rows:
        print(f"| {cell} | {mode} | {b}:{t}:{i}:{h} | {threads} | {odd:.2f}× | {even:.2f}× |")


def by_peer(by_round, keys):
    """Our ratio to each peer alone: per round, the peer's time over ours; the median over
    rounds, then the range."""
    rows = []
    for key in keys:
        ratios = {"onnxruntime": [], "pytorch": []}
        for r in rounds_of(by_round, key).values():
            if "simd" in r:
                for peer, v in ratios.items():
                    if peer in r:
                        v.append(r[peer] / r["simd"])
        if any(len(v) > 1 for v in ratios.values()):
            rows.append((key, ratios))
    if not rows:
        return
    print()
    print("| cell | mode | B:T:I:H | threads | simd / onnxruntime (rounds' range) | simd / pytorch (rounds' range) |")
    print("|---|---|---|---|---|---|")
    for (cell, mode, b, t, i, h, threads), ratios in rows:
        cells = [
            f"{statistics.median(v):.2f}× ({min(v):.2f}–{max(v):.2f})" if v else ""
            for v in (ratios["onnxruntime"], ratios["pytorch"])
        ]
        print(f"| {cell} | {mode} | {b}:{t}:{i}:{h} | {threads} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
