//! The `encapd` binary: parse the command line, run, exit with its code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| writeln!(buf, "{} {:<5} {}", buf.timestamp_millis(), record.level(), record.args()))
        .init();
    let cli = match encapd::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    ExitCode::from(encapd::cli::execute(cli))
}
