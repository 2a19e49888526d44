//! The companion firmware as a test peer: a real `sg-gateway` process with simulated meters.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{eventually, headend_binary, http_request, HttpResponse};

const WAIT: Duration = Duration::from_secs(30);

/// A running `sg-gateway` process, killed when dropped.
pub struct SgGateway {
    child: Child,
    /// The gateway's local REST API.
    pub rest: SocketAddr,
    _state: tempfile::TempDir,
}

impl Drop for SgGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn sg_gateway_binary() -> PathBuf {
    let binary = headend_binary().with_file_name("sg-gateway");
    assert!(
        binary.exists(),
        "{} missing: `cargo build --workspace --bins` builds it",
        binary.display()
    );
    binary
}

impl SgGateway {
    /// Runs a prepared `sg-gateway` command (e.g. `fleet`) that keeps its state in `state`;
    /// it has no REST API this harness knows of.
    pub fn spawn(mut command: Command, state: tempfile::TempDir) -> Self {
        let child = command
            .arg("--state-dir")
            .arg(state.path())
            .env("RUST_LOG", "warn")
            .env("TZ", "UTC")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sg-gateway");
        Self {
            child,
            rest: ([127, 0, 0, 1], 0).into(),
            _state: state,
        }
    }

    /// Stops the process now (it is also killed when dropped).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `sg-gateway <args> --rest-addr … --state-dir …`, simulated meters, pushing from the
    /// start (every second unless `args` say otherwise).
    pub fn start(args: &[&str]) -> Self {
        let rest: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let state = tempfile::tempdir().unwrap();
        let mut command = Command::new(sg_gateway_binary());
        command
            .args(args)
            .args(["--simulate", "--first-push-delay", "0"]);
        if !args.contains(&"--push-interval") {
            command.args(["--push-interval", "1"]);
        }
        let child = command
            .args(["--rest-addr", &rest.to_string()])
            .arg("--state-dir")
            .arg(state.path())
            .env("RUST_LOG", "warn")
            .env("TZ", "UTC")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sg-gateway");
        Self {
            child,
            rest,
            _state: state,
        }
    }

    /// One gateway with receipts on, talking to `broker` (plain MQTT).
    pub fn simulated(serial: &str, password: &str, broker: SocketAddr, extra: &[&str]) -> Self {
        let broker = broker.to_string();
        let mut args = vec![
            "--serial",
            serial,
            "--password",
            password,
            "--broker",
            &broker,
            "--receipts",
        ];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    /// `POST /faults` with `fault` as the body, once the REST API is up.
    pub async fn post_fault(&self, fault: Value) -> HttpResponse {
        let rest = self.rest;
        eventually(WAIT, || {
            let fault = fault.clone();
            async move {
                http_request(rest, "POST", "/faults", None, Some(fault))
                    .await
                    .ok()
            }
        })
        .await
        .expect("the gateway's REST API answers")
    }

    /// `POST /faults`, expecting 202.
    pub async fn inject(&self, fault: Value) {
        let response = self.post_fault(fault.clone()).await;
        assert_eq!(response.status, 202, "{fault}: {}", response.body);
        assert_eq!(response.json()["injected"], fault);
    }

    /// Queue counters of link 1 from `GET /stats`: (queued, dropped).
    pub async fn queue(&self) -> Option<(u64, u64)> {
        let stats = http_request(self.rest, "GET", "/stats", None, None)
            .await
            .ok()?;
        let v = stats.json();
        Some((v["queued"][0].as_u64()?, v["dropped"][0].as_u64()?))
    }
}
