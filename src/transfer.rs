//! Moving bytes: the server's `sendfile` in chunks, a close that delivers
//! what was sent, the client's exact reads and its copy from the socket into
//! its destination (see [`crate::destination`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, splice};
use nix::sys::sendfile::sendfile;

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

/// Sends at most `len` bytes of `file` from `offset` on `socket` with
/// `sendfile`; 0 means the file ends before `offset`.
pub fn send_chunk(socket: &TcpStream, file: &File, offset: u64, len: usize) -> io::Result<usize> {
    let mut position =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    Ok(sendfile(
        socket.as_fd(),
        file.as_fd(),
        Some(&mut position),
        len,
    )?)
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

#[cfg(test)]
mod tests {
    use super::*;

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
