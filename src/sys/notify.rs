//! Readiness notification to a service manager (`sd_notify(3)` protocol):
//! one datagram such as `READY=1` to the unix socket named by
//! `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
//! Without the variable, nothing is sent.

use std::io;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. "READY=1\nSTATUS=serving") if a manager listens.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(false) };
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), std::path::Path::new(&path))?;
    }
    Ok(true)
}
