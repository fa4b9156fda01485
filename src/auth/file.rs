//! The auth file: named bearer tokens with their scopes and limits.
//!
//! ```yaml
//! tokens:
//!   - name: checkout-app        # shown in logs and metrics, never the token
//!     sha256: 9f86d08...        # hex sha256 of the token (or `value:` for tests)
//!     scopes: [infer, metadata] # infer, metadata, metrics, pin, admin, raw
//!     rps: 50                   # optional per-token rate limit ...
//!     burst: 100                # ... with a burst
//!     quota: 100000             # optional requests per day
//! ```

use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Scope, Scopes};

/// Largest auth file read: far above any real token list (10 000 tokens
/// take about 1.5 MiB with long names), and a bound on what a reload can
/// make the server parse.
pub const MAX_AUTH_FILE_BYTES: u64 = 4 << 20;
/// Most tokens in one file: each request is compared against all of them.
pub const MAX_TOKENS: usize = 10_000;
/// Token names are metric labels: short, and from a small alphabet.
const MAX_NAME_CHARS: usize = 64;
/// Longest token accepted, in the file or in a request header.
pub const MAX_TOKEN_BYTES: usize = 8 << 10;

/// What is wrong with an auth file; the message names the token.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("not a valid auth file: {0}")]
    Parse(String),
    #[error("token #{index}: {reason}")]
    Token {
        index: usize,
        #[source]
        reason: TokenError,
    },
    #[error("{count} tokens; at most {MAX_TOKENS} are accepted")]
    TooMany { count: usize },
}

/// What is wrong with one entry of an auth file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "name {0:?}: 1 to {MAX_NAME_CHARS} letters, digits or - _ . : @ (it is a metric label)"
    )]
    Name(String),
    #[error("{name}: {problem}")]
    Entry {
        name: String,
        #[source]
        problem: EntryProblem,
    },
    #[error("the name {0:?} is used twice")]
    NameTwice(String),
    #[error("{0:?} has the same token as another entry")]
    SameToken(String),
}

/// What is wrong with the fields of an entry whose name is fine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    #[error("sha256 must be 64 hexadecimal characters")]
    Digest,
    #[error("value {0}")]
    Value(#[source] BadToken),
    #[error("give sha256 or value, not both")]
    Both,
    #[error("needs sha256 (or value)")]
    Neither,
    #[error("burst needs rps")]
    BurstWithoutRps,
    #[error("rps must be at least 1")]
    ZeroRps,
    #[error("burst must be at least 1")]
    ZeroBurst,
    #[error("quota must be at least 1 (remove the token to refuse it)")]
    ZeroQuota,
}

/// Why bytes cannot be a token: the message follows "the token" or
/// "value".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadToken {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("has characters other than printable ASCII without spaces")]
    NotPrintable,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    tokens: Vec<TokenDocument>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenDocument {
    name: String,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    value: Option<String>,
    scopes: Vec<Scope>,
    #[serde(default)]
    rps: Option<u32>,
    #[serde(default)]
    burst: Option<u32>,
    #[serde(default)]
    quota: Option<u64>,
}

/// A per-token rate: `rps` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// What one token may do, and how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    pub name: Arc<str>,
    /// sha256 of the token: the token itself is never kept.
    pub digest: [u8; 32],
    pub scopes: Scopes,
    pub rate: Option<Rate>,
    /// Requests per UTC day.
    pub quota: Option<u64>,
}

/// The sha256 a request's token is compared by.
pub fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Parses and checks an auth file.
///
/// # Errors
/// YAML that is not an auth file (unknown fields included, so a typo such
/// as `scope:` is an error rather than a token without scopes), a name or
/// digest given twice, a token with both or neither of `sha256` and
/// `value`, a zero rate or quota.
pub fn parse(text: &str) -> Result<Vec<TokenSpec>, FileError> {
    let document: Document =
        serde_saphyr::from_str(text).map_err(|e| FileError::Parse(e.to_string()))?;
    if document.tokens.len() > MAX_TOKENS {
        return Err(FileError::TooMany { count: document.tokens.len() });
    }
    let mut specs: Vec<TokenSpec> = Vec::with_capacity(document.tokens.len());
    for (index, token) in document.tokens.into_iter().enumerate() {
        let bad = |reason: TokenError| FileError::Token { index, reason };
        let spec = token_spec(token).map_err(bad)?;
        if specs.iter().any(|s| s.name == spec.name) {
            return Err(bad(TokenError::NameTwice(spec.name.to_string())));
        }
        if specs.iter().any(|s| s.digest == spec.digest) {
            return Err(bad(TokenError::SameToken(spec.name.to_string())));
        }
        specs.push(spec);
    }
    Ok(specs)
}

