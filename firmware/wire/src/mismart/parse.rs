//! Reading one document with quick-xml, for hostile input.
//!
//! quick-xml is a pull parser: it never expands entities or reads a DTD by itself and
//! never recurses, so the defences here are to refuse what the format does not need
//! (DOCTYPE, references in text), and to bound everything that grows with the input:
//! size, depth, elements, values, attributes, attribute and text lengths.

use alloc::borrow::Cow;
use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use quick_xml::events::{BytesDecl, BytesStart, Event};
use quick_xml::reader::Reader;
use quick_xml::XmlVersion;

use super::datetime::parse_interval;
use super::{
    DateTimeSpec, Document, Ident, Measurement, Number, NumberError, Quantity, Value,
    MAX_ATTRIBUTES, MAX_ATTRIBUTE_BYTES, MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_ELEMENTS,
    MAX_TEXT_BYTES, MAX_VALUES,
};
use crate::message::{validate_serial, HeaderError, SERIAL_RULE};
use crate::value::{excerpt, Unit};

/// A document that was read, and what in it was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedDocument {
    pub document: Document,
    /// Values and elements not in `document`, in document order, for the ingest log.
    /// Nothing else was left out.
    pub ignored: Vec<Ignored>,
}

/// Something [`parse_document`] left out of the typed document without failing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// Byte offset of the element in the document.
    pub offset: u64,
    pub kind: IgnoredKind,
}

/// What was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IgnoredKind {
    /// A `value` whose ident this crate does not know (newer firmware, other meters).
    /// Strings are quoted as sent, bounded in length.
    UnknownIdent {
        /// Index of the measurement in the document.
        measurement: usize,
        ident: String,
        unit: Option<String>,
        text: String,
    },
    /// A known ident with an empty text or `N/A`: absent, not zero and not an error.
    NotAvailable { measurement: usize, ident: Ident },
    /// An element the format does not have, skipped with everything inside it.
    UnknownElement { name: String },
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "byte {}: ", self.offset)?;
        match &self.kind {
            IgnoredKind::UnknownIdent {
                measurement,
                ident,
                unit,
                text,
            } => {
                write!(f, "measurement {measurement}: unknown ident {ident:?}")?;
                if let Some(unit) = unit {
                    write!(f, " (unit {unit:?})")?;
                }
                write!(f, " = {text:?} ignored")
            }
            IgnoredKind::NotAvailable { measurement, ident } => {
                write!(f, "measurement {measurement}: {ident} not available")
            }
            IgnoredKind::UnknownElement { name } => {
                write!(f, "unknown element `{name}` ignored with its content")
            }
        }
    }
}

/// Why a document was refused, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    /// Byte offset in the document: the start of the offending tag, or where the XML
    /// parser stopped.
    pub offset: u64,
    pub kind: XmlErrorKind,
}

