//! A `tractor serve` child process on a loopback port, for the tests that
//! need the real binary (start-up refusals, signals, other clients).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `tractor serve`, killed when dropped (also when a test panics).
/// Its stderr goes to a file, so a chatty server never blocks on a full pipe
/// and a failure can print what it said.
pub struct ServeProcess {
    pub child: Child,
    pub port: u16,
    log: tempfile::NamedTempFile,
}

impl ServeProcess {
    /// `tractor serve --host 127.0.0.1 --http-port PORT ARGS...`, run from
    /// the repository root as the README's commands are.
    pub fn start(args: &[&str]) -> ServeProcess {
        ServeProcess::start_on(free_port(), args)
    }

    pub fn start_on(port: u16, args: &[&str]) -> ServeProcess {
        ServeProcess::start_with_env(port, args, &[])
    }

    /// As [`ServeProcess::start_on`], with these environment variables too.
    pub fn start_with_env(port: u16, args: &[&str], env: &[(&str, &str)]) -> ServeProcess {
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let stderr = File::create(log.path()).expect("open the log file");
        let child = Command::new(env!("CARGO_BIN_EXE_tractor"))
            .current_dir(super::repo_path(""))
            .envs(env.iter().copied())
            .args(["serve", "--host", "127.0.0.1", "--http-port", &port.to_string()])
            // Off unless the test asks: many servers run at once, and the
            // default gRPC port is one port for all of them.
            .args(if args.contains(&"--grpc-port") { &[][..] } else { &["--grpc-port", "0"][..] })
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn tractor serve");
        ServeProcess { child, port, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Polls `GET /v2/health/ready` until it answers 200; panics with the
    /// server's log if it exits or takes longer than a minute.
    pub fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the server process") {
                panic!("server exited with {status} before it was ready; its log:\n{}", self.log());
            }
            if http_status(self.port, "/v2/health/ready") == Some(200) {
                return;
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "server on port {} not ready after {READY_TIMEOUT:?}; its log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Panics with the log if the server has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("poll the server process") {
            panic!("server exited with {status}; its log:\n{}", self.log());
        }
    }

    /// Waits for the process to exit; its status and log.
    pub fn wait_exit(mut self, within: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the server process") {
                return (status, self.log());
            }
            assert!(Instant::now() < deadline, "server still running after {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sigterm(&self) {
        let status =
            Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `tractor route ARGS...` with its admin port on a free port,
/// ready once `/healthz` answers there; killed when dropped. `RUST_LOG` is
/// not inherited, so a developer's setting does not change what a test sees.
pub struct RouteProcess {
    pub child: Child,
    pub admin: u16,
    log: tempfile::NamedTempFile,
}

impl RouteProcess {
    pub fn start(args: &[String]) -> RouteProcess {
        RouteProcess::start_with_env(args, &[])
    }

    /// As [`RouteProcess::start`], with these environment variables too.
    pub fn start_with_env(args: &[String], env: &[(&str, &str)]) -> RouteProcess {
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let admin = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_tractor"))
            .arg("route")
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log.path()).expect("open the log file"))
            .spawn()
            .expect("spawn tractor route");
        let router = RouteProcess { child, admin, log };
        let started = Instant::now();
        while http_get(admin, "/healthz").is_none() {
            assert!(started.elapsed() < Duration::from_secs(30), "router: {}", router.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        router
    }

    /// What the router wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for RouteProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// Distinct free ports: all listeners are held until every port is picked.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port"))
        .collect();
    listeners.iter().map(|l| l.local_addr().expect("local address").port()).collect()
}

/// A plain HTTP/1.1 GET: the whole answer, or None when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The status code of a plain GET ("HTTP/1.1 200 OK": the second word).
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    http_get(port, path)?.split_whitespace().nth(1)?.parse().ok()
}
