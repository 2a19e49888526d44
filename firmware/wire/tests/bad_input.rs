//! The wrong inputs of `tests/fixtures/bad-input/README.md` that this crate sees, each with
//! the specific error it must produce.

use sg_wire::command::{Command, CommandError};
use sg_wire::message::{
    normalize_counters, normalize_measurements, validate_serial, CountersDoc, FieldError,
    HeaderError, MeasurementsDoc, TextIssueKind, MAX_TEXT_CHARS,
};
use sg_wire::time::{parse_local_time, TimeError};
use sg_wire::topic::{Port, SgTopic, TopicError, TopicLayout};
use sg_wire::value::{parse_power_factor, parse_quantity, Unit, ValueError};
use sg_wire::{parse_message, JsonErrorKind, MessageError, SgMessage, MAX_PAYLOAD_BYTES};

fn json_error(topic: SgTopic, payload: &[u8]) -> (JsonErrorKind, String) {
    match parse_message(topic, payload) {
        Err(error @ MessageError::Json { .. }) => {
            let MessageError::Json { error: json, .. } = &error else {
                unreachable!()
            };
            (json.kind, error.to_string())
        }
        other => panic!("expected a JSON error, got {other:?}"),
    }
}

// --- Payloads --------------------------------------------------------------------------

#[test]
fn payload_that_is_not_json() {
    let (kind, message) = json_error(SgTopic::Measurements(Port::Ir), b"hello world");
    assert_eq!(kind, JsonErrorKind::Syntax);
    assert!(
        message.contains("expected a measurements document"),
        "{message}"
    );
    assert!(message.contains("line 1 column"), "{message}");
}

#[test]
fn json_cut_off_mid_message() {
    let payload = br#"{"header":{"serial_number":"X1"},"measurements":{"U1":"229"#;
    let (kind, message) = json_error(SgTopic::Measurements(Port::Ir), payload);
    assert_eq!(kind, JsonErrorKind::Truncated);
    assert!(message.contains("cut off"), "{message}");
}