/// What is wrong with a document. Element and attribute names, idents and texts are
/// quoted as sent, bounded in length.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum XmlErrorKind {
    /// Larger than [`MAX_DOCUMENT_BYTES`].
    TooLarge { len: usize },
    /// Not UTF-8 (the gateway declares and sends UTF-8).
    NotUtf8,
    /// An XML declaration naming another encoding.
    UnsupportedEncoding { encoding: String },
    /// An XML declaration that is not at the very start.
    MisplacedDeclaration,
    /// A `<!DOCTYPE`: DTDs are never processed, so entity definitions (and expansion
    /// bombs) are refused outright.
    Doctype,
    /// An entity or character reference (`&lol;`) in element content: nothing in the
    /// format needs one, and entities are never expanded.
    Reference { name: String, element: String },
    /// Not well-formed XML; quick-xml's description.
    Malformed(String),
    /// Elements nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// More than [`MAX_ELEMENTS`] elements.
    TooManyElements,
    /// More than [`MAX_VALUES`] `value` elements.
    TooManyValues,
    /// More than [`MAX_ATTRIBUTES`] attributes on one element.
    TooManyAttributes { element: String },
    /// An attribute value longer than [`MAX_ATTRIBUTE_BYTES`].
    AttributeTooLong {
        element: &'static str,
        attribute: &'static str,
    },
    /// The text of a known ident is longer than [`MAX_TEXT_BYTES`].
    TextTooLong { ident: String },
    /// No root element at all.
    NoRoot,
    /// A root element other than `data`.
    WrongRoot { name: String },
    /// A `data`, `measurement` or `value` element in the wrong place, or any element
    /// inside a `value`.
    Misplaced {
        element: String,
        parent: &'static str,
    },
    /// Text outside a `value` (only whitespace may be there).
    UnexpectedText { element: &'static str },
    /// Anything but whitespace, comments and processing instructions after the root.
    ContentAfterRoot,
    /// The document ends before the element is closed.
    Unclosed { element: &'static str },
    /// A required attribute is missing.
    MissingAttribute {
        element: &'static str,
        attribute: &'static str,
    },
    /// An attribute whose value cannot be used.
    InvalidAttribute {
        element: &'static str,
        attribute: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A value of a known ident without `unit`.
    MissingUnit { ident: Ident },
    /// A unit this crate does not know.
    UnknownUnit { ident: Ident, unit: String },
    /// A known unit that does not fit the ident (e.g. a voltage in `A`).
    WrongUnit {
        ident: Ident,
        unit: Unit,
        expected: &'static str,
    },
    /// The text of a known ident is not a usable number.
    InvalidNumber {
        ident: Ident,
        text: String,
        reason: NumberError,
    },
    /// The same ident twice in one measurement: which one is right cannot be decided.
    DuplicateIdent { ident: Ident, measurement: usize },
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MiSmart XML at byte {}: {}", self.offset, self.kind)
    }
}

impl fmt::Display for XmlErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len } => write!(
                f,
                "document of {len} bytes exceeds the {MAX_DOCUMENT_BYTES}-byte limit"
            ),
            Self::NotUtf8 => f.write_str("document is not valid UTF-8"),
            Self::UnsupportedEncoding { encoding } => {
                write!(f, "encoding {encoding:?} is not supported (only UTF-8)")
            }
            Self::MisplacedDeclaration => {
                f.write_str("an XML declaration is only allowed at the very start")
            }
            Self::Doctype => f.write_str(
                "<!DOCTYPE> is not allowed: DTDs are not processed and entities are never \
                 expanded",
            ),
            Self::Reference { name, element } => write!(
                f,
                "reference `&{name};` in `{element}` is not allowed (entities are never \
                 expanded)"
            ),
            Self::Malformed(message) => write!(f, "malformed XML: {message}"),
            Self::TooDeep => write!(f, "elements nested deeper than {MAX_DEPTH} levels"),
            Self::TooManyElements => write!(f, "more than {MAX_ELEMENTS} elements"),
            Self::TooManyValues => write!(f, "more than {MAX_VALUES} `value` elements"),
            Self::TooManyAttributes { element } => {
                write!(
                    f,
                    "element `{element}` has more than {MAX_ATTRIBUTES} attributes"
                )
            }
            Self::AttributeTooLong { element, attribute } => write!(
                f,
                "`{element}@{attribute}` is longer than {MAX_ATTRIBUTE_BYTES} bytes"
            ),
            Self::TextTooLong { ident } => write!(
                f,
                "value {ident:?}: text is longer than {MAX_TEXT_BYTES} bytes"
            ),
            Self::NoRoot => f.write_str("no `data` element (empty document)"),
            Self::WrongRoot { name } => {
                write!(f, "root element is `{name}`, expected `data`")
            }
            Self::Misplaced { element, parent } => {
                write!(f, "element `{element}` is not allowed inside `{parent}`")
            }
            Self::UnexpectedText { element } => {
                write!(
                    f,
                    "unexpected text in `{element}` (only whitespace allowed)"
                )
            }
            Self::ContentAfterRoot => f.write_str("content after the closing </data>"),
            Self::Unclosed { element } => {
                write!(f, "document ends before `{element}` is closed")
            }
            Self::MissingAttribute { element, attribute } => {
                write!(f, "`{element}` has no `{attribute}` attribute")
            }
            Self::InvalidAttribute {
                element,
                attribute,
                value,
                reason,
            } => write!(f, "`{element}@{attribute}` = {value:?}: {reason}"),
            Self::MissingUnit { ident } => write!(f, "value {ident}: no `unit` attribute"),
            Self::UnknownUnit { ident, unit } => {
                write!(f, "value {ident}: unknown unit {unit:?}")
            }
            Self::WrongUnit {
                ident,
                unit,
                expected,
            } => write!(
                f,
                "value {ident}: unit {:?} does not fit (expected {expected})",
                super::ident::unit_symbol(*unit)
            ),
            Self::InvalidNumber {
                ident,
                text,
                reason,
            } => write!(f, "value {ident} = {text:?}: {reason}"),
            Self::DuplicateIdent { ident, measurement } => {
                write!(
                    f,
                    "value {ident} appears twice in measurement {measurement}"
                )
            }
        }
    }
}

