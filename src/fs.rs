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
//!   wherever a stray link points is rarely what was meant. A link in a sticky directory anyone
//!   may write to (`/tmp`) is followed only if it belongs to this process's user or to the
//!   directory's owner (the kernel's `fs.protected_symlinks` rule, applied whatever the sysctl
//!   says): another user's link there may have been planted to choose what root's write replaces;
//! * a character device (`/dev/null`, `/dev/stdout` on a terminal) or a FIFO (`/dev/stdout` into
//!   a pipe, `mkfifo`): written through, never replaced. Opening a FIFO waits for its reader, as
//!   `cat > fifo` does;
//! * a directory, a block device or a socket: refused with an error that says so.
//!
//! **The check and the write are one.** On Unix, what the path is and the write act on one open
//! handle of the directory that holds the file (`openat`, `O_NOFOLLOW`, `renameat2`), so a path
//! swapped between them (a symbolic link put where a regular file was, say) is never written
//! through: the call fails with an error that says the path changed, and leaves the swapped-in
//! entry as it found it. The temporary file is created with `O_EXCL | O_NOFOLLOW`, so a link
//! planted at its name is never followed. A directory swapped for a link after it was opened
//! changes nothing: the file lands in the directory that was checked.
//!
//! Every refusal is a [`Refused`] inside the returned `std::io::Error`, with a message that says
//! what to change.

use std::path::{Path, PathBuf};

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

/// Writes `bytes` to `path` by the rule in the [module docs](self): a regular file (existing or
/// new, reached directly or through symbolic links) is replaced whole by a rename, keeping its
/// permissions; a character device or FIFO is written through and never replaced; a directory,
/// a dangling link, a link another user may have planted in `/tmp`, a block device or a socket
/// is refused with an error that says so. Missing parent directories of a new file are created.
///
/// What the path is and the write act on one open handle of the directory that holds the file
/// (Unix): if the entry is swapped for something else between the check and the write (a
/// symbolic link to another file, say), nothing is written through the swapped-in entry and the
/// call fails with an error that says the path changed.
///
/// # Errors
///
/// The operating system's error, or a [`Refused`] inside the `std::io::Error`
/// (`e.get_ref().and_then(|inner| inner.downcast_ref::<Refused>())`) saying what to change.
pub fn write_file(path: impl AsRef<Path>, bytes: &[u8]) -> std::io::Result<()> {
    let path = path.as_ref();
    #[cfg(unix)]
    {
        at::write(path, bytes)
    }
    #[cfg(not(unix))]
    {
        by_path::write(path, bytes)
    }
}

/// The name the collector's Chrome-trace writer calls.
pub(crate) use write_file as write_atomic;

