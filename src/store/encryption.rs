//! Encryption at rest in the age format (age-encryption.org/v1, X25519
//! recipients): the format the `age` command, `rage` and the Go library
//! read and write, so people encrypt and inspect models with tools they
//! already have. Decryption happens in memory: the plaintext model is
//! never written anywhere.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use age::x25519;

use super::Artifact;

/// The first line of every binary age file: how a fetched artifact is
/// recognised as encrypted, whatever its name.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// Largest recipients file read: thousands of `age1…` lines (62 bytes each)
/// fit; anything larger is not a recipients file.
const MAX_RECIPIENTS_FILE_BYTES: u64 = 1 << 20;
/// Largest identity file read, age's own bound for identity files.
const MAX_IDENTITY_FILE_BYTES: u64 = 16 << 20;

/// Errors of encrypting and decrypting artifacts.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error(
        "invalid age recipient {0:?}: give an X25519 recipient (age1…) or a file of them, one a line"
    )]
    InvalidRecipient(String),
    #[error("{path}, line {line}: not an X25519 age recipient (age1…)")]
    InvalidRecipientLine { path: String, line: usize },
    #[error("reading the recipients file {path}: {source}")]
    ReadRecipients {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is larger than {max} bytes: not a recipients or identity file")]
    KeyFileTooLarge { path: String, max: u64 },
    #[error("no age recipient given")]
    NoRecipients,
    #[error("encrypting with age: {0}")]
    Encrypt(#[source] std::io::Error),
    #[error("reading the decryption identity {path}: {source}")]
    ReadIdentity {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the decryption identity {path} holds no age identity (AGE-SECRET-KEY-1…)")]
    NoIdentity { path: String },
    #[error(
        "{uri} is age-encrypted and no decryption identity was given \
         (--decryption-identity, TRACTOR_DECRYPTION_IDENTITY)"
    )]
    IdentityRequired { uri: String },
    #[error(
        "cannot decrypt {uri}: the decryption identity is not one of the file's recipients \
         (wrong key, or a file encrypted to a passphrase)"
    )]
    WrongIdentity { uri: String },
    #[error("cannot decrypt {uri}: the file was modified or is damaged ({reason})")]
    Tampered { uri: String, reason: String },
}

/// Whether `bytes` begin like an age file.
pub fn is_age(bytes: &[u8]) -> bool {
    bytes.starts_with(AGE_MAGIC)
}

/// Reads `--encrypt-to` values: each an X25519 recipient (`age1…`) or the
/// path of a file of them, one a line, `#` comments and blank lines
/// skipped, as `age -R` reads them.
///
/// # Errors
/// A value that is neither, an unreadable or oversized file, a line that is
/// not a recipient, or no recipient at all.
pub fn parse_recipients(values: &[String]) -> Result<Vec<x25519::Recipient>, EncryptionError> {
    let mut recipients = Vec::new();
    for value in values {
        if value.starts_with("age1") {
            let recipient = value
                .parse::<x25519::Recipient>()
                .map_err(|_| EncryptionError::InvalidRecipient(value.clone()))?;
            recipients.push(recipient);
            continue;
        }
        let path = Path::new(value);
        if !path.is_file() {
            return Err(EncryptionError::InvalidRecipient(value.clone()));
        }
        let text = read_bounded(path, MAX_RECIPIENTS_FILE_BYTES)
            .map_err(|source| EncryptionError::ReadRecipients { path: value.clone(), source })?;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let recipient = line.parse::<x25519::Recipient>().map_err(|_| {
                EncryptionError::InvalidRecipientLine { path: value.clone(), line: index + 1 }
            })?;
            recipients.push(recipient);
        }
    }
    if recipients.is_empty() {
        return Err(EncryptionError::NoRecipients);
    }
    Ok(recipients)
}

