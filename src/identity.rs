//! The server's own keypair: created on first start, kept in the data directory.
//!
//! The key file holds the 32-byte secret, hex-encoded, readable by the owner only. The store's
//! `meta` table remembers the public key, so a data dir paired with another key file is noticed
//! rather than silently served under a new identity.

use std::path::Path;

use pubky_common::crypto::Keypair;

pub const KEY_FILE: &str = "secret_key";

/// Why the server's key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file exists but does not hold a key.
    #[error("cannot read the server key {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("i/o failure: {0}")]
    Io(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, IdentityError>;

/// Read the server's keypair from `data_dir`, creating it on first start.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair> {
    let path = data_dir.join(KEY_FILE);
    if path.exists() {
        return Keypair::from_secret_key_file(&path).map_err(|err| IdentityError::Unreadable {
            path: path.display().to_string(),
            reason: err.to_string(),
        });
    }
    std::fs::create_dir_all(data_dir)?;
    let keypair = Keypair::random();
    keypair.write_secret_key_file(&path)?;
    restrict_to_owner(&path)?;
    Ok(keypair)
}

#[cfg(unix)]
fn restrict_to_owner(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &Path) -> Result<()> {
    Ok(())
}
