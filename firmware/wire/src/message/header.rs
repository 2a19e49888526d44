//! Bounding the text a device sends about itself.
//!
//! Serial numbers identify devices, so a bad one rejects the document. Everything else is
//! free text shown to operators: it is bounded and stripped of control characters, never
//! rejected — quotes, `<script>` or SQL in a description are harmless data here, and
//! escaping them for storage or HTML is the server's job.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::{BicomBody, Header};
use crate::text::is_unwanted;

/// Longest accepted serial number, in characters (see [`validate_serial`]).
pub const MAX_SERIAL_LEN: usize = 32;
/// Longest kept model name, in characters.
pub const MAX_MODEL_CHARS: usize = 64;
/// Longest kept description, location, SG description or port, in characters.
pub const MAX_TEXT_CHARS: usize = 256;

/// Why a document's device cannot be identified.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// No `serial_number` field.
    MissingSerial,
    /// An empty `serial_number`.
    EmptySerial,
    /// Longer than [`MAX_SERIAL_LEN`] bytes.
    SerialTooLong { len: usize },
    /// Holds a character outside the serial character set, or does not start with a letter
    /// or digit (see [`validate_serial`]).
    SerialCharacters,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the device cannot be identified: field `serial_number`: ")?;
        match self {
            Self::MissingSerial => f.write_str("the serial number is missing"),
            Self::EmptySerial => f.write_str("the serial number is empty"),
            Self::SerialTooLong { len } => write!(
                f,
                "the serial number is {len} bytes long (at most {MAX_SERIAL_LEN})"
            ),
            Self::SerialCharacters => f.write_str(SERIAL_RULE),
        }
    }
}

impl core::error::Error for HeaderError {}

/// The serial number rule, in words (for error messages and documentation).
pub const SERIAL_RULE: &str = "the serial number must be 1 to 32 characters of A-Z, a-z, 0-9, \
     '-', '_' or '.', starting with a letter or a digit";

/// Checks a meter (or relay) serial number against the one character set Headend accepts:
///
/// * 1 to [`MAX_SERIAL_LEN`] (32) characters;
/// * the first an ASCII letter or digit (`A-Z a-z 0-9`);
/// * the others ASCII letters, digits, `-`, `_` or `.`.
///
/// Real serials fit easily: Iskra meters print 8 digits (`18230001`, `21450077`), IR heads and
/// simulators `X0000124`, `SIM00042`, and the gateway serials Headend registers use the same
/// set (`SG000017`, `cv-1`). Serials travel into URLs (`/meters/{serial}`), HTML forms, CSV
/// exports and log lines, so the set leaves out everything that would need escaping there:
/// no spaces, quotes, `<`, `&`, `/`, `%`, `?`, `#`, control or non-ASCII characters, and no
/// leading `.` or `-` (so `.`, `..` and option-like `-x` are impossible). A document whose
/// serial breaks the rule does not identify its device and is refused as a whole.
///
/// # Errors
/// [`HeaderError::EmptySerial`], [`HeaderError::SerialTooLong`] or
/// [`HeaderError::SerialCharacters`].
pub fn validate_serial(serial: &str) -> Result<&str, HeaderError> {
    let Some(&first) = serial.as_bytes().first() else {
        return Err(HeaderError::EmptySerial);
    };
    if serial.len() > MAX_SERIAL_LEN {
        return Err(HeaderError::SerialTooLong { len: serial.len() });
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if !first.is_ascii_alphanumeric() || !serial.bytes().all(allowed) {
        return Err(HeaderError::SerialCharacters);
    }
    Ok(serial)
}

/// What sanitising changed in a text field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextIssueKind {
    /// Control or bidi-override characters were removed.
    ControlCharsRemoved,
    /// Cut to the field's limit; `chars` is the length before cutting.
    Truncated { chars: usize, limit: usize },
}

/// A change made to one header text field (for the ingest log; the document is kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TextIssue {
    /// The SG field name, e.g. `"description"`.
    pub field: &'static str,
    pub kind: TextIssueKind,
}