/// `plaintext` as an age file any of `recipients` can decrypt.
///
/// # Errors
/// No recipients; age's writer failing (it writes to memory, so only on
/// an impossible state).
pub fn encrypt(
    plaintext: &[u8],
    recipients: &[x25519::Recipient],
) -> Result<Vec<u8>, EncryptionError> {
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|_| EncryptionError::NoRecipients)?;
    // age adds a 16-byte tag per 64 KiB chunk and a header of ~200 bytes
    // per recipient: reserve about that much once.
    let overhead = 256 * recipients.len() + 16 * (plaintext.len() / 65536 + 1);
    let mut ciphertext = Vec::with_capacity(plaintext.len() + overhead);
    let mut writer = encryptor.wrap_output(&mut ciphertext).map_err(EncryptionError::Encrypt)?;
    writer.write_all(plaintext).map_err(EncryptionError::Encrypt)?;
    writer.finish().map_err(EncryptionError::Encrypt)?;
    Ok(ciphertext)
}

/// The identities of an age identity file, as `age-keygen` writes it.
pub struct Identities {
    path: PathBuf,
    keys: Vec<Box<dyn age::Identity>>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys themselves.
        write!(f, "Identities({}, {} keys)", self.path.display(), self.keys.len())
    }
}

impl Identities {
    /// Reads an identity file (`AGE-SECRET-KEY-1…` lines, `#` comments).
    ///
    /// # Errors
    /// An unreadable or oversized file, a line that is not an identity
    /// (age's message names the line, never its content), or no identity.
    pub fn read(path: &Path) -> Result<Identities, EncryptionError> {
        let shown = path.display().to_string();
        let read_err = |source| EncryptionError::ReadIdentity { path: shown.clone(), source };
        let text = read_bounded(path, MAX_IDENTITY_FILE_BYTES).map_err(read_err)?;
        let file = age::IdentityFile::from_buffer(text.as_bytes()).map_err(read_err)?;
        let keys = file.into_identities().map_err(|e| read_err(std::io::Error::other(e)))?;
        if keys.is_empty() {
            return Err(EncryptionError::NoIdentity { path: shown });
        }
        Ok(Identities { path: path.to_path_buf(), keys })
    }

    /// Decrypts an age file in memory.
    ///
    /// # Errors
    /// [`EncryptionError::WrongIdentity`] when no key opens the header,
    /// [`EncryptionError::Tampered`] when the header's MAC or a payload
    /// chunk fails authentication, or the file is cut short.
    pub fn decrypt(&self, uri: &str, ciphertext: &[u8]) -> Result<Vec<u8>, EncryptionError> {
        let tampered = |reason: String| EncryptionError::Tampered { uri: uri.to_string(), reason };
        let decryptor = age::Decryptor::new_buffered(ciphertext)
            .map_err(|e| tampered(format!("unreadable header: {e}")))?;
        let mut reader = decryptor
            .decrypt(self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => {
                    EncryptionError::WrongIdentity { uri: uri.to_string() }
                }
                other => tampered(format!("header: {other}")),
            })?;
        // The plaintext is shorter than the ciphertext: one allocation.
        let mut plaintext = Vec::with_capacity(ciphertext.len());
        reader
            .read_to_end(&mut plaintext)
            .map_err(|e| tampered(format!("payload failed authentication: {e}")))?;
        Ok(plaintext)
    }
}

/// The artifact as the engine should read it: an age file decrypted in
/// memory with the identity file at `identity`, anything else as it is.
/// The decrypted artifact's `sha256` is the plaintext's, its name loses
/// its `.age`.
///
/// # Errors
/// An age file and no identity, or any error of [`Identities::read`] and
/// [`Identities::decrypt`].
pub fn unseal(artifact: Artifact, identity: Option<&Path>) -> Result<Artifact, EncryptionError> {
    if !is_age(&artifact.bytes) {
        if identity.is_some() {
            tracing::warn!(uri = %artifact.uri, "a decryption identity is set but the model is not age-encrypted");
        }
        return Ok(artifact);
    }
    let Some(identity) = identity else {
        return Err(EncryptionError::IdentityRequired { uri: artifact.uri });
    };
    let plaintext = Identities::read(identity)?.decrypt(&artifact.uri, &artifact.bytes)?;
    let sha256 = super::sha256_hex(&plaintext);
    tracing::info!(uri = %artifact.uri, plaintext_sha256 = %sha256, bytes = plaintext.len(), "artifact decrypted in memory");
    let file_name = artifact.file_name.strip_suffix(".age").unwrap_or(&artifact.file_name).into();
    Ok(Artifact { uri: artifact.uri, file_name, bytes: plaintext.into(), sha256 })
}

