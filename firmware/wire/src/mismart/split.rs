//! Cutting a TCP byte stream into documents. MiSmart sends no length prefix: a document
//! ends with `</data>`, and the next one follows after a line end.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::MAX_DOCUMENT_BYTES;

/// The ways a document may begin: its XML declaration or its root element.
const STARTS: [&[u8]; 2] = [b"<?xml", b"<data"];
/// The bytes needed to recognise a start: `<?xml` or `<data` and the byte after it.
const START_LEN: usize = 6;
const END_TAG: &[u8] = b"</data";
/// How many bytes of garbage an error quotes.
const QUOTE_BYTES: usize = 16;

/// Why the stream cannot be read further. After one of these the stream cannot be
/// resynchronised (there is no framing to find the next document by), so the receiver
/// should log it and close the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SplitError {
    /// A document grew beyond the limit without ending.
    TooLarge {
        /// Stream offset of the document's first byte.
        offset: u64,
        limit: usize,
    },
    /// Bytes between documents that do not start one (not `<?xml` or `<data`).
    Garbage {
        offset: u64,
        /// The first bytes found, escaped for a log line.
        found: String,
    },
    /// The stream ended inside a document.
    Unterminated {
        /// Stream offset of the document's first byte.
        offset: u64,
        /// How many bytes of it arrived.
        len: usize,
    },
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { offset, limit } => write!(
                f,
                "document starting at stream byte {offset} exceeds {limit} bytes \
                 without a closing </data>"
            ),
            Self::Garbage { offset, found } => write!(
                f,
                "stream byte {offset}: expected a document (`<?xml` or `<data`), \
                 found \"{found}\""
            ),
            Self::Unterminated { offset, len } => write!(
                f,
                "stream ended inside the document starting at stream byte {offset} \
                 ({len} bytes, no closing </data>)"
            ),
        }
    }
}

impl core::error::Error for SplitError {}

/// Splits a byte stream into documents, sans-IO: [`push`](Self::push) what the socket
/// gave, then take documents with [`next_document`](Self::next_document) until it returns
/// `None`; at end of stream call [`finish`](Self::finish).
///
/// Whitespace between documents (the gateway's `"\n\r"`) is skipped; each document may
/// start with its own XML declaration. Memory stays bounded by the document limit plus
/// one pushed chunk, provided documents are taken after every push. A `</data>` inside a
/// comment would end a document early; the parser then rejects the fragment, which is
/// the right outcome for such input.
///
/// ```
/// use sg_wire::mismart::DocumentSplitter;
///
/// let mut splitter = DocumentSplitter::new();
/// splitter.push(b"<data logId=\"1\"></data>\n\r<da");
/// assert_eq!(splitter.next_document(), Some(Ok(b"<data logId=\"1\"></data>".to_vec())));
/// assert_eq!(splitter.next_document(), None);
/// splitter.push(b"ta logId=\"2\"></data>\n\r");
/// assert_eq!(splitter.next_document(), Some(Ok(b"<data logId=\"2\"></data>".to_vec())));
/// assert_eq!(splitter.finish(), Ok(()));
/// ```
#[derive(Debug, Clone)]
pub struct DocumentSplitter {
    buf: Vec<u8>,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// Whether `buf` starts with a recognised document start.
    in_document: bool,
    /// How far `buf` has been searched for the end tag, so that a document arriving in
    /// many small pushes is scanned once, not once per push.
    scanned: usize,
    limit: usize,
    failed: bool,
}

impl Default for DocumentSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl DocumentSplitter {
    /// A splitter for documents of up to [`MAX_DOCUMENT_BYTES`].
    #[must_use]
    pub fn new() -> Self {
        Self::with_max_document_bytes(MAX_DOCUMENT_BYTES)
    }