fn token_spec(token: TokenDocument) -> Result<TokenSpec, TokenError> {
    check_name(&token.name)?;
    let entry = |problem| TokenError::Entry { name: token.name.clone(), problem };
    let digest = match (&token.sha256, &token.value) {
        (Some(hex_digest), None) => parse_digest(hex_digest).map_err(entry)?,
        (None, Some(value)) => {
            check_token(value.as_bytes()).map_err(|bad| entry(EntryProblem::Value(bad)))?;
            digest(value.as_bytes())
        }
        (Some(_), Some(_)) => return Err(entry(EntryProblem::Both)),
        (None, None) => return Err(entry(EntryProblem::Neither)),
    };
    let rate = match (token.rps, token.burst) {
        (None, None) => None,
        (None, Some(_)) => return Err(entry(EntryProblem::BurstWithoutRps)),
        (Some(0), _) => return Err(entry(EntryProblem::ZeroRps)),
        (Some(_), Some(0)) => return Err(entry(EntryProblem::ZeroBurst)),
        (Some(per_second), burst) => Some(Rate { per_second, burst: burst.unwrap_or(per_second) }),
    };
    if token.quota == Some(0) {
        return Err(entry(EntryProblem::ZeroQuota));
    }
    Ok(TokenSpec {
        name: Arc::from(token.name.as_str()),
        digest,
        scopes: token.scopes.into_iter().collect(),
        rate,
        quota: token.quota,
    })
}

fn check_name(name: &str) -> Result<(), TokenError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@');
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || !name.chars().all(allowed) {
        return Err(TokenError::Name(name.to_string()));
    }
    Ok(())
}

/// A token must fit in an `Authorization` header as one word.
///
/// # Errors
/// Empty, longer than [`MAX_TOKEN_BYTES`], or not printable ASCII.
pub fn check_token(token: &[u8]) -> Result<(), BadToken> {
    if token.is_empty() {
        return Err(BadToken::Empty);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(BadToken::TooLong);
    }
    if !token.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(BadToken::NotPrintable);
    }
    Ok(())
}

fn parse_digest(text: &str) -> Result<[u8; 32], EntryProblem> {
    let text = text.strip_prefix("sha256:").unwrap_or(text);
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|_| EntryProblem::Digest)?;
    Ok(out)
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(scopes: I) -> Scopes {
        let mut set = Scopes::default();
        for scope in scopes {
            set.insert(scope);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses() {
        let text = format!(
            "tokens:\n  - name: app\n    sha256: {}\n    scopes: [infer, metadata]\n    rps: 5\n    quota: 10\n  - name: ops\n    value: s3cret\n    scopes: [admin, metrics]\n",
            hex::encode(digest(b"tok"))
        );
        let specs = parse(&text).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].digest, digest(b"tok"));
        assert!(specs[0].scopes.contains(Scope::Infer) && !specs[0].scopes.contains(Scope::Admin));
        assert_eq!(specs[0].rate, Some(Rate { per_second: 5, burst: 5 }));
        assert_eq!(specs[0].quota, Some(10));
        assert_eq!(specs[1].digest, digest(b"s3cret"));
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("tokens:\n  - name: a\n    value: x\n    scope: [infer]\n", "scope"),
            ("tokens:\n  - name: a\n    scopes: [infer]\n", "needs sha256"),
            ("tokens:\n  - name: a\n    value: x\n    sha256: ab\n    scopes: []\n", "not both"),
            ("tokens:\n  - name: a\n    sha256: abc\n    scopes: []\n", "64 hexadecimal"),
            ("tokens:\n  - name: a\n    value: x\n    scopes: [root]\n", "root"),
            ("tokens:\n  - name: a b\n    value: x\n    scopes: []\n", "metric label"),
            ("tokens:\n  - name: a\n    value: x\n    scopes: []\n    rps: 0\n", "rps"),
            ("tokens:\n  - name: a\n    value: x\n    scopes: []\n    burst: 3\n", "burst needs"),
            ("tokens:\n  - name: a\n    value: x\n    scopes: []\n    quota: 0\n", "quota"),
            ("tokens:\n  - name: a\n    value: x y\n    scopes: []\n", "printable"),
            (
                "tokens:\n  - name: a\n    value: x\n    scopes: []\n  - name: a\n    value: y\n    scopes: []\n",
                "used twice",
            ),
            (
                "tokens:\n  - name: a\n    value: x\n    scopes: []\n  - name: b\n    value: x\n    scopes: []\n",
                "same token",
            ),
            ("tokens: [", "not a valid auth file"),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