#[test]
fn json_of_the_wrong_shape() {
    let (kind, message) = json_error(SgTopic::Counters(Port::Ir), br#"{"header":{}}"#);
    assert_eq!(kind, JsonErrorKind::WrongShape);
    assert!(message.contains("missing field `counters`"), "{message}");

    let (kind, _) = json_error(SgTopic::Bicom(Port::Ir), br#"{"bicom":{"state":"on"}}"#);
    assert_eq!(kind, JsonErrorKind::WrongShape);
    let (kind, message) = json_error(SgTopic::Measurements(Port::Ir), br#"[1,2]"#);
    assert_eq!(kind, JsonErrorKind::WrongShape, "{message}");
    // A header number that is not a number.
    let payload = br#"{"header":{"modbus_addr":"twelve"},"measurements":{}}"#;
    let (kind, message) = json_error(SgTopic::Measurements(Port::Ir), payload);
    assert_eq!(kind, JsonErrorKind::WrongShape);
    assert!(message.contains("twelve"), "{message}");
    // A hello that cannot identify the gateway.
    let (kind, _) = json_error(SgTopic::Status, br#"{"hello":"hello world"}"#);
    assert_eq!(kind, JsonErrorKind::WrongShape);
}

#[test]
fn header_numbers_are_lenient_where_devices_are_sloppy() {
    let payload =
        br#"{"header":{"modbus_addr":"12","RS485 index":"2","phases":3.0},"measurements":{}}"#;
    let Ok(SgMessage::Measurements(doc)) = parse_message(SgTopic::Measurements(Port::Ir), payload)
    else {
        panic!("did not parse");
    };
    assert_eq!(doc.header.modbus_addr, Some(12));
    assert_eq!(doc.header.rs485_index, Some(2));
    assert_eq!(doc.header.phases, Some(3));
    let payload = br#"{"header":{"modbus_addr":70000},"measurements":{}}"#;
    assert!(parse_message(SgTopic::Measurements(Port::Ir), payload).is_err());
}

#[test]
fn payload_of_several_megabytes() {
    let payload = vec![b' '; 3 * 1024 * 1024];
    let error = parse_message(SgTopic::Log, &payload).unwrap_err();
    assert_eq!(error, MessageError::TooLarge { len: payload.len() });
    assert!(error.to_string().contains("262144"));
    assert!(parse_message(SgTopic::Log, &payload[..MAX_PAYLOAD_BYTES]).is_ok());
    assert!(matches!(
        Command::parse(&payload),
        Err(CommandError::TooLarge { .. })
    ));
}

#[test]
fn log_lines_must_be_utf8() {
    let line = b"Error: RS485 device:2 Energy meter not responding. Addr:12";
    assert_eq!(
        parse_message(SgTopic::Error, line),
        Ok(SgMessage::Error(String::from_utf8(line.to_vec()).unwrap()))
    );
    assert_eq!(
        parse_message(SgTopic::Log, b"ok \xff\xfe"),
        Err(MessageError::NotUtf8 { valid_up_to: 3 })
    );
}

// --- Values ----------------------------------------------------------------------------

#[test]
fn value_strings_without_a_number() {
    assert_eq!(parse_quantity("N/A"), Err(ValueError::NotAvailable));
    assert_eq!(parse_quantity(""), Err(ValueError::Empty));
    assert_eq!(parse_quantity("   "), Err(ValueError::Empty));
    assert_eq!(parse_quantity(" -- "), Err(ValueError::NoNumber));
    assert_eq!(parse_quantity("V"), Err(ValueError::NoNumber));
    assert_eq!(parse_quantity("-."), Err(ValueError::NoNumber));
}

#[test]
fn value_strings_with_a_bad_unit() {
    assert_eq!(
        parse_quantity("12 parsec"),
        Err(ValueError::UnknownUnit("parsec".into()))
    );
    assert_eq!(
        parse_quantity("0.00 k"),
        Err(ValueError::PrefixWithoutUnit('k'))
    );
    assert_eq!(
        parse_quantity("1 M "),
        Err(ValueError::PrefixWithoutUnit('M'))
    );
    assert_eq!(
        parse_quantity("1 kparsec"),
        Err(ValueError::UnknownUnit("kparsec".into()))
    );
    assert!(ValueError::UnknownUnit("parsec".into())
        .to_string()
        .contains("parsec"));
    // Error texts quote hostile input only briefly.
    let long = format!("1 {}", "x".repeat(10_000));
    let Err(ValueError::UnknownUnit(quoted)) = parse_quantity(&long) else {
        panic!()
    };
    assert!(quoted.chars().count() <= 33);
}

#[test]
fn values_that_are_not_finite_or_not_plausible() {
    assert_eq!(parse_quantity("NaN V"), Err(ValueError::NotFinite));
    assert_eq!(parse_quantity("inf"), Err(ValueError::NotFinite));
    assert_eq!(parse_quantity("-Infinity W"), Err(ValueError::NotFinite));
    assert_eq!(parse_quantity("1e308 W"), Err(ValueError::Implausible));
    assert_eq!(
        parse_quantity("2 MMW"),
        Err(ValueError::UnknownUnit("MMW".into()))
    );
    assert_eq!(parse_quantity("1e13 kW"), Err(ValueError::Implausible));
    assert_eq!(
        parse_quantity("1e999999999999 W"),
        Err(ValueError::Implausible)
    );
    assert!(parse_quantity("1e15 W").is_ok());
    assert_eq!(
        parse_quantity("1234567890123456789012345678901234567890 W"),
        Err(ValueError::Implausible)
    );
    assert_eq!(
        parse_quantity("0.1234567890123456789012345678901234567891 W"),
        Err(ValueError::TooManyDigits)
    );
    assert_eq!(
        parse_power_factor("1.2 Ind"),
        Err(ValueError::PowerFactorOutOfRange(1.2))
    );
    assert_eq!(
        parse_power_factor("0.9 Res"),
        Err(ValueError::UnknownPowerFactorKind("Res".into()))
    );
}

fn measurements_doc(measurements: &str) -> MeasurementsDoc {
    serde_json::from_str(&format!(
        r#"{{"header":{{}},"measurements":{measurements}}}"#
    ))
    .unwrap()
}

#[test]
fn bad_measurements_are_dropped_with_an_issue_and_the_rest_is_kept() {
    let doc = measurements_doc(
        r#"{"frequency":"0 Hz","U1":"230 A","U2":"N/A","U3":"NaN V","I1":"1.5 A",
            "P0":"1e308 W","PF1":"1.5 Ind","THDI1":"5000","Tint":"-300","PA1":"12 parsec",
            "Foo":"1 V","tariff":"x","I2":[1]}"#,
    );
    let (m, issues) = normalize_measurements(&doc);
    assert_eq!(m.i1, Some(1.5));
    assert_eq!((m.frequency_hz, m.u1, m.u2, m.u3), (None, None, None, None));
    let error = |field: &str| {
        issues
            .iter()
            .find(|i| i.field == field)
            .map(|i| i.error.clone())
            .unwrap_or_else(|| panic!("no issue for {field}: {issues:?}"))
    };
    assert!(matches!(error("frequency"), FieldError::Implausible { value, .. } if value == 0.0));
    assert_eq!(
        error("U1"),
        FieldError::WrongUnit {
            expected: Unit::Volt,
            found: Unit::Ampere
        }
    );
    assert_eq!(error("U3"), FieldError::Value(ValueError::NotFinite));
    assert_eq!(error("P0"), FieldError::Value(ValueError::Implausible));
    assert_eq!(
        error("PF1"),
        FieldError::Value(ValueError::PowerFactorOutOfRange(1.5))
    );
    assert!(matches!(error("THDI1"), FieldError::Implausible { .. }));
    assert!(matches!(error("Tint"), FieldError::Implausible { .. }));
    assert!(matches!(
        error("PA1"),
        FieldError::Value(ValueError::UnknownUnit(_))
    ));
    assert_eq!(error("Foo"), FieldError::UnknownField);
    assert_eq!(error("tariff"), FieldError::InvalidTariff);
    assert_eq!(
        error("I2"),
        FieldError::UnexpectedType { found: "an array" }
    );
    // N/A is absent, not an issue.
    assert!(issues.iter().all(|i| i.field != "U2"));
    assert_eq!(issues.len(), 11);
    let shown = issues
        .iter()
        .find(|i| i.field == "frequency")
        .unwrap()
        .to_string();
    assert!(shown.contains("0 < f < 1000 Hz"), "{shown}");
}

#[test]
fn bad_counters_are_skipped_with_an_issue() {
    let doc: CountersDoc = serde_json::from_str(
        r#"{"header":{},"counters":{
            "counter1":"-5 kWh","counter2":"5 kW","counter3":"5","counter4":"N/A",
            "counter5":"1 kWh","counter01":"1 Wh","counter33":"1 Wh","meter":"1 Wh",
            "counter6":12},
            "settings":{"tariff5":"1 x","phase5":"L1\u0007","colour5":"red"}}"#,
    )
    .unwrap();
    let (counters, issues) = normalize_counters(&doc);
    assert_eq!(counters.len(), 1);
    assert_eq!(counters[0].value_milli, 1_000_000);
    assert!(counters[0].tariffs.is_empty() && counters[0].phase.is_none());
    let error = |field: &str| {
        issues
            .iter()
            .find(|i| i.field == field)
            .unwrap()
            .error
            .clone()
    };
    assert_eq!(error("counter1"), FieldError::NegativeCounter);
    assert_eq!(error("counter2"), FieldError::NotAnEnergyUnit(Unit::Watt));
    assert_eq!(error("counter3"), FieldError::NotAnEnergyUnit(Unit::None));
    assert_eq!(error("counter01"), FieldError::InvalidCounterName);
    assert_eq!(error("counter33"), FieldError::InvalidCounterName);
    assert_eq!(error("meter"), FieldError::InvalidCounterName);
    assert_eq!(
        error("counter6"),
        FieldError::UnexpectedType { found: "a number" }
    );
    assert!(matches!(
        error("settings.tariff5"),
        FieldError::InvalidSetting(_)
    ));
    assert!(matches!(
        error("settings.phase5"),
        FieldError::InvalidSetting(_)
    ));
    assert_eq!(error("settings.colour5"), FieldError::UnknownField);
    assert_eq!(issues.len(), 10);
}

// --- Times -----------------------------------------------------------------------------

#[test]
fn local_time_that_is_not_a_date() {
    let error = parse_local_time("99.99.2020 25:61:00").unwrap_err();
    assert_eq!(
        error,
        TimeError::NoSuchDate {
            day: 99,
            month: 99,
            year: 2020
        }
    );
    assert!(error.to_string().contains("99.99.2020"), "{error}");
    let error = parse_local_time("14.04.2020 25:61:00").unwrap_err();
    assert_eq!(
        error,
        TimeError::NoSuchTime {
            hour: 25,
            minute: 61,
            second: 0
        }
    );
    assert!(error.to_string().contains("25:61:00"));
    assert_eq!(
        parse_local_time("29.02.2021 00:00:00"),
        Err(TimeError::NoSuchDate {
            day: 29,
            month: 2,
            year: 2021
        })
    );
    for shape in [
        "",
        "2020-04-14 17:45:30",
        "14.4.2020 17:45:30",
        "14.04.2020T17:45:30",
        "14.04.2020  17:45:30",
        "14.04.2020 17:45",
        "14.04.2020 17:45:30.5",
        "１4.04.2020 17:45:30",
        "-1.04.2020 17:45:30",
    ] {
        assert_eq!(parse_local_time(shape), Err(TimeError::Shape), "{shape:?}");
    }
    assert!(parse_local_time(" 14.04.2020 17:45:30\n").is_ok());
}

// --- Topics ----------------------------------------------------------------------------

#[test]
fn topic_naming_a_slot_the_gateway_does_not_have() {
    let layout = TopicLayout::default_for("SG000017").unwrap();
    for slot in ["0", "17", "255", "256", "02", "+2", "-1", "x", ""] {
        let topic = format!("sg/SG000017/pub/measurements/rs485/{slot}");
        let error = layout.parse_publish_topic(&topic).unwrap_err();
        assert!(
            matches!(error, TopicError::NoSuchSlot(_)),
            "{topic}: {error:?}"
        );
        assert!(error
            .to_string()
            .contains("device slot the gateway does not have"));
    }
    assert!(Port::rs485(17).is_err());
    assert!(Port::from_index(17).is_err());
}

#[test]
fn topic_of_another_gateway_or_unknown_kind() {
    let layout = TopicLayout::default_for("SG000017").unwrap();
    for topic in [
        "sg/SG000018/pub/status",
        "sg/SG000017/sub",
        "sg/SG000017/pub",
        "sg/SG000017/pubx/status",
        "sg/SG000017",
    ] {
        assert_eq!(
            layout.parse_publish_topic(topic),
            Err(TopicError::NotUnderPublishBase),
            "{topic}"
        );
    }
    for topic in [
        "sg/SG000017/pub/",
        "sg/SG000017/pub/state",
        "sg/SG000017/pub/status/x",
        "sg/SG000017/pub/counters",
        "sg/SG000017/pub/counters/",
        "sg/SG000017/pub/counters/left",
        "sg/SG000017/pub/counters/ir/1",
        "sg/SG000017/pub/counters/rs485/1/x",
    ] {
        assert!(
            matches!(
                layout.parse_publish_topic(topic),
                Err(TopicError::UnknownSubtopic(_))
            ),
            "{topic}"
        );
    }
}

#[test]
fn invalid_topic_settings() {
    use sg_wire::topic::TopicPart;
    assert_eq!(
        TopicLayout::new("", "pub", "sub"),
        Err(TopicError::EmptyPart(TopicPart::Root))
    );
    assert_eq!(
        TopicLayout::new("sg", "p".repeat(32), "sub"),
        Err(TopicError::PartTooLong {
            part: TopicPart::Publish,
            len: 32
        })
    );
    assert!(TopicLayout::new("sg", "p".repeat(31), "sub").is_ok());
    assert_eq!(
        TopicLayout::new("sg/+", "pub", "sub"),
        Err(TopicError::ForbiddenChar {
            part: TopicPart::Root,
            ch: '+'
        })
    );
    assert_eq!(
        TopicLayout::new("sg", "pub", "s#"),
        Err(TopicError::ForbiddenChar {
            part: TopicPart::Subscribe,
            ch: '#'
        })
    );
    assert_eq!(
        TopicLayout::new("sg\0", "pub", "sub"),
        Err(TopicError::ForbiddenChar {
            part: TopicPart::Root,
            ch: '\0'
        })
    );
    assert_eq!(
        TopicLayout::new("sg", "a/b", "sub"),
        Err(TopicError::ForbiddenChar {
            part: TopicPart::Publish,
            ch: '/'
        })
    );
    assert!(TopicLayout::default_for(&"S".repeat(40)).is_err());
    let parsed: Result<TopicLayout, _> =
        serde_json::from_str(r#"{"root":"sg/#","publish":"pub","subscribe":"sub"}"#);
    assert!(parsed.is_err());
}

// --- Hostile header text ---------------------------------------------------------------

#[test]
fn hostile_serial_numbers() {
    assert_eq!(validate_serial(""), Err(HeaderError::EmptySerial));
    assert_eq!(
        validate_serial(&"9".repeat(10_000)),
        Err(HeaderError::SerialTooLong { len: 10_000 })
    );
    for hostile in [
        "X1\n",
        "X1 ",
        " X1",
        "X 1",
        "Ẋ1",
        "X1'\"<b>",
        "A&B",
        "../etc",
        ".",
        "..",
        "-rf",
        "_x",
        "a/b",
        "a%2F",
        "a?b",
        "a#b",
        "a\u{202E}b",
        "x\0",
    ] {
        assert_eq!(
            validate_serial(hostile),
            Err(HeaderError::SerialCharacters),
            "{hostile:?}"
        );
    }
    for real in [
        "18230001", "21450077", "X0000124", "SIM00042", "E1", "M-7", "a.b_c-d", "0",
    ] {
        assert_eq!(validate_serial(real), Ok(real));
    }
    assert_eq!(validate_serial(&"9".repeat(32)).map(str::len), Ok(32));
    assert!(HeaderError::SerialCharacters
        .to_string()
        .contains("A-Z, a-z, 0-9, '-', '_' or '.'"));
    let doc = measurements_doc("{}");
    let error = doc.header.sanitized().unwrap_err();
    assert_eq!(error, HeaderError::MissingSerial);
    assert!(error.to_string().contains("cannot be identified"));
}

#[test]
fn hostile_description_is_bounded_not_rejected() {
    let hostile = format!(
        "\"; DROP TABLE meters; -- <script>alert(1)</script>\u{202E}\u{1b}[31m{}",
        "é".repeat(10_000)
    );
    let header = sg_wire::message::Header {
        serial_number: Some("X0000124".into()),
        description: Some(hostile.clone()),
        location: Some("Hall\r\n".into()),
        model: Some("M".repeat(100)),
        ..Default::default()
    };
    let clean = header.sanitized().unwrap();
    let description = clean.labels.description.unwrap();
    assert_eq!(description.chars().count(), MAX_TEXT_CHARS);
    assert!(description.starts_with("\"; DROP TABLE meters; -- <script>alert(1)</script>[31m"));
    assert!(!description.chars().any(char::is_control));
    assert_eq!(clean.labels.location.as_deref(), Some("Hall"));
    assert_eq!(clean.labels.model.as_deref().map(str::len), Some(64));
    let kinds: Vec<_> = clean
        .labels
        .issues
        .iter()
        .map(|i| (i.field, i.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                "model",
                TextIssueKind::Truncated {
                    chars: 100,
                    limit: 64
                }
            ),
            ("description", TextIssueKind::ControlCharsRemoved),
            (
                "description",
                TextIssueKind::Truncated {
                    chars: hostile.chars().count() - 2,
                    limit: 256
                }
            ),
            ("location", TextIssueKind::ControlCharsRemoved),
        ]
    );
}

// --- Commands --------------------------------------------------------------------------

#[test]
fn bad_commands() {
    assert_eq!(
        Command::parse(br#"{"data":{"cmd":"toggle","index":0}}"#),
        Err(CommandError::Unknown("toggle".into()))
    );
    assert!(matches!(
        Command::parse(br#"{"cmd":"status"}"#),
        Err(CommandError::Json(_))
    ));
    assert!(matches!(
        Command::parse(b"{\"data\":"),
        Err(CommandError::Json(_))
    ));
    assert!(matches!(
        Command::parse(br#"{"data":{"cmd":"bicom","index":0,"val":"toggle"}}"#),
        Err(CommandError::InvalidField { field: "val", .. })
    ));
    assert!(matches!(
        Command::parse(br#"{"data":{"cmd":"bicom","index":17,"val":"on"}}"#),
        Err(CommandError::InvalidField { field: "index", .. })
    ));
    assert!(matches!(
        Command::parse(br#"{"data":{"cmd":"bicom","addr":248,"val":"on"}}"#),
        Err(CommandError::InvalidField { field: "addr", .. })
    ));
    assert!(matches!(
        Command::parse(br#"{"data":{"cmd":"bicom","index":1,"addr":1,"val":"on"}}"#),
        Err(CommandError::InvalidField { .. })
    ));
    assert_eq!(
        Command::parse(br#"{"data":{"cmd":"bicom","val":"on"}}"#),
        Err(CommandError::MissingField {
            cmd: "bicom",
            field: "index"
        })
    );
    assert_eq!(
        Command::parse(br#"{"data":{"cmd":"ack"}}"#),
        Err(CommandError::MissingField {
            cmd: "ack",
            field: "seq"
        })
    );
    assert_eq!(
        Command::parse(br#"{"data":{"cmd":"counters"}}"#),
        Err(CommandError::MissingField {
            cmd: "counters",
            field: "index"
        })
    );
}

// --- Ambiguous documents -----------------------------------------------------------------

#[test]
fn a_key_given_twice_with_different_values_refuses_the_document() {
    for (topic, payload, key) in [
        (
            SgTopic::Measurements(Port::Ir),
            &br#"{"header":{"serial_number":"X1"},"measurements":{"U1":"111 V","U1":"222 V"}}"#[..],
            "U1",
        ),
        (
            SgTopic::Counters(Port::Ir),
            br#"{"header":{"serial_number":"X1"},"counters":{"counter1nr":"1 Wh","counter1nr":"2 Wh"}}"#,
            "counter1nr",
        ),
        (
            SgTopic::Counters(Port::Ir),
            br#"{"header":{"serial_number":"X1"},"counters":{},"settings":{"tariff1":"1","tariff1":"2"}}"#,
            "tariff1",
        ),
    ] {
        let (kind, message) = json_error(topic, payload);
        assert_eq!(kind, JsonErrorKind::WrongShape, "{message}");
        assert!(
            message.contains(&format!("duplicate key \"{key}\" with different values")),
            "{message}"
        );
    }
    // Struct fields given twice were already refused by serde.
    let (_, message) = json_error(
        SgTopic::Measurements(Port::Ir),
        br#"{"header":{"serial_number":"X1","serial_number":"X2"},"measurements":{}}"#,
    );
    assert!(message.contains("duplicate field"), "{message}");
    // The same value twice says one thing.
    let Ok(SgMessage::Measurements(doc)) = parse_message(
        SgTopic::Measurements(Port::Ir),
        br#"{"header":{"serial_number":"X1"},"measurements":{"U1":"111 V","U1":"111 V"}}"#,
    ) else {
        panic!("an identical repeat is accepted");
    };
    assert_eq!(normalize_measurements(&doc).0.u1, Some(111.0));
}

#[test]
fn a_counter_finer_than_a_milli_unit_is_refused_not_rounded() {
    let doc: CountersDoc = serde_json::from_str(
        r#"{"header":{"serial_number":"X1"},"counters":{
            "counter1nr":"12.5001 Wh","counter2nr":"12.500 Wh","counter3nr":"0.0000004 kWh",
            "counter4nr":"1.000000 kWh","counter1":"0.0000 Wh"}}"#,
    )
    .unwrap();
    let (counters, issues) = normalize_counters(&doc);
    let kept: Vec<_> = counters
        .iter()
        .map(|c| (c.name.as_str(), c.value_milli))
        .collect();
    assert_eq!(
        kept,
        [
            ("counter2nr", 12_500),
            ("counter4nr", 1_000_000),
            ("counter1", 0)
        ]
    );
    let refused: Vec<_> = issues
        .iter()
        .map(|i| (i.field.as_str(), i.raw.as_str(), i.error.clone()))
        .collect();
    assert_eq!(
        refused,
        [
            ("counter1nr", "12.5001 Wh", FieldError::CounterTooPrecise),
            ("counter3nr", "0.0000004 kWh", FieldError::CounterTooPrecise),
        ]
    );
    assert!(issues[0].to_string().contains("not representable exactly"));
}
