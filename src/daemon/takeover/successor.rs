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
#[error("starting {} run --config {} --takeover: {source}", exe.display(), config.display())]
pub struct SpawnError {
    exe: PathBuf,
    config: PathBuf,
    source: std::io::Error,
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