impl fmt::Display for TextIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TextIssueKind::ControlCharsRemoved => {
                write!(f, "{}: control characters removed", self.field)
            }
            TextIssueKind::Truncated { chars, limit } => write!(
                f,
                "{}: truncated from {chars} to {limit} characters",
                self.field
            ),
        }
    }
}

/// Sanitised free-text header fields. Empty fields become `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    pub model: Option<String>,
    pub port: Option<String>,
    pub description: Option<String>,
    pub location: Option<String>,
    pub sg_description: Option<String>,
    /// Everything that had to be changed.
    pub issues: Vec<TextIssue>,
}

impl Labels {
    fn collect(
        model: Option<&str>,
        port: Option<&str>,
        description: Option<&str>,
        location: Option<&str>,
        sg_description: Option<&str>,
    ) -> Self {
        let mut issues = Vec::new();
        let mut clean = |field, text: Option<&str>, limit| {
            text.and_then(|text| sanitize(field, text, limit, &mut issues))
        };
        Self {
            model: clean("model", model, MAX_MODEL_CHARS),
            port: clean("port", port, MAX_TEXT_CHARS),
            description: clean("description", description, MAX_TEXT_CHARS),
            location: clean("location", location, MAX_TEXT_CHARS),
            sg_description: clean("SG description", sg_description, MAX_TEXT_CHARS),
            issues,
        }
    }
}

/// A header whose device is identified and whose text is bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanHeader {
    /// Validated by [`validate_serial`].
    pub serial_number: String,
    pub labels: Labels,
}

impl Header {
    /// Validates the serial number and bounds the free text.
    ///
    /// # Errors
    /// A [`HeaderError`] when the serial number is missing or unusable.
    pub fn sanitized(&self) -> Result<CleanHeader, HeaderError> {
        let serial = self
            .serial_number
            .as_deref()
            .ok_or(HeaderError::MissingSerial)?;
        Ok(CleanHeader {
            serial_number: String::from(validate_serial(serial)?),
            labels: self.labels(),
        })
    }

    /// The free-text fields, bounded and cleaned.
    #[must_use]
    pub fn labels(&self) -> Labels {
        Labels::collect(
            self.model.as_deref(),
            self.port.as_deref(),
            self.description.as_deref(),
            self.location.as_deref(),
            self.sg_description.as_deref(),
        )
    }
}

impl BicomBody {
    /// The relay's serial number; `None` when absent or empty (the IR relay has none).
    ///
    /// # Errors
    /// A [`HeaderError`] when a non-empty serial number is unusable.
    pub fn serial(&self) -> Result<Option<&str>, HeaderError> {
        match self.serial_number.as_deref() {
            None | Some("") => Ok(None),
            Some(serial) => validate_serial(serial).map(Some),
        }
    }

    /// The free-text fields, bounded and cleaned.
    #[must_use]
    pub fn labels(&self) -> Labels {
        Labels::collect(
            self.model.as_deref(),
            self.port.as_deref(),
            self.description.as_deref(),
            self.location.as_deref(),
            self.sg_description.as_deref(),
        )
    }
}

/// Removes unwanted characters, trims, and cuts to `limit` characters (on a char boundary).
fn sanitize(
    field: &'static str,
    text: &str,
    limit: usize,
    issues: &mut Vec<TextIssue>,
) -> Option<String> {
    let mut clean: String = text.chars().filter(|&c| !is_unwanted(c)).collect();
    if clean.len() != text.len() {
        issues.push(TextIssue {
            field,
            kind: TextIssueKind::ControlCharsRemoved,
        });
    }
    let chars = clean.chars().count();
    if let Some((cut, _)) = clean.char_indices().nth(limit) {
        clean.truncate(cut);
        issues.push(TextIssue {
            field,
            kind: TextIssueKind::Truncated { chars, limit },
        });
    }
    let trimmed = clean.trim();
    if trimmed.is_empty() {
        None
    } else if trimmed.len() == clean.len() {
        Some(clean)
    } else {
        Some(String::from(trimmed))
    }
}
