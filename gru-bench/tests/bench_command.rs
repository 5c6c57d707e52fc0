//! `gru bench` end to end, on tiny shapes: the default subcommand, JSON lines with exactly the
//! documented keys, step mode, and bad options.

mod common;

use std::process::{Command, Output};

use common::ScratchDir;

fn gru(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gru"))
        .args(args)
        .output()
        .unwrap()
}

fn check_json_lines(out: &Output, expected_lines: usize) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), expected_lines, "{stdout}");
    for line in lines {
        let m = gru_bench::commands::bench::Measurement::parse_json(line).unwrap();
        assert!(m.seconds > 0.0 && m.gflops() > 0.0, "{line}");
        // Exactly the documented keys, in order.
        let keys: Vec<&str> = line
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .map(|kv| kv.split(':').next().unwrap().trim_matches('"'))
            .collect();
        assert_eq!(keys, gru_bench::commands::bench::JSON_KEYS, "{line}");
    }
}

#[test]
fn without_a_subcommand_gru_runs_the_bench() {
    let out = gru(&[
        "--shapes",
        "1:3:4:8",
        "--seconds",
        "0.01",
        "--json",
        "--cells",
        "gru,lstm",
        "--kernels",
        "simd,ref",
        "--threads",
        "1",
    ]);
    check_json_lines(&out, 4);
}

/// `--passes` times every shape again in each pass, says which pass it is in, and prints
/// one line per measurement all the same.
#[test]
fn passes_report_one_median_per_measurement() {
    let out = gru(&[
        "bench",
        "--shapes",
        "1:3:4:8,2:3:4:8",
        "--seconds",
        "0.01",
        "--json",
        "--cells",
        "gru,lstm",
        "--kernels",
        "simd",
        "--threads",
        "1",
        "--passes",
        "3",
    ]);
    check_json_lines(&out, 4);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let passes: Vec<&str> = stderr.lines().filter(|l| l.starts_with("pass ")).collect();
    assert_eq!(
        passes,
        ["pass 1 of 3", "pass 2 of 3", "pass 3 of 3"],
        "{stderr}"
    );
    // Each pass times both shapes.
    let progress = stderr.lines().filter(|l| l.starts_with('[')).count();
    assert_eq!(progress, 6, "{stderr}");
}