/// A small key file, refused before reading when larger than `max`.
fn read_bounded(path: &Path, max: u64) -> std::io::Result<String> {
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    std::io::BufReader::new(file).take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes: not a key file"),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(bytes: Vec<u8>) -> Artifact {
        Artifact {
            uri: "file:///m.onnx.age".into(),
            file_name: "m.onnx.age".into(),
            sha256: super::super::sha256_hex(&bytes),
            bytes: bytes.into(),
        }
    }

    fn identity_file(dir: &Path, name: &str, key: &x25519::Identity) -> PathBuf {
        use age::secrecy::ExposeSecret;
        let path = dir.join(name);
        let text = format!(
            "# created: test\n# public key: {}\n{}\n",
            key.to_public(),
            key.to_string().expose_secret()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn round_trip_wrong_key_and_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let key = x25519::Identity::generate();
        let other = x25519::Identity::generate();
        let plaintext: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sealed = encrypt(&plaintext, &[other.to_public(), key.to_public()]).unwrap();
        assert!(is_age(&sealed));
        let path = identity_file(dir.path(), "key.txt", &key);
        let opened = unseal(artifact(sealed.clone()), Some(&path)).unwrap();
        assert_eq!(&opened.bytes[..], &plaintext[..]);
        assert_eq!(opened.file_name, "m.onnx");
        assert_eq!(opened.sha256, super::super::sha256_hex(&plaintext));

        let stranger = identity_file(dir.path(), "other.txt", &x25519::Identity::generate());
        let wrong = unseal(artifact(sealed.clone()), Some(&stranger)).unwrap_err();
        assert!(matches!(wrong, EncryptionError::WrongIdentity { .. }), "{wrong}");

        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let err = unseal(artifact(flipped), Some(&path)).unwrap_err();
        assert!(matches!(err, EncryptionError::Tampered { .. }), "{err}");
        let cut = sealed[..sealed.len() - 1000].to_vec();
        let err = unseal(artifact(cut), Some(&path)).unwrap_err();
        assert!(matches!(err, EncryptionError::Tampered { .. }), "{err}");

        let missing = unseal(artifact(sealed), None).unwrap_err();
        assert!(matches!(missing, EncryptionError::IdentityRequired { .. }), "{missing}");
        let plain = unseal(artifact(b"not age".to_vec()), Some(&path)).unwrap();
        assert_eq!(&plain.bytes[..], b"not age");
    }

    #[test]
    fn recipients_come_inline_or_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = x25519::Identity::generate().to_public().to_string();
        let b = x25519::Identity::generate().to_public().to_string();
        let file = dir.path().join("recipients.txt");
        std::fs::write(&file, format!("# team\n\n{b}\n")).unwrap();
        let got = parse_recipients(&[a.clone(), file.display().to_string()]).unwrap();
        assert_eq!(got.iter().map(ToString::to_string).collect::<Vec<_>>(), [a, b]);
        assert!(matches!(
            parse_recipients(&["age1nope".into()]),
            Err(EncryptionError::InvalidRecipient(_))
        ));
        std::fs::write(&file, "ssh-ed25519 AAAA\n").unwrap();
        let err = parse_recipients(&[file.display().to_string()]).unwrap_err();
        assert!(matches!(err, EncryptionError::InvalidRecipientLine { line: 1, .. }), "{err}");
        assert!(matches!(parse_recipients(&[]), Err(EncryptionError::NoRecipients)));
        let empty = dir.path().join("empty.key");
        std::fs::write(&empty, "# nothing\n").unwrap();
        assert!(matches!(Identities::read(&empty), Err(EncryptionError::NoIdentity { .. })));
    }
}
