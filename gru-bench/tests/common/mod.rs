//! Shared by the integration tests: the peer fixtures under `fixtures/cases`.
#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gru_bench::npy_io::{read_f32, read_lengths};
use gru_core::{GruVariant, Model, RecurrentKernel, SequenceInput, SequenceOutput};

/// One fixture: a model, its inputs and what the peer computed.
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub meta: BTreeMap<String, String>,
}

impl Case {
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.file(name).exists()
    }

    pub fn variant(&self) -> GruVariant {
        match self.meta["variant"].as_str() {
            "reset-before" => GruVariant::ResetBefore,
            _ => GruVariant::ResetAfter,
        }
    }

    pub fn batch_first(&self) -> bool {
        self.meta["batch_first"] == "1"
    }

    pub fn model(&self) -> Model {
        let prefix = self.meta["prefix"].as_str();
        let prefix = (!prefix.is_empty()).then_some(prefix);
        gru_core::load_model_file(self.file("model.safetensors"), prefix, self.variant()).unwrap()
    }

    pub fn f32(&self, name: &str) -> Vec<f32> {
        read_f32(&self.file(name), ndim(&self.file(name)))
            .unwrap()
            .data
    }

    pub fn lengths(&self) -> Option<Vec<usize>> {
        self.has("lengths.npy").then(|| {
            read_lengths(&self.file("lengths.npy"))
                .unwrap()
                .data
                .iter()
                .map(|&l| l as usize)
                .collect()
        })
    }

    /// Runs `kernel` on this case's input and returns its output.
    pub fn run(&self, kernel: &mut dyn RecurrentKernel) -> SequenceOutput {
        let input = read_f32(&self.file("input.npy"), 3).unwrap();
        let (t, b) = if self.batch_first() {
            (input.shape[1], input.shape[0])
        } else {
            (input.shape[0], input.shape[1])
        };
        let h0 = self.has("h0.npy").then(|| self.f32("h0.npy"));
        let c0 = self.has("c0.npy").then(|| self.f32("c0.npy"));
        let lengths = self.lengths();
        let mut seq = SequenceInput::new(&input.data, t, b).batch_first(self.batch_first());
        seq.h0 = h0.as_deref();
        seq.c0 = c0.as_deref();
        seq.lengths = lengths.as_deref();
        kernel.forward(&seq).unwrap()
    }

    /// Checks `out` against the peer's expected arrays; returns the worst relative error.
    pub fn check(&self, out: &SequenceOutput, what: &str) -> f64 {
        let mut worst = 0.0f64;
        let mut pairs = vec![("output", &out.output, self.f32("expected_output.npy"))];
        pairs.push(("h_n", &out.h_n, self.f32("expected_hn.npy")));
        if self.has("expected_cn.npy") {
            pairs.push((
                "c_n",
                out.c_n.as_ref().unwrap(),
                self.f32("expected_cn.npy"),
            ));
        }
        for (name, got, expected) in pairs {
            let err = scaled_error(got, &expected);
            assert!(
                err <= 1e-5,
                "{what} on {}: {name} differs from the peer by {err:e} (scaled) > 1e-5",
                self.name
            );
            worst = worst.max(err);
        }
        worst
    }
}

/// `max |got − expected| / max(1, max |expected|)`; NaN when the lengths differ or a value is
/// NaN on one side only.
pub fn scaled_error(got: &[f32], expected: &[f32]) -> f64 {
    if got.len() != expected.len() {
        return f64::NAN;
    }
    let scale = expected
        .iter()
        .fold(1.0f64, |m, &e| m.max(f64::from(e).abs()));
    let max_diff = got.iter().zip(expected).fold(0.0f64, |m, (&g, &e)| {
        let d = (f64::from(g) - f64::from(e)).abs();
        if d.is_nan() { f64::NAN } else { m.max(d) }
    });
    max_diff / scale
}

fn ndim(path: &Path) -> usize {
    // Every array the fixtures hold as 1-D is a bias, a vector or lengths; states and sequences
    // are 3-D; ONNX W/R are 3-D, B 2-D, the seed's matrices 2-D.
    let bytes = std::fs::read(path).unwrap();
    npyz::NpyFile::new(&bytes[..]).unwrap().shape().len()
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cases")
}

/// Every fixture case run through the sequence API (the seed's single cell excluded).
pub fn sequence_cases() -> Vec<Case> {
    let mut cases: Vec<Case> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures/cases exists (made by fixtures/make_fixtures.py)")
        .map(|e| e.unwrap().path())
        .filter(|dir| dir.join("model.safetensors").exists())
        .map(|dir| {
            let text = std::fs::read_to_string(dir.join("case.txt")).unwrap();
            let meta = text
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            Case {
                name: dir.file_name().unwrap().to_string_lossy().into_owned(),
                dir,
                meta,
            }
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        cases.len() >= 17,
        "expected the committed fixtures, found {}",
        cases.len()
    );
    cases
}

/// A fresh directory under the system's temporary directory, removed with everything in it
/// when dropped, so that test runs (passing or failing) leave nothing behind.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// `gru-{name}-{pid}`, emptied if a killed run left it.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("gru-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
