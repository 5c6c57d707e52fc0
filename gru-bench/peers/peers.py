#!/usr/bin/env python3
"""Times the peers on the shapes `gru bench` uses and prints the same JSON lines, with
"kernel": "pytorch" or "onnxruntime". Run by hand (never in CI), then compare:

    /tmp/venv/bin/python gru-bench/peers/peers.py --threads 2 > peers.jsonl
    cargo run --release -p gru-bench -- bench --threads 2 --compare peers.jsonl

Needs torch, onnx, onnxruntime, numpy. Each figure is the median of repeated calls after a
warm-up, like `gru bench`.
"""
import argparse
import json
import time

import numpy as np


def default_shapes(mode):
    shapes = []
    for batch in (1, 64):
        for hidden in (128, 256, 512, 1024):
            seq_len = 1 if mode == "step" else (50 if hidden == 1024 else 100)
            shapes.append((batch, seq_len, hidden, hidden))
    return shapes


def median_seconds(call, seconds):
    call()
    samples = []
    start = time.perf_counter()
    while len(samples) < 10000 and (len(samples) < 5 or time.perf_counter() - start < seconds):
        t = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t)
    return float(np.median(samples))


def line(kernel, cell, mode, shape, threads, seconds):
    batch, seq_len, input_size, hidden = shape
    gates = 3 if cell == "gru" else 4
    flops = 2 * gates * hidden * (input_size + hidden) * batch * seq_len
    return json.dumps({
        "kernel": kernel, "cell": cell, "variant": "reset-after" if cell == "gru" else None,
        "mode": mode, "batch": batch, "seq_len": seq_len, "input": input_size, "hidden": hidden,
        "threads": threads, "seconds": seconds, "gflops": flops / seconds / 1e9,
        "steps_per_s": batch * seq_len / seconds,
    }, separators=(",", ":"))


def time_pytorch(cell, mode, shape, threads, seconds):
    import torch
    torch.set_num_threads(threads)
    batch, seq_len, input_size, hidden = shape
    module = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(input_size, hidden).eval()
    x = torch.randn(seq_len, batch, input_size)
    state = None
    with torch.inference_mode():
        if mode == "seq":
            return median_seconds(lambda: module(x), seconds)
        h = torch.zeros(1, batch, hidden)
        state = [(h, torch.zeros(1, batch, hidden)) if cell == "lstm" else h]

        def step():
            _, state[0] = module(x, state[0])
        return median_seconds(step, seconds)


def time_onnxruntime(cell, mode, shape, threads, seconds):
    import onnxruntime as ort
    from onnx import TensorProto, helper
    batch, seq_len, input_size, hidden = shape
    gates = 3 if cell == "gru" else 4
    rng = np.random.default_rng(0)
    bound = 1 / np.sqrt(hidden)
    W = rng.uniform(-bound, bound, (1, gates * hidden, input_size)).astype(np.float32)
    R = rng.uniform(-bound, bound, (1, gates * hidden, hidden)).astype(np.float32)
    B = rng.uniform(-bound, bound, (1, 2 * gates * hidden)).astype(np.float32)
    attrs = {"hidden_size": hidden}
    if cell == "gru":
        attrs["linear_before_reset"] = 1
    inputs = ["X", "W", "R", "B", "", "initial_h"] + (["initial_c"] if cell == "lstm" else [])
    outputs = ["Y", "Y_h"] + (["Y_c"] if cell == "lstm" else [])
    node = helper.make_node("GRU" if cell == "gru" else "LSTM", inputs, outputs, **attrs)
    f = TensorProto.FLOAT
    graph_inputs = [helper.make_tensor_value_info("X", f, [seq_len, batch, input_size]),
                    helper.make_tensor_value_info("initial_h", f, [1, batch, hidden])]
    if cell == "lstm":
        graph_inputs.append(helper.make_tensor_value_info("initial_c", f, [1, batch, hidden]))
    graph = helper.make_graph([node], "rnn", graph_inputs,
                              [helper.make_tensor_value_info(o, f, None) for o in outputs],
                              initializer=[helper.make_tensor("W", f, W.shape, W.flatten()),
                                           helper.make_tensor("R", f, R.shape, R.flatten()),
                                           helper.make_tensor("B", f, B.shape, B.flatten())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {"X": rng.standard_normal((seq_len, batch, input_size)).astype(np.float32),
             "initial_h": np.zeros((1, batch, hidden), np.float32)}
    if cell == "lstm":
        feeds["initial_c"] = np.zeros((1, batch, hidden), np.float32)
    if mode == "seq":
        return median_seconds(lambda: session.run(None, feeds), seconds)

    def step():
        result = session.run(None, feeds)
        feeds["initial_h"] = result[1]
        if cell == "lstm":
            feeds["initial_c"] = result[2]
    return median_seconds(step, seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", choices=["seq", "step"], default="seq")
    parser.add_argument("--shapes", help="B:T:I:H,... (default: gru bench's set)")
    parser.add_argument("--cells", default="gru,lstm")
    parser.add_argument("--peers", default="onnxruntime,pytorch")
    parser.add_argument("--seconds", type=float, default=0.6)
    args = parser.parse_args()
    shapes = ([tuple(int(v) for v in s.split(":")) for s in args.shapes.split(",")]
              if args.shapes else default_shapes(args.mode))
    timers = {"pytorch": time_pytorch, "onnxruntime": time_onnxruntime}
    for shape in shapes:
        for cell in args.cells.split(","):
            for peer in args.peers.split(","):
                seconds = timers[peer](cell, args.mode, shape, args.threads, args.seconds)
                print(line(peer, cell, args.mode, shape, args.threads, seconds), flush=True)


if __name__ == "__main__":
    main()
