//! Reading and writing the `.npy` files the `gru` command exchanges, with errors that name the
//! file. Data is f32 little-endian in C order; lengths are int32 or int64.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use npyz::WriterBuilder;

use crate::CliError;

/// An array read from a `.npy` file: its shape and its values in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array<T> {
    /// The shape, outermost dimension first.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<T>,
}

fn open(path: &Path) -> Result<npyz::NpyFile<std::io::Cursor<Vec<u8>>>, CliError> {
    let bytes = fs::read(path).map_err(|e| CliError::file(path, e))?;
    let npy = npyz::NpyFile::new(std::io::Cursor::new(bytes))
        .map_err(|e| CliError::file(path, format!("not a valid .npy file: {e}")))?;
    if npy.order() != npyz::Order::C {
        return Err(CliError::file(
            path,
            "Fortran-order arrays are not supported; save in C order",
        ));
    }
    Ok(npy)
}

fn shape_of<R: std::io::Read>(npy: &npyz::NpyFile<R>) -> Vec<usize> {
    npy.shape().iter().map(|&d| d as usize).collect()
}

fn dtype_of<R: std::io::Read>(npy: &npyz::NpyFile<R>) -> String {
    match npy.dtype() {
        npyz::DType::Plain(ts) => ts.to_string(),
        other => format!("{other:?}"),
    }
}

/// Reads an f32 array of `ndim` dimensions.
pub fn read_f32(path: &Path, ndim: usize) -> Result<Array<f32>, CliError> {
    let npy = open(path)?;
    let dtype = dtype_of(&npy);
    if dtype != "<f4" {
        return Err(CliError::file(
            path,
            format!("element type is {dtype}; expected float32 (<f4)"),
        ));
    }
    let shape = shape_of(&npy);
    if shape.len() != ndim {
        return Err(CliError::file(
            path,
            format!("has shape {shape:?}; expected {ndim} dimensions"),
        ));
    }
    let data = npy
        .into_vec::<f32>()
        .map_err(|e| CliError::file(path, format!("cannot read the data: {e}")))?;
    Ok(Array { shape, data })
}

/// Reads a 1-D int32 or int64 array (sequence lengths).
pub fn read_lengths(path: &Path) -> Result<Array<i64>, CliError> {
    let npy = open(path)?;
    let dtype = dtype_of(&npy);
    let shape = shape_of(&npy);
    if shape.len() != 1 {
        return Err(CliError::file(
            path,
            format!("has shape {shape:?}; expected [B]"),
        ));
    }
    let data = match dtype.as_str() {
        "<i4" => npy
            .into_vec::<i32>()
            .map(|v| v.into_iter().map(i64::from).collect()),
        "<i8" => npy.into_vec::<i64>(),
        _ => {
            return Err(CliError::file(
                path,
                format!("element type is {dtype}; expected int32 or int64"),
            ));
        }
    }
    .map_err(|e| CliError::file(path, format!("cannot read the data: {e}")))?;
    Ok(Array { shape, data })
}

/// Output files written next to their destination and renamed into place only when all of them
/// are complete, so that a failure never leaves a partial file behind.
#[derive(Debug, Default)]
pub struct PendingOutputs {
    written: Vec<(PathBuf, PathBuf)>,
}

impl PendingOutputs {
    /// Writes `data` with `shape` to a temporary file beside `path`.
    pub fn write_f32(
        &mut self,
        path: &Path,
        shape: &[usize],
        data: &[f32],
    ) -> Result<(), CliError> {
        self.write_with(path, |file| {
            let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            let mut writer = npyz::WriteOptions::new()
                .default_dtype()
                .shape(&shape)
                .writer(file)
                .begin_nd()?;
            writer.extend(data.iter().copied())?;
            writer.finish()
        })
    }

    /// Writes `bytes` to a temporary file beside `path`. Writing to the same `path` again
    /// replaces them: an empty first write checks early that the file can be written.
    pub fn write_bytes(&mut self, path: &Path, bytes: &[u8]) -> Result<(), CliError> {
        self.write_with(path, |mut file| {
            file.write_all(bytes)?;
            file.flush()
        })
    }

    /// Creates the temporary file for `path` (anew, if it has one already) and fills it.
    fn write_with(
        &mut self,
        path: &Path,
        fill: impl FnOnce(BufWriter<fs::File>) -> std::io::Result<()>,
    ) -> Result<(), CliError> {
        let file_name = path
            .file_name()
            .ok_or_else(|| CliError::file(path, "is not a file name"))?;
        // Caught here, not when the finished file is renamed onto it.
        if path.is_dir() {
            return Err(CliError::file(path, "cannot write: is a directory"));
        }
        let temp = path.with_file_name(format!(
            ".{}.{}.tmp",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        // Registered before writing, so that a failed write is cleaned up too.
        if !self.written.iter().any(|(t, _)| *t == temp) {
            self.written.push((temp.clone(), path.to_owned()));
        }
        fs::File::create(&temp)
            .and_then(|file| fill(BufWriter::new(file)))
            .map_err(|e| CliError::file(path, format!("cannot write: {e}")))
    }

    /// Renames every temporary file into place.
    pub fn commit(mut self) -> Result<(), CliError> {
        while let Some((temp, path)) = self.written.first().cloned() {
            // On failure the files not yet renamed, this one included, are removed by `drop`.
            fs::rename(&temp, &path)
                .map_err(|e| CliError::file(&path, format!("cannot write: {e}")))?;
            self.written.remove(0);
        }
        Ok(())
    }
}

impl Drop for PendingOutputs {
    fn drop(&mut self) {
        for (temp, _) in &self.written {
            let _ = fs::remove_file(temp);
        }
    }
}