impl core::error::Error for XmlError {}

/// Reads one document (as cut by [`DocumentSplitter`](super::DocumentSplitter)).
///
/// Unknown idents, `N/A` values and unknown elements are left out and listed in
/// [`ParsedDocument::ignored`]; unknown attributes, comments and processing instructions
/// are skipped silently. Everything else that is wrong refuses the whole document with
/// an [`XmlError`] saying what and where: a malformed number or unit of a known ident, a
/// missing or invalid attribute, a negative or sub-milli energy register, a DOCTYPE, any
/// entity reference in text, too much of anything.
///
/// # Errors
/// See [`XmlErrorKind`]. Never panics, whatever the input.
pub fn parse_document(bytes: &[u8]) -> core::result::Result<ParsedDocument, XmlError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(XmlError {
            offset: 0,
            kind: XmlErrorKind::TooLarge { len: bytes.len() },
        });
    }
    // Checked up front so that every string below is UTF-8 and offsets are exact.
    let text = core::str::from_utf8(bytes).map_err(|e| XmlError {
        offset: e.valid_up_to() as u64,
        kind: XmlErrorKind::NotUtf8,
    })?;
    Parser::new(text).run()
}

/// An open element.
enum Frame {
    Data,
    Measurement,
    Value(PendingValue),
    /// Unknown, skipped with its content.
    Ignored,
}

impl Frame {
    fn name(&self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::Measurement => "measurement",
            Self::Value(_) => "value",
            Self::Ignored => "(ignored element)",
        }
    }
}

/// A `value` whose text is still being read.
struct PendingValue {
    offset: u64,
    ident: String,
    unit: Option<String>,
    text: String,
}

/// The `data` attributes.
struct Root {
    log_id: u64,
    control_unit: String,
    device_type: String,
    part: u32,
}

struct Parser<'a> {
    reader: Reader<&'a [u8]>,
    stack: Vec<Frame>,
    root: Option<Root>,
    root_closed: bool,
    measurements: Vec<Measurement>,
    /// Idents of the current measurement, to refuse duplicates.
    idents: BTreeSet<Ident>,
    ignored: Vec<Ignored>,
    elements: usize,
    values: usize,
    any_event: bool,
}

type Result<T> = core::result::Result<T, XmlError>;

