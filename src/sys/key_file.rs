//! Reading a WireGuard key file (`[node] private_key_file`, a peer's
//! `preshared_key_file`) the way a secret must be read: the file is opened
//! without following a symlink, and checked through the open fd (no race
//! between the check and the read) to be a regular file owned by the user
//! the daemon runs as, with no permission for group or others — mode 0600
//! or stricter (0400), as `wg genkey > private.key` under `umask 077`
//! leaves it. Anything else is refused with the reason and the fix. The
//! content is the key as `wg genkey` prints it: 44 base64 characters and
//! optional trailing whitespace.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::wireguard::keys::{KEY_LEN, KeyError, key_from_text};

/// A key file longer than this is not a key file.
const MAX_LEN: u64 = 1024;

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: cannot open key file: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path}: is a symbolic link; name the key file itself")]
    Symlink { path: PathBuf },
    #[error("{path}: not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{path}: mode {mode:04o} lets group or others access the key; run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path}: owned by uid {owner}, but encapd runs as uid {expected}; run `chown {expected} {path}`")]
    Owner { path: PathBuf, owner: u32, expected: u32 },
    #[error("{path}: larger than {MAX_LEN} bytes; a key file holds one base64 key")]
    TooLarge { path: PathBuf },
    #[error("{path}: cannot read key file: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Key { path: PathBuf, source: KeyError },
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Reads the key in `path`, which must be owned by `owner` (the uid the
/// daemon runs as once set up) and private to it.
pub fn read_key_file(path: &Path, owner: u32) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyFileError> {
    let p = || path.to_path_buf();
    let mut file = File::options().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path).map_err(|e| {
        // O_NOFOLLOW on a symlink fails with ELOOP.
        if e.raw_os_error() == Some(libc::ELOOP) {
            KeyFileError::Symlink { path: p() }
        } else {
            KeyFileError::Open { path: p(), source: e }
        }
    })?;
    let meta = file.metadata().map_err(|e| KeyFileError::Read { path: p(), source: e })?;
    if !meta.is_file() {
        return Err(KeyFileError::NotAFile { path: p() });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions { path: p(), mode });
    }
    if meta.uid() != owner {
        return Err(KeyFileError::Owner { path: p(), owner: meta.uid(), expected: owner });
    }
    if meta.len() > MAX_LEN {
        return Err(KeyFileError::TooLarge { path: p() });
    }
    let mut text = Zeroizing::new(String::new());
    (&mut file).take(MAX_LEN + 1).read_to_string(&mut text).map_err(|e| KeyFileError::Read { path: p(), source: e })?;
    key_from_text(&text).map_err(|e| KeyFileError::Key { path: p(), source: e })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::wireguard::keys::encode_key;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("encapd-keyfile-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir(&d).unwrap();
            Dir(d)
        }

        fn file(&self, name: &str, content: &str, mode: u32) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_private_key_file_as_wg_genkey_writes_it() {
        let d = Dir::new("good");
        let key = encode_key(&[0x40; 32]);
        let me = effective_uid();
        for mode in [0o600, 0o400] {
            let path = d.file(&format!("k{mode:o}"), &format!("{key}\n"), mode);
            assert_eq!(*read_key_file(&path, me).unwrap(), [0x40; 32]);
        }
    }

    #[test]
    fn loose_permissions_are_refused_with_the_fix() {
        let d = Dir::new("mode");
        let key = encode_key(&[1; 32]);
        for mode in [0o644, 0o640, 0o604, 0o660, 0o606] {
            let path = d.file("k", &key, mode);
            let e = read_key_file(&path, effective_uid()).unwrap_err();
            assert!(matches!(e, KeyFileError::Permissions { mode: m, .. } if m == mode), "{mode:o}: {e}");
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
    }

    #[test]
    fn another_owner_is_refused() {
        let d = Dir::new("owner");
        let path = d.file("k", &encode_key(&[1; 32]), 0o600);
        let me = effective_uid();
        let e = read_key_file(&path, me + 1).unwrap_err();
        assert!(matches!(e, KeyFileError::Owner { owner, expected, .. } if owner == me && expected == me + 1), "{e}");
        assert!(e.to_string().contains("chown"), "{e}");
        // As root, really hand the file to another user.
        if me == 0 {
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            assert!(matches!(read_key_file(&path, 0), Err(KeyFileError::Owner { owner: 65534, .. })));
        }
    }

    #[test]
    fn links_directories_and_junk_are_refused() {
        let d = Dir::new("junk");
        let target = d.file("real", &encode_key(&[1; 32]), 0o600);
        let link = d.0.join("link");
        symlink(&target, &link).unwrap();
        assert!(matches!(read_key_file(&link, effective_uid()), Err(KeyFileError::Symlink { .. })));
        assert!(matches!(read_key_file(&d.0, effective_uid()), Err(KeyFileError::NotAFile { .. }) | Err(KeyFileError::Permissions { .. })));
        assert!(matches!(read_key_file(&d.0.join("missing"), effective_uid()), Err(KeyFileError::Open { .. })));
        let short = d.file("short", "AAAA\n", 0o600);
        assert!(matches!(read_key_file(&short, effective_uid()), Err(KeyFileError::Key { .. })));
        let two = d.file("two", &format!("{0}\n{0}\n", encode_key(&[1; 32])), 0o600);
        assert!(matches!(read_key_file(&two, effective_uid()), Err(KeyFileError::Key { .. })));
        let big = d.file("big", &"A".repeat(2000), 0o600);
        assert!(matches!(read_key_file(&big, effective_uid()), Err(KeyFileError::TooLarge { .. })));
        // The error names the file and the problem, never the key.
        let e = read_key_file(&short, effective_uid()).unwrap_err().to_string();
        assert!(e.starts_with(short.to_str().unwrap()), "{e}");
    }
}
