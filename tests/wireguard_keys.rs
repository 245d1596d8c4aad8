//! `encapd genkey` / `encapd pubkey` against wireguard-tools' `wg genkey` /
//! `wg pubkey` (Debian `wireguard-tools`): keys made by either tool give the
//! same public key with both, and both refuse the same malformed input. No
//! root needed; skipped without `wg` unless ENCAPD_REQUIRE_ROOT_TESTS=1
//! (scripts/lib.sh installs wireguard-tools for the tests).

use encapd_testbed as common;

use std::process::Command;
use std::time::Duration;

use common::cmd::run_cmd_with_input;
use common::{Output, encapd_bin, require_tools, run_cmd};

const T: Duration = Duration::from_secs(20);

fn encapd(args: &[&str], input: &[u8]) -> Output {
    run_cmd_with_input(Command::new(encapd_bin()).args(args), input, T)
}

fn wg(args: &[&str], input: &[u8]) -> Output {
    run_cmd_with_input(Command::new("wg").args(args), input, T)
}

fn key_line(o: &Output, what: &str) -> String {
    assert!(o.ok(), "{what} failed: {}", o.text());
    let line = o.stdout.strip_suffix('\n').unwrap_or_else(|| panic!("{what}: no newline: {:?}", o.stdout));
    assert_eq!(line.len(), 44, "{what}: {line:?}");
    assert!(line.ends_with('='), "{what}: {line:?}");
    line.to_string()
}

#[test]
fn wg_keys_work_with_encapd_and_encapd_keys_with_wg() {
    if !require_tools(&["wg"]) {
        return;
    }
    for _ in 0..8 {
        // wg genkey | encapd pubkey == wg genkey | wg pubkey
        let private = key_line(&wg(&["genkey"], &[]), "wg genkey");
        let input = format!("{private}\n");
        let ours = key_line(&encapd(&["pubkey"], input.as_bytes()), "encapd pubkey");
        let theirs = key_line(&wg(&["pubkey"], input.as_bytes()), "wg pubkey");
        assert_eq!(ours, theirs, "public key of wg's private key {private}");

        // encapd genkey | wg pubkey == encapd genkey | encapd pubkey
        let private = key_line(&encapd(&["genkey"], &[]), "encapd genkey");
        let input = format!("{private}\n");
        let ours = key_line(&encapd(&["pubkey"], input.as_bytes()), "encapd pubkey");
        let theirs = key_line(&wg(&["pubkey"], input.as_bytes()), "wg pubkey");
        assert_eq!(ours, theirs, "public key of encapd's private key {private}");
    }
}

#[test]
fn encapd_genkey_clamps_as_wg_genkey() {
    let o = run_cmd(Command::new(encapd_bin()).arg("genkey"), T);
    let key = key_line(&o, "encapd genkey");
    let bytes = decode(&key);
    assert_eq!(bytes[0] & 7, 0, "low three bits cleared");
    assert_eq!(bytes[31] & 0xc0, 0x40, "bit 255 clear, bit 254 set");
    // Two runs, two keys.
    let other = key_line(&run_cmd(Command::new(encapd_bin()).arg("genkey"), T), "encapd genkey");
    assert_ne!(key, other);
}

#[test]
fn both_refuse_the_same_malformed_input() {
    let good = "YIG7WxDvOKrkBa/xu3ydR4LsyZBiEXbA0HA/qlSSV2s=";
    let cases: [(&str, bool); 8] = [
        (&*format!("{good}\n"), true),
        (&*format!("{good}\n\n  \t"), true),
        (good, true),
        (&*format!(" {good}\n"), false),
        (&*format!("{good}x\n"), false),
        (&good[..43], false),
        ("YIG7WxDvOKrkBa/xu3ydR4LsyZBiEXbA0HA/qlSSV2t=\n", false), // non-canonical last character
        ("YIG7WxDvOKrkBa_xu3ydR4LsyZBiEXbA0HA_qlSSV2s=\n", false), // URL-safe alphabet
    ];
    let have_wg = require_tools(&["wg"]);
    for (input, valid) in cases {
        let ours = encapd(&["pubkey"], input.as_bytes());
        assert_eq!(ours.ok(), valid, "encapd pubkey on {input:?}: {}", ours.text());
        if !valid {
            assert_eq!(ours.status.code(), Some(2), "bad input is exit code 2: {}", ours.text());
            assert!(ours.stderr.contains("stdin"), "{}", ours.text());
        }
        if have_wg {
            let theirs = wg(&["pubkey"], input.as_bytes());
            assert_eq!(theirs.ok(), valid, "wg pubkey on {input:?}: {}", theirs.text());
            if valid {
                assert_eq!(ours.stdout, theirs.stdout);
            }
        }
    }
    let empty = encapd(&["pubkey"], b"");
    assert_eq!(empty.status.code(), Some(2), "{}", empty.text());
}

fn decode(key: &str) -> [u8; 32] {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in key.trim_end_matches('=').bytes() {
        bits = (bits << 6) | alphabet.iter().position(|&a| a == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out.try_into().unwrap()
}
