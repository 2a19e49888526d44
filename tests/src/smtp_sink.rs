//! A real SMTP server for tests: speaks enough RFC 5321 (EHLO/HELO, MAIL, RCPT, DATA with
//! dot-unstuffing, RSET, NOOP, QUIT) to receive what a client sends, and records every accepted
//! message. An outage: `set_available(false)` answers every connection with `421` and closes
//! it, keeping the port (so no other test's sink can take it meanwhile); `stop` closes the
//! listener.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body as sent, dot-unstuffed, CRLF line ends.
    pub data: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        let head = self.data.split("\r\n\r\n").next()?;
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn body(&self) -> &str {
        self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

pub struct SmtpSink {
    pub addr: SocketAddr,
    messages: Arc<Mutex<Vec<Received>>>,
    available: Arc<AtomicBool>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        Self::start_on(0, Arc::default()).await
    }

    /// On `port` (0: any), appending to `messages` (shared across a stop and a restart).
    pub async fn start_on(port: u16, messages: Arc<Mutex<Vec<Received>>>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("SMTP sink bind");
        let addr = listener.local_addr().expect("SMTP sink addr");
        let stop = CancellationToken::new();
        let available = Arc::new(AtomicBool::new(true));
        let task = {
            let (messages, stop, available) = (messages.clone(), stop.clone(), available.clone());
            tokio::spawn(async move {
                let mut sessions = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let up = available.load(Ordering::SeqCst);
                            sessions.spawn(session(stream, messages.clone(), up));
                        }
                    }
                }
                sessions.abort_all();
            })
        };
        Self {
            addr,
            messages,
            available,
            stop,
            task,
        }
    }

    /// `false`: every new connection gets `421` (service not available) and is closed.
    pub fn set_available(&self, up: bool) {
        self.available.store(up, Ordering::SeqCst);
    }

    pub fn messages(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }

    /// The shared message list, to start a sink again after `stop` with the same record.
    pub fn record(&self) -> Arc<Mutex<Vec<Received>>> {
        self.messages.clone()
    }

    /// Closes the listener and every session: an outage.
    pub async fn stop(self) -> (u16, Arc<Mutex<Vec<Received>>>) {
        self.stop.cancel();
        let _ = self.task.await;
        (self.addr.port(), self.messages)
    }
}

async fn session(stream: TcpStream, messages: Arc<Mutex<Vec<Received>>>, up: bool) {
    let (read, mut write) = stream.into_split();
    if !up {
        let _ = write
            .write_all(b"421 4.3.2 service not available, closing\r\n")
            .await;
        return;
    }
    let mut read = BufReader::new(read);
    if write.write_all(b"220 sink ESMTP test\r\n").await.is_err() {
        return;
    }
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match read.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-sink\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n".into()
        } else if upper.starts_with("HELO") || upper == "NOOP" {
            "250 ok\r\n".into()
        } else if let Some(addr) = upper.strip_prefix("MAIL FROM:") {
            from = cmd[cmd.len() - addr.len()..]
                .trim()
                .trim_matches(['<', '>'])
                .to_owned();
            to.clear();
            "250 ok\r\n".into()
        } else if let Some(addr) = upper.strip_prefix("RCPT TO:") {
            to.push(
                cmd[cmd.len() - addr.len()..]
                    .trim()
                    .trim_matches(['<', '>'])
                    .to_owned(),
            );
            "250 ok\r\n".into()
        } else if upper == "DATA" {
            if write.write_all(b"354 go ahead\r\n").await.is_err() {
                return;
            }
            let mut data = String::new();
            loop {
                line.clear();
                match read.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            messages.lock().unwrap().push(Received {
                from: from.clone(),
                to: std::mem::take(&mut to),
                data,
            });
            "250 queued\r\n".into()
        } else if upper == "RSET" {
            to.clear();
            "250 ok\r\n".into()
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else {
            "502 not implemented\r\n".into()
        };
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}
