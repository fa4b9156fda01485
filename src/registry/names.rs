//! Model names, versions, aliases and `NAME@VERSION` references as the
//! registry accepts them: the rules of `spec.model.name` and
//! `spec.model.version`, so every registered version can be deployed, and
//! nothing that could leave its folder in the store (no `/`, no `..` as a
//! whole segment, no control characters, bounded length).

use super::RegistryError;

/// Longest model name: a DNS label, as `spec.model.name`.
pub const MAX_NAME: usize = 63;
/// Longest version or alias: `spec.model.version`'s bound.
pub const MAX_VERSION: usize = 20;
/// Longest piece of a refused value repeated in an error message.
const SHOWN: usize = 40;

fn alphanumeric(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// A refused value as an error shows it: cut, and quoted with escapes, so
/// hostile input cannot fill a terminal or forge lines.
fn shown(value: &str) -> String {
    let cut: String = value.chars().take(SHOWN).collect();
    let more = if value.chars().count() > SHOWN { "…" } else { "" };
    format!("{cut:?}{more}")
}

fn invalid(what: &'static str, value: &str, rule: &'static str) -> RegistryError {
    RegistryError::InvalidName { what, value: shown(value), rule }
}

/// Checks a model name: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
///
/// # Errors
/// [`RegistryError::InvalidName`] naming the rule.
pub fn check_name(name: &str) -> Result<(), RegistryError> {
    const RULE: &str =
        "1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit";
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(alphanumeric)
        && name.ends_with(alphanumeric)
        && name.chars().all(|c| alphanumeric(c) || c == '-');
    if ok { Ok(()) } else { Err(invalid("model name", name, RULE)) }
}

/// Checks a version or an alias: `[a-z0-9]([-.a-z0-9]*[a-z0-9])?`, at most
/// 20 characters.
///
/// # Errors
/// [`RegistryError::InvalidName`] naming the rule.
pub fn check_version(what: &'static str, version: &str) -> Result<(), RegistryError> {
    const RULE: &str = "1 to 20 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit";
    let ok = !version.is_empty()
        && version.len() <= MAX_VERSION
        && version.starts_with(alphanumeric)
        && version.ends_with(alphanumeric)
        && version.chars().all(|c| alphanumeric(c) || c == '-' || c == '.');
    if ok { Ok(()) } else { Err(invalid(what, version, RULE)) }
}

/// `NAME@VERSION` or `NAME@ALIAS`: one model version, named or through an alias.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    pub name: String,
    /// A version or an alias; which one is known only once resolved.
    pub tag: String,
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.tag)
    }
}

impl std::str::FromStr for Reference {
    type Err = RegistryError;

    fn from_str(text: &str) -> Result<Reference, RegistryError> {
        let Some((name, tag)) = text.split_once('@') else {
            return Err(RegistryError::InvalidReference(shown(text)));
        };
        check_name(name)?;
        check_version("version or alias", tag)?;
        Ok(Reference { name: name.to_string(), tag: tag.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_rules() {
        for good in ["digits", "a", "m-2", &"a".repeat(63)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "a/b", "..", &"a".repeat(64), "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for good in ["1", "1.2.0", "v2", "rc-1", "champion"] {
            assert!(check_version("version", good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "1.", "V1", "a\nb", &"1".repeat(21)] {
            assert!(check_version("version", bad).is_err(), "{bad}");
        }
        // Every version the registry accepts is one a ModelDeployment accepts.
        for v in ["1", "1.2.0", "rc-1"] {
            assert!(crate::crd::check_version(v).is_ok());
        }
    }

    #[test]
    fn references_parse_and_refusals_stay_short() {
        let r: Reference = "digits@2".parse().unwrap();
        assert_eq!((r.name.as_str(), r.tag.as_str()), ("digits", "2"));
        assert_eq!(r.to_string(), "digits@2");
        assert!("digits".parse::<Reference>().is_err());
        assert!("digits@".parse::<Reference>().is_err());
        assert!("@2".parse::<Reference>().is_err());
        assert!("d@2@3".parse::<Reference>().is_err());
        let long = format!("{}@1", "x".repeat(10_000));
        let err = long.parse::<Reference>().unwrap_err().to_string();
        assert!(err.len() < 300, "{err}");
        let forged = "a\n[INFO] pushed@1".parse::<Reference>().unwrap_err().to_string();
        assert!(!forged.contains('\n'), "{forged}");
    }
}