    /// A splitter for documents of up to `limit` bytes. The limit is capped at
    /// [`MAX_DOCUMENT_BYTES`], which the parser enforces anyway.
    #[must_use]
    pub fn with_max_document_bytes(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            base: 0,
            in_document: false,
            scanned: 0,
            limit: limit.clamp(START_LEN, MAX_DOCUMENT_BYTES),
            failed: false,
        }
    }

    /// The document size limit in bytes.
    #[must_use]
    pub fn max_document_bytes(&self) -> usize {
        self.limit
    }

    /// Bytes held that are not yet part of a returned document.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Appends bytes received from the stream. After an error they are discarded.
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next complete document (from its first `<` to the `>` of `</data>`), `None` if
    /// more bytes are needed, or the error that ends the stream. After an error, and
    /// forever after it, this returns `None`.
    pub fn next_document(&mut self) -> Option<Result<Vec<u8>, SplitError>> {
        if self.failed {
            return None;
        }
        let result = self.split();
        if let Some(Err(_)) = result {
            self.failed = true;
            self.buf = Vec::new();
        }
        result
    }

    /// Ends the stream: `Ok` if nothing but whitespace is left (or an error was already
    /// reported), [`SplitError::Unterminated`] if a document was cut off. Call it after
    /// [`next_document`](Self::next_document) returned `None`.
    ///
    /// # Errors
    /// [`SplitError::Unterminated`] with the offset and length of the partial document.
    pub fn finish(&mut self) -> Result<(), SplitError> {
        if self.failed {
            return Ok(());
        }
        self.failed = true;
        self.skip_whitespace();
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(SplitError::Unterminated {
                offset: self.base,
                len: self.buf.len(),
            })
        }
    }

    fn split(&mut self) -> Option<Result<Vec<u8>, SplitError>> {
        if !self.in_document {
            self.skip_whitespace();
            let head = self.buf.get(..START_LEN.min(self.buf.len()))?;
            if head.is_empty() {
                return None;
            }
            // Reject as soon as the bytes cannot become a start, so that a port scanner
            // or a misconfigured peer is reported at once.
            let n = head.len().min(START_LEN - 1);
            let plausible = STARTS.iter().any(|start| start.get(..n) == head.get(..n));
            if !plausible || (head.len() == START_LEN && !is_start(head)) {
                return Some(Err(self.garbage()));
            }
            if head.len() < START_LEN {
                return None;
            }
            self.in_document = true;
            self.scanned = 0;
        }
        match self.find_end() {
            Some(end) if end <= self.limit => {
                let rest = self.buf.split_off(end);
                let document = core::mem::replace(&mut self.buf, rest);
                self.base += end as u64;
                self.in_document = false;
                self.scanned = 0;
                Some(Ok(document))
            }
            Some(_) => Some(Err(self.too_large())),
            None if self.buf.len() > self.limit => Some(Err(self.too_large())),
            None => None,
        }
    }

    /// The length of the document if `buf` holds its end: `</data`, optional whitespace,
    /// `>`. Remembers how far it searched.
    fn find_end(&mut self) -> Option<usize> {
        let mut from = self.scanned;
        loop {
            let Some(found) = find(self.buf.get(from..)?, END_TAG) else {
                // A partial `</dat` at the very end must be searched again next time.
                self.scanned = self.buf.len().saturating_sub(END_TAG.len() - 1).max(from);
                return None;
            };
            let tag = from + found;
            let after = tag + END_TAG.len();
            let tail = self.buf.get(after..).unwrap_or_default();
            let spaces = tail.iter().take_while(|b| is_xml_space(**b)).count();
            match tail.get(spaces) {
                Some(b'>') => return Some(after + spaces + 1),
                // `</database>` or the like: not the end, keep looking.
                Some(_) => from = tag + 1,
                // The tag is cut off: look at it again when more bytes arrive.
                None => {
                    self.scanned = tag;
                    return None;
                }
            }
        }
    }

    fn skip_whitespace(&mut self) {
        let spaces = self.buf.iter().take_while(|b| is_xml_space(**b)).count();
        if spaces > 0 {
            self.buf.drain(..spaces);
            self.base += spaces as u64;
        }
    }

    fn garbage(&self) -> SplitError {
        let quoted = self
            .buf
            .get(..QUOTE_BYTES.min(self.buf.len()))
            .unwrap_or_default();
        SplitError::Garbage {
            offset: self.base,
            found: alloc::format!("{}", quoted.escape_ascii()),
        }
    }

    fn too_large(&self) -> SplitError {
        SplitError::TooLarge {
            offset: self.base,
            limit: self.limit,
        }
    }
}