/// `--lanes` picks the tiles, and the table's first line says which, with the width of the FMA
/// peak it measured; 16 lanes where the CPU has no AVX-512F (as under valgrind) is one plain
/// error line.
#[test]
fn lanes_choose_the_tiles_and_the_peak_width() {
    let supports_16 = gru_simd::packing::PanelLayout::Pairs.is_supported();
    for (lanes, bits, runs) in [("8", "256", true), ("16", "512", supports_16)] {
        let out = gru(&[
            "bench",
            "--shapes",
            "2:3:4:8",
            "--seconds",
            "0.01",
            "--cells",
            "gru",
            "--kernels",
            "simd",
            "--threads",
            "1",
            "--lanes",
            lanes,
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if runs {
            assert!(out.status.success(), "{stderr}");
            let first = stdout.lines().next().unwrap_or_default();
            assert!(
                first.starts_with(&format!("simd tiles of {lanes}-lane vectors"))
                    && first.contains(&format!("with {bits}-bit FMAs")),
                "{first}"
            );
        } else {
            assert_eq!(out.status.code(), Some(2), "{stderr}");
            assert!(stdout.is_empty());
            assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
            assert!(stderr.contains("AVX-512F"), "{stderr}");
        }
    }
}

#[test]
fn step_mode_and_table() {
    let out = gru(&[
        "bench",
        "--shapes",
        "2:1:5:9",
        "--mode",
        "step",
        "--seconds",
        "0.01",
        "--json",
        "--threads",
        "2",
    ]);
    check_json_lines(&out, 4);
    let table = gru(&[
        "bench",
        "--shapes",
        "1:2:3:4",
        "--seconds",
        "0.01",
        "--threads",
        "1",
        "--variant",
        "reset-before",
    ]);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    for needle in [
        "FMA peak",
        // Both measurements of each limit, beside the better one the rooflines use.
        "before the kernels",
        "GFLOP/s",
        "floor s",
        "GRU/LSTM",
        "simd/ref",
        "reset-before",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

/// `gru accuracy` sweeps every width this CPU runs by default, one line per function and width,
/// or the one `--lanes` names; sixteen lanes on a CPU without AVX-512F (or under valgrind,
/// which reports none) are one line of error.
#[test]
fn accuracy_reports_each_width_the_cpu_runs() {
    let sweep = [
        "accuracy",
        "--stride",
        "65537",
        "--no-speed",
        "--threads",
        "1",
    ];
    let has_avx512 = gru_simd::activation::accuracy::Width::Sixteen.is_available();
    let out = gru(&sweep);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for (lanes, expected) in [(8, true), (16, has_avx512)] {
        for name in ["sigmoid", "tanh"] {
            let line = format!("{name:<8} {lanes:>2} lanes ");
            assert_eq!(text.contains(&line), expected, "{line:?} in:\n{text}");
        }
    }
    assert!(text.contains("all bounds hold"), "{text}");
    let out = gru(&[&sweep[..], &["--lanes", "16"]].concat());
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    if has_avx512 {
        assert!(out.status.success(), "{stderr}");
        assert!(!stdout.contains(" 8 lanes "), "{stdout}");
        assert!(stdout.contains("tanh     16 lanes "), "{stdout}");
    } else {
        assert!(!out.status.success());
        assert!(stdout.is_empty(), "{stdout}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("AVX-512F"), "{stderr}");
    }
}

#[test]
fn bad_options_fail_with_one_line() {
    for args in [
        &["bench", "--shapes", "1:2:3"][..],
        &["bench", "--threads", "0"],
        // A thread count that is surely a typo is refused before any thread starts.
        &["bench", "--threads", "1025"],
        &["bench", "--threads", "two"],
        &["accuracy", "--threads", "0"],
        &["accuracy", "--threads", "100000"],
        &["accuracy", "--lanes", "7"],
        &["run", "--threads", "0"],
        &["bench", "--seconds", "-1"],
        &["bench", "--passes", "0"],
        &["bench", "--passes", "1001"],
        &["bench", "--lanes", "7"],
        // Step mode times one timestep per call; T = 100 would count 100 steps' FLOPs.
        &["bench", "--mode", "step", "--shapes", "1:100:4:4"],
        // A plot that cannot be written fails before the measuring, not after it.
        &[
            "bench",
            "--svg",
            "/nonexistent-dir/plot.svg",
            "--shapes",
            "1:1:1:1",
        ],
        &[
            "bench",
            "--svg",
            std::env::temp_dir().to_str().unwrap(),
            "--shapes",
            "1:1:1:1",
        ],
        &[
            "bench",
            "--compare",
            "/nonexistent/peers.jsonl",
            "--shapes",
            "1:1:1:1",
            "--seconds",
            "0.01",
        ],
        // More memory than any machine has (about 0.8 EB), and sizes whose product overflows:
        // one line each, before any measuring, not an abort at the first allocation.
        &["bench", "--shapes", "1000000:1000000:100000:100000"],
        &["bench", "--shapes", "18446744073709551615:2:1:1"],
    ] {
        let out = gru(args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.starts_with("warning:") && !l.trim().is_empty())
            .collect();
        assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
    }
}

/// `gru bench` of the simd GRU alone, timed briefly, with `extra` options; it must succeed.
fn quick_gru_bench(extra: &[&str]) -> Output {
    let mut args = vec![
        "bench",
        "--cells",
        "gru",
        "--kernels",
        "simd",
        "--seconds",
        "0.01",
    ];
    args.extend_from_slice(extra);
    args.push("--json");
    let out = gru(&args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// More workers than cores works, with a warning that says why it is slow; as many as the
/// cores, no warning.
#[test]
fn more_threads_than_cores_warn() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (threads, warns) in [(cores + 1, true), (cores, false)] {
        let threads = threads.to_string();
        let out = quick_gru_bench(&["--threads", &threads, "--shapes", "1:2:8:8"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let warning = format!("warning: {threads} worker threads on {cores} cores");
        assert_eq!(
            stderr.contains(&warning),
            warns,
            "{threads} threads: {stderr}"
        );
    }
}

/// `--svg` writes the plot, and nothing else beside it.
#[test]
fn svg_plot_is_written_whole() {
    let dir = ScratchDir::new("bench-svg");
    let path = dir.join("plot.svg");
    quick_gru_bench(&[
        "--shapes",
        "1:2:8:8,1:2:16:16",
        "--threads",
        "2",
        "--svg",
        path.to_str().unwrap(),
    ]);
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    assert!(
        svg.contains("gru simd") && svg.contains("FMA peak"),
        "{svg}"
    );
    // The panel says its batch and thread count; the axes count in whole units.
    assert!(svg.contains("B = 1, 2 threads"), "{svg}");
    assert!(!svg.contains(".0<"), "{svg}");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["plot.svg"]);
}
