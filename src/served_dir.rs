//! The served directory: names are opened relative to a handle on it, never
//! by joining strings into paths, and never through a symbolic link that
//! leads outside it.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat, openat2};
use nix::sys::stat::{Mode, SFlag, fstat};

use crate::protocol::{FileName, Status};

/// A file opened for sending, with its size taken from the opened file.
#[derive(Debug)]
pub struct OpenedFile {
    pub file: File,
    pub size: u64,
}

/// Why a name could not be served: the status to answer and what to log.
#[derive(Debug)]
pub struct OpenError {
    pub status: Status,
    pub reason: String,
}

/// The status a failed open maps to.
pub fn status_for_open_error(errno: Errno) -> Status {
    match errno {
        Errno::ENOENT | Errno::ENOTDIR | Errno::ENXIO | Errno::ENODEV => Status::FileNotFound,
        Errno::EACCES | Errno::EPERM | Errno::EXDEV | Errno::ELOOP => Status::AccessDenied,
        Errno::ENAMETOOLONG => Status::InvalidFilename,
        _ => Status::InternalError,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolver {
    /// openat2 with RESOLVE_BENEATH: links are followed as long as they stay
    /// inside the directory.
    Beneath,
    /// Kernels before 5.6, and sandboxes that refuse openat2: the name is the
    /// only component, so refusing to follow a link there is enough.
    NoFollow,
}

pub struct ServedDir {
    path: PathBuf,
    handle: RefCell<OwnedFd>,
    resolver: Cell<Resolver>,
}

impl ServedDir {
    /// Opens `path`, which must be a directory.
    pub fn open(path: &Path) -> io::Result<ServedDir> {
        let handle = open_directory(path)?;
        let resolver = if openat2_works(&handle) {
            Resolver::Beneath
        } else {
            log::warn!(
                "openat2 is not available here: symbolic links in {} will not be followed",
                path.display()
            );
            Resolver::NoFollow
        };
        Ok(ServedDir {
            path: path.to_path_buf(),
            handle: RefCell::new(handle),
            resolver: Cell::new(resolver),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `name` for reading if it is a regular file inside the directory.
    pub fn open_file(&self, name: &FileName) -> Result<OpenedFile, OpenError> {
        match self.open_beneath(name) {
            Err(Errno::ENOENT) if self.directory_was_removed() => {
                self.reopen()?;
                self.open_checked(name)
            }
            result => check_regular(result, name),
        }
    }

    fn open_checked(&self, name: &FileName) -> Result<OpenedFile, OpenError> {
        check_regular(self.open_beneath(name), name)
    }

    fn open_beneath(&self, name: &FileName) -> Result<OwnedFd, Errno> {
        // O_NONBLOCK: opening a FIFO must not wait for a writer. O_LARGEFILE:
        // libc adds it to open(2) for us, but openat2(2) is called raw, and a
        // 32-bit kernel would refuse files over 2 GiB without it.
        let flags = OFlag::O_RDONLY
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY
            | OFlag::O_LARGEFILE;
        let handle = self.handle.borrow();
        match self.resolver.get() {
            Resolver::Beneath => openat2(
                handle.as_fd(),
                name.as_str(),
                OpenHow::new()
                    .flags(flags)
                    .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS),
            ),
            Resolver::NoFollow => openat(
                handle.as_fd(),
                name.as_str(),
                flags | OFlag::O_NOFOLLOW,
                Mode::empty(),
            ),
        }
    }

    /// A directory that was removed keeps its handle valid but empty; its
    /// link count drops to zero.
    fn directory_was_removed(&self) -> bool {
        fstat(self.handle.borrow().as_fd()).is_ok_and(|stat| stat.st_nlink == 0)
    }

    /// Opens the directory's path again, so that a directory that was removed
    /// and made anew is served again.
    fn reopen(&self) -> Result<(), OpenError> {
        match open_directory(&self.path) {
            Ok(handle) => {
                log::warn!(
                    "served directory {} was removed; reopened it by its path",
                    self.path.display()
                );
                *self.handle.borrow_mut() = handle;
                Ok(())
            }
            Err(error) => Err(OpenError {
                status: Status::InternalError,
                reason: format!("served directory {} is gone: {error}", self.path.display()),
            }),
        }
    }
}

fn check_regular(opened: Result<OwnedFd, Errno>, name: &FileName) -> Result<OpenedFile, OpenError> {
    let fd = opened.map_err(|errno| OpenError {
        status: status_for_open_error(errno),
        reason: match errno {
            Errno::EXDEV => format!("{name}: a symbolic link leads outside the served directory"),
            Errno::ELOOP => format!("{name}: a symbolic link that is not followed"),
            // What open(2) says of a socket, or of a device with no driver.
            Errno::ENXIO => format!("{name}: not a regular file (a socket or an absent device)"),
            _ => format!("{name}: {}", io::Error::from(errno)),
        },
    })?;
    let stat = fstat(fd.as_fd()).map_err(|errno| OpenError {
        status: Status::InternalError,
        reason: format!("{name}: fstat failed: {}", io::Error::from(errno)),
    })?;
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFREG {
        return Err(OpenError {
            status: Status::FileNotFound,
            reason: format!("{name}: not a regular file ({})", kind_name(kind)),
        });
    }
    Ok(OpenedFile {
        file: File::from(fd),
        size: u64::try_from(stat.st_size).unwrap_or(0),
    })
}

fn kind_name(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        // A socket never gets here: opening one fails with ENXIO.
        _ => "not a regular file",
    }
}

fn open_directory(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    open(path, flags, Mode::empty()).map_err(|errno| {
        let error = io::Error::from(errno);
        match errno {
            Errno::ENOTDIR => io::Error::new(
                error.kind(),
                format!("{} is not a directory", path.display()),
            ),
            _ => io::Error::new(error.kind(), format!("{}: {error}", path.display())),
        }
    })
}

/// Whether this kernel and sandbox let openat2 run; old container seccomp
/// profiles answer ENOSYS or EPERM for it.
fn openat2_works(handle: &OwnedFd) -> bool {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH);
    !matches!(
        openat2(handle.as_fd(), ".", how),
        Err(Errno::ENOSYS | Errno::EPERM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_errors_map_to_statuses() {
        let expected = [
            (Errno::ENOENT, Status::FileNotFound),
            (Errno::ENOTDIR, Status::FileNotFound),
            (Errno::ENXIO, Status::FileNotFound),
            (Errno::ENODEV, Status::FileNotFound),
            (Errno::EACCES, Status::AccessDenied),
            (Errno::EPERM, Status::AccessDenied),
            (Errno::EXDEV, Status::AccessDenied),
            (Errno::ELOOP, Status::AccessDenied),
            (Errno::ENAMETOOLONG, Status::InvalidFilename),
            (Errno::EMFILE, Status::InternalError),
            (Errno::EIO, Status::InternalError),
            (Errno::ENOMEM, Status::InternalError),
        ];
        for (errno, status) in expected {
            assert_eq!(status_for_open_error(errno), status, "{errno}");
        }
    }

    #[test]
    fn every_kind_of_file_is_named_in_the_log() {
        let expected = [
            (SFlag::S_IFDIR, "a directory"),
            (SFlag::S_IFIFO, "a FIFO"),
            (SFlag::S_IFCHR, "a character device"),
            (SFlag::S_IFBLK, "a block device"),
            (SFlag::S_IFLNK, "not a regular file"),
        ];
        for (kind, name) in expected {
            assert_eq!(kind_name(kind), name, "{kind:?}");
        }
    }

    fn name(text: &str) -> FileName {
        FileName::parse(text.as_bytes()).expect("valid test name")
    }

    #[test]
    fn removed_directory_is_reopened_when_it_returns() {
        let parent = tempfile::tempdir().expect("temp dir");
        let path = parent.path().join("served");
        std::fs::create_dir(&path).expect("create");
        std::fs::write(path.join("a"), b"first").expect("write");
        let dir = ServedDir::open(&path).expect("open");

        std::fs::remove_file(path.join("a")).expect("remove file");
        std::fs::remove_dir(&path).expect("remove dir");
        let gone = dir.open_file(&name("a")).expect_err("directory is gone");
        assert_eq!(gone.status, Status::InternalError);
        assert!(gone.reason.contains("is gone"), "{}", gone.reason);

        std::fs::create_dir(&path).expect("recreate");
        std::fs::write(path.join("a"), b"second").expect("write");
        let opened = dir.open_file(&name("a")).expect("served again");
        assert_eq!(opened.size, 6);
    }

    #[test]
    fn a_directory_moved_away_is_still_served_by_its_handle() {
        let parent = tempfile::tempdir().expect("temp dir");
        let path = parent.path().join("served");
        std::fs::create_dir(&path).expect("create");
        std::fs::write(path.join("a"), b"first").expect("write");
        let dir = ServedDir::open(&path).expect("open");

        std::fs::rename(&path, parent.path().join("moved")).expect("move");
        std::fs::create_dir(&path).expect("a new directory at the path");
        std::fs::write(path.join("b"), b"other").expect("write");
        let missing = dir
            .open_file(&name("b"))
            .expect_err("not in the moved directory");
        assert_eq!(missing.status, Status::FileNotFound);
        let opened = dir
            .open_file(&name("a"))
            .expect("still the moved directory");
        assert_eq!(opened.size, 5);
    }
}
