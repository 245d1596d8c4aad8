//! Watching the peers file with inotify (through `notify`). The parent
//! directory is watched, not the file, so that atomic replacement by rename
//! (what editors and config managers do) is seen as well as in-place writes.

use std::path::{Path, PathBuf};

use crossbeam_channel::Sender;
use notify::{RecursiveMode, Watcher};

use super::Command;

/// Keeps the watch alive; dropping it stops watching.
pub struct PeersWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl PeersWatcher {
    /// Sends [`Command::Reload`] whenever `path` may have changed.
    pub fn start(path: &Path, commands: Sender<Command>) -> std::io::Result<PeersWatcher> {
        let file_name = path.file_name().map(|n| n.to_owned());
        let dir: PathBuf = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                let ours = event.paths.iter().any(|p| p.file_name() == file_name.as_deref());
                if ours && !event.kind.is_access() {
                    let _ = commands.send(Command::Reload);
                }
            }
            Err(e) => log::warn!("watching the peers file: {e}"),
        })
        .map_err(std::io::Error::other)?;
        watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(std::io::Error::other)?;
        Ok(PeersWatcher { _watcher: watcher })
    }
}
