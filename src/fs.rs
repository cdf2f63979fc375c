//! Reading and writing whole files, with one rule for every file the library and the `laptime`
//! command read or write (profiles, configurations, golden and Chrome traces, reports, rules).
//!
//! **Reads are bounded.** A profile or configuration is read through a limit: a regular file
//! longer than the limit is refused before it is read, and a file that never ends (`/dev/zero`,
//! a FIFO) stops at the limit, so a wrong path costs at most the limit in memory.
//!
//! **Writes respect what the path is** ([`write_file`]):
//!
//! * a regular file, or no file yet: written whole to a temporary file beside it and renamed
//!   over it, so a reader (a CI step, Perfetto, a tail of the trace directory) never sees half a
//!   file and a failed write leaves the previous file in place; an existing file keeps its
//!   permissions (and its owner, when the process may set it: as root);
//! * a symbolic link: followed, and its target written by the rule above; the link stays a link.
//!   A link whose target does not exist is refused (as GNU `cp` does), since creating a file
//!   wherever a stray link points is rarely what was meant;
//! * a character device (`/dev/null`, `/dev/stdout` on a terminal) or a FIFO (`/dev/stdout` into
//!   a pipe, `mkfifo`): written through, never replaced. Opening a FIFO waits for its reader, as
//!   `cat > fifo` does;
//! * a directory, a block device or a socket: refused with an error that says so.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a bounded read failed.
#[cfg(any(feature = "profile", feature = "config"))]
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The file holds more than the limit.
    TooLarge,
    /// The operating system's error.
    Io(std::io::Error),
}

#[cfg(any(feature = "profile", feature = "config"))]
impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// A file opened for reading at most `limit` bytes.
#[cfg(any(feature = "profile", feature = "config"))]
pub(crate) struct Limited {
    /// The file through a `Read::take(limit + 1)`: it yields a byte past the limit exactly when
    /// the file holds more.
    pub(crate) reader: std::io::Take<std::fs::File>,
    /// The length of a regular file; `None` for anything else (a device, a FIFO).
    pub(crate) len: Option<u64>,
    limit: u64,
}

/// Opens `path` for reading at most `limit` bytes; a regular file longer than that is refused at
/// once, anything else stops at the limit as it is read.
#[cfg(any(feature = "profile", feature = "config"))]
pub(crate) fn open_limited(path: &Path, limit: u64) -> Result<Limited, ReadError> {
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    let len = meta.is_file().then_some(meta.len());
    if len.is_some_and(|len| len > limit) {
        return Err(ReadError::TooLarge);
    }
    Ok(Limited {
        reader: std::io::Read::take(file, limit.saturating_add(1)),
        len,
        limit,
    })
}

#[cfg(any(feature = "profile", feature = "config"))]
impl Limited {
    /// The whole file. The buffer of a regular file is sized from its length up front (one
    /// allocation, reserved fallibly: a file too large for memory is an `OutOfMemory` error, not
    /// an abort).
    pub(crate) fn read_all(mut self) -> Result<Vec<u8>, ReadError> {
        let mut bytes = Vec::new();
        // One byte more than the length: read_to_end needs room to see the end of the file.
        let want = self.len.map_or(8192, |len| len.saturating_add(1));
        bytes
            .try_reserve_exact(usize::try_from(want).unwrap_or(usize::MAX))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::OutOfMemory))?;
        std::io::Read::read_to_end(&mut self.reader, &mut bytes)?;
        if bytes.len() as u64 > self.limit {
            return Err(ReadError::TooLarge);
        }
        Ok(bytes)
    }
}

/// The whole of `path`, at most `limit` bytes.
#[cfg(any(feature = "profile", feature = "config"))]
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    open_limited(path, limit)?.read_all()
}

/// What to tell the user after an I/O error on a file they named: what to check for this kind of
/// error, or nothing when the error says it all.
#[cfg(any(feature = "profile", feature = "config"))]
pub(crate) fn io_hint(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::NotFound => ": check the path",
        ErrorKind::PermissionDenied => ": check its permissions",
        ErrorKind::OutOfMemory => ": the file does not fit in memory; is it the file you meant?",
        ErrorKind::InvalidData => ": is it a text file?",
        _ => "",
    }
}

/// What a path to write names, followed through symbolic links.
enum Target {
    /// Nothing yet: a regular file is created (with its parent directories).
    New,
    /// A regular file, at the path given (after links): replaced whole, keeping its metadata.
    Regular(PathBuf, std::fs::Metadata),
    /// A character device or a FIFO: written through.
    Stream,
}

