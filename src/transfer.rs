//! Moving bytes: exact reads, the chunked `sendfile` loop, and files that
//! appear at their destination only when complete.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{
    AT_FDCWD, AtFlags, FcntlArg, OFlag, SpliceFFlags, open, openat, renameat, splice,
};
use nix::poll::PollFlags;
use nix::sys::sendfile::sendfile;
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};

use crate::lifecycle::{Lifecycle, Wake};

/// Bytes handed to one `sendfile` call. One constant for the whole program,
/// so a large file always takes many calls and every model sends alike.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// "N bytes in S s (R MiB/s)", the way both ends report a finished transfer.
pub fn describe_rate(bytes: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        bytes as f64 / seconds / (1024.0 * 1024.0)
    } else {
        0.0
    };
    format!("{bytes} bytes in {seconds:.3} s ({rate:.1} MiB/s)")
}

/// Why an exchange on a server's connection ended before it was complete.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("the peer closed the connection")]
    Closed,
    #[error("timed out after {0:?} without progress")]
    TimedOut(Duration),
    #[error("{0}")]
    Stopped(&'static str),
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl ExchangeError {
    fn from_wait(lifecycle: &Lifecycle) -> ExchangeError {
        if lifecycle.forced() {
            ExchangeError::Stopped("second stop signal: connection ended")
        } else {
            ExchangeError::Stopped("grace period over: connection ended")
        }
    }
}

/// Waits until the non-blocking `stream` is ready for `events`, at most until
/// `deadline`, and never past the grace period of a stop in progress.
fn wait_ready(
    stream: &TcpStream,
    events: PollFlags,
    lifecycle: &Lifecycle,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), ExchangeError> {
    loop {
        if lifecycle.must_abort() {
            return Err(ExchangeError::from_wait(lifecycle));
        }
        let limit = lifecycle
            .grace_deadline()
            .map_or(deadline, |grace| grace.min(deadline));
        match lifecycle.wait(Some((stream.as_fd(), events)), Some(limit))? {
            Wake::Ready => return Ok(()),
            Wake::Signalled => continue,
            Wake::TimedOut if Instant::now() >= deadline => {
                return Err(ExchangeError::TimedOut(timeout));
            }
            Wake::TimedOut => continue,
        }
    }
}

/// Fills `buf` from the non-blocking `stream`; the whole of it must arrive
/// within `timeout`, so a peer that trickles bytes cannot hold the connection.
/// On failure, reports how many bytes did arrive.
pub fn read_full(
    stream: &TcpStream,
    buf: &mut [u8],
    lifecycle: &Lifecycle,
    timeout: Duration,
) -> Result<(), (usize, ExchangeError)> {
    let deadline = Instant::now() + timeout;
    let mut filled = 0;
    while filled < buf.len() {
        match (&*stream).read(&mut buf[filled..]) {
            Ok(0) => return Err((filled, ExchangeError::Closed)),
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                wait_ready(stream, PollFlags::POLLIN, lifecycle, deadline, timeout)
                    .map_err(|error| (filled, error))?;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err((filled, error.into())),
        }
    }
    Ok(())
}

/// Writes all of `bytes` to the non-blocking `stream`, failing if the peer
/// takes nothing for `timeout`.
pub fn write_all(
    stream: &TcpStream,
    bytes: &[u8],
    lifecycle: &Lifecycle,
    timeout: Duration,
) -> Result<(), ExchangeError> {
    let mut written = 0;
    while written < bytes.len() {
        match (&*stream).write(&bytes[written..]) {
            Ok(0) => return Err(ExchangeError::Closed),
            Ok(n) => written += n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                let deadline = Instant::now() + timeout;
                wait_ready(stream, PollFlags::POLLOUT, lifecycle, deadline, timeout)?;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// Why sending a file's content stopped before `size` bytes.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the file shrank while it was sent: it ended after {sent} bytes")]
    FileShrank { sent: u64 },
    #[error("{error} after {sent} bytes")]
    Exchange { sent: u64, error: ExchangeError },
}

/// Sends exactly `size` bytes of `file` with `sendfile`, [`CHUNK_SIZE`] at a
/// time. A peer that takes nothing for `timeout` is given up on.
pub fn send_file(
    stream: &TcpStream,
    file: &File,
    size: u64,
    lifecycle: &Lifecycle,
    timeout: Duration,
) -> Result<u64, SendError> {
    let mut offset: libc::off_t = 0;
    let mut sent: u64 = 0;
    while sent < size {
        let chunk = usize::try_from(size - sent).map_or(CHUNK_SIZE, |rest| rest.min(CHUNK_SIZE));
        match sendfile(stream.as_fd(), file.as_fd(), Some(&mut offset), chunk) {
            Ok(0) => return Err(SendError::FileShrank { sent }),
            Ok(n) => sent += n as u64,
            Err(Errno::EAGAIN) => {
                let deadline = Instant::now() + timeout;
                wait_ready(stream, PollFlags::POLLOUT, lifecycle, deadline, timeout)
                    .map_err(|error| SendError::Exchange { sent, error })?;
            }
            Err(Errno::EINTR) => {}
            Err(errno) => {
                let error = ExchangeError::Io(errno.into());
                return Err(SendError::Exchange { sent, error });
            }
        }
    }
    Ok(sent)
}

/// Closes a server's connection so that what was sent is delivered: bytes the
/// peer sent and nobody read would turn the close into a reset, which can
/// destroy data still in flight to the peer.
pub fn close_gracefully(stream: TcpStream) {
    let mut scratch = [0u8; 4096];
    // Bounded: a peer that keeps sending cannot keep the server here.
    for _ in 0..16 {
        if !matches!((&stream).read(&mut scratch), Ok(n) if n > 0) {
            break;
        }
    }
    drop(stream);
}

/// Why moving content from a socket into a file stopped.
#[derive(Debug)]
pub enum CopyError {
    /// Reading the socket failed (a timeout shows as `WouldBlock`).
    Read(io::Error),
    /// Writing the file failed: a full disk, a file size limit.
    Write(io::Error),
}

/// Moves content from a blocking socket into a file. It splices through a
/// pipe where the kernel allows it, so each byte is copied once, into the
/// file's page cache, instead of twice through a buffer of ours; it falls
/// back to reads and writes where the file cannot take a splice.
pub struct ContentCopier {
    pipe: Option<(OwnedFd, OwnedFd)>,
    pipe_capacity: usize,
    buffer: Vec<u8>,
}

impl ContentCopier {
    /// The pipe size asked for: fewer calls than the default 64 KiB, and
    /// within the 1 MiB that unprivileged users may ask for.
    const PIPE_SIZE: usize = 1024 * 1024;
    const BUFFER_SIZE: usize = 256 * 1024;

    pub fn new() -> ContentCopier {
        let pipe = nix::unistd::pipe2(OFlag::O_CLOEXEC).ok();
        let pipe_capacity = pipe
            .as_ref()
            .and_then(|(_, write_end)| {
                let wanted = FcntlArg::F_SETPIPE_SZ(Self::PIPE_SIZE as libc::c_int);
                nix::fcntl::fcntl(write_end, wanted).ok()
            })
            .map_or(64 * 1024, |size| size as usize);
        ContentCopier {
            pipe,
            pipe_capacity,
            buffer: Vec::new(),
        }
    }

    /// Moves at most `limit` bytes; `Ok(0)` means the peer closed.
    pub fn step(
        &mut self,
        socket: &TcpStream,
        file: &mut File,
        limit: usize,
    ) -> Result<usize, CopyError> {
        let Some((read_end, write_end)) = &self.pipe else {
            return self.buffered_step(socket, file, limit);
        };
        let want = limit.min(self.pipe_capacity);
        let moved = loop {
            match splice(
                socket,
                None,
                write_end,
                None,
                want,
                SpliceFFlags::SPLICE_F_MOVE,
            ) {
                Err(Errno::EINTR) => continue,
                other => break other.map_err(|errno| CopyError::Read(errno.into()))?,
            }
        };
        let mut left = moved;
        while left > 0 {
            match splice(
                read_end,
                None,
                &*file,
                None,
                left,
                SpliceFFlags::SPLICE_F_MOVE,
            ) {
                Ok(0) => return Err(CopyError::Write(io::ErrorKind::WriteZero.into())),
                Ok(n) => left -= n,
                Err(Errno::EINTR) => {}
                // This file system takes no splice: empty the pipe by hand
                // and use the buffer from now on.
                Err(Errno::EINVAL) => break,
                Err(errno) => return Err(CopyError::Write(errno.into())),
            }
        }
        if left > 0 {
            self.drain_pipe_into(file, left)?;
        }
        Ok(moved)
    }

    fn buffered_step(
        &mut self,
        socket: &TcpStream,
        file: &mut File,
        limit: usize,
    ) -> Result<usize, CopyError> {
        if self.buffer.is_empty() {
            self.buffer = vec![0u8; Self::BUFFER_SIZE];
        }
        let want = limit.min(self.buffer.len());
        let n = loop {
            match (&*socket).read(&mut self.buffer[..want]) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                other => break other.map_err(CopyError::Read)?,
            }
        };
        file.write_all(&self.buffer[..n])
            .map_err(CopyError::Write)?;
        Ok(n)
    }

    fn drain_pipe_into(&mut self, file: &mut File, mut left: usize) -> Result<(), CopyError> {
        let Some((read_end, _)) = self.pipe.take() else {
            return Ok(());
        };
        let mut pipe = File::from(read_end);
        let mut chunk = vec![0u8; left.min(Self::BUFFER_SIZE)];
        while left > 0 {
            let want = left.min(chunk.len());
            pipe.read_exact(&mut chunk[..want])
                .map_err(CopyError::Write)?;
            file.write_all(&chunk[..want]).map_err(CopyError::Write)?;
            left -= want;
        }
        Ok(())
    }
}

impl Default for ContentCopier {
    fn default() -> Self {
        ContentCopier::new()
    }
}

/// How many of the wanted bytes a blocking read got before it failed. A
/// count of content bytes, which can pass 4 GiB where `usize` has 32 bits.
#[derive(Debug)]
pub struct ShortRead {
    pub got: u64,
    /// `None` when the peer closed the connection.
    pub error: Option<io::Error>,
}

/// Fills `buf` from a blocking reader, retrying on signals.
pub fn read_exact_counted(reader: &mut impl Read, buf: &mut [u8]) -> Result<(), ShortRead> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(ShortRead {
                    got: got as u64,
                    error: None,
                });
            }
            Ok(n) => got += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                return Err(ShortRead {
                    got: got as u64,
                    error: Some(error),
                });
            }
        }
    }
    Ok(())
}

