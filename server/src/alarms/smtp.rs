//! A small SMTP client (RFC 5321): EHLO, STARTTLS or implicit TLS, AUTH PLAIN, one message to
//! one recipient per session. Replies 4xx are transient (retried by the outbox), 5xx permanent.
//! Credentials are never sent over a connection that is not encrypted.

use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::net::{self, Io};
use crate::config::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain connection upgraded with STARTTLS (port 587); refused if the server cannot.
    StartTls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No encryption: only for a relay on the same host or a test sink.
    None,
}

impl TlsMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "starttls" => Some(Self::StartTls),
            "tls" => Some(Self::Implicit),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub from: String,
    pub timeout: Duration,
    pub connector: TlsConnector,
}

pub struct Mail<'a> {
    pub to: &'a str,
    pub subject: &'a str,
    pub text: &'a str,
    /// Stable across retries, so a receiver can drop a duplicate.
    pub message_id: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
}

impl SmtpError {
    fn io(what: &str, e: impl std::fmt::Display) -> Self {
        Self::Transient(format!("{what}: {e}"))
    }
}

struct Conn<S> {
    io: BufReader<S>,
}

/// Longest reply line and reply accepted from the server.
const MAX_LINE: usize = 4096;
const MAX_LINES: usize = 100;

impl<S: Io> Conn<S> {
    async fn reply(&mut self) -> Result<(u16, String), SmtpError> {
        let mut text = String::new();
        for _ in 0..MAX_LINES {
            let mut line = Vec::new();
            let n = (&mut self.io)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)
                .await
                .map_err(|e| SmtpError::io("reading the SMTP reply", e))?;
            if n == 0 {
                return Err(SmtpError::Transient(
                    "the SMTP server closed the connection".into(),
                ));
            }
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end();
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| SmtpError::Transient(format!("bad SMTP reply {line:?}")))?;
            text.push_str(line.get(4..).unwrap_or(""));
            text.push('\n');
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text));
            }
        }
        Err(SmtpError::Transient("SMTP reply too long".into()))
    }

    async fn send(&mut self, line: &str) -> Result<(), SmtpError> {
        let io = self.io.get_mut();
        io.write_all(line.as_bytes())
            .await
            .map_err(|e| SmtpError::io("writing to the SMTP server", e))?;
        io.write_all(b"\r\n")
            .await
            .map_err(|e| SmtpError::io("writing to the SMTP server", e))?;
        io.flush()
            .await
            .map_err(|e| SmtpError::io("writing to the SMTP server", e))
    }

    /// Sends a command and expects a reply in `ok`.
    async fn command(&mut self, line: &str, ok: &[u16], what: &str) -> Result<String, SmtpError> {
        self.send(line).await?;
        self.expect(ok, what).await
    }

    async fn expect(&mut self, ok: &[u16], what: &str) -> Result<String, SmtpError> {
        let (code, text) = self.reply().await?;
        if ok.contains(&code) {
            Ok(text)
        } else {
            let message = format!("{what}: {code} {}", text.trim());
            Err(if (500..600).contains(&code) {
                SmtpError::Permanent(message)
            } else {
                SmtpError::Transient(message)
            })
        }
    }
}

/// Sends one message; resolves when the server accepted it (250 after the data).
pub async fn send(settings: &SmtpSettings, mail: &Mail<'_>) -> Result<(), SmtpError> {
    match tokio::time::timeout(settings.timeout, send_inner(settings, mail)).await {
        Ok(result) => result,
        Err(_) => Err(SmtpError::Transient(format!(
            "SMTP session with {}:{} timed out",
            settings.host, settings.port
        ))),
    }
}

async fn send_inner(settings: &SmtpSettings, mail: &Mail<'_>) -> Result<(), SmtpError> {
    let tcp = TcpStream::connect((settings.host.as_str(), settings.port))
        .await
        .map_err(|e| {
            SmtpError::io(
                &format!("connecting to {}:{}", settings.host, settings.port),
                e,
            )
        })?;
    let name = net::server_name(&settings.host).map_err(SmtpError::Permanent)?;
    match settings.tls {
        TlsMode::Implicit => {
            let tls = settings
                .connector
                .connect(name, tcp)
                .await
                .map_err(|e| SmtpError::io("TLS with the SMTP server", e))?;
            let mut conn = Conn {
                io: BufReader::new(tls),
            };
            conn.expect(&[220], "greeting").await?;
            let ext = ehlo(&mut conn, &settings.from).await?;
            transact(&mut conn, settings, mail, &ext, true).await
        }
        TlsMode::StartTls => {
            let mut conn = Conn {
                io: BufReader::new(tcp),
            };
            conn.expect(&[220], "greeting").await?;
            let ext = ehlo(&mut conn, &settings.from).await?;
            if !ext.lines().any(|l| l.eq_ignore_ascii_case("STARTTLS")) {
                return Err(SmtpError::Permanent(
                    "the SMTP server does not offer STARTTLS (alarms.smtp_tls = \"starttls\")"
                        .into(),
                ));
            }
            conn.command("STARTTLS", &[220], "STARTTLS").await?;
            // Anything the server sent before the handshake would be an injection attempt.
            if !conn.io.buffer().is_empty() {
                return Err(SmtpError::Transient(
                    "SMTP server sent data before the TLS handshake".into(),
                ));
            }
            let tls = settings
                .connector
                .connect(name, conn.io.into_inner())
                .await
                .map_err(|e| SmtpError::io("TLS with the SMTP server", e))?;
            let mut conn = Conn {
                io: BufReader::new(tls),
            };
            let ext = ehlo(&mut conn, &settings.from).await?;
            transact(&mut conn, settings, mail, &ext, true).await
        }
        TlsMode::None => {
            let mut conn = Conn {
                io: BufReader::new(tcp),
            };
            conn.expect(&[220], "greeting").await?;
            let ext = ehlo(&mut conn, &settings.from).await?;
            transact(&mut conn, settings, mail, &ext, false).await
        }
    }
}

