//! Access control under `tractor up --auth-file`: the router checks the
//! caller's tokens (the user's files), and `up` makes two tokens of its own
//! for the run, as the controller would in a cluster: one for itself (the
//! router's admin API) and one the router sends its versions, which accept
//! nothing else.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::LocalError;

/// Random bytes in each generated token: 256 bits.
const TOKEN_BYTES: usize = 32;

/// The run's own credentials, and the files that carry them to children.
/// No `Debug`: it holds a token.
#[derive(Clone)]
pub(super) struct LocalAuth {
    /// The user's auth files, for the router.
    pub(super) user_files: Vec<PathBuf>,
    /// The tokens of `up` and of the router, for the router and the versions.
    pub(super) internal_file: PathBuf,
    /// The router's token to its versions.
    pub(super) router_token_file: PathBuf,
    /// `up`'s own token, for the router's admin API.
    pub(super) up_token: String,
}

fn random_token() -> Result<String, LocalError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| LocalError::Spawn {
        what: "random tokens".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(hex::encode(bytes))
}

/// Writes a file only its owner can read: it holds a credential.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), LocalError> {
    let state = |source| LocalError::State { path: path.display().to_string(), source };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(state)?;
    file.write_all(bytes).map_err(state)?;
    std::fs::rename(&tmp, path).map_err(state)
}

impl LocalAuth {
    /// New tokens for this run, written under `dir`; `None` without auth files.
    ///
    /// # Errors
    /// A state directory that cannot be written, no random numbers.
    pub(super) fn create(
        dir: &Path,
        user_files: &[PathBuf],
    ) -> Result<Option<LocalAuth>, LocalError> {
        if user_files.is_empty() {
            return Ok(None);
        }
        let (up_token, router_token) = (random_token()?, random_token()?);
        let digest = |t: &str| hex::encode(crate::auth::digest(t.as_bytes()));
        let internal = format!(
            "# Written by tractor up for this run; replaced at every start.\n\
             tokens:\n  - name: tractor-up\n    sha256: {}\n    scopes: [admin, metrics]\n  \
             - name: tractor-router\n    sha256: {}\n    scopes: [infer, metadata, metrics, raw]\n",
            digest(&up_token),
            digest(&router_token)
        );
        let internal_file = dir.join("internal-auth.yaml");
        let router_token_file = dir.join("router.token");
        write_private(&internal_file, internal.as_bytes())?;
        write_private(&router_token_file, router_token.as_bytes())?;
        // The user's files are read by the children, whose working
        // directory is ours; absolute paths keep them readable if that changes.
        let user_files =
            user_files.iter().map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()));
        Ok(Some(LocalAuth {
            user_files: user_files.collect(),
            internal_file,
            router_token_file,
            up_token,
        }))
    }

    /// The router's extra flags: every auth file, and its backend token.
    pub(super) fn router_argv(&self) -> Vec<String> {
        let mut argv = Vec::new();
        for file in self.user_files.iter().chain([&self.internal_file]) {
            argv.extend(["--auth-file".to_string(), file.display().to_string()]);
        }
        argv.extend([
            "--backend-token-file".to_string(),
            self.router_token_file.display().to_string(),
        ]);
        argv
    }

    /// A version's extra flags: only the run's own tokens.
    pub(super) fn serve_argv(&self) -> Vec<String> {
        vec!["--auth-file".to_string(), self.internal_file.display().to_string()]
    }

    /// `up`'s client, sending its own token to the router's admin API.
    pub(super) fn client(auth: Option<&LocalAuth>) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(auth) = auth
            && let Ok(mut value) =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", auth.up_token))
        {
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        reqwest::Client::builder().default_headers(headers).build().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_tokens_parse_as_an_auth_file_and_stay_private() {
        let dir = tempfile::tempdir().unwrap();
        assert!(LocalAuth::create(dir.path(), &[]).unwrap().is_none());
        let auth = LocalAuth::create(dir.path(), &[PathBuf::from("users.yaml")]).unwrap().unwrap();
        let text = std::fs::read_to_string(&auth.internal_file).unwrap();
        let specs = crate::auth::parse_auth_file_text(&text).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].digest, crate::auth::digest(auth.up_token.as_bytes()));
        assert_eq!(auth.router_argv().iter().filter(|a| *a == "--auth-file").count(), 2);
        assert!(auth.router_argv().contains(&"--backend-token-file".to_string()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&auth.router_token_file).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
    }
}
