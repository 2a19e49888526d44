//! A real SMTP server for tests: speaks enough RFC 5321 (EHLO/HELO, MAIL, RCPT, DATA with
//! dot-unstuffing, RSET, NOOP, QUIT) to receive what a client sends, and records every accepted
//! message. An outage: `set_available(false)` answers every connection with `421` and closes
//! it, keeping the port (so no other test's sink can take it meanwhile); `stop` closes the
//! listener. Refusals: `refuse_next_data` answers the end of the next message with a reply of
//! the test's choice (e.g. `451`) and keeps it in `refused`; `refuse_recipient` answers
//! `RCPT TO` for one address (e.g. `550`). `Received` decodes what the client encoded
//! (folded and RFC 2047 headers, quoted-printable or base64 bodies), so tests read text.

use std::collections::{HashMap, VecDeque};
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
    /// The header's value, unfolded, encoded words (RFC 2047, UTF-8) decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.split("\r\n").find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| decode_words(v.trim()))
        })
    }

    /// The body as text, its `Content-Transfer-Encoding` undone.
    pub fn body(&self) -> String {
        let raw = self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let encoding = self
            .header("Content-Transfer-Encoding")
            .unwrap_or_default()
            .to_ascii_lowercase();
        match encoding.as_str() {
            "quoted-printable" => quoted_printable(raw),
            "base64" => String::from_utf8_lossy(
                &base64(raw).unwrap_or_else(|| panic!("body is not base64: {raw}")),
            )
            .into_owned(),
            _ => raw.to_owned(),
        }
    }
}

/// `=?utf-8?b?...?=` and `=?utf-8?q?...?=` words decoded; whitespace between two encoded words
/// dropped (RFC 2047 §6.2).
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut after_word = false;
    while let Some(start) = rest.find("=?") {
        let Some(word) = encoded_word(&rest[start..]) else {
            out.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            after_word = false;
            continue;
        };
        let between = &rest[..start];
        if !(after_word && between.trim().is_empty()) {
            out.push_str(between);
        }
        out.push_str(&word.0);
        rest = &rest[start + word.1..];
        after_word = true;
    }
    out.push_str(rest);
    out
}

/// One encoded word at the start of `s`: its text and its length.
fn encoded_word(s: &str) -> Option<(String, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let (text, _) = inner.split_once("?=")?;
    if !charset.eq_ignore_ascii_case("utf-8") || text.contains(' ') {
        return None;
    }
    let bytes = match encoding {
        "b" | "B" => base64(text)?,
        "q" | "Q" => quoted_printable(&text.replace('_', " ")).into_bytes(),
        _ => return None,
    };
    let len = 2 + charset.len() + 1 + encoding.len() + 1 + text.len() + 2;
    Some((String::from_utf8_lossy(&bytes).into_owned(), len))
}

fn quoted_printable(text: &str) -> String {
    let text = text.replace("=\r\n", "");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Base64 as mail carries it: lines broken by CRLF, padding as the writer chose.
fn base64(text: &str) -> Option<Vec<u8>> {
    use ::base64::engine::{general_purpose, DecodePaddingMode, GeneralPurpose};
    use ::base64::Engine as _;
    const MAIL: GeneralPurpose = GeneralPurpose::new(
        &::base64::alphabet::STANDARD,
        general_purpose::PAD.with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let compact: String = text.split_ascii_whitespace().collect();
    MAIL.decode(compact).ok()
}

/// Replies the test chose, instead of the usual ones.
#[derive(Default)]
struct Script {
    /// For the end of the next messages, in order (the message is then kept in `refused`).
    data: VecDeque<String>,
    /// For `RCPT TO` of these addresses, every time.
    recipients: HashMap<String, String>,
    refused: Vec<Received>,
}

pub struct SmtpSink {
    pub addr: SocketAddr,
    messages: Arc<Mutex<Vec<Received>>>,
    available: Arc<AtomicBool>,
    script: Arc<Mutex<Script>>,
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
        let script: Arc<Mutex<Script>> = Arc::default();
        let task = {
            let (messages, stop, available) = (messages.clone(), stop.clone(), available.clone());
            let script = script.clone();
            tokio::spawn(async move {
                let mut sessions = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let up = available.load(Ordering::SeqCst);
                            sessions.spawn(session(stream, messages.clone(), script.clone(), up));
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
            script,
            stop,
            task,
        }
    }

    /// The end of the next message is answered with `reply` (e.g. `451 4.3.0 try later`)
    /// instead of `250`; the message is kept in [`Self::refused`]. Calls queue up.
    pub fn refuse_next_data(&self, reply: &str) {
        self.script.lock().unwrap().data.push_back(reply.to_owned());
    }

    /// `RCPT TO:<address>` is always answered with `reply` (e.g. `550 5.1.1 no such user`).
    pub fn refuse_recipient(&self, address: &str, reply: &str) {
        self.script
            .lock()
            .unwrap()
            .recipients
            .insert(address.to_owned(), reply.to_owned());
    }

    /// Messages received in full but refused by `refuse_next_data`.
    pub fn refused(&self) -> Vec<Received> {
        self.script.lock().unwrap().refused.clone()
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

async fn session(
    stream: TcpStream,
    messages: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
    up: bool,
) {
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
            let addr = cmd[cmd.len() - addr.len()..]
                .trim()
                .trim_matches(['<', '>'])
                .to_owned();
            let refusal = script.lock().unwrap().recipients.get(&addr).cloned();
            match refusal {
                Some(reply) => format!("{reply}\r\n"),
                None => {
                    to.push(addr);
                    "250 ok\r\n".into()
                }
            }
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
            let received = Received {
                from: from.clone(),
                to: std::mem::take(&mut to),
                data,
            };
            let mut script = script.lock().unwrap();
            match script.data.pop_front() {
                Some(reply) => {
                    script.refused.push(received);
                    format!("{reply}\r\n")
                }
                None => {
                    messages.lock().unwrap().push(received);
                    "250 queued\r\n".into()
                }
            }
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
