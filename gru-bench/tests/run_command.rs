//! `gru run` end to end: every peer fixture through the command, and every way the command can
//! be given bad input (one plain line on stderr, nonzero exit, no output file).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Case, ScratchDir, scaled_error, sequence_cases};
use gru_bench::npy_io::read_f32;

fn gru(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gru"))
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The arguments that run `case` with `kernel`, writing into `out`.
fn case_args(case: &Case, kernel: &str, out: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--weights".into(),
        s(&case.file("model.safetensors")).into(),
        "--input".into(),
        s(&case.file("input.npy")).into(),
        "--output".into(),
        s(&out.join("y.npy")).into(),
        "--hn".into(),
        s(&out.join("hn.npy")).into(),
        "--kernel".into(),
        kernel.into(),
    ];
    let prefix = &case.meta["prefix"];
    if !prefix.is_empty() {
        args.extend(["--prefix".into(), prefix.clone()]);
    }
    if case.variant() == gru_core::GruVariant::ResetBefore {
        args.extend(["--variant".into(), "reset-before".into()]);
    }
    if case.batch_first() {
        args.push("--batch-first".into());
    }
    for (flag, file) in [
        ("--h0", "h0.npy"),
        ("--c0", "c0.npy"),
        ("--lengths", "lengths.npy"),
    ] {
        if case.has(file) {
            args.extend([flag.into(), s(&case.file(file)).into()]);
        }
    }
    if case.has("expected_cn.npy") {
        args.extend(["--cn".into(), s(&out.join("cn.npy")).into()]);
    }
    args
}

fn check_command_on_every_fixture(kernel: &str) {
    for case in sequence_cases() {
        let out = ScratchDir::new(&format!("run-test-{kernel}-{}", case.name));
        let args = case_args(&case, kernel, &out);
        let result = gru(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            result.status.success(),
            "{}: {}",
            case.name,
            String::from_utf8_lossy(&result.stderr)
        );
        let mut pairs = vec![
            ("y.npy", "expected_output.npy"),
            ("hn.npy", "expected_hn.npy"),
        ];
        if case.has("expected_cn.npy") {
            pairs.push(("cn.npy", "expected_cn.npy"));
        }
        for (got, expected) in pairs {
            let got = read_f32(&out.join(got), 3).unwrap();
            let want = read_f32(&case.file(expected), 3).unwrap();
            assert_eq!(got.shape, want.shape, "{} {expected}", case.name);
            let err = scaled_error(&got.data, &want.data);
            assert!(
                err <= 1e-5,
                "{} {expected}: scaled error {err:e}",
                case.name
            );
        }
    }
}

#[test]
fn command_matches_every_peer_fixture_with_the_reference() {
    check_command_on_every_fixture("ref");
}

#[test]
fn command_matches_every_peer_fixture_with_the_simd_kernels() {
    check_command_on_every_fixture("simd");
}

/// Runs `gru run` expecting failure: one line on stderr that contains `needle`, and no
/// output file left in `out`.
fn expect_failure(args: &[&str], needle: &str, out: &Path) {
    let result = gru(args);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success(), "succeeded: {args:?}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "{stderr:?} does not mention {needle:?}"
    );
    let left: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

fn write_npy_f32(path: &Path, shape: &[usize], data: &[f32]) {
    let mut pending = gru_bench::npy_io::PendingOutputs::default();
    pending.write_f32(path, shape, data).unwrap();
    pending.commit().unwrap();
}

