//! Test data that checks itself: deterministic pseudo-random bytes
//! ([`Prng`]: the same seed gives the same stream on both ends) and their
//! SHA-256 ([`StreamHash`]), so a transfer compares one digest instead of
//! keeping its bytes.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::wait_child;

/// SHA-256 of a byte stream. Uses the system's `sha256sum` (hardware
/// accelerated, so the hash does not limit a bulk transfer in an unoptimized
/// test build), else the `sha2` crate.
pub struct StreamHash {
    inner: HashInner,
}

enum HashInner {
    Process { child: Child, stdin: Option<std::process::ChildStdin> },
    InProcess(sha2::Sha256),
}

impl StreamHash {
    pub fn new() -> StreamHash {
        let child = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn();
        let inner = match child {
            Ok(mut child) => {
                let stdin = child.stdin.take();
                HashInner::Process { child, stdin }
            }
            Err(_) => HashInner::InProcess(sha2::Digest::new()),
        };
        StreamHash { inner }
    }

    pub fn update(&mut self, data: &[u8]) {
        use std::io::Write;
        match &mut self.inner {
            HashInner::Process { stdin, .. } => stdin.as_mut().unwrap().write_all(data).expect("feeding sha256sum"),
            HashInner::InProcess(h) => sha2::Digest::update(h, data),
        }
    }

    /// The digest as lowercase hex.
    pub fn finish(mut self) -> String {
        match &mut self.inner {
            HashInner::Process { child, stdin } => {
                drop(stdin.take());
                let mut out = String::new();
                child.stdout.take().unwrap().read_to_string(&mut out).expect("reading sha256sum");
                let status = wait_child(child, Duration::from_secs(10)).expect("sha256sum did not exit");
                assert!(status.success(), "sha256sum failed: {status}");
                let hex = out.split_whitespace().next().unwrap_or_default().to_owned();
                assert_eq!(hex.len(), 64, "unexpected sha256sum output {out:?}");
                hex
            }
            HashInner::InProcess(h) => {
                let d = sha2::Digest::finalize(std::mem::take(h));
                d.iter().map(|b| format!("{b:02x}")).collect()
            }
        }
    }
}

impl Default for StreamHash {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StreamHash {
    fn drop(&mut self) {
        if let HashInner::Process { child, stdin } = &mut self.inner {
            drop(stdin.take());
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// xorshift64*: cheap, deterministic bytes for bulk transfers.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let v = self.next_u64().to_le_bytes();
            let n = rest.len();
            rest.copy_from_slice(&v[..n]);
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_hash_is_sha256() {
        let mut h = StreamHash::new();
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(h.finish(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let h = StreamHash { inner: HashInner::InProcess(sha2::Digest::new()) };
        assert_eq!(h.finish(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn prng_is_deterministic() {
        let (mut a, mut b) = (vec![0u8; 37], vec![0u8; 37]);
        Prng::new(7).fill(&mut a);
        Prng::new(7).fill(&mut b);
        assert_eq!(a, b);
        Prng::new(8).fill(&mut b);
        assert_ne!(a, b);
    }
}