fn error(offset: u64, kind: XmlErrorKind) -> XmlError {
    XmlError { offset, kind }
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        let mut reader = Reader::from_str(text);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        config.allow_dangling_amp = false;
        config.allow_unmatched_ends = false;
        config.expand_empty_elements = false;
        config.trim_text(false);
        Self {
            reader,
            stack: Vec::new(),
            root: None,
            root_closed: false,
            measurements: Vec::new(),
            idents: BTreeSet::new(),
            ignored: Vec::new(),
            elements: 0,
            values: 0,
            any_event: false,
        }
    }

    fn run(mut self) -> Result<ParsedDocument> {
        loop {
            let at = self.reader.buffer_position();
            let event = self.reader.read_event().map_err(|e| {
                error(
                    self.reader.error_position(),
                    XmlErrorKind::Malformed(e.to_string()),
                )
            })?;
            let first = !self.any_event;
            self.any_event = true;
            match event {
                Event::Decl(decl) => self.declaration(&decl, first, at)?,
                Event::DocType(_) => return Err(error(at, XmlErrorKind::Doctype)),
                Event::Start(start) => self.open(&start, at)?,
                Event::Empty(start) => {
                    self.open(&start, at)?;
                    self.close(at)?;
                }
                Event::End(_) => self.close(at)?,
                Event::Text(text) => self.text(&text, at)?,
                Event::CData(data) => self.text(&data, at)?,
                Event::GeneralRef(reference) => self.reference(&reference, at)?,
                Event::Comment(_) | Event::PI(_) => {}
                Event::Eof => return self.finish(at),
            }
        }
    }

    /// `<?xml …?>`: only first, and only UTF-8 (what the gateway sends and all this reads).
    fn declaration(&self, decl: &BytesDecl<'_>, first: bool, at: u64) -> Result<()> {
        if !first {
            return Err(error(at, XmlErrorKind::MisplacedDeclaration));
        }
        let Some(encoding) = decl.encoding() else {
            return Ok(());
        };
        let encoding = encoding.map_err(|e| malformed(at, &e))?;
        if encoding.eq_ignore_ascii_case(b"utf-8") || encoding.eq_ignore_ascii_case(b"utf8") {
            return Ok(());
        }
        let encoding = excerpt(&String::from_utf8_lossy(&encoding));
        Err(error(at, XmlErrorKind::UnsupportedEncoding { encoding }))
    }

    /// `&name;` in text: never expanded, so refused, except inside skipped elements.
    fn reference(&self, reference: &[u8], at: u64) -> Result<()> {
        if let Some(Frame::Ignored) = self.stack.last() {
            return Ok(());
        }
        let name = excerpt(&String::from_utf8_lossy(reference));
        let element = String::from(self.context());
        Err(error(at, XmlErrorKind::Reference { name, element }))
    }

    fn context(&self) -> &'static str {
        self.stack.last().map_or("(document)", Frame::name)
    }

    fn open(&mut self, start: &BytesStart<'_>, at: u64) -> Result<()> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(error(at, XmlErrorKind::TooDeep));
        }
        self.elements += 1;
        if self.elements > MAX_ELEMENTS {
            return Err(error(at, XmlErrorKind::TooManyElements));
        }
        let name = start.name();
        let name = name.as_ref();
        let frame = match (self.stack.last(), name) {
            (None, _) if self.root_closed => {
                return Err(error(at, XmlErrorKind::ContentAfterRoot));
            }
            (None, b"data") => {
                self.root = Some(self.root_attributes(start, at)?);
                Frame::Data
            }
            (None, _) => {
                let name = name_text(name);
                return Err(error(at, XmlErrorKind::WrongRoot { name }));
            }
            (Some(Frame::Ignored), _) => Frame::Ignored,
            (Some(Frame::Data), b"measurement") => {
                let measurement = self.measurement_attributes(start, at)?;
                self.measurements.push(measurement);
                self.idents.clear();
                Frame::Measurement
            }
            (Some(Frame::Measurement), b"value") => {
                self.values += 1;
                if self.values > MAX_VALUES {
                    return Err(error(at, XmlErrorKind::TooManyValues));
                }
                let [ident, unit] = read_attributes(start, "value", ["ident", "unit"], at)?;
                let ident = ident.ok_or(error(
                    at,
                    XmlErrorKind::MissingAttribute {
                        element: "value",
                        attribute: "ident",
                    },
                ))?;
                Frame::Value(PendingValue {
                    offset: at,
                    ident,
                    unit,
                    text: String::new(),
                })
            }
            (Some(parent @ Frame::Value(_)), _)
            | (Some(parent), b"data" | b"measurement" | b"value") => {
                let (element, parent) = (name_text(name), parent.name());
                return Err(error(at, XmlErrorKind::Misplaced { element, parent }));
            }
            (Some(_), _) => {
                self.ignored.push(Ignored {
                    offset: at,
                    kind: IgnoredKind::UnknownElement {
                        name: name_text(name),
                    },
                });
                Frame::Ignored
            }
        };
        self.stack.push(frame);
        Ok(())
    }

    fn close(&mut self, at: u64) -> Result<()> {
        match self.stack.pop() {
            Some(Frame::Value(value)) => self.finish_value(value),
            Some(Frame::Data) => {
                self.root_closed = true;
                Ok(())
            }
            Some(Frame::Measurement | Frame::Ignored) => Ok(()),
            // quick-xml refuses unmatched end tags; kept as an error rather than a panic.
            None => Err(error(
                at,
                XmlErrorKind::Malformed(String::from("end tag without start tag")),
            )),
        }
    }

    fn text(&mut self, raw: &[u8], at: u64) -> Result<()> {
        match self.stack.last_mut() {
            Some(Frame::Value(value)) => {
                // The document is UTF-8 and text ends at ASCII delimiters.
                let text =
                    core::str::from_utf8(raw).map_err(|_| error(at, XmlErrorKind::NotUtf8))?;
                let room = MAX_TEXT_BYTES - value.text.len();
                if text.len() <= room {
                    value.text.push_str(text);
                } else if Ident::parse(&value.ident).is_some() {
                    let ident = excerpt(&value.ident);
                    return Err(error(at, XmlErrorKind::TextTooLong { ident }));
                } else {
                    // An unknown ident is only quoted in the report, never read, so it
                    // must not fail the document: keep what fits.
                    let cut = (0..=room)
                        .rev()
                        .find(|&i| text.is_char_boundary(i))
                        .unwrap_or(0);
                    value.text.push_str(text.get(..cut).unwrap_or_default());
                }
                Ok(())
            }
            Some(Frame::Ignored) => Ok(()),
            _ if raw
                .iter()
                .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) =>
            {
                Ok(())
            }
            None if self.root_closed => Err(error(at, XmlErrorKind::ContentAfterRoot)),
            _ => Err(error(
                at,
                XmlErrorKind::UnexpectedText {
                    element: self.context(),
                },
            )),
        }
    }

    fn finish_value(&mut self, pending: PendingValue) -> Result<()> {
        let at = pending.offset;
        let measurement = self.measurements.len().saturating_sub(1);
        let Some(ident) = Ident::parse(&pending.ident) else {
            self.ignored.push(Ignored {
                offset: at,
                kind: IgnoredKind::UnknownIdent {
                    measurement,
                    ident: excerpt(&pending.ident),
                    unit: pending.unit.as_deref().map(excerpt),
                    text: excerpt(pending.text.trim()),
                },
            });
            return Ok(());
        };
        let text = pending.text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("N/A") {
            self.ignored.push(Ignored {
                offset: at,
                kind: IgnoredKind::NotAvailable { measurement, ident },
            });
            return Ok(());
        }
        let unit_text = pending
            .unit
            .ok_or(error(at, XmlErrorKind::MissingUnit { ident }))?;
        let unit = Unit::from_symbol(&unit_text).ok_or_else(|| {
            let unit = excerpt(&unit_text);
            error(at, XmlErrorKind::UnknownUnit { ident, unit })
        })?;
        if !ident.quantity.accepts(unit) {
            let expected = ident.quantity.expected_units();
            return Err(error(
                at,
                XmlErrorKind::WrongUnit {
                    ident,
                    unit,
                    expected,
                },
            ));
        }
        let invalid = |reason| {
            let text = excerpt(text);
            error(
                at,
                XmlErrorKind::InvalidNumber {
                    ident,
                    text,
                    reason,
                },
            )
        };
        let value = Number::parse(text).map_err(invalid)?;
        if let Quantity::Energy(_) = ident.quantity {
            // Registers are stored as exact milli-units; refuse rather than round.
            if value.mantissa() < 0 {
                return Err(invalid(NumberError::NegativeEnergy));
            }
            if value.to_milli().is_none() {
                return Err(invalid(NumberError::NotWholeMilli));
            }
        }
        if !self.idents.insert(ident) {
            return Err(error(
                at,
                XmlErrorKind::DuplicateIdent { ident, measurement },
            ));
        }
        if let Some(current) = self.measurements.last_mut() {
            current.values.push(Value { ident, value, unit });
        }
        Ok(())
    }

    fn finish(self, at: u64) -> Result<ParsedDocument> {
        if let Some(open) = self.stack.last() {
            let element = open.name();
            return Err(error(at, XmlErrorKind::Unclosed { element }));
        }
        let root = self.root.ok_or(error(at, XmlErrorKind::NoRoot))?;
        Ok(ParsedDocument {
            document: Document {
                log_id: root.log_id,
                control_unit: root.control_unit,
                device_type: root.device_type,
                part: root.part,
                measurements: self.measurements,
            },
            ignored: self.ignored,
        })
    }

    fn root_attributes(&self, start: &BytesStart<'_>, at: u64) -> Result<Root> {
        const NAMES: [&str; 4] = ["logId", "controlUnit", "deviceType", "part"];
        let [log_id, control_unit, device_type, part] = required(
            read_attributes(start, "data", NAMES, at)?,
            "data",
            NAMES,
            at,
        )?;
        let invalid = |attribute, value: &str, reason| {
            let value = excerpt(value);
            error(
                at,
                XmlErrorKind::InvalidAttribute {
                    element: "data",
                    attribute,
                    value,
                    reason,
                },
            )
        };
        const UNSIGNED: &str = "expected an unsigned decimal integer";
        let log_id_value =
            parse_unsigned(&log_id).ok_or_else(|| invalid("logId", &log_id, UNSIGNED))?;
        let part_value = parse_unsigned(&part)
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| invalid("part", &part, UNSIGNED))?;
        if let Err(why) = validate_serial(&control_unit) {
            let reason = match why {
                HeaderError::EmptySerial | HeaderError::MissingSerial => "the serial is empty",
                HeaderError::SerialTooLong { .. } => "the serial is longer than 32 bytes",
                _ => SERIAL_RULE,
            };
            return Err(invalid("controlUnit", &control_unit, reason));
        }
        Ok(Root {
            log_id: log_id_value,
            control_unit,
            device_type,
            part: part_value,
        })
    }

    fn measurement_attributes(&self, start: &BytesStart<'_>, at: u64) -> Result<Measurement> {
        const NAMES: [&str; 2] = ["dateTime", "tInterval"];
        let [date_time, interval] = required(
            read_attributes(start, "measurement", NAMES, at)?,
            "measurement",
            NAMES,
            at,
        )?;
        let invalid = |attribute, value: &str, reason| {
            let value = excerpt(value);
            error(
                at,
                XmlErrorKind::InvalidAttribute {
                    element: "measurement",
                    attribute,
                    value,
                    reason,
                },
            )
        };
        Ok(Measurement {
            date_time: DateTimeSpec::parse(&date_time)
                .map_err(|why| invalid("dateTime", &date_time, why))?,
            interval_secs: parse_interval(&interval)
                .map_err(|why| invalid("tInterval", &interval, why))?,
            values: Vec::new(),
        })
    }
}

