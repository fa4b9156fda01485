//! Encryption at rest against the `age` command (Debian's `age`, installed
//! by `.ci/run`): a file `age` encrypted loads in `tractor serve`; a file
//! `tractor registry push --encrypt-to` wrote opens with `age -d`; a wrong
//! identity, a modified file and a missing identity stop the server before
//! it is ready; no decrypted copy is left on disk.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use common::server::ServeProcess;

const TRACTOR: &str = env!("CARGO_BIN_EXE_tractor");

/// The `age` and `age-keygen` commands, or the test is skipped (failed under CI).
fn age_tools() -> bool {
    let found = ["age", "age-keygen"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    if !found {
        common::skip::skip_outside_ci("the age command is not installed (apt-get install age)");
    }
    found
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A new identity file and its recipient.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    run("age-keygen", &["-o", key.to_str().unwrap()]);
    let recipient = run("age-keygen", &["-y", key.to_str().unwrap()]).trim().to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");
    (key, recipient)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every file under `dir` (`depth` levels down), written since `since`,
/// whose bytes are `plaintext`.
fn copies_under(dir: &Path, plaintext: &[u8], depth: usize, since: SystemTime) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let p = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
        if meta.is_dir() && depth > 0 {
            found.extend(copies_under(&p, plaintext, depth - 1, since));
        } else if meta.is_file()
            && meta.len() == plaintext.len() as u64
            && meta.modified().is_ok_and(|m| m >= since)
            && std::fs::read(&p).is_ok_and(|b| b == plaintext)
        {
            found.push(p);
        }
    }
    found
}

/// Copies of the plaintext written since `since` in the test's folder or
/// directly in the temp dir (older files there are someone else's).
fn copies_of(dir: &Path, plaintext: &[u8], since: SystemTime) -> Vec<PathBuf> {
    let mut found = copies_under(dir, plaintext, 8, since);
    found.extend(copies_under(&std::env::temp_dir(), plaintext, 0, since));
    found
}

fn refused(args: &[&str], says: &str) {
    let server = ServeProcess::start(args);
    let (status, log) = server.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "{args:?} served");
    assert!(log.contains(says), "{args:?}: expected {says:?} in:\n{log}");
}

#[test]
fn a_file_age_encrypted_loads_and_bad_ones_are_refused() {
    if !age_tools() {
        return;
    }
    let started = SystemTime::now();
    let dir = tempfile::tempdir().unwrap();
    let model = common::real_model("digits-mlp-v2.onnx");
    let (key, recipient) = keygen(dir.path(), "key.txt");
    let (stranger, _) = keygen(dir.path(), "stranger.txt");
    let sealed = dir.path().join("digits.onnx.age");
    run("age", &["-r", &recipient, "-o", path(&sealed), path(&model)]);

    let mut server = ServeProcess::start(&[
        "--model",
        path(&sealed),
        "--name",
        "digits",
        "--decryption-identity",
        path(&key),
    ]);
    server.wait_ready();
    let meta = common::server::http_get(server.port, "/v2/models/digits").unwrap();
    assert!(meta.contains("\"input\""), "{meta}");
    drop(server);

    // Through the environment variable the Secret mount would set.
    let port = common::server::free_port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(TRACTOR)
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--http-port",
            &port.to_string(),
            "--grpc-port",
            "0",
        ])
        .args(["--model", path(&sealed)])
        .env("TRACTOR_DECRYPTION_IDENTITY", &key)
        .stderr(std::fs::File::create(log.path()).unwrap())
        .spawn()
        .unwrap();
    let ready = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        common::server::http_status(port, "/v2/health/ready") == Some(200)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "{}", std::fs::read_to_string(log.path()).unwrap());

    refused(
        &["--model", path(&sealed), "--decryption-identity", path(&stranger)],
        "not one of the file's recipients",
    );
    refused(&["--model", path(&sealed)], "no decryption identity was given");
    let mut bytes = std::fs::read(&sealed).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 1;
    let tampered = dir.path().join("tampered.onnx.age");
    std::fs::write(&tampered, &bytes).unwrap();
    refused(
        &["--model", path(&tampered), "--decryption-identity", path(&key)],
        "modified or is damaged",
    );
    let cut = dir.path().join("cut.onnx.age");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    refused(
        &["--model", path(&cut), "--decryption-identity", path(&key)],
        "modified or is damaged",
    );
    let not_a_key = dir.path().join("not-a-key.txt");
    std::fs::write(&not_a_key, "AGE-SECRET-KEY-1NOTAKEY\n").unwrap();
    refused(
        &["--model", path(&sealed), "--decryption-identity", path(&not_a_key)],
        "decryption identity",
    );

    let plaintext = std::fs::read(&model).unwrap();
    assert!(copies_of(dir.path(), &plaintext, started).is_empty(), "a decrypted copy was written");
}

#[test]
fn a_file_tractor_encrypted_opens_with_age_and_serves_from_the_registry() {
    if !age_tools() {
        return;
    }
    let started = SystemTime::now();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("registry");
    let model = common::real_model("digits-mlp-v1.onnx");
    let plaintext = std::fs::read(&model).unwrap();
    let (key, recipient) = keygen(dir.path(), "key.txt");
    let (other_key, other) = keygen(dir.path(), "other.txt");
    let recipients = dir.path().join("recipients.txt");
    std::fs::write(&recipients, format!("# the serving team\n{other}\n")).unwrap();

    let registry = |args: &[&str]| {
        let out = Command::new(TRACTOR)
            .args(["registry", "--store", path(&store)])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let pushed = registry(&[
        "push",
        path(&model),
        "--name",
        "digits",
        "--version",
        "1",
        "--encrypt-to",
        &recipient,
        "--encrypt-to",
        path(&recipients),
    ]);
    assert!(pushed.contains("age-encrypted to 2 recipients"), "{pushed}");
    let manifest: tractor::registry::VersionManifest =
        serde_json::from_str(&registry(&["show", "digits@1", "--json"])).unwrap();
    assert_eq!(manifest.digest, tractor::store::sha256_hex(&plaintext));
    assert_ne!(manifest.stored.sha256, manifest.digest);
    assert_eq!(manifest.stored.encryption.as_ref().unwrap().recipients, [recipient.clone(), other]);
    assert_eq!(manifest.inputs[0].name, "input", "the signature is read before encrypting");

    let pulled = dir.path().join("pulled.onnx.age");
    registry(&["pull", "digits@1", "-o", path(&pulled)]);
    for identity in [&key, &other_key] {
        let opened = dir.path().join("opened.onnx");
        run("age", &["-d", "-i", path(identity), "-o", path(&opened), path(&pulled)]);
        assert_eq!(std::fs::read(&opened).unwrap(), plaintext);
        std::fs::remove_file(&opened).unwrap();
    }

    // serve fetches the blob the ModelVersion names, checks its digest, decrypts.
    let blob = store.join("blobs/sha256").join(&manifest.stored.sha256);
    let mut server = ServeProcess::start(&[
        "--model",
        path(&blob),
        "--name",
        "digits",
        "--sha256",
        &manifest.stored.sha256,
        "--decryption-identity",
        path(&key),
    ]);
    server.wait_ready();
    assert!(server.log().contains(&manifest.digest), "the log names the plaintext digest");
    drop(server);

    assert!(copies_of(dir.path(), &plaintext, started).is_empty(), "a decrypted copy was written");
}
