//! Identifiers in URLs: every string that comes from a device or a gateway (meter serials,
//! models, gateway serials, counter names) goes through here before it is put into a link, a
//! form target, a `data-src` or a redirect.
//!
//! HTML escaping (askama's) and URL encoding are different things and both are needed: a serial
//! `../../commands/3/approve` is harmless HTML but, placed raw in `action="/meters/{serial}"`,
//! sends an admin's click to another route. [`segment`] encodes everything but the unreserved
//! `A-Z a-z 0-9 - _ ~`, including `.`, `/`, `?`, `#`, `%` and `\`, so a value is always exactly
//! one path segment and never carries a query or fragment.
//!
//! Encoding `.` is not enough on its own: the URL standard takes `%2e` and `%2e%2e` as dot
//! segments too, so the values `.` and `..` (and the empty string) cannot be carried in a path
//! segment at all. Links to a device therefore always carry its id (`?device=<id>`), and for
//! those values the path segment is [`ANY_SERIAL`], which the resolver
//! ([`crate::fleet::devices::resolve_meter`]) accepts only together with a device id.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What [`segment`] encodes: everything except the unreserved `A-Z a-z 0-9 - _ ~`.
pub const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');

/// The path segment standing for "the serial of the device named by `?device=`", used where
/// the serial itself cannot be a path segment (`""`, `"."`, `".."`).
pub use crate::fleet::devices::ANY_SERIAL;

/// `text` as one path segment: percent-encoded UTF-8, nothing but `A-Z a-z 0-9 - _ ~ %`.
///
/// `""`, `"."` and `".."` come out as `""`, `"%2E"` and `"%2E%2E"`, which a browser still
/// removes as dot segments: check [`representable`] (or use [`meter`]) where that can happen.
pub fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// Whether `text` survives as a path segment (it is not empty and not a dot segment).
pub fn representable(text: &str) -> bool {
    !matches!(text, "" | "." | "..")
}

/// The segment of a device serial in a link that also carries `?device=<id>`: the encoded
/// serial, or [`ANY_SERIAL`] when the serial cannot be a segment.
pub fn device_segment(serial: &str) -> String {
    if representable(serial) {
        segment(serial)
    } else {
        ANY_SERIAL.to_owned()
    }
}

/// The meter page of device `id` whose serial is `serial`: `/meters/<serial>?device=<id>`.
pub fn meter(serial: &str, id: i64) -> String {
    format!("/meters/{}?device={id}", device_segment(serial))
}

/// An API path of device `id`: `/api/v1/devices/<serial><rest>?device=<id>`, `rest` being a
/// fixed suffix such as `/latest` (never device data).
pub fn device_api(serial: &str, id: i64, rest: &str) -> String {
    format!(
        "/api/v1/devices/{}{rest}?device={id}",
        device_segment(serial)
    )
}

/// Percent-encodes text for a query string value (same set as [`segment`]).
pub fn query_value(text: &str) -> String {
    segment(text)
}

/// Askama filters; templates get them with `use crate::web::urls::filters;` in the module
/// that derives the template.
pub mod filters {
    use std::fmt::Display;

    /// `{{ gateway.serial|seg }}`: one percent-encoded path segment.
    pub fn seg<T: Display>(value: T, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(super::segment(&value.to_string()))
    }

    /// `{{ m.serial|device_seg }}` in a path that also carries `?device=<id>`.
    pub fn device_seg<T: Display>(value: T, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(super::device_segment(&value.to_string()))
    }

    /// `{{ m.serial|meter_href(m.id) }}`: the meter page of that device.
    pub fn meter_href<T: Display>(
        serial: T,
        _: &dyn askama::Values,
        id: &i64,
    ) -> askama::Result<String> {
        Ok(super::meter(&serial.to_string(), *id))
    }

    /// `{{ serial|device_api(id, "/latest") }}`: an API path of that device.
    pub fn device_api<T: Display>(
        serial: T,
        _: &dyn askama::Values,
        id: &i64,
        rest: &str,
    ) -> askama::Result<String> {
        Ok(super::device_api(&serial.to_string(), *id, rest))
    }

    /// `{{ total_kwh|kwh }}`: energy given in kWh, in a readable unit (`12.3 MWh`).
    pub fn kwh(value: &f64, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(crate::dashboard::units::energy_kwh(*value).to_string())
    }

    /// `{{ peak_kw|kw }}`: power given in kW, in a readable unit (`4.20 W`, `1.50 MW`).
    pub fn kw(value: &f64, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(crate::dashboard::units::power_kw(*value).to_string())
    }

    /// `{{ amount|money(currency) }}`: two decimals, grouped thousands, the currency code.
    pub fn money(value: &f64, _: &dyn askama::Values, currency: &str) -> askama::Result<String> {
        Ok(crate::dashboard::units::money(*value, currency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_is_one_segment_without_query_or_fragment() {
        assert_eq!(segment("X0000124"), "X0000124");
        assert_eq!(segment("a-b_c~d"), "a-b_c~d");
        assert_eq!(
            segment("../../../../commands/3/approve"),
            "%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2Fcommands%2F3%2Fapprove"
        );
        assert_eq!(segment("a/b?c=d#e"), "a%2Fb%3Fc%3Dd%23e");
        assert_eq!(segment("%2e%2e"), "%252e%252e");
        assert_eq!(segment("a b\\c\t"), "a%20b%5Cc%09");
        assert_eq!(segment("x\"><script>"), "x%22%3E%3Cscript%3E");
        assert_eq!(segment("Zähler"), "Z%C3%A4hler");
        for s in [
            "../x",
            "a/b?c=d#e",
            "%2e%2e",
            "x\"><script>alert(1)</script>",
            "é ü",
        ] {
            let e = segment(s);
            assert!(e
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_~%".contains(&b)));
            let back = percent_encoding::percent_decode_str(&e)
                .decode_utf8()
                .unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn dot_segments_and_empty_serials_use_the_placeholder_with_the_id() {
        assert_eq!(meter("..", 7), "/meters/~?device=7");
        assert_eq!(meter(".", 7), "/meters/~?device=7");
        assert_eq!(meter("", 7), "/meters/~?device=7");
        assert_eq!(meter("...", 7), "/meters/%2E%2E%2E?device=7");
        assert_eq!(meter("a/b", 7), "/meters/a%2Fb?device=7");
        assert_eq!(
            device_api("..", 3, "/latest"),
            "/api/v1/devices/~/latest?device=3"
        );
        assert!(!representable("..") && representable("..."));
    }

    #[test]
    fn the_filters_encode() {
        let v = askama::NO_VALUES;
        assert_eq!(filters::seg("a/b", v).unwrap(), "a%2Fb");
        assert_eq!(filters::device_seg("..", v).unwrap(), "~");
        assert_eq!(filters::device_seg("a.b", v).unwrap(), "a%2Eb");
        assert_eq!(
            filters::meter_href("x#y", v, &5).unwrap(),
            "/meters/x%23y?device=5"
        );
        assert_eq!(
            filters::device_api("x?y", v, &5, "/latest").unwrap(),
            "/api/v1/devices/x%3Fy/latest?device=5"
        );
    }
}
