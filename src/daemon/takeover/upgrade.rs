//! `encapd upgrade`: asks the running daemon to start its successor from
//! the binary on disk and waits until it knows how that ended — the
//! synchronous `ExecReload=` that systemd.service(5) recommends, so that
//! `systemctl reload encapd` fails when the takeover was refused.

use std::path::Path;
use std::time::Duration;

use super::channel::Channel;
use super::hooks;
use super::protocol::{Message, Upgrade};
use crate::sys::fdpass::SeqpacketConn;

/// How long an upgrade may take in all (a successor with etcd reads the
/// network config and the leases first).
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(150);

/// How `encapd upgrade` ended, as its exit code says: 0 taken over, 2
/// refused (a configuration or version difference), 1 anything else.
pub fn request(control_socket: &Path) -> u8 {
    let conn = match SeqpacketConn::connect(control_socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: no running encapd answers at {}: {e}", control_socket.display());
            return 1;
        }
    };
    let mut channel = Channel::new(conn);
    let at = control_socket.display();
    if let Err(e) = channel.send(&Message::Upgrade(Upgrade { protocol: hooks::offered_versions() }), &[]) {
        eprintln!("error: asking the encapd at {at} for an upgrade: {e}");
        return 1;
    }
    match channel.recv_plain("upgrade_result", UPGRADE_TIMEOUT) {
        Ok(Message::UpgradeResult(r)) if r.ok => {
            println!("encapd upgraded: {}", r.message);
            0
        }
        Ok(Message::UpgradeResult(r)) => {
            eprintln!("error: upgrade of the encapd at {at} {}: {}", if r.refused { "refused" } else { "failed" }, r.message);
            if r.refused { 2 } else { 1 }
        }
        Ok(Message::Refused(r)) => {
            eprintln!("error: upgrade of encapd (pid {}) refused: {}", r.pid, r.reason);
            2
        }
        Ok(other) => {
            eprintln!("error: the encapd at {at} answered {} to an upgrade request", other.name());
            1
        }
        Err(e) => {
            eprintln!("error: upgrade of the encapd at {at}: {e}");
            1
        }
    }
}
