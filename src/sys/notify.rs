//! Readiness notification to a service manager (`sd_notify(3)` protocol):
//! one datagram such as `READY=1` to the unix socket named by
//! `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//! Without the variable, nothing is sent.
//!
//! [`barrier`] is `sd_notify_barrier(3)`: it returns once the manager has
//! processed every message sent before it (the manager closes the pipe end
//! that came with `BARRIER=1` after reading what preceded it). A successor
//! that tells systemd `MAINPID=` needs this before its predecessor exits,
//! or systemd may see the old main process exit first and stop the service.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// A datagram socket connected to `$NOTIFY_SOCKET`, if the variable is set.
fn connect() -> io::Result<Option<UnixDatagram>> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(None) };
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.connect_addr(&addr)?;
    } else {
        sock.connect(std::path::Path::new(&path))?;
    }
    Ok(Some(sock))
}

/// Sends `state` (e.g. "READY=1\nSTATUS=serving") if a manager listens.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(sock) = connect()? else { return Ok(false) };
    sock.send(state.as_bytes())?;
    Ok(true)
}

/// Waits (at most `timeout`) until the manager has processed every
/// notification sent before; `Ok(false)` without a manager.
pub fn barrier(timeout: Duration) -> io::Result<bool> {
    let Some(sock) = connect()? else { return Ok(false) };
    let (reader, writer) = std::io::pipe()?;
    super::fdpass::send_with_fds(sock.as_fd(), b"BARRIER=1", &[writer.as_fd()], 0)?;
    // Only the manager's copy of the write end may remain: its close is the signal.
    drop(writer);
    let revents = super::fdpass::wait_for_events(reader.as_fd(), libc::POLLHUP, Instant::now() + timeout)?;
    if revents == 0 {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "the service manager did not answer the notification barrier"));
    }
    Ok(true)
}
