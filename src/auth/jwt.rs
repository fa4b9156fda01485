//! JSON Web Tokens signed by a key of a JWKS file (RS256 or ES256), with
//! the issuer, audience, expiry and not-before checked by `jsonwebtoken`.

use std::path::PathBuf;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::jwks_url::JwksUrlError;
use super::{Scope, Scopes};

/// Largest JWKS file read; real ones hold a handful of keys (a few KiB).
pub const MAX_JWKS_BYTES: u64 = 1 << 20;
/// Clock skew tolerated on `exp` and `nbf`: Kubernetes' own token review
/// allows none, OIDC libraries commonly allow a minute; 30 s keeps an
/// expired token's extra life short.
pub const LEEWAY_SECONDS: u64 = 30;
/// Subjects are shown in logs and metric labels: bounded.
const MAX_SUBJECT_CHARS: usize = 64;

/// Where the keys are and what a token must say about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    pub jwks: JwksSource,
    pub issuer: String,
    pub audience: String,
}

/// A JWKS file (watched), or an identity provider's `jwks_uri` (fetched
/// and refreshed, `jwks_url.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(url::Url),
}

/// Why `--jwks` names neither a file nor a URL the keys may come from.
#[derive(Debug, thiserror::Error)]
pub enum JwksSourceError {
    #[error("{text:?} is not a URL: {source}")]
    NotUrl {
        text: String,
        #[source]
        source: url::ParseError,
    },
    #[error(transparent)]
    Refused(#[from] JwksUrlError),
}

impl std::str::FromStr for JwksSource {
    type Err = JwksSourceError;

    /// `https://…` (or `http://` to a loopback address) is a URL, anything
    /// else a path.
    fn from_str(text: &str) -> Result<Self, JwksSourceError> {
        if !(text.starts_with("https://") || text.starts_with("http://")) {
            return Ok(JwksSource::File(PathBuf::from(text)));
        }
        let url = url::Url::parse(text)
            .map_err(|source| JwksSourceError::NotUrl { text: text.to_string(), source })?;
        super::jwks_url::check(&url)?;
        Ok(JwksSource::Url(url))
    }
}

impl From<&str> for JwksSource {
    fn from(path: &str) -> Self {
        JwksSource::File(PathBuf::from(path))
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::File(path) => write!(f, "{}", path.display()),
            JwksSource::Url(url) => write!(f, "{url}"),
        }
    }
}

/// What is wrong with a JWKS file.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("not a JWKS document: {0}")]
    Parse(String),
    #[error("no RS256 or ES256 (P-256) key in the JWKS; {skipped} other key(s) skipped")]
    NoUsableKey { skipped: usize },
}

/// Why a token that looks like a JWT was refused; the caller sees the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtRefusal {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token is for another audience")]
    WrongAudience,
    #[error("the token is from another issuer")]
    WrongIssuer,
    #[error("the token's signature matches no key of the JWKS")]
    BadSignature,
    #[error("the token's algorithm is not accepted (RS256, ES256)")]
    Algorithm,
    #[error("the token lacks the {0} claim")]
    MissingClaim(String),
    #[error("the token is not a well-formed JWT")]
    Malformed,
}

impl JwtRefusal {
    /// The metric label: one short word per variant, never the message.
    pub fn label(&self) -> &'static str {
        match self {
            JwtRefusal::Expired => "jwt_expired",
            JwtRefusal::NotYetValid => "jwt_not_yet_valid",
            JwtRefusal::WrongAudience => "jwt_audience",
            JwtRefusal::WrongIssuer => "jwt_issuer",
            JwtRefusal::BadSignature => "jwt_signature",
            JwtRefusal::Algorithm => "jwt_algorithm",
            JwtRefusal::MissingClaim(_) => "jwt_claims",
            JwtRefusal::Malformed => "jwt_malformed",
        }
    }
}

struct Key {
    id: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The usable keys of one JWKS file.
pub struct KeySet {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<_> = self.keys.iter().map(|k| (k.id.as_deref(), k.algorithm)).collect();
        f.debug_struct("KeySet").field("keys", &ids).finish()
    }
}

