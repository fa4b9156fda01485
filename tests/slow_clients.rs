//! Slow clients against the real binaries, `tractor serve` and `tractor
//! route` (issue 11): a half-sent head is closed after the header-read
//! timeout, a slow body is cut with 408, an idle kept-alive connection is
//! closed after the idle timeout, a connection over the cap is answered
//! 503, and SIGTERM exits within the drain timeout while a half-open
//! connection remains.

mod common;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::server::{ServeProcess, free_ports, http_status};

/// Longest any step here waits for the server: far above the timeouts the
/// tests set (300-500 ms), far below the defaults they replace.
const PATIENCE: Duration = Duration::from_secs(10);

const MODEL: &str = "tests/models/digits-mlp-v2.onnx";

/// A running `tractor route` in front of a backend that refuses connections
/// (none of these tests needs an answer from a model), killed when dropped.
struct RouteProcess {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl RouteProcess {
    fn start(args: &[&str]) -> RouteProcess {
        let ports = free_ports(3);
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tractor"))
            .args(["route", "--listen", &format!("127.0.0.1:{}", ports[0])])
            .args(["--admin-listen", &format!("127.0.0.1:{}", ports[1])])
            .args(["--backend", &format!("1=http://127.0.0.1:{}@100", ports[2])])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log.path()).unwrap())
            .spawn()
            .expect("spawn tractor route");
        let mut route = RouteProcess { child, port: ports[0], log };
        let started = Instant::now();
        while http_status(ports[1], "/healthz") != Some(200) {
            if let Some(status) = route.child.try_wait().unwrap() {
                panic!("router exited with {status}: {}", route.log());
            }
            assert!(started.elapsed() < PATIENCE * 3, "router not up: {}", route.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        route
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn sigterm(&self) {
        let status =
            Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "router still running after {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RouteProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(args: &[&str]) -> ServeProcess {
    let mut all = vec!["--model", MODEL, "--name", "digits"];
    all.extend_from_slice(args);
    let mut server = ServeProcess::start(&all);
    server.wait_ready();
    server
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Reads until the server closes; panics if it keeps the connection open
/// for all of [`PATIENCE`]. A reset counts as closed.
fn read_until_closed(stream: &mut TcpStream) -> String {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "connection still open after {:?}; read so far: {}",
                    started.elapsed(),
                    String::from_utf8_lossy(&out)
                )
            }
            Err(e) => panic!("reading: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn half_sent_head_is_closed(port: u16) {
    let mut stream = connect(port);
    stream.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n").unwrap();
    let answer = read_until_closed(&mut stream);
    assert!(answer.is_empty(), "a half-sent head gets no answer: {answer}");
    // The server itself is fine.
    assert!(http_status(port, "/v2/health/live").is_some());
}

#[test]
fn half_sent_heads_are_closed_after_the_header_read_timeout() {
    let args = ["--header-read-timeout-ms", "300"];
    half_sent_head_is_closed(serve(&args).port);
    half_sent_head_is_closed(RouteProcess::start(&args).port);
}

fn slow_body_is_cut(port: u16, path: &str) {
    let mut stream = connect(port);
    write!(stream, "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{{").unwrap();
    let answer = read_until_closed(&mut stream);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--body-read-timeout-ms"), "{answer}");
}

#[test]
fn slow_bodies_are_cut_with_408() {
    let args = ["--body-read-timeout-ms", "300"];
    slow_body_is_cut(serve(&args).port, "/v2/models/digits/infer");
    slow_body_is_cut(RouteProcess::start(&args).port, "/v2/models/digits/infer");
}

fn idle_connection_is_closed(port: u16) {
    let mut stream = connect(port);
    stream.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let answer = read_until_closed(&mut stream);
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "one answer, then closed: {answer}");
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    // The head timeout is a minute: only the idle timeout can close these.
    let args = ["--idle-timeout-ms", "300", "--header-read-timeout-ms", "60000"];
    idle_connection_is_closed(serve(&args).port);
    idle_connection_is_closed(RouteProcess::start(&args).port);
}

#[test]
fn a_connection_over_the_cap_is_answered_503() {
    let server = serve(&["--max-connections", "1"]);
    let _held = connect(server.port);
    // Let the server accept the held connection before the next one.
    let started = Instant::now();
    loop {
        let mut stream = connect(server.port);
        stream
            .write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let answer = read_until_closed(&mut stream);
        if answer.starts_with("HTTP/1.1 503") {
            assert!(answer.contains("too many open connections"), "{answer}");
            break;
        }
        assert!(started.elapsed() < PATIENCE, "never refused: {answer}");
    }
}

#[test]
fn sigterm_exits_within_the_drain_timeout_with_a_half_open_connection() {
    // No timeout of the connection itself would end it within the test.
    let args = ["--header-read-timeout-ms", "120000", "--drain-timeout-ms", "500"];

    let server = serve(&args);
    let mut half_open = connect(server.port);
    half_open.write_all(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n").unwrap();
    let _idle = connect(server.port);
    // The server has accepted it once it answers on another connection.
    assert_eq!(http_status(server.port, "/v2/health/live"), Some(200));
    server.sigterm();
    let (status, log) = server.wait_exit(PATIENCE);
    assert!(status.success(), "{status}: {log}");

    let mut route = RouteProcess::start(&args);
    let mut half_open = connect(route.port);
    half_open.write_all(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n").unwrap();
    let _ = http_status(route.port, "/v2/health/live");
    route.sigterm();
    let status = route.wait_exit(PATIENCE);
    assert!(status.success(), "{status}: {}", route.log());
}