/// A file that is written beside its destination and appears under the
/// destination's name only when [`AtomicFile::persist`] is called. Until then
/// an existing file of that name stays as it was, and if the process ends
/// first, nothing is left behind.
pub struct AtomicFile {
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
    Named(OsString),
}

static STAGING_COUNTER: AtomicU32 = AtomicU32::new(0);

fn staging_name(final_name: &OsStr) -> OsString {
    let mut name = OsString::from(".");
    name.push(final_name);
    name.push(format!(
        ".tcpfile-{}-{}.part",
        std::process::id(),
        STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    name
}

impl AtomicFile {
    /// Prepares to write `destination`. Fails at once if its folder cannot take
    /// a new file or the destination is a directory.
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
        .map_err(|errno| with_path(errno, folder))?;
        let mode = Mode::from_bits_truncate(0o666);
        let tmpfile = OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
        let (fd, staging) = match openat(dir.as_fd(), ".", tmpfile, mode) {
            Ok(fd) => (fd, Staging::Anonymous),
            Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => {
                let name = staging_name(&final_name);
                let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
                let fd = openat(dir.as_fd(), name.as_os_str(), flags, mode)
                    .map_err(|errno| with_path(errno, folder))?;
                (fd, Staging::Named(name))
            }
            Err(errno) => return Err(with_path(errno, folder)),
        };
        Ok(AtomicFile {
            file: File::from(fd),
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
                let name = staging_name(&self.final_name);
                let proc_path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                linkat(
                    AT_FDCWD,
                    proc_path.as_str(),
                    self.dir.as_fd(),
                    name.as_os_str(),
                    AtFlags::AT_SYMLINK_FOLLOW,
                )
                .or_else(|_| {
                    // Without /proc, linking the descriptor itself needs
                    // CAP_DAC_READ_SEARCH, which root in a container has.
                    linkat(
                        self.file.as_fd(),
                        "",
                        self.dir.as_fd(),
                        name.as_os_str(),
                        AtFlags::AT_EMPTY_PATH,
                    )
                })?;
                name
            }
        };
        let renamed = renameat(
            self.dir.as_fd(),
            staged.as_os_str(),
            self.dir.as_fd(),
            self.final_name.as_os_str(),
        );
        if renamed.is_err() {
            let _ = unlinkat(
                self.dir.as_fd(),
                staged.as_os_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
        Ok(renamed?)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Staging::Named(name) = &self.staging {
            let _ = unlinkat(
                self.dir.as_fd(),
                name.as_os_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

fn with_path(errno: Errno, path: &Path) -> io::Error {
    let error = io::Error::from(errno);
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
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
        let mut staged = AtomicFile::create(&destination).expect("create");
        staged.file().write_all(b"new").expect("write");
        staged.persist().expect("persist");
        assert_eq!(entries(dir.path()), ["keep.txt"]);
        assert_eq!(std::fs::read(&destination).expect("read"), b"new");
    }

    #[test]
    fn atomic_file_refuses_a_directory_destination() {
        let dir = tempfile::tempdir().expect("temp dir");
        let error = AtomicFile::create(dir.path())
            .err()
            .expect("a directory is refused");
        assert!(error.to_string().contains("is a directory"), "{error}");
    }

    /// Sends `content` over a loopback connection and copies it into `file`
    /// with a [`ContentCopier`] until the sender closes.
    fn copy_over_loopback(content: &[u8], file: &mut File) -> usize {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sent = content.to_vec();
        let sender = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).expect("connect");
            stream.write_all(&sent).expect("send");
        });
        let (socket, _) = listener.accept().expect("accept");
        let mut copier = ContentCopier::new();
        let mut total = 0;
        loop {
            match copier.step(&socket, file, usize::MAX) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(error) => panic!("copy failed: {error:?}"),
            }
        }
        sender.join().expect("sender");
        total
    }

    fn pattern(size: usize) -> Vec<u8> {
        (0..size).map(|index| (index * 7 % 251) as u8).collect()
    }

    #[test]
    fn copier_moves_content_exactly() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("copy");
        let content = pattern(3 * 1024 * 1024 + 5);
        let mut file = File::create(&path).expect("create");
        assert_eq!(copy_over_loopback(&content, &mut file), content.len());
        assert!(std::fs::read(&path).expect("read") == content);
    }

    #[test]
    fn copier_falls_back_where_the_file_takes_no_splice() {
        // The kernel refuses to splice into a file opened for appending.
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("appended");
        let content = pattern(2 * 1024 * 1024 + 3);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .expect("open");
        assert_eq!(copy_over_loopback(&content, &mut file), content.len());
        assert!(std::fs::read(&path).expect("read") == content);
    }

    #[test]
    fn short_read_reports_bytes_got() {
        let mut input: &[u8] = b"abc";
        let mut buf = [0u8; 5];
        let short = read_exact_counted(&mut input, &mut buf).expect_err("too short");
        assert_eq!(short.got, 3);
        assert!(short.error.is_none());
    }
}