/// The key's algorithm: the one it names, else the one its type implies.
/// Anything but RS256 and ES256 on P-256 is skipped, symmetric keys
/// included (a JWKS is public: an HMAC key in it would let anyone sign).
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    match (&jwk.algorithm, jwk.common.key_algorithm.as_ref()) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Some(Algorithm::RS256),
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Some(Algorithm::ES256)
        }
        _ => None,
    }
}

/// Parses a JWKS document, keeping the keys this server verifies with.
///
/// # Errors
/// Not JSON, not a JWKS, or no RS256/ES256 key in it.
pub fn parse_jwks(bytes: &[u8]) -> Result<KeySet, JwksError> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| JwksError::Parse(e.to_string()))?;
    let mut keys = Vec::new();
    let mut skipped = 0;
    for jwk in &set.keys {
        match algorithm_of(jwk).and_then(|alg| Some((alg, DecodingKey::from_jwk(jwk).ok()?))) {
            Some((algorithm, key)) => {
                keys.push(Key { id: jwk.common.key_id.clone(), algorithm, key })
            }
            None => skipped += 1,
        }
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey { skipped });
    }
    Ok(KeySet { keys })
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    /// OAuth 2.0's space-separated list (RFC 8693 section 4.2).
    #[serde(default)]
    scope: Option<String>,
    /// Checked by `jsonwebtoken`; kept to bound how long a verification is cached.
    #[serde(default)]
    exp: Option<u64>,
}

/// A verified token: who, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub subject: String,
    pub scopes: Scopes,
    /// The `exp` claim, seconds since the epoch.
    pub expires_at: u64,
}

/// The `kid` a JWT's header names, if it can be read.
pub fn key_id(token: &str) -> Option<String> {
    jsonwebtoken::decode_header(token).ok()?.kid
}

/// Whether a bearer token has the shape of a JWT (three base64url parts),
/// so that a refusal can say why the JWT failed rather than "unknown token".
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("eyJ")
}

impl KeySet {
    /// Whether a token naming key `kid` names one of these keys; a token
    /// naming none is tried against every key.
    pub fn knows(&self, kid: Option<&str>) -> bool {
        kid.is_none_or(|kid| self.keys.iter().any(|k| k.id.as_deref() == Some(kid)))
    }

    /// A set with no keys: every token refused.
    #[cfg(test)]
    pub fn empty() -> KeySet {
        KeySet { keys: Vec::new() }
    }

    /// Verifies a token's signature, issuer, audience, expiry and
    /// not-before, and reads its scopes. Scope words this server does not
    /// know (`openid`, `profile`) are ignored.
    ///
    /// # Errors
    /// Why the token is refused.
    pub fn verify(&self, token: &str, config: &JwtConfig) -> Result<Verified, JwtRefusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtRefusal::Malformed)?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(JwtRefusal::Algorithm);
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        // A token naming its key is tried against that key only; one that
        // names none against every key of its algorithm.
        let candidates = self
            .keys
            .iter()
            .filter(|k| k.algorithm == header.alg && (header.kid.is_none() || header.kid == k.id));
        let mut refusal = JwtRefusal::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return Ok(verified(data.claims)),
                Err(e) => {
                    refusal = refusal_of(e.kind());
                    if refusal != JwtRefusal::BadSignature {
                        // The signature verified; the claims are what is wrong.
                        return Err(refusal);
                    }
                }
            }
        }
        Err(refusal)
    }
}

fn verified(claims: Claims) -> Verified {
    let scopes = claims
        .scope
        .as_deref()
        .unwrap_or_default()
        .split_ascii_whitespace()
        .filter_map(Scope::parse)
        .collect();
    let subject: String = claims
        .sub
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(MAX_SUBJECT_CHARS)
        .collect();
    Verified { subject, scopes, expires_at: claims.exp.unwrap_or(0) }
}

