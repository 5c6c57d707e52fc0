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
///
/// A destination that is a symbolic link is followed: the file it points to is replaced, the
/// link kept. A destination that exists and is not a regular file (a device such as
/// `/dev/stdout`, a named pipe) cannot be replaced by renaming, which would put a plain file in
/// its place: its bytes are kept in memory and written into it at [`commit`](Self::commit),
/// before any file is renamed.
#[derive(Debug, Default)]
pub struct PendingOutputs {
    written: Vec<Pending>,
}

/// One output waiting for [`PendingOutputs::commit`].
#[derive(Debug)]
enum Pending {
    /// A complete temporary file beside `target` (`path`, or the file it links to), to be
    /// renamed onto it.
    Renamed {
        temp: PathBuf,
        target: PathBuf,
        path: PathBuf,
    },
    /// The bytes for a destination that is not a regular file, to be written into it.
    Direct { bytes: Vec<u8>, path: PathBuf },
}

impl Pending {
    fn path(&self) -> &Path {
        match self {
            Pending::Renamed { path, .. } | Pending::Direct { path, .. } => path,
        }
    }
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
        self.write_with(path, |file| file.write_all(bytes))
    }

    /// Creates the temporary file for `path` (anew, if it has one already) and fills it; or,
    /// for a destination that is not a regular file, fills its bytes in memory.
    fn write_with(
        &mut self,
        path: &Path,
        fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), CliError> {
        let cannot_write = |e: std::io::Error| CliError::file(path, format!("cannot write: {e}"));
        // Caught here, not when the finished file is renamed onto it.
        if path.is_dir() {
            return Err(CliError::file(path, "cannot write: is a directory"));
        }
        self.written.retain(|pending| {
            let same = pending.path() == path;
            if let (true, Pending::Renamed { temp, .. }) = (same, pending) {
                let _ = fs::remove_file(temp);
            }
            !same
        });
        // `metadata` follows links: what matters is the file the link leads to.
        if fs::metadata(path).is_ok_and(|m| !m.is_file()) {
            let mut bytes = Vec::new();
            fill(&mut bytes).map_err(cannot_write)?;
            self.written.push(Pending::Direct {
                bytes,
                path: path.to_owned(),
            });
            return Ok(());
        }
        let target = if path.is_symlink() {
            link_target(path).map_err(cannot_write)?
        } else {
            path.to_owned()
        };
        let file_name = target
            .file_name()
            .ok_or_else(|| CliError::file(path, "is not a file name"))?;
        let temp = target.with_file_name(format!(
            ".{}.{}.tmp",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        // Registered before writing, so that a failed write is cleaned up too.
        self.written.push(Pending::Renamed {
            temp: temp.clone(),
            target: target.clone(),
            path: path.to_owned(),
        });
        fs::File::create(&temp)
            .and_then(|file| {
                let mut file = BufWriter::new(file);
                fill(&mut file)?;
                file.into_inner().map_err(|e| e.into_error())?.sync_all()
            })
            .map_err(cannot_write)
    }

    /// Writes the bytes kept for destinations that are not regular files, then renames every
    /// temporary file into place.
    pub fn commit(mut self) -> Result<(), CliError> {
        for pending in &self.written {
            if let Pending::Direct { bytes, path } = pending {
                fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|mut file| file.write_all(bytes))
                    .map_err(|e| CliError::file(path, format!("cannot write: {e}")))?;
            }
        }
        self.written
            .retain(|pending| matches!(pending, Pending::Renamed { .. }));
        while let Some(Pending::Renamed { temp, target, path }) = self.written.first() {
            // On failure the files not yet renamed, this one included, are removed by `drop`.
            fs::rename(temp, target)
                .map_err(|e| CliError::file(path, format!("cannot write: {e}")))?;
            self.written.remove(0);
        }
        Ok(())
    }
}

/// The file the link `path` leads to: through every link when it exists, else (a link to a
/// file not made yet) what the link names, relative to the link's directory.
fn link_target(path: &Path) -> std::io::Result<PathBuf> {
    fs::canonicalize(path).or_else(|_| {
        let named = fs::read_link(path)?;
        Ok(path.parent().unwrap_or(Path::new("")).join(named))
    })
}

