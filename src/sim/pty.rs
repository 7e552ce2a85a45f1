//! Pseudo-terminals as the board's USB port.
//!
//! Facts this relies on (Linux): the slave end is dropped at once, because tokio-serial opens
//! ports exclusively and a held slave would make the host's open fail. While no process holds
//! the slave, the master polls `POLLHUP` and reads fail with EIO; bytes written meanwhile would
//! wait for the next opener, so the server writes nothing then. Dropping the master is an
//! unplug: the host reads EOF and `/dev/pts/N` disappears. The slave is left in raw mode by
//! `SerialStream::pair`, so every byte value passes unchanged.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_serial::{SerialPort, SerialStream};

use super::SimError;

/// A fresh pty: the master to serve on and the slave's path for the host.
pub fn open_pair() -> Result<(SerialStream, PathBuf), SimError> {
    let (master, slave) = SerialStream::pair()?;
    let path = slave
        .name()
        .map(PathBuf::from)
        .ok_or_else(|| SimError::Pty("the new pty has no slave name".into()))?;
    drop(slave);
    Ok((master, path))
}

/// A new handle on the same pty master with a fresh reactor registration. tokio keeps the
/// hang-up seen while no host held the slave as a final state, after which every read of the
/// old handle spins on EAGAIN inside one poll (a whole worker thread busy): serve each new
/// host through a fresh handle.
pub fn fresh_handle(master: &SerialStream) -> Result<SerialStream, SimError> {
    // SAFETY: dup(2) of an open descriptor `master` owns; the copy is handed to `TTYPort`.
    let fd = unsafe { libc::dup(master.as_raw_fd()) };
    if fd < 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: `fd` is open and owned by nothing else; the port closes it on drop.
    let port = unsafe { serialport::TTYPort::from_raw_fd(fd) };
    Ok(SerialStream::try_from(port)?)
}

/// Whether some process holds the slave end open.
pub fn peer_connected(master: &SerialStream) -> bool {
    let mut fd = libc::pollfd {
        fd: master.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout; the fd stays open while `master` is borrowed.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n >= 0 && fd.revents & libc::POLLHUP == 0
}

/// Whether a read error means "nobody holds the slave" (EIO) rather than a broken master.
pub fn is_hangup(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EIO)
}

/// Point the symlink `link` at `target`, replacing any old link atomically.
pub fn relink(link: &Path, target: &Path) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dropbot-sim".into());
    let tmp = link.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Remove the symlink `link` if it is one (never a regular file).
pub fn unlink(link: &Path) {
    if link
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        if let Err(e) = std::fs::remove_file(link) {
            tracing::warn!("could not remove simulator link {}: {e}", link.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relink_replaces_atomically_and_unlink_keeps_files() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("board");
        relink(&link, Path::new("/dev/null")).unwrap();
        relink(&link, Path::new("/dev/zero")).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/dev/zero"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        unlink(&link);
        assert!(link.symlink_metadata().is_err());
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        unlink(&file);
        assert!(file.exists());
    }
}