/// The values of the attributes `names` (others are ignored), bounded and unescaped
/// (predefined entities and character references only; anything else is an error).
fn read_attributes<const N: usize>(
    start: &BytesStart<'_>,
    element: &'static str,
    names: [&'static str; N],
    at: u64,
) -> Result<[Option<String>; N]> {
    let mut values: [Option<String>; N] = core::array::from_fn(|_| None);
    // Counting before decoding keeps quick-xml's duplicate check (quadratic in the
    // number of attributes) bounded.
    for (count, attribute) in start.attributes().enumerate() {
        if count >= MAX_ATTRIBUTES {
            let element = String::from(element);
            return Err(error(at, XmlErrorKind::TooManyAttributes { element }));
        }
        let attribute = attribute.map_err(|e| malformed(at, &e))?;
        let key = attribute.key.as_ref();
        let Some(slot) = names.iter().position(|name| name.as_bytes() == key) else {
            continue;
        };
        let name = names.get(slot).copied().unwrap_or_default();
        if attribute.value.len() > MAX_ATTRIBUTE_BYTES {
            return Err(error(
                at,
                XmlErrorKind::AttributeTooLong {
                    element,
                    attribute: name,
                },
            ));
        }
        let value: Cow<'_, str> = attribute
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| {
                error(
                    at,
                    XmlErrorKind::Malformed(format!("`{element}@{name}`: {e}")),
                )
            })?;
        // XML forbids U+0000 even as a character reference, so it could not be written
        // back; quick-xml lets a raw one through.
        if value.contains('\0') {
            return Err(error(
                at,
                XmlErrorKind::Malformed(format!(
                    "`{element}@{name}`: the NUL character is not allowed in XML"
                )),
            ));
        }
        if let Some(target) = values.get_mut(slot) {
            *target = Some(value.into_owned());
        }
    }
    Ok(values)
}

