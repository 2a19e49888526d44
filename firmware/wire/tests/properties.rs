//! Property tests: round trips, exactness, and no panics on arbitrary input.

use proptest::prelude::*;
use sg_wire::command::Command;
use sg_wire::message::{normalize_counters, normalize_measurements};
use sg_wire::time::{format_local_time, parse_local_time};
use sg_wire::topic::{Port, SgTopic, TopicLayout};
use sg_wire::value::{
    format_power_factor, format_quantity, parse_power_factor, parse_quantity, Decimal, PowerFactor,
    Unit,
};
use sg_wire::{parse_message, SgMessage};

fn unit() -> impl Strategy<Value = Unit> {
    prop::sample::select(vec![
        Unit::None,
        Unit::Volt,
        Unit::Ampere,
        Unit::Watt,
        Unit::Var,
        Unit::VoltAmpere,
        Unit::Hertz,
        Unit::WattHour,
        Unit::VarHour,
        Unit::VoltAmpereHour,
        Unit::Percent,
        Unit::Celsius,
        Unit::Degree,
    ])
}

fn port() -> impl Strategy<Value = Port> {
    prop_oneof![Just(Port::Ir), (1..=16_u8).prop_map(Port::Rs485)]
}

fn sg_topic() -> impl Strategy<Value = SgTopic> {
    prop_oneof![
        Just(SgTopic::Status),
        Just(SgTopic::Log),
        Just(SgTopic::Error),
        port().prop_map(SgTopic::Measurements),
        port().prop_map(SgTopic::Counters),
        port().prop_map(SgTopic::Bicom),
    ]
}

