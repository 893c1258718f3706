//! Where the client writes what it fetches: a regular file, which appears at
//! its destination only when complete, or a stream (a terminal, a pipe,
//! `/dev/null`), which takes the content as it arrives.
//!
//! A regular file is written into a staging file beside its destination: an
//! anonymous one (`O_TMPFILE`) where the file system allows it, which the
//! kernel discards whatever ends the process; elsewhere (vfat, NFS, many FUSE
//! file systems) a hidden `.tcpfile-PID-N.part`, removed when the fetch
//! fails, when a stop signal ends the client (once
//! [`remove_staging_file_on_stop_signals`] is set up), and, should SIGKILL
//! leave one behind, by the next fetch into the same folder.

use std::ffi::{CString, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, open, openat, renameat};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};

/// Where fetched content goes.
pub enum Destination {
    /// A regular file, new or replacing one: written beside its place and put
    /// there whole by [`Destination::finish`].
    File(AtomicFile),
    /// A character device or a FIFO, such as `/dev/null`, a terminal, or
    /// `/dev/stdout` on a pipe: written as the content arrives.
    Stream(File),
}

impl Destination {
    /// Decides how to write `path`, before anything is fetched: a missing or
    /// regular file is staged (through a symbolic link, the file it names);
    /// a character device or FIFO is opened for writing; anything else is
    /// refused.
    pub fn open(path: &Path) -> io::Result<Destination> {
        let regular = match std::fs::metadata(path) {
            Ok(metadata) => {
                let kind = metadata.file_type();
                if kind.is_char_device() || kind.is_fifo() {
                    let stream = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(|error| with_path(error, path))?;
                    return Ok(Destination::Stream(stream));
                }
                if !kind.is_file() {
                    return Err(io::Error::new(
                        refusal_kind(kind),
                        format!(
                            "{} is {}: the client writes regular files, character devices and FIFOs only",
                            path.display(),
                            kind_name(kind)
                        ),
                    ));
                }
                // Renaming onto a link would replace the link itself.
                if path.symlink_metadata()?.file_type().is_symlink() {
                    std::fs::canonicalize(path).map_err(|error| with_path(error, path))?
                } else {
                    path.to_path_buf()
                }
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                if path.symlink_metadata().is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{} is a symbolic link to nothing", path.display()),
                    ));
                }
                path.to_path_buf()
            }
            Err(error) => return Err(with_path(error, path)),
        };
        AtomicFile::create(&regular).map(Destination::File)
    }

    pub fn file(&mut self) -> &mut File {
        match self {
            Destination::File(staged) => staged.file(),
            Destination::Stream(stream) => stream,
        }
    }

    /// After the last byte: puts a regular file in place.
    pub fn finish(self) -> io::Result<()> {
        match self {
            Destination::File(staged) => staged.persist(),
            Destination::Stream(_) => Ok(()),
        }
    }
}