fn refused(path: &Path, what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!(
            "{} is {what}: name a regular file (or a character device such as /dev/null, or a \
             FIFO)",
            path.display()
        ),
    )
}

fn target(path: &Path) -> std::io::Result<Target> {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && is_link => {
            let to = std::fs::read_link(path).unwrap_or_default();
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} is a symbolic link to {}, which does not exist: create the target, or \
                     remove the link to write a new file there",
                    path.display(),
                    to.display()
                ),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Target::New),
        Err(e) => return Err(e),
    };
    let kind = meta.file_type();
    if kind.is_file() {
        // The link's target, so the temporary file is made beside it (the same file system)
        // and the rename replaces the target, not the link.
        let real = if is_link {
            std::fs::canonicalize(path)?
        } else {
            path.to_owned()
        };
        return Ok(Target::Regular(real, meta));
    }
    if kind.is_dir() {
        return Err(refused(path, "a directory"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_char_device() || kind.is_fifo() {
            return Ok(Target::Stream);
        }
        if kind.is_block_device() {
            return Err(refused(path, "a block device"));
        }
        if kind.is_socket() {
            return Err(refused(path, "a socket"));
        }
    }
    Err(refused(path, "neither a regular file nor a directory"))
}

/// Writes `bytes` to `path` by the rule in the [module docs](self): a regular file (existing or
/// new, reached directly or through symbolic links) is replaced whole by a rename, keeping its
/// permissions; a character device or FIFO is written through and never replaced; a directory,
/// a dangling link, a block device or a socket is refused with an error that says so. Missing
/// parent directories of a new file are created.
pub fn write_file(path: impl AsRef<Path>, bytes: &[u8]) -> std::io::Result<()> {
    let path = path.as_ref();
    match target(path)? {
        Target::New => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            replace(path, bytes, None)
        }
        Target::Regular(real, meta) => replace(&real, bytes, Some(&meta)),
        Target::Stream => {
            let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
            file.write_all(bytes)?;
            file.flush()
        }
    }
}

/// The name the collector's Chrome-trace writer calls.
pub(crate) use write_file as write_atomic;

/// Writes a temporary file beside `path` (named uniquely per process and call, so concurrent
/// writers never share one), syncs it, gives it `old`'s permissions and owner, and renames it
/// over `path`. On failure the temporary file is removed.
fn replace(path: &Path, bytes: &[u8], old: Option<&std::fs::Metadata>) -> std::io::Result<()> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let Some(name) = path.file_name() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file: give a file name", path.display()),
        ));
    };
    let mut temp_name = name.to_owned();
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    temp_name.push(format!(".{}-{n}.tmp", std::process::id()));
    let temp = path.with_file_name(temp_name);
    let written = std::fs::File::create(&temp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            if let Some(old) = old {
                keep_metadata(&file, old)?;
            }
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Gives the replacement `old`'s owner (when it differs) and permissions, in that order: a
/// change of owner clears the set-user-ID and set-group-ID bits.
fn keep_metadata(file: &std::fs::File, old: &std::fs::Metadata) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let new = file.metadata()?;
        if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
            // Only root may give a file away: anyone else's replacement stays theirs, as with
            // any replace-by-rename, so a refusal here is not an error.
            let _ = std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid()));
        }
    }
    file.set_permissions(old.permissions())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_and_leaves_no_temporary_behind() {
        let dir = std::env::temp_dir().join(format!("laptime-fs-{}", std::process::id()));
        let path = dir.join("nested").join("out.json");
        write_file(&path, b"first").unwrap();
        write_file(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.json"], "only the file itself remains");
        // A directory where the file should go: refused, and no temporary file is left.
        let blocked = dir.join("blocked");
        std::fs::create_dir_all(blocked.join("inner")).unwrap();
        let e = write_file(&blocked, b"x").unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(any(feature = "profile", feature = "config"))]
    #[test]
    fn bounded_reads_stop_at_the_limit() {
        let dir = std::env::temp_dir().join(format!("laptime-fs-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ten");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read_limited(&path, 10).unwrap(), b"0123456789");
        assert!(matches!(read_limited(&path, 9), Err(ReadError::TooLarge)));
        // A device that never ends stops at the limit.
        assert!(matches!(
            read_limited(Path::new("/dev/zero"), 1 << 16),
            Err(ReadError::TooLarge)
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