/// Why [`write_file`] refused a path or stopped a write: the error inside the `std::io::Error` it
/// returns, for a caller that acts on the reason rather than the message
/// (`e.get_ref().and_then(|inner| inner.downcast_ref::<Refused>())`). Each message says what to
/// change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refused {
    /// The path names something that is never written: a directory, a block device, a socket.
    NotAFile {
        /// The path given.
        path: PathBuf,
        /// What it names (`"a directory"`, `"a block device"`, …).
        what: &'static str,
    },
    /// The path has no file name (`/`, `a/..`).
    NoFileName {
        /// The path given.
        path: PathBuf,
    },
    /// A symbolic link whose target does not exist.
    DanglingLink {
        /// The path given.
        path: PathBuf,
        /// What the link holds.
        target: PathBuf,
    },
    /// A symbolic link in a sticky directory anyone may write to (`/tmp`), owned by another user
    /// than this process's and the directory's: another user may have planted it to choose what
    /// is written (the kernel's `fs.protected_symlinks` rule).
    PlantedLink {
        /// The path given.
        path: PathBuf,
        /// The link owner's user id.
        owner: u32,
    },
    /// More symbolic links in a row than the kernel follows (40): likely a loop.
    LinkLoop {
        /// The path given.
        path: PathBuf,
    },
    /// The path's entry changed between the check of what it is and the write (a symbolic link
    /// swapped in, say): nothing was written through it, and the swapped-in entry was left as it
    /// was found.
    Changed {
        /// The path given.
        path: PathBuf,
        /// What happened to it (`"was replaced"`, `"became a symbolic link"`, …).
        how: &'static str,
    },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::NotAFile { path, what } => write!(
                f,
                "{} is {what}: name a regular file (or a character device such as /dev/null, or \
                 a FIFO)",
                path.display()
            ),
            Refused::NoFileName { path } => {
                write!(f, "{} names no file: give a file name", path.display())
            }
            Refused::DanglingLink { path, target } => write!(
                f,
                "{} is a symbolic link to {}, which does not exist: create the target, or remove \
                 the link to write a new file there",
                path.display(),
                target.display()
            ),
            Refused::PlantedLink { path, owner } => write!(
                f,
                "{} is a symbolic link owned by user {owner} in a directory anyone may write to: \
                 it is not followed, since another user may have planted it; name the file it \
                 should lead to, or write into a directory of your own",
                path.display()
            ),
            Refused::LinkLoop { path } => write!(
                f,
                "{}: more than {MAX_LINKS} symbolic links in a row: is there a loop?",
                path.display()
            ),
            Refused::Changed { path, how } => write!(
                f,
                "{} {how} while it was being written: nothing was written through it; write \
                 again (is another process writing there?)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for Refused {}

impl Refused {
    /// The `std::io::Error` that carries it, of the kind that fits.
    fn into_io(self) -> std::io::Error {
        use std::io::ErrorKind;
        let kind = match &self {
            Refused::NotAFile { .. } | Refused::NoFileName { .. } => ErrorKind::InvalidInput,
            Refused::DanglingLink { .. } => ErrorKind::NotFound,
            Refused::PlantedLink { .. } => ErrorKind::PermissionDenied,
            Refused::LinkLoop { .. } | Refused::Changed { .. } => ErrorKind::Other,
        };
        std::io::Error::new(kind, self)
    }
}

/// Symbolic links followed before giving up, as Linux's own `ELOOP` limit.
const MAX_LINKS: usize = 40;

fn refused(path: &Path, what: &'static str) -> std::io::Error {
    Refused::NotAFile {
        path: path.to_owned(),
        what,
    }
    .into_io()
}

fn no_file_name(path: &Path) -> std::io::Error {
    Refused::NoFileName {
        path: path.to_owned(),
    }
    .into_io()
}

fn dangling(path: &Path, to: &Path) -> std::io::Error {
    Refused::DanglingLink {
        path: path.to_owned(),
        target: to.to_owned(),
    }
    .into_io()
}

/// The path's entry was replaced between the check of what it is and the write.
#[cfg(unix)]
fn changed(path: &Path, how: &'static str) -> std::io::Error {
    Refused::Changed {
        path: path.to_owned(),
        how,
    }
    .into_io()
}

/// The write rule on one directory handle (`openat`, `renameat2`, `O_NOFOLLOW`): what a name is
/// is read with `fstatat` on the directory's handle, and everything after acts on that handle
/// and name, so the check and the write cannot be separated by a swap of the path:
///
/// * a symbolic link is followed by hand (`readlinkat`, then the directory of its target opened
///   relative to the link's own), up to 40 links as the kernel does;
/// * the temporary file is created in the same directory with `O_CREAT | O_EXCL | O_NOFOLLOW`, so
///   a link planted at its name is never followed (another name is taken);
/// * a regular file is replaced with `renameat2(RENAME_EXCHANGE)`: what comes back under the
///   temporary name must be the file that was checked (same device and inode), else the exchange
///   is undone and the call fails; a new file is renamed with `RENAME_NOREPLACE`, so an entry
///   that appeared meanwhile is not replaced (a file system without these flags gets a plain
///   `renameat`, which replaces a swapped-in entry itself but never writes through it);
/// * a device or FIFO is opened with `O_NOFOLLOW` and checked again on the open handle (`fstat`)
///   before a byte is written.
#[cfg(unix)]
mod at {
    use std::ffi::{OsStr, OsString};
    use std::io::Write;
    use std::os::fd::OwnedFd;
    use std::os::unix::ffi::OsStringExt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};

    use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, Stat};
    use rustix::io::Errno;

    use super::{MAX_LINKS, Refused, changed, dangling, no_file_name, refused};

    /// What the path names, after links.
    enum Found {
        /// Nothing: a new regular file at `name` in `dir`.
        New,
        /// A regular file, as it was checked.
        Regular(Stat),
        /// A character device or a FIFO.
        Stream,
        /// A symbolic link whose end is a character device or a FIFO (`/dev/stdout`, whose
        /// `/proc/self/fd/1` leads to `pipe:[…]`, a name no directory holds): opened through
        /// the link, and checked on the open handle.
        LinkedStream,
    }

    /// A name in an open directory.
    struct Place {
        dir: OwnedFd,
        name: OsString,
    }

    pub(super) fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let (place, found) = resolve(path)?;
        #[cfg(test)]
        tests_hooks::between_check_and_write();
        match found {
            Found::Stream => stream(path, &place, OFlags::NOFOLLOW, bytes),
            Found::LinkedStream => stream(path, &place, OFlags::empty(), bytes),
            Found::New => replace(path, &place, bytes, None),
            Found::Regular(stat) => replace(path, &place, bytes, Some(&stat)),
        }
    }

    /// `path`'s directory and file name; a path without a file name (`/`, `a/..`) is refused.
    fn split(path: &Path) -> std::io::Result<(&Path, &OsStr)> {
        let Some(name) = path.file_name() else {
            return Err(if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
                refused(path, "a directory")
            } else {
                no_file_name(path)
            });
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Ok((dir, name))
    }

    fn open_dir(base: impl rustix::fd::AsFd, dir: &Path) -> rustix::io::Result<OwnedFd> {
        rustix::fs::openat(
            base,
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
    }

    /// Moves `place` to where its link points (relative to the link's own directory; an
    /// absolute target ignores it) and returns what the link holds.
    fn follow(path: &Path, place: &mut Place) -> std::io::Result<PathBuf> {
        let to = rustix::fs::readlinkat(&place.dir, &place.name, Vec::new())?;
        let to = PathBuf::from(OsString::from_vec(to.into_bytes()));
        let (dir, name) = split(&to).map_err(|_| refused(path, "a directory"))?;
        place.dir = match open_dir(&place.dir, dir) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Err(dangling(path, &to)),
            Err(e) => return Err(e.into()),
        };
        place.name = name.to_owned();
        Ok(to)
    }

    /// Refuses a link that another user may have planted: one in a sticky directory anyone may
    /// write to (`/tmp`) that belongs neither to this process's user nor to the directory's
    /// owner. That is the kernel's `fs.protected_symlinks` rule, applied here whatever the
    /// sysctl says, since links followed by hand bypass it; without it, a link planted in
    /// `/tmp` by another user would choose which file root's write replaces.
    fn refuse_planted_link(path: &Path, place: &Place, link: &Stat) -> std::io::Result<()> {
        let dir = rustix::fs::fstat(&place.dir)?;
        let shared = dir.st_mode & 0o1002 == 0o1002;
        let euid = rustix::process::geteuid().as_raw();
        if shared && link.st_uid != euid && link.st_uid != dir.st_uid {
            return Err(Refused::PlantedLink {
                path: path.to_owned(),
                owner: link.st_uid,
            }
            .into_io());
        }
        Ok(())
    }

    /// Whether the link at `place` ends, as the kernel follows it, at a character device or a
    /// FIFO. Only decides how to open it: the open handle is checked again before a write.
    fn leads_to_stream(place: &Place) -> bool {
        rustix::fs::statat(&place.dir, &place.name, AtFlags::empty()).is_ok_and(|s| {
            matches!(
                FileType::from_raw_mode(s.st_mode),
                FileType::CharacterDevice | FileType::Fifo
            )
        })
    }

    /// Where `path` leads and what is there, links followed by hand from one directory handle
    /// to the next. A missing parent directory of the path itself is created (the file is new).
    fn resolve(path: &Path) -> std::io::Result<(Place, Found)> {
        let (dir, name) = split(path)?;
        let dir = match open_dir(CWD, dir) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                std::fs::create_dir_all(dir)?;
                open_dir(CWD, dir)?
            }
            Err(e) => return Err(e.into()),
        };
        let mut place = Place {
            dir,
            name: name.to_owned(),
        };
        let mut link: Option<PathBuf> = None;
        for _ in 0..=MAX_LINKS {
            let stat = match rustix::fs::statat(&place.dir, &place.name, AtFlags::SYMLINK_NOFOLLOW)
            {
                Ok(stat) => stat,
                Err(Errno::NOENT) => {
                    return match link {
                        None => Ok((place, Found::New)),
                        Some(to) => Err(dangling(path, &to)),
                    };
                }
                Err(e) => return Err(e.into()),
            };
            let found = match FileType::from_raw_mode(stat.st_mode) {
                FileType::Symlink => {
                    refuse_planted_link(path, &place, &stat)?;
                    if leads_to_stream(&place) {
                        Found::LinkedStream
                    } else {
                        link = Some(follow(path, &mut place)?);
                        continue;
                    }
                }
                FileType::RegularFile => Found::Regular(stat),
                FileType::CharacterDevice | FileType::Fifo => Found::Stream,
                FileType::Directory => return Err(refused(path, "a directory")),
                FileType::BlockDevice => return Err(refused(path, "a block device")),
                FileType::Socket => return Err(refused(path, "a socket")),
                FileType::Unknown => {
                    return Err(refused(path, "neither a regular file nor a directory"));
                }
            };
            return Ok((place, found));
        }
        Err(Refused::LinkLoop {
            path: path.to_owned(),
        }
        .into_io())
    }

    /// Writes through a device or FIFO: opened with `follow` (`O_NOFOLLOW` where the check saw
    /// no link), and checked again on the open handle before anything is written (opening a regular file for writing without
    /// `O_TRUNC` changes nothing).
    fn stream(path: &Path, place: &Place, follow: OFlags, bytes: &[u8]) -> std::io::Result<()> {
        let fd = match rustix::fs::openat(
            &place.dir,
            &place.name,
            OFlags::WRONLY | OFlags::NOCTTY | OFlags::CLOEXEC | follow,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::LOOP) => return Err(changed(path, "became a symbolic link")),
            Err(Errno::NOENT) => return Err(changed(path, "was removed")),
            Err(e) => return Err(e.into()),
        };
        let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
        if !matches!(kind, FileType::CharacterDevice | FileType::Fifo) {
            return Err(changed(path, "stopped being a device or FIFO"));
        }
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes)?;
        file.flush()
    }

    /// Writes a temporary file beside the target (same directory handle, a name unique per
    /// process and call, never following a link), syncs it, gives it `old`'s permissions and
    /// owner, and renames it over the target. On failure the temporary file is removed.
    fn replace(
        path: &Path,
        place: &Place,
        bytes: &[u8],
        old: Option<&Stat>,
    ) -> std::io::Result<()> {
        // A new file gets the usual 0666 less the umask; a replacement starts private and takes
        // the old file's mode once written.
        let mode = if old.is_some() { 0o600 } else { 0o666 };
        let (temp, fd) = create_temp(&place.dir, &place.name, Mode::from_raw_mode(mode))?;
        let written = (|| {
            let mut file = std::fs::File::from(fd);
            file.write_all(bytes)?;
            if let Some(old) = old {
                keep_metadata(&file, old)?;
            }
            file.sync_all()?;
            drop(file);
            commit(path, place, &temp, old)
        })();
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&place.dir, &temp, AtFlags::empty());
        }
        written
    }

    /// Creates `<name>.<pid>-<n>.tmp` with `O_EXCL | O_NOFOLLOW`; a name taken (by anything,
    /// a planted link included) is skipped for the next one.
    fn create_temp(
        dir: &OwnedFd,
        name: &OsStr,
        mode: Mode,
    ) -> std::io::Result<(OsString, OwnedFd)> {
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let mut last = None;
        for _ in 0..100 {
            #[cfg(test)]
            let n = tests_hooks::temp_number()
                .unwrap_or_else(|| WRITES.fetch_add(1, Ordering::Relaxed));
            #[cfg(not(test))]
            let n = WRITES.fetch_add(1, Ordering::Relaxed);
            let mut temp = name.to_owned();
            temp.push(format!(".{}-{n}.tmp", std::process::id()));
            match rustix::fs::openat(
                dir,
                &temp,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                mode,
            ) {
                Ok(fd) => return Ok((temp, fd)),
                Err(Errno::EXIST) => last = Some(temp),
                Err(e) => return Err(e.into()),
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "cannot create a temporary file beside the target: {} and 99 names before it are \
                 taken",
                Path::new(&last.unwrap_or_default()).display()
            ),
        ))
    }

    /// Renames the temporary file over the target: exchanged with a regular file checked as
    /// `old` (and the exchange verified), or put where nothing was.
    fn commit(path: &Path, place: &Place, temp: &OsStr, old: Option<&Stat>) -> std::io::Result<()> {
        let dir = &place.dir;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use rustix::fs::RenameFlags;
            let flags = if old.is_some() {
                RenameFlags::EXCHANGE
            } else {
                RenameFlags::NOREPLACE
            };
            match rustix::fs::renameat_with(dir, temp, dir, &place.name, flags) {
                Ok(()) => {}
                // A file system without the flag: a plain rename below.
                Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                    return Ok(rustix::fs::renameat(dir, temp, dir, &place.name)?);
                }
                Err(Errno::EXIST) => return Err(changed(path, "appeared")),
                Err(Errno::NOENT) => return Err(changed(path, "was removed")),
                Err(e) => return Err(e.into()),
            }
            let Some(old) = old else {
                return Ok(());
            };
            // `temp` now names what the target held: the file that was checked, or not. The type
            // is checked too: a file removed and a link created at once can reuse its inode
            // number (ext4 does), and only a link or a device would be written through.
            let back = rustix::fs::statat(dir, temp, AtFlags::SYMLINK_NOFOLLOW);
            if back.is_ok_and(|b| same_regular_file(&b, old)) {
                rustix::fs::unlinkat(dir, temp, AtFlags::empty())?;
                return Ok(());
            }
            // Put the swapped-in entry back where it was; the caller removes our file.
            rustix::fs::renameat_with(dir, temp, dir, &place.name, RenameFlags::EXCHANGE)?;
            Err(changed(path, "was replaced"))
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = old;
            Ok(rustix::fs::renameat(dir, temp, dir, &place.name)?)
        }
    }

    /// Whether `now` is a regular file with `old`'s device and inode numbers.
    fn same_regular_file(now: &Stat, old: &Stat) -> bool {
        FileType::from_raw_mode(now.st_mode) == FileType::RegularFile
            && (now.st_dev, now.st_ino) == (old.st_dev, old.st_ino)
    }

    /// Gives the replacement `old`'s owner (when it differs) and permissions, in that order: a
    /// change of owner clears the set-user-ID and set-group-ID bits.
    fn keep_metadata(file: &std::fs::File, old: &Stat) -> std::io::Result<()> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let new = file.metadata()?;
        let (uid, gid) = (old.st_uid, old.st_gid);
        if (new.uid(), new.gid()) != (uid, gid) {
            // Only root may give a file away: anyone else's replacement stays theirs, as with
            // any replace-by-rename, so a refusal here is not an error.
            let _ = std::os::unix::fs::fchown(file, Some(uid), Some(gid));
        }
        file.set_permissions(std::fs::Permissions::from_mode(old.st_mode & 0o7777))
    }

    /// Test-only hooks into the window between the check and the write.
    #[cfg(test)]
    pub(super) mod tests_hooks {
        use std::cell::{Cell, RefCell};

        type Hook = Box<dyn FnOnce()>;

        thread_local! {
            static BETWEEN: RefCell<Option<Hook>> = const { RefCell::new(None) };
            static TEMP: Cell<Option<u64>> = const { Cell::new(None) };
        }

        /// Runs `f` on this thread's next write, after the check and before the write.
        pub(crate) fn on_next_write(f: impl FnOnce() + 'static) {
            BETWEEN.with(|b| *b.borrow_mut() = Some(Box::new(f)));
        }

        /// Numbers this thread's temporary files from `n` (so a test knows their names).
        pub(crate) fn number_temps_from(n: u64) {
            TEMP.with(|t| t.set(Some(n)));
        }

        pub(super) fn between_check_and_write() {
            if let Some(f) = BETWEEN.with(|b| b.borrow_mut().take()) {
                f();
            }
        }

        pub(super) fn temp_number() -> Option<u64> {
            TEMP.with(|t| {
                let n = t.get()?;
                t.set(Some(n + 1));
                Some(n)
            })
        }
    }
}

