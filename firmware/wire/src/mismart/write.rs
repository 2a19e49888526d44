//! Writing documents exactly as the gateway does, for firmware that pushes MiSmart XML.

use alloc::string::String;
use core::fmt::Write as _;

use super::datetime::format_interval;
use super::ident::unit_symbol;
use super::{Document, Quantity};

/// The gateway's line ending, `"\n\r"` (sic: not `"\r\n"`).
pub const LINE_END: &str = "\n\r";

/// Writes `doc` in the gateway's format: XML declaration, one element per line, lines
/// ending in [`LINE_END`] (the last one too, so that documents sent back to back are
/// separated by it), energy registers as mantissa and exponent (`1842331250e-2`), other
/// values in plain notation with their digits as held (`398.60`).
///
/// `parse_document(write_document(&doc))` gives `doc` back for every document that
/// `parse_document` accepted. Attribute text is escaped, control characters as character
/// references, so hostile serials and models cannot break the markup.
#[must_use]
pub fn write_document(doc: &Document) -> String {
    let values: usize = doc.measurements.iter().map(|m| m.values.len()).sum();
    let mut out = String::with_capacity(160 + 80 * doc.measurements.len() + 48 * values);
    out.push_str(r#"<?xml version="1.0" encoding="utf-8"?>"#);
    out.push_str(LINE_END);
    let _ = write!(out, r#"<data logId="{}" controlUnit=""#, doc.log_id);
    escape_into(&mut out, &doc.control_unit);
    out.push_str(r#"" deviceType=""#);
    escape_into(&mut out, &doc.device_type);
    let _ = write!(out, r#"" part="{}">"#, doc.part);
    out.push_str(LINE_END);
    for measurement in &doc.measurements {
        let _ = write!(
            out,
            r#"<measurement dateTime="{}" tInterval="{}">"#,
            measurement.date_time,
            format_interval(measurement.interval_secs)
        );
        out.push_str(LINE_END);
        for value in &measurement.values {
            let _ = write!(
                out,
                r#"<value ident="{}" unit="{}">"#,
                value.ident,
                unit_symbol(value.unit)
            );
            if let Quantity::Energy(_) = value.ident.quantity {
                value.value.write_scientific(&mut out);
            } else {
                value.value.write_plain(&mut out);
            }
            out.push_str("</value>");
            out.push_str(LINE_END);
        }
        out.push_str("</measurement>");
        out.push_str(LINE_END);
    }
    out.push_str("</data>");
    out.push_str(LINE_END);
    out
}

/// Escapes text for a double-quoted attribute. Control characters become character
/// references because a raw tab or newline would be normalised to a space when read.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c if c.is_control() => {
                let _ = write!(out, "&#{};", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mismart::{DateTimeSpec, Ident, Measurement, Number, Value};
    use crate::value::Unit;

    #[test]
    fn writes_the_gateway_format() {
        let doc = Document {
            log_id: 0,
            control_unit: String::from("18230001"),
            device_type: String::from("WM3M4C"),
            part: 1,
            measurements: alloc::vec![Measurement {
                date_time: DateTimeSpec::Now,
                interval_secs: 60,
                values: alloc::vec![
                    Value {
                        ident: Ident::parse("f").unwrap(),
                        value: Number::new(5001, -2).unwrap(),
                        unit: Unit::Hertz,
                    },
                    Value {
                        ident: Ident::parse("E1nr").unwrap(),
                        value: Number::new(18_423_312_500, -2).unwrap(),
                        unit: Unit::WattHour,
                    },
                ],
            }],
        };
        assert_eq!(
            write_document(&doc),
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\r\
             <data logId=\"0\" controlUnit=\"18230001\" deviceType=\"WM3M4C\" part=\"1\">\n\r\
             <measurement dateTime=\"now\" tInterval=\"PT060S\">\n\r\
             <value ident=\"f\" unit=\"Hz\">50.01</value>\n\r\
             <value ident=\"E1nr\" unit=\"Wh\">18423312500e-2</value>\n\r\
             </measurement>\n\r\
             </data>\n\r"
        );
    }

    #[test]
    fn attribute_text_is_escaped() {
        let mut out = String::new();
        escape_into(&mut out, "a&b<c>\"d'\t\u{1}é");
        assert_eq!(out, "a&amp;b&lt;c&gt;&quot;d'&#9;&#1;é");
    }
}
