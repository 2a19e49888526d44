//! Bounding and cleaning text that came from a device.

use alloc::string::String;

/// The first `max_chars` characters of `text`, with `…` appended if anything was cut.
pub(crate) fn truncate_chars(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => String::from(text),
        Some((cut, _)) => {
            let mut out = String::from(text.get(..cut).unwrap_or_default());
            out.push('…');
            out
        }
    }
}

/// Characters removed from device text: C0/C1 controls (newlines, escapes, NUL) and the
/// Unicode bidirectional overrides, which can make a description display as something other
/// than what it holds.
pub(crate) fn is_unwanted(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}