proptest! {
    #[test]
    fn quantity_round_trips(value in -1e9_f64..1e9, unit in unit(), decimals in 0_u8..=6) {
        let text = format_quantity(value, unit, decimals);
        let parsed = parse_quantity(&text).unwrap();
        prop_assert_eq!(parsed.unit, unit);
        let step = if unit.takes_kilo() && value.abs() >= 1000.0 { 1000.0 } else { 1.0 };
        // Half a unit of the last printed digit, plus the f64 representation error of the
        // value itself (at 1e8 a few 1e-8: more than 1e-9).
        let tolerance = step * 0.5 * 10_f64.powi(-i32::from(decimals)) * (1.0 + 1e-9)
            + value.abs() * 4.0 * f64::EPSILON
            + 1e-9;
        prop_assert!((parsed.to_f64() - value).abs() <= tolerance, "{} -> {}", value, text);
    }

    #[test]
    fn power_factor_round_trips(signed in -1.0_f64..=1.0) {
        let text = format_power_factor(PowerFactor::from_signed(signed), 4);
        let parsed = parse_power_factor(&text).unwrap();
        prop_assert!((parsed.signed() - signed).abs() <= 0.5e-4 + 1e-12, "{} -> {}", signed, text);
    }

    #[test]
    fn topic_round_trips(
        topic in sg_topic(),
        // At most 9 + 2 × 10 = 29 characters: the SG allows 31 per topic part.
        root in "[a-zA-Z0-9_-]{1,9}(/[a-zA-Z0-9_-]{1,9}){0,2}",
        publish in "[a-zA-Z0-9_-]{1,31}",
        subscribe in "[a-zA-Z0-9_-]{1,31}",
    ) {
        let layout = TopicLayout::new(root, publish, subscribe).unwrap();
        prop_assert_eq!(layout.parse_publish_topic(&topic.to_topic(&layout)), Ok(topic));
    }

    /// Digits with up to three decimals, in milli-units, computed by string arithmetic that
    /// shares nothing with the implementation.
    #[test]
    fn decimal_to_milli_is_exact(int in 0_u64..100_000_000_000, frac in "[0-9]{0,3}", neg: bool) {
        let sign = if neg { "-" } else { "" };
        let text = if frac.is_empty() { format!("{sign}{int}") } else { format!("{sign}{int}.{frac}") };
        let padded = format!("{frac:0<3}");
        let magnitude = int as i64 * 1000 + padded.parse::<i64>().unwrap();
        let expected = if neg { -magnitude } else { magnitude };
        let decimal: Decimal = text.parse().unwrap();
        prop_assert_eq!(decimal.to_scaled_i64(-3), Some(expected));
        // Through a kWh counter string as well: milli-kWh are Wh.
        let kwh = parse_quantity(&format!("{text} kWh")).unwrap();
        prop_assert_eq!(kwh.value.to_scaled_i64(0), Some(expected));
    }

    /// Random mantissas and exponents against i128 arithmetic with explicit rounding.
    #[test]
    fn decimal_scaling_matches_reference(m in any::<i64>(), exp in -20_i32..20, scale in -20_i32..20) {
        let decimal = Decimal::new(i128::from(m), exp);
        let shift = exp - scale;
        let expected = if shift >= 0 {
            10_i128.checked_pow(shift as u32).and_then(|f| i128::from(m).checked_mul(f))
        } else {
            // 10^39 and beyond do not fit an i128; any i64 divided by them rounds to 0.
            match 10_i128.checked_pow((-shift) as u32) {
                None => Some(0),
                Some(divisor) => {
                    let (q, r) = (i128::from(m) / divisor, i128::from(m) % divisor);
                    Some(if 2 * r.abs() >= divisor { q + i128::from(m.signum()) } else { q })
                }
            }
        };
        let expected = expected.and_then(|v| i64::try_from(v).ok());
        prop_assert_eq!(decimal.to_scaled_i64(scale), expected);
        // Display/FromStr round trip, and f64 agrees with the float parser.
        prop_assert_eq!(decimal.to_string().parse::<Decimal>(), Ok(decimal));
        let float: f64 = format!("{m}e{exp}").parse().unwrap();
        prop_assert_eq!(decimal.to_f64(), float);
    }

    #[test]
    fn parse_quantity_never_panics(text in ".{0,40}") {
        let _ = parse_quantity(&text);
        let _ = parse_power_factor(&text);
        let _ = text.parse::<Decimal>();
    }

    #[test]
    fn parse_quantity_never_panics_on_numberish(text in "[-+0-9.eEkMm VAWhrz%°C]{0,30}") {
        let _ = parse_quantity(&text);
    }

    #[test]
    fn local_time_round_trips(secs in 0_i64..253_402_300_799) {
        let time = chrono::DateTime::from_timestamp(secs, 0).unwrap().naive_utc();
        prop_assert_eq!(parse_local_time(&format_local_time(time)), Ok(time));
    }

    #[test]
    fn parse_local_time_never_panics(text in ".{0,25}") {
        let _ = parse_local_time(&text);
    }

    #[test]
    fn parse_message_never_panics(topic in sg_topic(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(message) = parse_message(topic, &bytes) {
            normalize(&message);
        }
        let _ = Command::parse(&bytes);
    }

    /// Structured garbage reaches deeper than random bytes.
    #[test]
    fn normalisation_never_panics(
        keys in prop::collection::vec("(U|I|P|Q|S|PF|PA|THDI|THDUp|counter|phase|tariff)[0-9]{0,2}(nr)?|frequency|Tint|tariff", 0..8),
        values in prop::collection::vec(".{0,12}", 0..8),
    ) {
        let map: serde_json::Map<_, _> = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let map = serde_json::Value::Object(map);
        let measurements = serde_json::json!({"header": {}, "measurements": map});
        let counters = serde_json::json!({"header": {}, "counters": map, "settings": map});
        for (topic, doc) in [(SgTopic::Measurements(Port::Ir), measurements), (SgTopic::Counters(Port::Ir), counters)] {
            let message = parse_message(topic, doc.to_string().as_bytes()).unwrap();
            normalize(&message);
        }
    }
}

fn normalize(message: &SgMessage) {
    match message {
        SgMessage::Measurements(doc) => {
            let _ = normalize_measurements(doc);
            let _ = doc.header.sanitized();
        }
        SgMessage::Counters(doc) => {
            let _ = normalize_counters(doc);
        }
        SgMessage::Bicom(doc) => {
            let _ = doc.bicom.serial();
            let _ = doc.bicom.labels();
        }
        SgMessage::Status(_) | SgMessage::Log(_) | SgMessage::Error(_) => {}
    }
}