impl Drop for PendingOutputs {
    fn drop(&mut self) {
        for pending in &self.written {
            if let Pending::Renamed { temp, .. } = pending {
                let _ = fs::remove_file(temp);
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    /// A fresh directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("gru-npy-io-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn fifo(path: &Path) {
        let made = std::process::Command::new("mkfifo").arg(path).status();
        assert!(made.unwrap().success(), "mkfifo {}", path.display());
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_pipe_is_written_into_not_replaced() {
        let dir = Scratch::new("pipe");
        let (pipe, plain) = (dir.0.join("pipe"), dir.0.join("plain.npy"));
        fifo(&pipe);
        let reader = std::thread::spawn({
            let pipe = pipe.clone();
            move || fs::read(pipe).unwrap()
        });
        let mut outputs = PendingOutputs::default();
        outputs.write_bytes(&pipe, b"").unwrap();
        outputs.write_bytes(&pipe, b"through the pipe").unwrap();
        outputs.write_bytes(&plain, b"plain").unwrap();
        outputs.commit().unwrap();
        // Before joining: a reader of a pipe renamed over would wait for ever.
        assert!(fs::symlink_metadata(&pipe).unwrap().file_type().is_fifo());
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert_eq!(fs::read(&plain).unwrap(), b"plain");
        assert_eq!(entries(&dir.0), ["pipe", "plain.npy"]);
    }

    #[test]
    fn a_failed_write_into_a_pipe_renames_nothing() {
        let dir = Scratch::new("broken-pipe");
        let (pipe, plain) = (dir.0.join("pipe"), dir.0.join("plain.npy"));
        fifo(&pipe);
        // Opens the pipe and closes it unread: more than a pipe's buffer then fails to go in.
        let reader = std::thread::spawn({
            let pipe = pipe.clone();
            move || drop(fs::File::open(pipe).unwrap())
        });
        let mut outputs = PendingOutputs::default();
        outputs.write_bytes(&plain, b"plain").unwrap();
        outputs.write_bytes(&pipe, &vec![7; 1 << 20]).unwrap();
        let err = outputs.commit().unwrap_err();
        reader.join().unwrap();
        assert!(err.to_string().contains("cannot write"), "{err}");
        assert_eq!(entries(&dir.0), ["pipe"]);
    }

    /// Writes to `dir/link.npy`, a link, and checks that the bytes went into `dir/file` and
    /// the link is still one, with nothing else beside them.
    fn write_through_link(dir: &Path, file: &str) {
        let link = dir.join("link.npy");
        let mut outputs = PendingOutputs::default();
        outputs.write_bytes(&link, b"new").unwrap();
        outputs.commit().unwrap();
        let link_kept = fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink();
        assert!(link_kept);
        assert_eq!(fs::read(dir.join(file)).unwrap(), b"new");
        assert_eq!(entries(dir), ["link.npy", file]);
    }

    #[test]
    fn a_link_is_followed_and_kept() {
        let dir = Scratch::new("link");
        fs::write(dir.0.join("real.npy"), b"old").unwrap();
        std::os::unix::fs::symlink(dir.0.join("real.npy"), dir.0.join("link.npy")).unwrap();
        write_through_link(&dir.0, "real.npy");
    }

    #[test]
    fn a_link_to_no_file_yet_makes_it() {
        let dir = Scratch::new("dangling");
        std::os::unix::fs::symlink("made.npy", dir.0.join("link.npy")).unwrap();
        write_through_link(&dir.0, "made.npy");
    }

    #[test]
    fn nothing_is_left_when_not_committed() {
        let dir = Scratch::new("dropped");
        let mut outputs = PendingOutputs::default();
        outputs.write_bytes(&dir.0.join("a.npy"), b"a").unwrap();
        outputs
            .write_f32(&dir.0.join("b.npy"), &[2], &[1.0, 2.0])
            .unwrap();
        drop(outputs);
        assert!(entries(&dir.0).is_empty());
    }
}