#[test]
fn bad_inputs_fail_cleanly_without_output() {
    let cases = sequence_cases();
    let gru_case = cases.iter().find(|c| c.name == "torch_gru_basic").unwrap(); // I=5, H=7, T=6, B=3
    let lstm_case = cases
        .iter()
        .find(|c| c.name == "torch_lstm_basic_h0_c0")
        .unwrap();
    let scratch = ScratchDir::new("run-test-scratch");
    let out = ScratchDir::new("run-test-out");
    let y = out.join("y.npy");
    let weights = gru_case.file("model.safetensors");
    let input = gru_case.file("input.npy");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "run",
            "--kernel",
            "ref",
            "--weights",
            s(&weights),
            "--input",
            s(&input),
            "--output",
            s(&y),
        ]
        .map(String::from)
        .to_vec();
        v.extend(extra.iter().map(|e| e.to_string()));
        v
    };
    let run = |args: Vec<String>, needle: &str| {
        expect_failure(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            needle,
            &out,
        )
    };

    // Files that are missing, not npy, or not safetensors.
    let missing = scratch.join("missing.npy");
    let mut args = base(&[]);
    args[6] = s(&missing).into();
    run(args, "missing.npy");
    let garbage = scratch.join("garbage.bin");
    std::fs::write(&garbage, b"definitely not a model").unwrap();
    let mut args = base(&[]);
    args[4] = s(&garbage).into();
    run(args, "garbage.bin");
    let mut args = base(&[]);
    args[6] = s(&garbage).into();
    run(args, "not a valid .npy file");

    // Input shape and type.
    let wrong_features = scratch.join("wrong_features.npy");
    write_npy_f32(&wrong_features, &[6, 3, 4], &[0.0; 72]);
    let mut args = base(&[]);
    args[6] = s(&wrong_features).into();
    run(args, "I = 5");
    let two_d = scratch.join("two_d.npy");
    write_npy_f32(&two_d, &[6, 15], &[0.0; 90]);
    let mut args = base(&[]);
    args[6] = s(&two_d).into();
    run(args, "expected 3 dimensions");
    // No steps of very many sequences: no data to read, final states beyond any memory.
    for (batch, needle) in [(1usize << 60, "too large"), (1 << 40, "GB of memory")] {
        let no_steps = scratch.join("no_steps.npy");
        write_npy_f32(&no_steps, &[0, batch, 5], &[]);
        let mut args = base(&[]);
        args[6] = s(&no_steps).into();
        run(args, needle);
    }
    let lengths = scratch.join("lengths.npy");
    let float_lengths = scratch.join("float_lengths.npy");
    write_npy_f32(&float_lengths, &[3], &[1.0, 2.0, 3.0]);
    let mut args = base(&[]);
    args[6] = s(&float_lengths).into();
    run(args, "expected 3 dimensions");

    // States.
    let bad_h0 = scratch.join("bad_h0.npy");
    write_npy_f32(&bad_h0, &[1, 2, 7], &[0.0; 14]);
    run(base(&["--h0", s(&bad_h0)]), "[1, 3, 7]");
    run(base(&["--c0", s(&bad_h0)]), "no cell state");

    // Lengths: type, shape, range.
    run(base(&["--lengths", s(&float_lengths)]), "int32 or int64");
    write_lengths(&lengths, &[6, 7, 1]);
    run(
        base(&["--lengths", s(&lengths)]),
        "length 7 of batch entry 1",
    );
    write_lengths(&lengths, &[6, -1, 1]);
    run(
        base(&["--lengths", s(&lengths)]),
        "length -1 of batch entry 1",
    );
    write_lengths(&lengths, &[6, 1]);
    run(base(&["--lengths", s(&lengths)]), "expected [B] = [3]");

    // Cell, variant, prefix, kernel options.
    run(
        base(&["--cell", "lstm"]),
        "holds gru weights but --cell lstm",
    );
    run(
        base(&["--prefix", "decoder."]),
        "`decoder.weight_ih_l0` is missing",
    );
    run(base(&["--threads", "0"]), "--threads");
    let mut args = base(&["--variant", "reset-before"]);
    args[4] = s(&lstm_case.file("model.safetensors")).into();
    run(args, "--variant applies to GRU");

    // An output path that cannot be written: nothing left behind either.
    let mut args = base(&[]);
    args[8] = s(&out.join("no-such-dir/y.npy")).into();
    run(args, "cannot write");
    let mut args = base(&[]);
    args[8] = s(&scratch).into();
    run(args, "is a directory");
}

fn write_lengths(path: &Path, values: &[i64]) {
    use npyz::WriterBuilder;
    let file = std::fs::File::create(path).unwrap();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[values.len() as u64])
        .writer(file)
        .begin_nd()
        .unwrap();
    w.extend(values.iter().copied()).unwrap();
    w.finish().unwrap();
}

/// `--output` a named pipe (as `/dev/stdout` into a pipe is): the array goes down the pipe,
/// which is written into, not replaced by a file renamed onto it.
#[cfg(unix)]
#[test]
fn output_into_a_pipe_goes_down_it() {
    use std::os::unix::fs::FileTypeExt;
    let cases = sequence_cases();
    let case = cases.iter().find(|c| c.name == "torch_gru_basic").unwrap();
    let dir = ScratchDir::new("run-test-pipe");
    let pipe = dir.join("pipe");
    let made = Command::new("mkfifo").arg(&pipe).status().unwrap();
    assert!(made.success());
    let reader = std::thread::spawn({
        let pipe = pipe.clone();
        move || std::fs::read(pipe).unwrap()
    });
    let mut args = case_args(case, "ref", &dir);
    let output = args.iter().position(|a| a == "--output").unwrap() + 1;
    args[output] = s(&pipe).into();
    let result = gru(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    // Before joining: a reader of a pipe renamed over would wait for ever.
    assert!(
        std::fs::symlink_metadata(&pipe)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let piped = dir.join("piped.npy");
    std::fs::write(&piped, reader.join().unwrap()).unwrap();
    let got = read_f32(&piped, 3).unwrap();
    let want = read_f32(&case.file("expected_output.npy"), 3).unwrap();
    assert_eq!(got.shape, want.shape);
    assert!(scaled_error(&got.data, &want.data) <= 1e-5);
}

#[test]
fn help_explains_flags_and_shapes() {
    let help = gru(&["run", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "--weights",
        "[T, B, I]",
        "[L·D, B, H]",
        "--lengths",
        "--batch-first",
        "--kernel",
    ] {
        assert!(text.contains(needle), "run --help lacks {needle}:\n{text}");
    }
}
