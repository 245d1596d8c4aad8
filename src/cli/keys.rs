//! `encapd genkey` and `encapd pubkey`: WireGuard keys exactly as
//! wireguard-tools' `wg genkey` and `wg pubkey` make them (same base64,
//! same clamping, same reading of stdin), so either tool's keys work with
//! the other; tests/wireguard_keys.rs runs both against each other.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;

use rand_core::OsRng;

use crate::wireguard::PrivateKey;
use crate::wireguard::keys::key_from_text;

/// Prints a new private key. Like `wg genkey`, warns when stdout is a file
/// others can read (create it under `umask 077`).
pub fn genkey() -> u8 {
    let key = PrivateKey::generate(&mut OsRng);
    if stdout_is_world_accessible() {
        eprintln!("Warning: writing to world accessible file.\nConsider setting the umask to 077 and trying again.");
    }
    print_line(&key.to_base64())
}

/// Reads a private key from stdin (44 base64 characters, then only
/// whitespace) and prints its public key.
pub fn pubkey() -> u8 {
    let mut text = zeroize::Zeroizing::new(String::new());
    // A key and a newline fit in 64 bytes; read a little more to see junk.
    if let Err(e) = io::stdin().lock().take(1024).read_to_string(&mut text) {
        eprintln!("error: reading the private key from stdin: {e}");
        return 1;
    }
    match key_from_text(&text) {
        Ok(bytes) => {
            let private = PrivateKey::from_bytes(*bytes);
            print_line(&private.public_key().to_string())
        }
        Err(e) => {
            eprintln!("error: stdin: {e}");
            2
        }
    }
}

fn print_line(text: &str) -> u8 {
    let mut out = io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: writing to stdout: {e}");
            1
        }
    }
}

/// True when stdout is a regular file with permissions for others.
fn stdout_is_world_accessible() -> bool {
    let Ok(fd) = io::stdout().as_fd().try_clone_to_owned() else { return false };
    std::fs::File::from(fd).metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o007 != 0)
}