/// The rule by path, where there is no `openat` (not Unix): checked, then written, with the
/// window between the two that the Unix version closes.
#[cfg(not(unix))]
mod by_path {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::{dangling, refused};

    enum Target {
        New,
        Regular(PathBuf, std::fs::Metadata),
    }

    fn target(path: &Path) -> std::io::Result<Target> {
        let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && is_link => {
                return Err(dangling(
                    path,
                    &std::fs::read_link(path).unwrap_or_default(),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Target::New),
            Err(e) => return Err(e),
        };
        if meta.is_file() {
            let real = if is_link {
                std::fs::canonicalize(path)?
            } else {
                path.to_owned()
            };
            return Ok(Target::Regular(real, meta));
        }
        if meta.is_dir() {
            return Err(refused(path, "a directory"));
        }
        Err(refused(path, "neither a regular file nor a directory"))
    }

    pub(super) fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        match target(path)? {
            Target::New => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)?;
                }
                replace(path, bytes, None)
            }
            Target::Regular(real, meta) => replace(&real, bytes, Some(&meta)),
        }
    }

    fn replace(path: &Path, bytes: &[u8], old: Option<&std::fs::Metadata>) -> std::io::Result<()> {
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let Some(name) = path.file_name() else {
            return Err(super::no_file_name(path));
        };
        let mut temp_name = name.to_owned();
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        temp_name.push(format!(".{}-{n}.tmp", std::process::id()));
        let temp = path.with_file_name(temp_name);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .and_then(|mut file| {
                file.write_all(bytes)?;
                if let Some(old) = old {
                    file.set_permissions(old.permissions())?;
                }
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&temp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

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

    /// A fresh directory for one test, with a file `victim` that no write may touch.
    #[cfg(unix)]
    fn race_dir(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("laptime-fs-race-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("victim"), b"keep me").unwrap();
        dir
    }

    #[cfg(unix)]
    fn assert_untouched(dir: &Path) {
        assert_eq!(std::fs::read(dir.join("victim")).unwrap(), b"keep me");
        let temps: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(temps.is_empty(), "temporary files left: {temps:?}");
    }

    /// [`assert_untouched`], then the test's directory removed.
    #[cfg(unix)]
    fn assert_untouched_and_remove(dir: &Path) {
        assert_untouched(dir);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    fn is_link(path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
    }

    /// The check saw a regular file; a symbolic link to another file is swapped in before the
    /// write. The write must not reach the link's target, and the link is left where it was.
    #[cfg(unix)]
    #[test]
    fn a_regular_file_swapped_for_a_link_after_the_check_is_not_written_through() {
        let dir = race_dir("regular");
        let out = dir.join("out.json");
        std::fs::write(&out, b"old").unwrap();
        let (o, v) = (out.clone(), dir.join("victim"));
        at::tests_hooks::on_next_write(move || {
            std::fs::remove_file(&o).unwrap();
            std::os::unix::fs::symlink(&v, &o).unwrap();
        });
        let e = write_file(&out, b"new").unwrap_err();
        assert!(
            e.to_string()
                .contains("was replaced while it was being written"),
            "{e}"
        );
        assert!(is_link(&out), "the swapped-in link is put back");
        assert_untouched(&dir);
        // Without a swap, the same path (now the link) is followed by the rule.
        write_file(&out, b"through").unwrap();
        assert_eq!(std::fs::read(dir.join("victim")).unwrap(), b"through");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The check found nothing; a link appears at the name before the write: it is not
    /// replaced, and its target is not written.
    #[cfg(unix)]
    #[test]
    fn a_link_that_appears_where_a_new_file_was_checked_is_not_written_through() {
        let dir = race_dir("new");
        let out = dir.join("new.json");
        let (o, v) = (out.clone(), dir.join("victim"));
        at::tests_hooks::on_next_write(move || std::os::unix::fs::symlink(&v, &o).unwrap());
        let e = write_file(&out, b"new").unwrap_err();
        assert!(
            e.to_string()
                .contains("appeared while it was being written"),
            "{e}"
        );
        assert!(is_link(&out));
        assert_untouched_and_remove(&dir);
    }

    /// The check saw a FIFO (written through); a link is swapped in: `O_NOFOLLOW` refuses it
    /// before anything is written.
    #[cfg(unix)]
    #[test]
    fn a_fifo_swapped_for_a_link_after_the_check_is_not_written_through() {
        let dir = race_dir("fifo");
        let fifo = dir.join("pipe");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let (f, v) = (fifo.clone(), dir.join("victim"));
        at::tests_hooks::on_next_write(move || {
            std::fs::remove_file(&f).unwrap();
            std::os::unix::fs::symlink(&v, &f).unwrap();
        });
        let e = write_file(&fifo, b"new").unwrap_err();
        assert!(e.to_string().contains("became a symbolic link"), "{e}");
        assert_untouched_and_remove(&dir);
    }

    /// A link planted before the call at the name the temporary file would take is never
    /// followed: the next name is used, the link and its target stay as they were.
    #[cfg(unix)]
    #[test]
    fn a_link_planted_at_the_temporary_name_is_skipped() {
        let dir = race_dir("temp");
        let out = dir.join("out.json");
        std::fs::write(&out, b"old").unwrap();
        let planted = dir.join(format!("out.json.{}-7.tmp", std::process::id()));
        std::os::unix::fs::symlink(dir.join("victim"), &planted).unwrap();
        at::tests_hooks::number_temps_from(7);
        write_file(&out, b"new").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
        assert!(is_link(&planted), "the planted link is left alone");
        std::fs::remove_file(&planted).unwrap();
        assert_untouched_and_remove(&dir);
    }

    /// Links are followed by hand, each relative to its own directory; a loop is an error.
    #[cfg(unix)]
    #[test]
    fn links_are_followed_from_their_own_directory_and_loops_stop() {
        let dir = race_dir("chain");
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::create_dir_all(dir.join("b")).unwrap();
        std::fs::write(dir.join("b/real.json"), b"old").unwrap();
        // a/first -> ../b/second -> real.json (relative to b/, not to a/).
        std::os::unix::fs::symlink("../b/second", dir.join("a/first")).unwrap();
        std::os::unix::fs::symlink("real.json", dir.join("b/second")).unwrap();
        write_file(dir.join("a/first"), b"new").unwrap();
        assert_eq!(std::fs::read(dir.join("b/real.json")).unwrap(), b"new");
        assert!(is_link(&dir.join("a/first")) && is_link(&dir.join("b/second")));
        std::os::unix::fs::symlink("loop2", dir.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", dir.join("loop2")).unwrap();
        let e = write_file(dir.join("loop1"), b"x").unwrap_err();
        assert!(e.to_string().contains("symbolic links in a row"), "{e}");
        assert_untouched_and_remove(&dir);
    }

    /// The reason of a refused write, as a caller reads it.
    fn refusal(e: &std::io::Error) -> &Refused {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<Refused>())
            .unwrap_or_else(|| panic!("not a typed refusal: {e}"))
    }

    /// The refusals are typed, and their messages say what to change.
    #[cfg(unix)]
    #[test]
    fn refusals_are_typed_and_say_what_to_change() {
        let dir = race_dir("typed");
        std::os::unix::fs::symlink("missing.json", dir.join("dangling")).unwrap();
        std::os::unix::fs::symlink(&dir, dir.join("to-dir")).unwrap();
        let e = write_file(dir.join("dangling"), b"x").unwrap_err();
        assert_eq!(
            refusal(&e),
            &Refused::DanglingLink {
                path: dir.join("dangling"),
                target: PathBuf::from("missing.json"),
            }
        );
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(
            e.to_string()
                .contains("create the target, or remove the link"),
            "{e}"
        );
        for (path, what) in [
            (dir.clone(), "a directory"),
            (dir.join("to-dir"), "a directory"),
        ] {
            let e = write_file(&path, b"x").unwrap_err();
            assert!(
                matches!(refusal(&e), Refused::NotAFile { what: w, .. } if *w == what),
                "{path:?}: {e}"
            );
        }
        assert!(
            !dir.join("missing.json").exists(),
            "nothing created through the link"
        );
        assert!(is_link(&dir.join("dangling")) && is_link(&dir.join("to-dir")));
        assert_untouched_and_remove(&dir);
    }

    /// A link in a sticky world-writable directory (`/tmp`) owned by another user than ours and
    /// the directory's is refused; ours, or any in a directory of our own, is followed. Giving a
    /// link away takes root, so elsewhere only the followed cases are checked.
    #[cfg(unix)]
    #[test]
    fn a_link_another_user_planted_in_a_shared_directory_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = race_dir("planted");
        let shared = dir.join("tmp");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let ours = shared.join("ours.json");
        std::os::unix::fs::symlink(dir.join("victim"), &ours).unwrap();
        write_file(&ours, b"ours").unwrap();
        assert_eq!(std::fs::read(dir.join("victim")).unwrap(), b"ours");
        std::fs::write(dir.join("victim"), b"keep me").unwrap();
        if !rustix::process::geteuid().is_root() {
            std::fs::remove_dir_all(&dir).unwrap();
            return;
        }
        let nobody = (
            Some(rustix::process::Uid::from_raw(65534)),
            Some(rustix::process::Gid::from_raw(65534)),
        );
        let give_away = |p: &Path| {
            rustix::fs::chownat(
                rustix::fs::CWD,
                p,
                nobody.0,
                nobody.1,
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
        };
        let planted = shared.join("planted.json");
        std::os::unix::fs::symlink(dir.join("victim"), &planted).unwrap();
        give_away(&planted);
        let e = write_file(&planted, b"evil").unwrap_err();
        assert_eq!(
            refusal(&e),
            &Refused::PlantedLink {
                path: planted.clone(),
                owner: 65534
            }
        );
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(
            e.to_string().contains("name the file it should lead to"),
            "{e}"
        );
        // A link to a device is not followed either (a planted /dev/mem).
        let to_null = shared.join("null.json");
        std::os::unix::fs::symlink("/dev/null", &to_null).unwrap();
        give_away(&to_null);
        assert!(write_file(&to_null, b"evil").is_err());
        // The same link in a directory that is not shared, or shared but the link owner's own.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        write_file(&planted, b"followed").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        give_away(&shared);
        write_file(&planted, b"followed again").unwrap();
        assert_eq!(
            std::fs::read(dir.join("victim")).unwrap(),
            b"followed again"
        );
        std::fs::write(dir.join("victim"), b"keep me").unwrap();
        assert!(is_link(&planted));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The directory is opened once: swapped for a link to another directory after the check,
    /// the write still lands in the directory that was checked, never in the link's target.
    #[cfg(unix)]
    #[test]
    fn a_directory_swapped_for_a_link_after_the_check_is_not_written_through() {
        let dir = race_dir("dir");
        let (sub, moved, elsewhere) = (dir.join("sub"), dir.join("moved"), dir.join("elsewhere"));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(sub.join("out.json"), b"old").unwrap();
        std::fs::write(elsewhere.join("out.json"), b"keep me").unwrap();
        let (s, m, e) = (sub.clone(), moved.clone(), elsewhere.clone());
        at::tests_hooks::on_next_write(move || {
            std::fs::rename(&s, &m).unwrap();
            std::os::unix::fs::symlink(&e, &s).unwrap();
        });
        write_file(sub.join("out.json"), b"new").unwrap();
        assert_eq!(std::fs::read(moved.join("out.json")).unwrap(), b"new");
        assert_eq!(
            std::fs::read(elsewhere.join("out.json")).unwrap(),
            b"keep me"
        );
        assert!(is_link(&sub));
        assert_untouched_and_remove(&dir);
    }

    /// `/dev/stdout` into a pipe is a link to `/proc/self/fd/1`, itself a link to `pipe:[…]`,
    /// a name no directory holds: followed by the kernel, written through, and the pipe's reader
    /// gets the bytes.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_link_to_an_anonymous_pipe_is_written_through() {
        use std::os::fd::AsRawFd;
        let mut cat = std::process::Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("cat runs");
        let stdin = cat.stdin.take().unwrap();
        let dir = race_dir("pipe");
        let link = dir.join("stdout");
        let fd = format!("/proc/self/fd/{}", stdin.as_raw_fd());
        std::os::unix::fs::symlink(&fd, &link).unwrap();
        write_file(&link, b"through the pipe").unwrap();
        drop(stdin);
        let out = cat.wait_with_output().unwrap();
        assert_eq!(out.stdout, b"through the pipe");
        assert!(is_link(&link));
        assert_untouched_and_remove(&dir);
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
