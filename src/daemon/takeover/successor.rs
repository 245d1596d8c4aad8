//! Starting a successor from the running daemon (SIGUSR2, `encapd
//! upgrade`): the binary at the path this process was started from — after
//! an upgrade, the new file there — as `run --config <same file>
//! --takeover`, with this process's environment (so `$NOTIFY_SOCKET`
//! reaches it) and its stdout and stderr (the same log). Under systemd the
//! child is in the service's control group, which is what lets it become
//! the service's main process (`MAINPID=`).

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};

/// How to start a successor.
#[derive(Debug, Clone)]
pub struct SuccessorCommand {
    /// The executable as it was when this process started (by path, not
    /// `/proc/self/exe`, which keeps pointing at the replaced file).
    pub exe: PathBuf,
    /// The configuration file, absolute.
    pub config: PathBuf,
}

/// Why a successor could not be started.
#[derive(Debug, thiserror::Error)]
#[error("starting {} run --config {} --takeover: {source}{}", exe.display(), config.display(), hint(source))]
pub struct SpawnError {
    exe: PathBuf,
    config: PathBuf,
    source: std::io::Error,
}

/// What an operator needs to know for the one error that is not obvious:
/// a daemon that dropped to `[process] user` starts its successor as that
/// user, who may not be allowed to run a binary in a private directory.
fn hint(source: &std::io::Error) -> &'static str {
    match source.kind() {
        std::io::ErrorKind::PermissionDenied => {
            " (the successor runs as this process's user: that user must be able to execute the binary and search every directory above it)"
        }
        _ => "",
    }
}

impl SuccessorCommand {
    /// The command for this process: its executable and `config` made absolute.
    pub fn for_this_process(config: &std::path::Path) -> SuccessorCommand {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("encapd"));
        let config = std::path::absolute(config).unwrap_or_else(|_| config.to_owned());
        SuccessorCommand { exe, config }
    }

    /// Starts the successor.
    pub fn spawn(&self) -> Result<Successor, SpawnError> {
        let child = Command::new(&self.exe)
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .arg("--takeover")
            .stdin(Stdio::null())
            .spawn()
            .map_err(|source| SpawnError { exe: self.exe.clone(), config: self.config.clone(), source })?;
        log::info!("upgrade: started {} (pid {}) to take over", self.exe.display(), child.id());
        Ok(Successor { child })
    }
}

/// A successor this process started.
#[derive(Debug)]
pub struct Successor {
    child: Child,
}

impl Successor {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, once it has exited (it is reaped then).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_the_user_may_not_execute_is_named_with_the_reason() {
        // A file without any execute bit: execve refuses it with EACCES,
        // even for root.
        let dir = std::env::temp_dir().join(format!("encapd-successor-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("encapd");
        std::fs::write(&exe, b"#!/bin/sh\n").unwrap();
        let cmd = SuccessorCommand { exe: exe.clone(), config: dir.join("encapd.toml") };
        let err = cmd.spawn().expect_err("a file without execute permission cannot be started");
        let _ = std::fs::remove_dir_all(&dir);
        let text = err.to_string();
        assert!(text.contains(&exe.display().to_string()), "{text}");
        assert!(text.contains("must be able to execute the binary"), "{text}");
    }
}
