//! The control socket's path on a fresh start: bound before anything else
//! is created, so that a second `encapd run` for the same socket finds the
//! first one and stops instead of attaching more queues to its TUN and
//! more sockets to its reuseport group. A socket file that nobody answers
//! on (left by a process that was killed) is replaced.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::channel::Channel;
use super::protocol::Message;
use crate::sys::fdpass::{self, SeqpacketConn, SeqpacketListener};

/// How long a running daemon may take to say who it is (it serves one
/// connection at a time).
const WHO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another encapd answers on the socket, in this network namespace.
    #[error(
        "{who} is already running with control socket {}: stop it first, or start this one with --takeover to take its data path over",
        path.display()
    )]
    AlreadyRunning { path: PathBuf, who: String },
    #[error("control socket {}: {what}: {source}", path.display())]
    Io { path: PathBuf, what: &'static str, source: std::io::Error },
}

/// The control socket: the listener and its file.
pub struct ControlSocket {
    pub listener: SeqpacketListener,
    pub file: SocketFile,
}

/// The control socket's file: removed when dropped (a clean stop, or an
/// error during start-up), unless [`keep`](Self::keep) says a successor
/// serves it now.
pub struct SocketFile {
    path: PathBuf,
    /// (device, inode) of the file when this process took it on.
    id: (u64, u64),
    keep: bool,
}

/// Binds `path`, replacing a stale socket file; `Ok(None)` (with a warning)
/// when a daemon in another network namespace holds it.
pub fn bind(path: &Path) -> Result<Option<ControlSocket>, SocketError> {
    let io = |what, source| SocketError::Io { path: path.to_owned(), what, source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io("creating its directory", e))?;
    }
    let listener = match SeqpacketListener::bind(path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => match SeqpacketConn::connect(path) {
            Ok(conn) => return held_by(path, conn),
            Err(_) => {
                log::info!("control socket {}: nobody answers on it (left by a process that died); replacing it", path.display());
                std::fs::remove_file(path).map_err(|e| io("removing the stale socket", e))?;
                SeqpacketListener::bind(path).map_err(|e| io("binding", e))?
            }
        },
        Err(e) => return Err(io("binding", e)),
    };
    let meta = std::fs::symlink_metadata(path).map_err(|e| io("reading it back", e))?;
    Ok(Some(ControlSocket { listener, file: SocketFile { path: path.to_owned(), id: (meta.dev(), meta.ino()), keep: false } }))
}

/// A live daemon answers on `path`: an error if it is in this network
/// namespace, else a warning and no control socket for this one.
fn held_by(path: &Path, conn: SeqpacketConn) -> Result<Option<ControlSocket>, SocketError> {
    let mut channel = Channel::new(conn);
    let identity = channel.send(&Message::Who, &[]).and_then(|()| channel.recv_plain("identity", WHO_TIMEOUT));
    let (pid, theirs) = match identity {
        Ok(Message::Identity(i)) => (i.pid, Some(i.netns)),
        _ => (0, None),
    };
    let ours = fdpass::network_namespace().ok();
    if theirs.is_some() && ours.is_some() && theirs != ours {
        log::warn!(
            "control socket {} belongs to encapd pid {pid} in another network namespace; this one runs without a control socket \
             and cannot be taken over (give each instance its own [process] control_socket)",
            path.display()
        );
        return Ok(None);
    }
    let who = if pid == 0 { "an encapd".to_owned() } else { format!("encapd pid {pid}") };
    Err(SocketError::AlreadyRunning { path: path.to_owned(), who })
}

impl ControlSocket {
    /// The control socket a predecessor handed over, listening on `path`.
    pub fn adopt(listener: SeqpacketListener, path: &Path) -> ControlSocket {
        let id = std::fs::symlink_metadata(path).map(|m| (m.dev(), m.ino())).unwrap_or_default();
        ControlSocket { listener, file: SocketFile { path: path.to_owned(), id, keep: false } }
    }
}

impl SocketFile {
    /// Leaves the file in place: the listener behind it lives on in a successor.
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for SocketFile {
    /// Removes the socket file if it is still the one this process took on
    /// (a restart may have replaced it meanwhile).
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.id
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