fn kind_name(kind: std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn refusal_kind(kind: std::fs::FileType) -> io::ErrorKind {
    if kind.is_dir() {
        io::ErrorKind::IsADirectory
    } else {
        io::ErrorKind::InvalidInput
    }
}

/// A file that is written beside its destination and appears under the
/// destination's name only when [`AtomicFile::persist`] is called. Until then
/// an existing file of that name stays as it was, and if the process ends
/// first, nothing is left behind.
pub struct AtomicFile {
    /// Locked while this process writes it, where the file system has locks,
    /// so that another fetch into the same folder can tell a live staging file
    /// from one left behind.
    file: File,
    dir: OwnedFd,
    final_name: OsString,
    staging: Staging,
}

enum Staging {
    /// O_TMPFILE: the kernel discards the file if the process dies, even by
    /// SIGKILL.
    Anonymous,
    /// For file systems without O_TMPFILE: a hidden name, removed on drop.
    Named(CString),
}

const STAGING_PREFIX: &str = ".tcpfile-";
const STAGING_SUFFIX: &str = ".part";
/// A staging file nobody has written for this long, and nobody holds
/// locked, was left behind by a fetch that was killed.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

static STAGING_COUNTER: AtomicU32 = AtomicU32::new(0);

/// `.tcpfile-PID-N.part`: short whatever the destination's name, which may
/// be as long as a name can be.
fn staging_name() -> CString {
    let name = format!(
        "{STAGING_PREFIX}{}-{}{STAGING_SUFFIX}",
        std::process::id(),
        STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    CString::new(name).expect("digits and ASCII punctuation hold no NUL")
}

impl AtomicFile {
    /// Prepares to write `destination`, a path that is not a directory. Fails
    /// at once if its folder cannot take a new file.
    pub fn create(destination: &Path) -> io::Result<AtomicFile> {
        let final_name = destination
            .file_name()
            .filter(|name| name.as_bytes() != b"..")
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} does not name a file", destination.display()),
                )
            })?
            .to_os_string();
        if destination.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", destination.display()),
            ));
        }
        let folder = match destination.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let dir = open(
            folder,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| with_path(errno.into(), folder))?;
        let mode = Mode::from_bits_truncate(0o666);
        let tmpfile = OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
        let (fd, staging) = match openat(dir.as_fd(), ".", tmpfile, mode) {
            Ok(fd) => (fd, Staging::Anonymous),
            Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => {
                let name = staging_name();
                let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
                let fd = openat(dir.as_fd(), name.as_c_str(), flags, mode)
                    .map_err(|errno| with_path(errno.into(), folder))?;
                published::set(&dir, &name);
                (fd, Staging::Named(name))
            }
            Err(errno) => return Err(with_path(errno.into(), folder)),
        };
        let file = File::from(fd);
        give_to_folder_owner(&file, &dir, folder);
        // Where the file system has no locks, nobody else can take this one's
        // either, so it is never mistaken for an abandoned one.
        try_lock(&file);
        remove_abandoned_staging_files(&dir, folder);
        Ok(AtomicFile {
            file,
            dir,
            final_name,
            staging,
        })
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Puts the complete file in place under its destination's name,
    /// replacing any file of that name in one step.
    pub fn persist(mut self) -> io::Result<()> {
        let staged = match std::mem::replace(&mut self.staging, Staging::Anonymous) {
            Staging::Named(name) => name,
            Staging::Anonymous => {
                let name = staging_name();
                published::set(&self.dir, &name);
                let proc_path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                let linked = linkat(
                    AT_FDCWD,
                    proc_path.as_str(),
                    self.dir.as_fd(),
                    name.as_c_str(),
                    AtFlags::AT_SYMLINK_FOLLOW,
                )
                .or_else(|_| {
                    // Without /proc, linking the descriptor itself needs
                    // CAP_DAC_READ_SEARCH, which root in a container has.
                    linkat(
                        self.file.as_fd(),
                        "",
                        self.dir.as_fd(),
                        name.as_c_str(),
                        AtFlags::AT_EMPTY_PATH,
                    )
                });
                if let Err(errno) = linked {
                    published::clear();
                    return Err(errno.into());
                }
                name
            }
        };
        let renamed = renameat(
            self.dir.as_fd(),
            staged.as_c_str(),
            self.dir.as_fd(),
            self.final_name.as_os_str(),
        );
        if renamed.is_err() {
            let _ = unlinkat(
                self.dir.as_fd(),
                staged.as_c_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
        published::clear();
        Ok(renamed?)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Staging::Named(name) = &self.staging {
            published::clear();
            let _ = unlinkat(
                self.dir.as_fd(),
                name.as_c_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

/// Run as root, saving into a folder that belongs to someone else (`sudo`,
/// or a container's root writing into a user's bind-mounted folder), the
/// file is given to the folder's owner, like the folder's other files, rather
/// than left to root. Without the right to (no CAP_CHOWN), it stays root's.
fn give_to_folder_owner(file: &File, dir: &OwnedFd, folder: &Path) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let Ok(owner) = nix::sys::stat::fstat(dir.as_fd()) else {
        return;
    };
    if owner.st_uid == 0 {
        return;
    }
    let given = nix::unistd::fchown(
        file.as_fd(),
        Some(nix::unistd::Uid::from_raw(owner.st_uid)),
        Some(nix::unistd::Gid::from_raw(owner.st_gid)),
    );
    if let Err(errno) = given {
        log::warn!(
            "the file stays root's: cannot give it to {}:{}, the owner of {}: {errno}",
            owner.st_uid,
            owner.st_gid,
            folder.display()
        );
    }
}

/// Removes the staging files in `dir` that a killed fetch left behind: unlocked
/// and unchanged for [`ABANDONED_AFTER`]. A live fetch holds its file locked
/// from the moment it made it; the age covers the instant in between.
fn remove_abandoned_staging_files(dir: &OwnedFd, folder: &Path) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let text = name.to_string_lossy();
        if !(text.starts_with(STAGING_PREFIX) && text.ends_with(STAGING_SUFFIX)) {
            continue;
        }
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let Ok(fd) = openat(dir.as_fd(), name.as_os_str(), flags, Mode::empty()) else {
            continue;
        };
        let file = File::from(fd);
        let abandoned = file.metadata().is_ok_and(|metadata| {
            metadata.is_file()
                && metadata
                    .modified()
                    .ok()
                    .and_then(|modified| SystemTime::now().duration_since(modified).ok())
                    .is_some_and(|age| age >= ABANDONED_AFTER)
        });
        if abandoned && try_lock(&file) {
            let removed = unlinkat(dir.as_fd(), name.as_os_str(), UnlinkatFlags::NoRemoveDir);
            if removed.is_ok() {
                log::info!(
                    "removed {}, left behind by an interrupted fetch",
                    folder.join(&name).display()
                );
            }
        }
    }
}

/// Takes an exclusive lock on `file` if nobody holds one; released when the
/// file is closed.
fn try_lock(file: &File) -> bool {
    // SAFETY: flock only acts on the descriptor, which `file` keeps open.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// The named staging file of this process, published for the signal handler
/// that removes it when a stop signal ends the client.
mod published {
    use super::*;

    static DIR: AtomicI32 = AtomicI32::new(-1);
    static NAME: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());

    /// `name` must stay alive until [`clear`]: the staging file owns it.
    pub(super) fn set(dir: &OwnedFd, name: &CString) {
        NAME.store(name.as_ptr().cast_mut(), Ordering::SeqCst);
        DIR.store(dir.as_raw_fd(), Ordering::SeqCst);
    }

    pub(super) fn clear() {
        DIR.store(-1, Ordering::SeqCst);
        NAME.store(std::ptr::null_mut(), Ordering::SeqCst);
    }

    pub(super) extern "C" fn remove_and_die(signal: libc::c_int) {
        let dir = DIR.load(Ordering::SeqCst);
        let name = NAME.load(Ordering::SeqCst);
        // SAFETY: unlinkat, signal and raise are async-signal-safe; `name`
        // is a NUL-terminated string kept alive while it is published, and
        // the single-threaded client cannot free it while this handler runs.
        unsafe {
            if dir >= 0 && !name.is_null() {
                libc::unlinkat(dir, name, 0);
            }
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP remove a named staging file before they
/// end the process the way they would have (for a single-threaded client).
pub fn remove_staging_file_on_stop_signals() -> io::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(published::remove_and_die),
        SaFlags::SA_RESETHAND,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler calls only async-signal-safe functions.
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(())
}

fn with_path(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::fs::symlink;

    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    fn write_through(path: &Path, content: &[u8]) -> io::Result<()> {
        let mut destination = Destination::open(path)?;
        destination.file().write_all(content)?;
        destination.finish()
    }

    #[test]
    fn atomic_file_appears_only_when_persisted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let destination = dir.path().join("out.bin");
        let mut staged = AtomicFile::create(&destination).expect("create");
        staged.file().write_all(b"content").expect("write");
        assert!(
            entries(dir.path()).is_empty(),
            "nothing visible before persist"
        );
        staged.persist().expect("persist");
        assert_eq!(entries(dir.path()), ["out.bin"]);
        assert_eq!(std::fs::read(&destination).expect("read"), b"content");
    }

    #[test]
    fn dropped_atomic_file_leaves_existing_file_untouched() {
        let dir = tempfile::tempdir().expect("temp dir");
        let destination = dir.path().join("keep.txt");
        std::fs::write(&destination, b"old").expect("write");
        let mut staged = AtomicFile::create(&destination).expect("create");
        staged.file().write_all(b"new and partial").expect("write");
        drop(staged);
        assert_eq!(entries(dir.path()), ["keep.txt"]);
        assert_eq!(std::fs::read(&destination).expect("read"), b"old");
    }

    #[test]
    fn persisted_atomic_file_replaces_existing_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let destination = dir.path().join("keep.txt");
        std::fs::write(&destination, b"old").expect("write");
        write_through(&destination, b"new").expect("write");
        assert_eq!(entries(dir.path()), ["keep.txt"]);
        assert_eq!(std::fs::read(&destination).expect("read"), b"new");
    }

    #[test]
    fn the_longest_name_is_staged_and_put_in_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let name = "n".repeat(255);
        write_through(&dir.path().join(&name), b"long").expect("write");
        assert_eq!(entries(dir.path()), [name]);
    }

    #[test]
    fn a_directory_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let error = Destination::open(dir.path())
            .err()
            .expect("a directory is refused");
        assert!(error.to_string().contains("is a directory"), "{error}");
    }

    #[test]
    fn a_link_to_a_file_replaces_the_file_and_stays_a_link() {
        let dir = tempfile::tempdir().expect("temp dir");
        let real = dir.path().join("real.txt");
        std::fs::write(&real, b"old").expect("write");
        let link = dir.path().join("link.txt");
        symlink("real.txt", &link).expect("symlink");
        write_through(&link, b"new").expect("write");
        assert!(link.symlink_metadata().expect("lstat").is_symlink());
        assert_eq!(std::fs::read(&real).expect("read"), b"new");
        assert_eq!(entries(dir.path()), ["link.txt", "real.txt"]);
    }

    #[test]
    fn a_link_to_nothing_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let link = dir.path().join("dangling");
        symlink("nowhere", &link).expect("symlink");
        let error = Destination::open(&link).err().expect("refused");
        assert!(error.to_string().contains("link to nothing"), "{error}");
        assert_eq!(entries(dir.path()), ["dangling"]);
    }

    #[test]
    fn a_fifo_is_written_as_a_stream() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("pipe");
        nix::unistd::mkfifo(&fifo, Mode::S_IRWXU).expect("mkfifo");
        let reader_path = fifo.clone();
        let reader = std::thread::spawn(move || {
            let mut content = Vec::new();
            File::open(reader_path)
                .and_then(|mut pipe| pipe.read_to_end(&mut content))
                .expect("read the FIFO");
            content
        });
        let mut destination = Destination::open(&fifo).expect("open the FIFO");
        assert!(matches!(destination, Destination::Stream(_)));
        destination.file().write_all(b"streamed").expect("write");
        destination.finish().expect("finish");
        assert_eq!(reader.join().expect("reader"), b"streamed");
        assert!(
            std::fs::metadata(&fifo)
                .expect("stat")
                .file_type()
                .is_fifo()
        );
    }

    #[test]
    fn a_socket_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let error = Destination::open(&path).err().expect("refused");
        assert!(error.to_string().contains("is a socket"), "{error}");
    }

    fn age(path: &Path, by: Duration) {
        let then = SystemTime::now() - by;
        File::options()
            .write(true)
            .open(path)
            .and_then(|file| file.set_modified(then))
            .expect("set the modification time");
    }

    #[test]
    fn only_abandoned_staging_files_are_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let abandoned = dir.path().join(".tcpfile-1-0.part");
        let fresh = dir.path().join(".tcpfile-2-0.part");
        let locked = dir.path().join(".tcpfile-3-0.part");
        let unrelated = dir.path().join(".tcpfile-notes.txt");
        let linked = dir.path().join("linked.bin");
        for path in [&abandoned, &fresh, &locked, &unrelated, &linked] {
            std::fs::write(path, b"partial").expect("write");
        }
        for path in [&abandoned, &locked, &unrelated, &linked] {
            age(path, ABANDONED_AFTER * 2);
        }
        // Named like a staging file, but a link: no fetch made it.
        symlink("linked.bin", dir.path().join(".tcpfile-4-0.part")).expect("symlink");
        let holder = File::open(&locked).expect("open");
        assert!(try_lock(&holder), "the test holds the lock");

        drop(AtomicFile::create(&dir.path().join("next.bin")).expect("create"));
        assert_eq!(
            entries(dir.path()),
            [
                ".tcpfile-2-0.part",
                ".tcpfile-3-0.part",
                ".tcpfile-4-0.part",
                ".tcpfile-notes.txt",
                "linked.bin"
            ]
        );
    }

    #[test]
    fn a_fifo_named_like_a_staging_file_neither_blocks_nor_goes() {
        let dir = tempfile::tempdir().expect("temp dir");
        nix::unistd::mkfifo(&dir.path().join(".tcpfile-1-0.part"), Mode::S_IRWXU).expect("mkfifo");
        let destination = dir.path().join("next.bin");
        let (done, finished) = std::sync::mpsc::channel();
        // Opening a FIFO that blocks would never return: the thread is left
        // behind, and the test fails at the deadline.
        std::thread::spawn(move || {
            let created = AtomicFile::create(&destination).map(drop);
            let _ = done.send(created);
        });
        let created = finished
            .recv_timeout(Duration::from_secs(20))
            .expect("the staging files are looked at without blocking");
        created.expect("create");
        assert_eq!(entries(dir.path()), [".tcpfile-1-0.part"]);
    }
}
