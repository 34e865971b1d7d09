//! A device's long-lived ed25519 key: it signs every record this device writes, and the libp2p
//! `PeerId` is derived from the same secret, so "who sent this" and "who signed this" agree.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;
use ed25519_dalek::{Signer, SigningKey};

use crate::fs::{create_private_dir_all, write_file_atomically};
use crate::signature::SignedMessage;

/// Magic bytes at the start of a key file, so that a file of another kind is recognised as such.
const KEY_FILE_MAGIC: &[u8; 8] = b"GVKEY\0\0\x01";
/// Magic, 32 secret bytes, then a CRC-32 of the secret that catches a damaged file.
const KEY_FILE_LEN: usize = KEY_FILE_MAGIC.len() + 32 + 4;
/// Characters of the text form shown in lists and message headers; the full form is 52 characters.
const SHORT_FORM_LEN: usize = 8;

/// Why an identity could not be loaded or saved. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file does not exist and the caller did not ask for one to be created.
    #[error("no identity key at {0}")]
    Missing(PathBuf),
    /// The file exists but is not a Grapevine key file, or is damaged. It is left untouched.
    #[error("identity key file {path} is corrupt ({reason}); it was left untouched")]
    Corrupt {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Reading or writing the file failed.
    #[error("identity key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// The device's signing key.
#[derive(Clone)]
pub struct Identity {
    signing: SigningKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Makes a fresh random key (from the operating system's CSPRNG).
    pub fn generate() -> Self {
        Self::from_secret_bytes(random_bytes())
    }

    /// Rebuilds a key from its 32 secret bytes (the same bytes libp2p's ed25519 keys take).
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    /// The 32 secret bytes, for deriving the libp2p keypair from the same key.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The public half, which identifies this device's author.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// Signs `message` with this device's key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// Loads the key at `path`. A missing file is an error; a damaged file is an error that
    /// leaves the file as it is.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(IdentityError::Missing(path.to_owned()));
            }
            Err(source) => {
                return Err(IdentityError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let corrupt = |reason| IdentityError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        if bytes.len() != KEY_FILE_LEN {
            return Err(corrupt("wrong length"));
        }
        let (magic, rest) = bytes.split_at(KEY_FILE_MAGIC.len());
        if magic != KEY_FILE_MAGIC {
            return Err(corrupt("not a Grapevine key file"));
        }
        let (secret, checksum) = rest.split_at(32);
        if crc32fast::hash(secret).to_le_bytes() != checksum {
            return Err(corrupt("checksum mismatch"));
        }
        let mut secret_bytes = [0u8; 32];
        secret_bytes.copy_from_slice(secret);
        Ok(Self::from_secret_bytes(secret_bytes))
    }

    /// Loads the key at `path`, creating and saving a new one only when no file exists there.
    pub fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        match Self::load(path) {
            Err(IdentityError::Missing(_)) => {
                let identity = Self::generate();
                identity.save(path)?;
                Ok(identity)
            }
            other => other,
        }
    }

    /// Saves the key readable by the owner only (mode 0600), atomically.
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let io_error = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir_all(dir).map_err(io_error)?;
        }
        let secret = self.signing.to_bytes();
        let mut bytes = Vec::with_capacity(KEY_FILE_LEN);
        bytes.extend_from_slice(KEY_FILE_MAGIC);
        bytes.extend_from_slice(&secret);
        bytes.extend_from_slice(&crc32fast::hash(&secret).to_le_bytes());
        write_file_atomically(path, &bytes, 0o600).map_err(io_error)
    }
}

/// Fresh bytes from the operating system's CSPRNG. Without it no key can be made safely, so its
/// absence (which Linux never reports once booted) stops the program.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if let Err(e) = getrandom::fill(&mut bytes) {
        panic!("the operating system's random number generator failed: {e}");
    }
    bytes
}

/// An author's ed25519 public key: the identity of whoever signed a record.
///
/// Its text form is 52 lowercase base32 characters; [`PublicKey::short`] gives the first eight
/// for display next to a nickname.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first characters of the text form: enough to tell people apart in a room.
    pub fn short(&self) -> String {
        let mut text = self.to_string();
        text.truncate(SHORT_FORM_LEN);
        text
    }

    /// Checks an ed25519 signature by the rules of [`crate::signature`], which give the same
    /// verdict alone or in a batch on every peer.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        SignedMessage {
            key: &self.0,
            message,
            signature,
        }
        .verify()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE32_NOPAD.encode(&self.0).to_ascii_lowercase())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

/// The text given is not the text form of a public key.
#[derive(Debug, thiserror::Error)]
#[error("not a public key: expected 52 base32 characters")]
pub struct ParsePublicKeyError;

impl FromStr for PublicKey {
    type Err = ParsePublicKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = BASE32_NOPAD
            .decode(s.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| ParsePublicKeyError)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| ParsePublicKeyError)?;
        Ok(PublicKey(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn saved_key_loads_back_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/identity.key");
        let created = Identity::load_or_create(&path).unwrap();
        let loaded = Identity::load(&path).unwrap();
        assert_eq!(created.public_key(), loaded.public_key());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            Identity::load_or_create(&path).unwrap().public_key(),
            created.public_key()
        );
    }

    #[test]
    fn missing_key_is_created_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        assert!(matches!(
            Identity::load(&path),
            Err(IdentityError::Missing(_))
        ));
        assert!(!path.exists());
    }

    #[test]
    fn corrupt_key_file_is_reported_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        Identity::generate().save(&path).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[12] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = Identity::load_or_create(&path).unwrap_err();
        assert!(matches!(err, IdentityError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("identity.key"));
        assert_eq!(std::fs::read(&path).unwrap(), bytes);

        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            Identity::load(&path),
            Err(IdentityError::Corrupt { .. })
        ));
    }

    #[test]
    fn public_key_text_form_round_trips() {
        let key = Identity::generate().public_key();
        let text = key.to_string();
        assert_eq!(text.len(), 52);
        assert_eq!(text.parse::<PublicKey>().unwrap(), key);
        assert!(text.starts_with(&key.short()));
        assert!("not a key".parse::<PublicKey>().is_err());
    }

    #[test]
    fn signature_verifies_only_for_the_signed_message() {
        let identity = Identity::generate();
        let signature = identity.sign(b"hello");
        assert!(identity.public_key().verify(b"hello", &signature));
        assert!(!identity.public_key().verify(b"hellO", &signature));
        assert!(
            !Identity::generate()
                .public_key()
                .verify(b"hello", &signature)
        );
    }
}
