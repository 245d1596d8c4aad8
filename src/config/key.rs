//! Reading this node's WireGuard private key as the daemon does, for every
//! caller that needs it before the daemon runs (`encapd check`, the etcd
//! lease's public key): the file must belong to the user the daemon runs
//! as (`sys::key_file` says what else it must be).

use super::Config;
use crate::wireguard::PrivateKey;

impl Config {
    /// The uid key files must belong to: `[process] user`'s, else the
    /// user running this process.
    pub fn key_owner(&self) -> Result<u32, String> {
        match &self.user {
            Some(user) => crate::sys::privileges::resolve(user, self.group.as_deref())
                .map(|ids| ids.uid)
                .map_err(|e| format!("{}: [process] user = {user:?}: {e}", self.path.display())),
            None => Ok(crate::sys::key_file::effective_uid()),
        }
    }

    /// This node's WireGuard private key (`None` with the other backends),
    /// read with the daemon's checks.
    pub fn wireguard_private_key(&self) -> Result<Option<PrivateKey>, String> {
        let Some(wg) = &self.wireguard else { return Ok(None) };
        let bytes = crate::sys::key_file::read_key_file(&wg.private_key_file, self.key_owner()?)
            .map_err(|e| format!("{}: [node] private_key_file: {e}", self.path.display()))?;
        Ok(Some(PrivateKey::from_bytes(*bytes)))
    }
}
