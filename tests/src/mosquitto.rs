//! A real Mosquitto broker for a test: its own directory, a free loopback port, anonymous
//! access off, and a password file made by `mosquitto_passwd` (both installed by
//! `deploy/install-deps.sh`). Killed when dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::eventually;
use crate::firmware::free_port;

pub struct Mosquitto {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mosquitto {
    /// Starts a broker that admits exactly `users` (name, password).
    pub async fn start(users: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_with(users, None).await
    }

    /// The same, listening with TLS only: `tls` is the server's certificate chain and key (PEM).
    pub async fn start_tls(users: &[(&str, &str)], cert: &str, key: &str) -> anyhow::Result<Self> {
        Self::start_with(users, Some((cert, key))).await
    }

    async fn start_with(users: &[(&str, &str)], tls: Option<(&str, &str)>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let tls = match tls {
            Some((cert, key)) => {
                std::fs::write(dir.path().join("server.pem"), cert)?;
                std::fs::write(dir.path().join("server.key"), key)?;
                format!(
                    "certfile {0}/server.pem\nkeyfile {0}/server.key\n",
                    dir.path().display()
                )
            }
            None => String::new(),
        };
        let passwords = dir.path().join("passwd");
        for (i, (user, password)) in users.iter().enumerate() {
            let mut cmd = Command::new("mosquitto_passwd");
            if i == 0 {
                cmd.arg("-c");
            }
            let status = cmd
                .arg("-b")
                .arg(&passwords)
                .arg(user)
                .arg(password)
                .stdout(Stdio::null())
                .status()
                .context("mosquitto_passwd (deploy/install-deps.sh installs it)")?;
            if !status.success() {
                bail!("mosquitto_passwd failed: {status}");
            }
        }
        let port = free_port();
        let config = dir.path().join("mosquitto.conf");
        // `user root`: started as root, Mosquitto would otherwise switch to the `mosquitto`
        // user, which cannot read this test's files.
        let user = if nix::unistd::geteuid().is_root() {
            "user root\n"
        } else {
            ""
        };
        std::fs::write(
            &config,
            format!(
                "{user}listener {port} 127.0.0.1\n{tls}allow_anonymous false\npassword_file {}\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n",
                passwords.display()
            ),
        )?;
        let child = Command::new(crate::bench::mosquitto_binary()?)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start mosquitto (deploy/install-deps.sh installs it)")?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut broker = Self {
            child,
            addr,
            _dir: dir,
        };
        let up = eventually(Duration::from_secs(15), || async {
            tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
        })
        .await;
        if up.is_none() {
            let _ = broker.child.kill();
            bail!("mosquitto did not listen on {addr}");
        }
        Ok(broker)
    }
}

/// Per topic: the newest payload, whether it came retained, and how many messages came.
type Seen = HashMap<String, (Vec<u8>, bool, usize)>;

/// A subscriber that keeps the newest payload (and retain flag) of every topic it sees.
pub struct Watcher {
    pub client: AsyncClient,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watcher {
    /// Connects as `user` and subscribes to `filters` (QoS 1).
    pub async fn connect(
        addr: SocketAddr,
        user: &str,
        password: &str,
        filters: &[&str],
    ) -> anyhow::Result<Self> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut options = MqttOptions::new(
            format!("watcher-{}-{n}", std::process::id()),
            addr.ip().to_string(),
            addr.port(),
        );
        options.set_credentials(user, password);
        options.set_max_packet_size(1024 * 1024, 1024 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        for filter in filters {
            client.subscribe(*filter, QoS::AtLeastOnce).await?;
        }
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let store = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(mut seen) = store.lock() {
                            let entry = seen.entry(p.topic.clone()).or_default();
                            *entry = (p.payload.to_vec(), p.retain, entry.2 + 1);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Ok(Self { client, seen, task })
    }

    /// Every topic seen with its newest payload (as text) and whether it came retained.
    pub fn all(&self) -> HashMap<String, (String, bool)> {
        self.seen
            .lock()
            .map(|seen| {
                seen.iter()
                    .map(|(t, (p, r, _))| {
                        (t.clone(), (String::from_utf8_lossy(p).into_owned(), *r))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The newest payload of `topic`, as text.
    pub fn get(&self, topic: &str) -> Option<String> {
        self.all().remove(topic).map(|(p, _)| p)
    }

    /// How many messages came on `topic`.
    pub fn count(&self, topic: &str) -> usize {
        self.seen
            .lock()
            .ok()
            .and_then(|seen| seen.get(topic).map(|e| e.2))
            .unwrap_or(0)
    }

    /// Waits until more than `than` messages came on `topic`.
    pub async fn wait_more(&self, topic: &str, than: usize) -> bool {
        eventually(Duration::from_secs(30), || async {
            (self.count(topic) > than).then_some(())
        })
        .await
        .is_some()
    }

    /// Waits until `topic`'s newest payload is `payload`.
    pub async fn wait_for(&self, topic: &str, payload: &str) -> bool {
        eventually(Duration::from_secs(30), || async {
            (self.get(topic).as_deref() == Some(payload)).then_some(())
        })
        .await
        .is_some()
    }
}