fn refusal_of(kind: &ErrorKind) -> JwtRefusal {
    match kind {
        ErrorKind::ExpiredSignature => JwtRefusal::Expired,
        ErrorKind::ImmatureSignature => JwtRefusal::NotYetValid,
        ErrorKind::InvalidAudience => JwtRefusal::WrongAudience,
        ErrorKind::InvalidIssuer => JwtRefusal::WrongIssuer,
        ErrorKind::InvalidSignature => JwtRefusal::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => JwtRefusal::Algorithm,
        ErrorKind::MissingRequiredClaim(claim) => JwtRefusal::MissingClaim(claim.clone()),
        _ => JwtRefusal::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};

    fn pem(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/auth").join(name),
        )
        .unwrap()
    }

    fn rsa(name: &str) -> EncodingKey {
        EncodingKey::from_rsa_pem(&pem(name)).unwrap()
    }

    fn jwks(keys: &[(&EncodingKey, Algorithm, &str)]) -> Vec<u8> {
        let keys: Vec<Jwk> = keys
            .iter()
            .map(|(k, alg, kid)| {
                let mut jwk = Jwk::from_encoding_key(k, *alg).unwrap();
                jwk.common.key_id = Some(kid.to_string());
                jwk
            })
            .collect();
        serde_json::to_vec(&JwkSet { keys }).unwrap()
    }

    fn config() -> JwtConfig {
        JwtConfig { jwks: "unused".into(), issuer: "iss-1".into(), audience: "tractor".into() }
    }

    fn token(key: &EncodingKey, alg: Algorithm, kid: &str, claims: serde_json::Value) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        encode(&header, &claims, key).unwrap()
    }

    #[test]
    fn good_expired_audience_and_key_are_told_apart() {
        let (a, b) = (rsa("rsa-a.pem"), rsa("rsa-b.pem"));
        let ec = EncodingKey::from_ec_pem(&pem("ec-a.pem")).unwrap();
        let set = parse_jwks(&jwks(&[(&a, Algorithm::RS256, "a"), (&ec, Algorithm::ES256, "e")]))
            .unwrap();
        let now = get_current_timestamp();
        let claims = |exp: u64, aud: &str| serde_json::json!({"sub": "svc", "iss": "iss-1", "aud": aud, "exp": exp, "scope": "openid infer pin"});
        let good = set
            .verify(&token(&a, Algorithm::RS256, "a", claims(now + 600, "tractor")), &config())
            .unwrap();
        assert_eq!(good.subject, "svc");
        assert!(good.scopes.contains(Scope::Infer) && good.scopes.contains(Scope::Pin));
        assert!(!good.scopes.contains(Scope::Admin));
        let ec_good = token(&ec, Algorithm::ES256, "e", claims(now + 600, "tractor"));
        assert!(set.verify(&ec_good, &config()).is_ok());
        let expired = token(&a, Algorithm::RS256, "a", claims(now - 3600, "tractor"));
        assert_eq!(set.verify(&expired, &config()), Err(JwtRefusal::Expired));
        let other_audience = token(&a, Algorithm::RS256, "a", claims(now + 600, "someone-else"));
        assert_eq!(set.verify(&other_audience, &config()), Err(JwtRefusal::WrongAudience));
        let wrong_key = token(&b, Algorithm::RS256, "a", claims(now + 600, "tractor"));
        assert_eq!(set.verify(&wrong_key, &config()), Err(JwtRefusal::BadSignature));
        let future = serde_json::json!({"iss": "iss-1", "aud": "tractor", "exp": now + 900, "nbf": now + 600});
        assert_eq!(
            set.verify(&token(&a, Algorithm::RS256, "a", future), &config()),
            Err(JwtRefusal::NotYetValid)
        );
        let no_exp = serde_json::json!({"iss": "iss-1", "aud": "tractor"});
        assert!(matches!(
            set.verify(&token(&a, Algorithm::RS256, "a", no_exp), &config()),
            Err(JwtRefusal::MissingClaim(_))
        ));
        assert_eq!(set.verify("eyJ.not.jwt", &config()), Err(JwtRefusal::Malformed));
    }

    #[test]
    fn symmetric_keys_and_other_algorithms_are_refused() {
        let hmac = serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"}]});
        assert!(matches!(
            parse_jwks(hmac.to_string().as_bytes()),
            Err(JwksError::NoUsableKey { skipped: 1 })
        ));
        assert!(matches!(parse_jwks(b"{"), Err(JwksError::Parse(_))));
        let a = rsa("rsa-a.pem");
        let set = parse_jwks(&jwks(&[(&a, Algorithm::RS256, "a")])).unwrap();
        let hs = encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"exp": get_current_timestamp() + 60}),
            &EncodingKey::from_secret(b"secret").unwrap(),
        )
        .unwrap();
        assert_eq!(set.verify(&hs, &config()), Err(JwtRefusal::Algorithm));
    }
}
