//! The command line: clap definitions ([`Cli`]) and the commands they run.
//! Parsing is separate from validation: flags become a [`Config`] through
//! [`Config::load`], and every command returns an exit code
//! (0 ok, 1 runtime failure, 2 bad configuration or usage).

mod keys;
mod stats;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::{control, daemon};

#[derive(Debug, Parser)]
#[command(
    name = "encapd",
    version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("ENCAPD_GIT_COMMIT"), ")"),
    about = "Userspace encapsulation gateway for container overlay networks",
    long_about = "encapd carries container IP packets between hosts inside UDP datagrams, \
wire-compatible with flannel's udp backend (raw IP in UDP, port 8285) and vxlan backend \
(RFC 7348, port 8472), with pinned io_uring workers on a multiqueue TUN device and an \
optional eBPF kernel path.\n\n\
Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway in the foreground (logs to stderr; RUST_LOG sets the level).
    ///
    /// Creates the TUN device with the node subnet's network address and a
    /// route for the overlay, binds one UDP socket per worker and forwards
    /// until SIGINT or SIGTERM. SIGHUP reloads the peers file (it is also
    /// watched for changes); SIGUSR1 prints the counters to stderr; SIGUSR2
    /// starts a successor from the binary on disk and hands over to it.
    Run {
        /// Path to the TOML configuration file.
        #[arg(short, long, value_name = "PATH")]
        config: PathBuf,
        /// Take the TUN queues, sockets, counters and etcd lease over from
        /// the encapd running with this configuration (found through
        /// `[process] control_socket`), without losing a packet; it exits
        /// once this process forwards. Without a running encapd, start
        /// normally. Exit code 2 when it refuses (a setting that cannot
        /// change in a takeover, named in the message, or another protocol
        /// version); it then keeps running.
        #[arg(long)]
        takeover: bool,
    },
    /// Upgrade the running encapd in place: it starts the binary now on disk
    /// with `--takeover` and hands its data path over; waits for the result.
    ///
    /// What `systemctl reload encapd` runs. Exits 0 once the new process
    /// forwards, 2 when the takeover was refused (the message names the
    /// setting), 1 on any other failure; the running encapd keeps
    /// forwarding unless it handed over.
    Upgrade {
        /// Path to the TOML configuration file (for its `[process] control_socket`).
        #[arg(short, long, value_name = "PATH")]
        config: PathBuf,
    },
    /// Validate a configuration and print the effective config and subnet table.
    ///
    /// Exits 0 when the configuration and peers file are valid, 2 otherwise
    /// with a message naming the file, the field and the value.
    Check {
        /// Path to the TOML configuration file.
        #[arg(short, long, value_name = "PATH")]
        config: PathBuf,
    },
    /// Show what a running daemon is doing (read from its metrics endpoint).
    ///
    /// Rates per direction come from two scrapes `--interval` apart; drops by
    /// reason, table version, engine and in-gateway latency percentiles are
    /// totals since the daemon started.
    Stats {
        /// The daemon's `[metrics] listen` address.
        #[arg(long, default_value = crate::config::DEFAULT_METRICS_LISTEN)]
        addr: std::net::SocketAddr,
        /// Seconds between the two scrapes used for rates (0: no rates).
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a new WireGuard private key (base64, as `wg genkey`).
    Genkey,
    /// Read a WireGuard private key on stdin and print its public key (as `wg pubkey`).
    Pubkey,
}

/// Runs the parsed command and returns the process exit code.
pub fn execute(cli: Cli) -> u8 {
    match cli.command {
        Command::Run { config, takeover } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    log::error!("{e}");
                    return 2;
                }
            };
            let start = if takeover { daemon::Start::Takeover } else { daemon::Start::Fresh };
            match daemon::run(config, start) {
                Ok(()) => 0,
                Err(e) => {
                    log::error!("{e}");
                    e.exit_code()
                }
            }
        }
        Command::Check { config } => check(&config),
        Command::Upgrade { config } => upgrade(&config),
        Command::Stats { addr, interval, json } => {
            if !interval.is_finite() || !(0.0..=3600.0).contains(&interval) {
                eprintln!("error: --interval {interval}: must be between 0 and 3600 seconds");
                return 2;
            }
            stats::run(addr, std::time::Duration::from_secs_f64(interval), json)
        }
        Command::Genkey => keys::genkey(),
        Command::Pubkey => keys::pubkey(),
    }
}

fn upgrade(path: &std::path::Path) -> u8 {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    match &config.control_socket {
        Some(socket) => daemon::takeover::request_upgrade(socket),
        None => {
            eprintln!("error: {}: [process] control_socket = \"off\": the running encapd cannot be reached", path.display());
            2
        }
    }
}

/// What `kernel_path` would decide on this host (`# kernel path: ...`).
fn print_kernel_path(config: &Config) {
    use crate::config::{Backend, KernelPathMode};
    use crate::datapath::kernel::{self, Format};
    let mode = config.kernel_path;
    if mode == KernelPathMode::Off {
        println!("# kernel path: off (the workers carry every packet)");
        return;
    }
    let format = match &config.backend {
        Backend::Udp => Format::FlannelUdp,
        Backend::Vxlan(v) => Format::Vxlan { vni: v.vni, mac: v.vtep_mac.0 },
        Backend::WireGuard => {
            println!("# kernel path: does not apply to the wireguard backend (it encrypts in the workers); the workers carry every packet");
            return;
        }
    };
    match (kernel::probe(format), mode) {
        (Ok(what), _) => println!("# kernel path: {}: would attach on this host ({what})", mode.name()),
        (Err(why), KernelPathMode::Auto) => println!("# kernel path: auto: the workers would carry every packet on this host: {why}"),
        (Err(why), _) => println!("# kernel path: tc: encapd would refuse to start on this host: {why}"),
    }
}

/// With `backend = "wireguard"`: reads the private key file with the
/// daemon's checks (`sys::key_file`; owned by `[process] user`, or by the
/// user running `check`) and prints the public key peers must name.
fn print_wireguard(config: &Config) -> Result<(), String> {
    if let Some(key) = config.wireguard_private_key()? {
        println!("# wireguard: public key {} (each peer names it as public_key); TUN MTU = underlay MTU - 80", key.public_key());
    }
    Ok(())
}

fn check(path: &std::path::Path) -> u8 {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let table = match control::initial_table(&config) {
        Ok(t) => t.table,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    println!("# effective configuration of {}\n{config}", path.display());
    match daemon::plan(&config) {
        Ok(plan) => {
            println!("# data path: underlay MTU {}, TUN MTU {}, engine {}", plan.underlay_mtu, plan.tun_mtu, plan.engine.name());
            if let Some(note) = plan.engine_note {
                println!("# note: {note}");
            }
            if plan.engine == crate::config::IoEngine::Uring {
                println!("# io_uring: {}", plan.uring.describe());
            }
        }
        // Not fatal: `check` may run on another host than the gateway.
        Err(e) => println!("# data path: not resolvable on this host: {e}"),
    }
    print_kernel_path(&config);
    if let Err(e) = print_wireguard(&config) {
        eprintln!("error: {e}");
        return 2;
    }
    print!("\n{table}");
    // Privileges: encapd needs root or CAP_NET_ADMIN only to set up.
    let euid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap_or(0);
    if config.user.is_none() && euid == 0 {
        eprintln!(
            "warning: without [process] user, encapd keeps running as root after setup (with no capabilities); \
             set [process] user = \"encapd\" to run unprivileged"
        );
    }
    0
}