/// EHLO names the domain of the sender address (Headend rarely knows its own public name).
async fn ehlo<S: Io>(conn: &mut Conn<S>, from: &str) -> Result<String, SmtpError> {
    let host = from
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| {
            !d.is_empty()
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        })
        .unwrap_or("localhost");
    conn.command(&format!("EHLO {host}"), &[250], "EHLO").await
}

async fn transact<S: Io>(
    conn: &mut Conn<S>,
    settings: &SmtpSettings,
    mail: &Mail<'_>,
    extensions: &str,
    encrypted: bool,
) -> Result<(), SmtpError> {
    if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
        if !encrypted {
            return Err(SmtpError::Permanent(
                "refusing to send SMTP credentials without TLS; set alarms.smtp_tls".into(),
            ));
        }
        let offers_plain = extensions.lines().any(|l| {
            let l = l.to_ascii_uppercase();
            l.starts_with("AUTH") && l.split([' ', '=']).any(|m| m == "PLAIN")
        });
        if !offers_plain {
            return Err(SmtpError::Permanent(
                "the SMTP server does not offer AUTH PLAIN".into(),
            ));
        }
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("\0{user}\0{}", password.expose()));
        conn.command(&format!("AUTH PLAIN {token}"), &[235], "authentication")
            .await?;
    }
    conn.command(
        &format!("MAIL FROM:<{}>", settings.from),
        &[250],
        "MAIL FROM",
    )
    .await?;
    conn.command(&format!("RCPT TO:<{}>", mail.to), &[250, 251], "RCPT TO")
        .await?;
    conn.command("DATA", &[354], "DATA").await?;
    let message = format_message(&settings.from, mail);
    let io = conn.io.get_mut();
    io.write_all(message.as_bytes())
        .await
        .map_err(|e| SmtpError::io("sending the message", e))?;
    io.write_all(b".\r\n")
        .await
        .map_err(|e| SmtpError::io("sending the message", e))?;
    io.flush()
        .await
        .map_err(|e| SmtpError::io("sending the message", e))?;
    conn.expect(&[250], "message").await?;
    // The message is accepted; a failed QUIT changes nothing.
    let _ = conn.command("QUIT", &[221], "QUIT").await;
    Ok(())
}

/// Header values never carry a line break (no header injection), long text is folded by
/// nothing here: subjects are short; the body is dot-stuffed with CRLF line ends.
pub fn format_message(from: &str, mail: &Mail<'_>) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    let subject = clean(mail.subject);
    let subject = if subject.is_ascii() {
        subject
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(subject.as_bytes())
        )
    };
    let mut out = format!(
        "From: <{}>\r\nTo: <{}>\r\nSubject: {subject}\r\nDate: {}\r\nMessage-ID: <{}>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\nAuto-Submitted: auto-generated\r\n\r\n",
        clean(from),
        clean(mail.to),
        Utc::now().to_rfc2822(),
        clean(mail.message_id),
    );
    for line in mail.text.replace("\r\n", "\n").split('\n') {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_dot_stuffed_and_headers_cannot_be_injected() {
        let m = format_message(
            "headend@example.com",
            &Mail {
                to: "ops@example.com",
                subject: "Hi\r\nBcc: evil@example.com",
                text: "line one\n.hidden\r\nlast",
                message_id: "k1@headend",
            },
        );
        assert!(m.contains("Subject: Hi  Bcc: evil@example.com\r\n"));
        assert!(!m.contains("\r\nBcc:"));
        assert!(m.ends_with("line one\r\n..hidden\r\nlast\r\n"));
        assert!(m.contains("Message-ID: <k1@headend>\r\n"));
        let m = format_message(
            "a@b.c",
            &Mail {
                to: "d@e.f",
                subject: "Napetost 253 V – alarm",
                text: "",
                message_id: "x",
            },
        );
        assert!(m.contains("Subject: =?UTF-8?B?"));
    }
}
