//! A stand-in for a service manager's notification socket (`sd_notify(3)`):
//! a unix datagram socket a test binds in a temporary directory and hands
//! to encapd as `$NOTIFY_SOCKET`, so the test learns the exact moment
//! encapd says `READY=1` (no polling of its log, no sleep). The socket is
//! path-based, so it works across network namespaces, and world-writable,
//! so a daemon that has switched to an unprivileged user can still send.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    /// Binds `dir/notify.sock` (the directory must be searchable by the
    /// daemon's user).
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("binding {}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).expect("making the notify socket writable");
        NotifySocket { sock, path }
    }

    /// The value for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &str {
        self.path.to_str().expect("a UTF-8 temp path")
    }

    /// Waits (at most `timeout`) for a notification with a line equal to
    /// `line` (e.g. "READY=1"); returns that notification. Others are
    /// skipped.
    pub fn wait_for(&self, line: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if msg.lines().any(|l| l == line) {
                        return Some(msg);
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) => panic!("receiving on {}: {e}", self.path.display()),
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