/// `<?xml` followed by whitespace, or `<data` followed by whitespace, `>` or `/`.
fn is_start(head: &[u8]) -> bool {
    match head.split_at_checked(START_LEN - 1) {
        Some((b"<?xml", [next])) => is_xml_space(*next),
        Some((b"<data", [next])) => is_xml_space(*next) || matches!(next, b'>' | b'/'),
        _ => false,
    }
}

fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn drain(splitter: &mut DocumentSplitter) -> Vec<Result<Vec<u8>, SplitError>> {
        core::iter::from_fn(|| splitter.next_document()).collect()
    }

    #[test]
    fn back_to_back_documents_with_line_ends_and_declarations() {
        let mut s = DocumentSplitter::new();
        s.push(b"\n\r<?xml version=\"1.0\"?>\n\r<data a=\"1\">\n\r</data>\n\r<data/></data >\n\r");
        let docs = drain(&mut s);
        assert_eq!(
            docs,
            [
                Ok(b"<?xml version=\"1.0\"?>\n\r<data a=\"1\">\n\r</data>".to_vec()),
                Ok(b"<data/></data >".to_vec()),
            ]
        );
        assert_eq!(s.finish(), Ok(()));
    }

    #[test]
    fn end_tag_split_across_pushes_and_lookalikes() {
        let mut s = DocumentSplitter::new();
        for chunk in [&b"<data><database></database></da"[..], b"ta", b"  ", b">x"] {
            s.push(chunk);
        }
        assert_eq!(
            s.next_document(),
            Some(Ok(b"<data><database></database></data  >".to_vec()))
        );
        assert_eq!(
            s.next_document(),
            Some(Err(SplitError::Garbage {
                offset: 36,
                found: String::from("x")
            }))
        );
        assert_eq!(s.next_document(), None);
    }

    #[test]
    fn garbage_is_detected_early_and_quoted() {
        let mut s = DocumentSplitter::new();
        s.push(b"GET / HTTP/1.1\r\nHost: x\r\n");
        let Some(Err(error)) = s.next_document() else {
            panic!()
        };
        assert_eq!(
            error.to_string(),
            "stream byte 0: expected a document (`<?xml` or `<data`), found \"GET / HTTP/1.1\\r\\n\""
        );
        let mut s = DocumentSplitter::new();
        s.push(b"<dat");
        assert_eq!(s.next_document(), None, "a prefix of <data waits");
        s.push(b"um>");
        assert!(matches!(
            s.next_document(),
            Some(Err(SplitError::Garbage { .. }))
        ));
    }

    #[test]
    fn oversize_and_unterminated() {
        let mut s = DocumentSplitter::with_max_document_bytes(64);
        s.push(b"<data>");
        s.push(&[b' '; 100]);
        assert_eq!(
            s.next_document(),
            Some(Err(SplitError::TooLarge {
                offset: 0,
                limit: 64
            }))
        );
        s.push(b"</data>");
        assert_eq!(s.next_document(), None);
        assert_eq!(s.finish(), Ok(()));

        let mut s = DocumentSplitter::new();
        s.push(b"\n\r<data>\n\r<measurement>");
        assert_eq!(s.next_document(), None);
        assert_eq!(
            s.finish(),
            Err(SplitError::Unterminated { offset: 2, len: 21 })
        );
    }

    #[test]
    fn a_document_ending_beyond_the_limit_is_too_large() {
        let mut s = DocumentSplitter::with_max_document_bytes(16);
        s.push(b"<data>0123456789</data>");
        assert!(matches!(
            s.next_document(),
            Some(Err(SplitError::TooLarge { .. }))
        ));
    }

    #[test]
    fn byte_by_byte_scans_linearly() {
        let doc = b"<data>\n\r<value>1</value>\n\r</data>\n\r";
        let mut s = DocumentSplitter::new();
        let mut docs = Vec::new();
        for _ in 0..3 {
            for b in doc {
                s.push(&[*b]);
                docs.extend(drain(&mut s));
                assert!(s.scanned <= s.buf.len());
            }
        }
        assert_eq!(docs.len(), 3);
        assert!(docs
            .iter()
            .all(|d| d.as_deref() == Ok(&doc[..doc.len() - 2])));
        assert_eq!(s.finish(), Ok(()));
    }
}
