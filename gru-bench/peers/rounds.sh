#!/usr/bin/env bash
# Times this crate and the peers side by side, interleaved shape by shape (for each shape and
# cell, the peers then simd in odd rounds, simd then the peers in even ones), for ROUNDS
# rounds, writing JSON lines into OUT_DIR; then summarize.py makes the README's tables.
# Interleaving per shape keeps both sides of a ratio within seconds of each other on a machine
# whose speed drifts from minute to minute; alternating the order cancels what running first
# or second does to a measurement (2-5 % seen between two builds of the same code).
#
#   cargo build --release -p gru-bench
#   PYTHON=/path/to/venv/bin/python gru-bench/peers/rounds.sh runs 3
#   python3 gru-bench/peers/summarize.py runs/*seq*.jsonl
#   python3 gru-bench/peers/summarize.py runs/*step*.jsonl
#
# MODES="seq" or MODES="step" runs one mode only (both by default). Needs torch, onnx,
# onnxruntime and numpy in $PYTHON. Run it on an otherwise idle machine.
set -euo pipefail
out=${1:?usage: rounds.sh OUT_DIR [ROUNDS]}
rounds=${2:-3}
python=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
gru=${GRU:-$here/../../target/release/gru}
modes=${MODES:-seq step}
seq_shapes="1:100:128:128 1:100:256:256 1:100:512:512 1:50:1024:1024 64:100:128:128 64:100:256:256 64:100:512:512 64:50:1024:1024"
step_shapes="1:1:256:256 1:1:512:512"
mkdir -p "$out"
peers() { # mode threads shape cell round
    "$python" "$here/peers.py" --mode "$1" --threads "$2" --shapes "$3" --cells "$4" \
        >> "$out/peers_$1$2_$5.jsonl"
}
simd() { # mode threads shape cell round
    "$gru" bench --mode "$1" --threads "$2" --shapes "$3" --cells "$4" --kernels simd --json \
        >> "$out/simd_$1$2_$5.jsonl" 2> /dev/null
}
pair() { # mode threads shape cell round
    if (( $5 % 2 )); then
        peers "$@"; simd "$@"
    else
        simd "$@"; peers "$@"
    fi
}
for round in $(seq "$rounds"); do
    if [[ " $modes " == *" seq "* ]]; then
        for shape in $seq_shapes; do
            for cell in gru lstm; do pair seq 2 "$shape" "$cell" "$round"; done
        done
    fi
    if [[ " $modes " == *" step "* ]]; then
        for threads in 1 2; do
            for shape in $step_shapes; do
                for cell in gru lstm; do pair step "$threads" "$shape" "$cell" "$round"; done
            done
        done
    fi
done