/// All of `values`, or which one is missing.
fn required<const N: usize>(
    values: [Option<String>; N],
    element: &'static str,
    names: [&'static str; N],
    at: u64,
) -> Result<[String; N]> {
    if let Some((_, attribute)) = values.iter().zip(names).find(|(v, _)| v.is_none()) {
        return Err(error(
            at,
            XmlErrorKind::MissingAttribute { element, attribute },
        ));
    }
    Ok(values.map(Option::unwrap_or_default))
}

/// Canonical unsigned decimal: digits only (no sign, no spaces), fitting in `u64`.
fn parse_unsigned(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn name_text(name: &[u8]) -> String {
    excerpt(&String::from_utf8_lossy(name))
}

fn malformed(at: u64, e: &dyn fmt::Display) -> XmlError {
    error(at, XmlErrorKind::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = r#"<data logId="7" controlUnit="X1" deviceType="T" part="1""#;

    #[test]
    fn unsigned_is_canonical_decimal() {
        assert_eq!(parse_unsigned("0"), Some(0));
        assert_eq!(parse_unsigned("007"), Some(7));
        assert_eq!(parse_unsigned("18446744073709551615"), Some(u64::MAX));
        for bad in ["", "+1", "-1", " 1", "1 ", "1e3", "18446744073709551616"] {
            assert_eq!(parse_unsigned(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn empty_root_is_a_document_without_measurements() {
        let parsed = parse_document(format!("{ROOT}/>").as_bytes()).unwrap();
        assert_eq!(parsed.document.log_id, 7);
        assert!(parsed.document.measurements.is_empty());
        assert!(parsed.ignored.is_empty());
    }

    #[test]
    fn attributes_are_unescaped_and_unknown_ones_skipped() {
        let xml = r#"<data logId="7" controlUnit="A&#45;B" deviceType="x&#9;y &lt;z&gt;"
                           part="1" extra="&undefined;"/>"#;
        let parsed = parse_document(xml.as_bytes()).unwrap();
        assert_eq!(parsed.document.control_unit, "A-B");
        assert_eq!(parsed.document.device_type, "x\ty <z>");
    }

    #[test]
    fn every_error_names_its_place() {
        let data = |inner: &str| format!("{ROOT}>{inner}</data>");
        let measurement = |inner: &str| {
            data(&format!(
                r#"<measurement dateTime="now" tInterval="PT1M">{inner}</measurement>"#
            ))
        };
        let cases = [
            (
                measurement(r#"<value unit="V">1</value>"#),
                "`value` has no `ident` attribute",
            ),
            (
                data("<measurement/>"),
                "`measurement` has no `dateTime` attribute",
            ),
            (
                measurement("<measurement/>"),
                "element `measurement` is not allowed inside `measurement`",
            ),
            (data("&amp;"), "reference `&amp;` in `data`"),
            (data("x"), "unexpected text in `data`"),
            (data("<![CDATA[x]]>"), "unexpected text in `data`"),
            (data("<x>&amp;<y/>text</x>"), ""),
        ];
        for (xml, message) in cases {
            match parse_document(xml.as_bytes()) {
                Err(error) => assert!(
                    !message.is_empty() && error.to_string().contains(message),
                    "{xml}: {error}"
                ),
                Ok(parsed) => assert!(message.is_empty(), "{xml}: accepted {parsed:?}"),
            }
        }
    }
}
