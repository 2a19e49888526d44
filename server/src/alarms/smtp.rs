//! E-mail through `lettre` (RFC 5321/5322: STARTTLS or implicit TLS with rustls, AUTH PLAIN or
//! LOGIN, 8BITMIME and SMTPUTF8 checks, header encoding and folding, body transfer encoding),
//! one message to one recipient per session. Replies 4xx and connection failures are transient
//! (retried by the outbox); 5xx replies, and a server that lacks what the settings demand
//! (STARTTLS, a common AUTH mechanism), are permanent. Credentials are never sent over a
//! connection that is not encrypted.

use std::str::FromStr;
use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

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
    /// Of one whole session (and of each command within it).
    pub timeout: Duration,
    /// Extra trusted CA certificates (PEM) beside the system's roots.
    pub ca_pem: Option<Vec<u8>>,
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

/// The configured SMTP server; built once at start, so bad TLS settings are reported then.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: String,
    server: String,
    timeout: Duration,
}

impl Mailer {
    pub fn new(settings: &SmtpSettings) -> Result<Self, String> {
        let tls = match settings.tls {
            TlsMode::None => Tls::None,
            mode => {
                let mut params = TlsParameters::builder(settings.host.clone());
                if let Some(pem) = &settings.ca_pem {
                    params = params.add_root_certificate(
                        Certificate::from_pem(pem)
                            .map_err(|e| format!("alarms.tls_ca_file: {e}"))?,
                    );
                }
                let params = params
                    .build_rustls()
                    .map_err(|e| format!("SMTP TLS settings: {e}"))?;
                if mode == TlsMode::Implicit {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(settings.port)
            .tls(tls)
            .hello_name(ClientId::Domain(ehlo_name(&settings.from).to_owned()))
            .timeout(Some(settings.timeout));
        if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
            if settings.tls == TlsMode::None {
                return Err(
                    "refusing to send SMTP credentials without TLS; set alarms.smtp_tls".into(),
                );
            }
            builder = builder
                .credentials(Credentials::new(user.clone(), password.expose().to_owned()))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        Ok(Self {
            transport: builder.build(),
            from: settings.from.clone(),
            server: format!("{}:{}", settings.host, settings.port),
            timeout: settings.timeout,
        })
    }

    /// Sends one message; resolves when the server accepted it (250 after the data).
    pub async fn send(&self, mail: &Mail<'_>) -> Result<(), SmtpError> {
        let message = message(&self.from, mail)?;
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                let text = format!(
                    "SMTP {}: {}",
                    self.server,
                    crate::infra::http::error_chain(&e)
                );
                // 5xx, or the server lacks what is required (STARTTLS, an AUTH mechanism,
                // 8BITMIME): retrying changes nothing.
                if e.is_permanent() || e.is_client() {
                    Err(SmtpError::Permanent(text))
                } else {
                    Err(SmtpError::Transient(text))
                }
            }
            Err(_) => Err(SmtpError::Transient(format!(
                "SMTP session with {} timed out",
                self.server
            ))),
        }
    }
}

/// EHLO names the domain of the sender address (Headend rarely knows its own public name).
fn ehlo_name(from: &str) -> &str {
    from.rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('>'))
        .filter(|d| {
            !d.is_empty()
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        })
        .unwrap_or("localhost")
}

/// The message: headers encoded and folded by lettre, control characters in the subject
/// replaced (no header injection whatever the rule's name), the body transfer-encoded as
/// its content needs, the `Message-ID` given (stable across retries).
pub fn message(from: &str, mail: &Mail<'_>) -> Result<Message, SmtpError> {
    let from = Mailbox::from_str(from)
        .map_err(|e| SmtpError::Permanent(format!("alarms.smtp_from {from:?}: {e}")))?;
    let to = Mailbox::from_str(mail.to)
        .map_err(|e| SmtpError::Permanent(format!("recipient {:?}: {e}", mail.to)))?;
    let subject: String = mail
        .subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let message_id: String = mail
        .message_id
        .chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>'))
        .collect();
    Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .message_id(Some(format!("<{message_id}>")))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".to_owned(),
        ))
        .singlepart(SinglePart::plain(mail.text.to_owned()))
        .map_err(|e| SmtpError::Permanent(format!("building the message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formatted(from: &str, mail: &Mail<'_>) -> String {
        String::from_utf8(message(from, mail).unwrap().formatted()).unwrap()
    }

    #[test]
    fn headers_cannot_be_injected_and_the_message_id_is_the_given_one() {
        let m = formatted(
            "headend@example.com",
            &Mail {
                to: "ops@example.com",
                subject: "Hi\r\nBcc: evil@example.com",
                text: "line one\n.hidden\r\nlast",
                message_id: "k1@headend",
            },
        );
        assert!(!m.contains("\r\nBcc:"), "{m}");
        assert!(m.contains("Message-ID: <k1@headend>\r\n"), "{m}");
        assert!(m.contains("Auto-Submitted: auto-generated\r\n"), "{m}");
        assert!(m.contains("MIME-Version: 1.0\r\n"), "{m}");
        assert!(m.contains("line one\r\n.hidden\r\nlast"), "{m}");
    }

    #[test]
    fn non_ascii_subjects_and_bodies_are_encoded_and_long_subjects_folded() {
        let subject = format!("Napetost 253 V – alarm {}", "dolg ".repeat(30));
        let m = formatted(
            "a@b.c",
            &Mail {
                to: "d@e.f",
                subject: &subject,
                text: "Števec na lokaciji Čakovec – 253 V",
                message_id: "x@headend",
            },
        );
        assert!(m.is_ascii(), "{m}");
        assert!(
            m.contains("Subject: Napetost 253 V =?utf-8?b?4oCT?= alarm"),
            "{m}"
        );
        let head = m.split("\r\n\r\n").next().unwrap();
        assert!(head.lines().all(|l| l.len() <= 78), "folded: {m}");
        assert!(head.contains("\r\n dolg"), "folded: {m}");
        assert!(
            m.contains("Content-Transfer-Encoding: quoted-printable")
                || m.contains("Content-Transfer-Encoding: base64"),
            "{m}"
        );
    }

    #[test]
    fn bad_addresses_fail_for_good() {
        let mail = Mail {
            to: "not an address",
            subject: "s",
            text: "t",
            message_id: "x@headend",
        };
        assert!(matches!(
            message("a@b.c", &mail),
            Err(SmtpError::Permanent(_))
        ));
    }

    #[test]
    fn ehlo_names_the_sender_domain() {
        assert_eq!(ehlo_name("headend@example.com"), "example.com");
        assert_eq!(ehlo_name("Headend <headend@example.com>"), "example.com");
        assert_eq!(ehlo_name("headend"), "localhost");
        assert_eq!(ehlo_name("a@b c"), "localhost");
    }
}
