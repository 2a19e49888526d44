//! What the well-formed inputs give.

use chrono::NaiveDate;
use sg_wire::command::{Command, RelayAction, RelayTarget};
use sg_wire::message::EnergyUnit;
use sg_wire::time::{format_local_time, parse_local_time};
use sg_wire::topic::{Port, SgTopic, TopicLayout};
use sg_wire::value::{
    format_counter, format_power_factor, format_quantity, parse_plain, parse_power_factor,
    parse_quantity, Decimal, PowerFactor, PowerFactorKind, Unit, ValueError,
};

fn q(text: &str) -> (f64, Unit) {
    let quantity = parse_quantity(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    (quantity.to_f64(), quantity.unit)
}

#[test]
fn sg_value_spellings() {
    assert_eq!(q("220.5 V"), (220.5, Unit::Volt));
    assert_eq!(q("230.1V"), (230.1, Unit::Volt));
    assert_eq!(q("2.815 kW"), (2815.0, Unit::Watt));
    assert_eq!(q("2.815 k W"), (2815.0, Unit::Watt));
    assert_eq!(q("12.500  Wh"), (12.5, Unit::WattHour));
    assert_eq!(q("50.01 "), (50.01, Unit::None));
    assert_eq!(q("-312.4 var"), (-312.4, Unit::Var));
    assert_eq!(q("1.2 MVAh"), (1_200_000.0, Unit::VoltAmpereHour));
    assert_eq!(q("74 mA"), (0.074, Unit::Ampere));
    assert_eq!(q("+1e3 W"), (1000.0, Unit::Watt));
    assert_eq!(q("2.5E-1 kvarh"), (250.0, Unit::VarHour));
    assert_eq!(q(".5 %"), (0.5, Unit::Percent));
    assert_eq!(q("30.7 °C"), (30.7, Unit::Celsius));
    assert_eq!(q("30.7 C"), (30.7, Unit::Celsius));
    assert_eq!(q("-26.07 deg"), (-26.07, Unit::Degree));
    assert_eq!(q("49.99 Hz"), (49.99, Unit::Hertz));
    assert_eq!(q("0 VA"), (0.0, Unit::VoltAmpere));
}

#[test]
fn plain_numbers() {
    assert_eq!(parse_plain("-26.07"), Ok(-26.07));
    assert_eq!(parse_plain(" 30.70 "), Ok(30.7));
    assert_eq!(
        parse_plain("2.5 %"),
        Err(ValueError::TrailingText("%".into()))
    );
    assert_eq!(parse_plain("N/A"), Err(ValueError::NotAvailable));
}

#[test]
fn power_factors() {
    let pf = parse_power_factor("0.9874 Ind").unwrap();
    assert_eq!(
        pf,
        PowerFactor {
            value: 0.9874,
            kind: PowerFactorKind::Inductive
        }
    );
    assert_eq!(pf.signed(), 0.9874);
    assert_eq!(parse_power_factor("0.8984 Cap").unwrap().signed(), -0.8984);
    assert_eq!(parse_power_factor("1.0005 Ind").unwrap().value, 1.0);
    assert_eq!(
        parse_power_factor("1.0000").unwrap().kind,
        PowerFactorKind::None
    );
    assert_eq!(
        parse_power_factor("0.5cap").unwrap().kind,
        PowerFactorKind::Capacitive
    );
    assert_eq!(
        parse_power_factor("-0.5 Ind"),
        Err(ValueError::PowerFactorOutOfRange(-0.5))
    );
    assert_eq!(
        PowerFactor::from_signed(-0.8984).kind,
        PowerFactorKind::Capacitive
    );
}

#[test]
fn decimals_are_exact() {
    let d: Decimal = "184233.125".parse().unwrap();
    assert_eq!((d.mantissa(), d.exp10()), (184_233_125, -3));
    assert_eq!(
        d.shifted(3).unwrap().to_scaled_i64(-3),
        Some(184_233_125_000)
    );
    assert_eq!("1.50".parse::<Decimal>(), "1.5".parse::<Decimal>());
    assert_eq!("-0.000".parse::<Decimal>(), Ok(Decimal::ZERO));
    assert_eq!(Decimal::new(1200, 0).to_string(), "1200");
    assert_eq!(Decimal::new(-5, -2).to_string(), "-0.05");
    assert_eq!(Decimal::new(12345, -2).to_string(), "123.45");
    assert_eq!(Decimal::new(7, 40).to_string(), "7e40");
    // Round half away from zero below the scale.
    let scaled = |text: &str| text.parse::<Decimal>().unwrap().to_scaled_i64(-3);
    assert_eq!(scaled("0.0005"), Some(1));
    assert_eq!(scaled("0.00049"), Some(0));
    assert_eq!(scaled("-0.0005"), Some(-1));
    assert_eq!(scaled("-0.0015"), Some(-2));
    assert_eq!(scaled("1e-300"), Some(0));
    assert_eq!(scaled("1e30"), None);
    assert_eq!(scaled("9223372036854775.807"), Some(i64::MAX));
    assert_eq!(scaled("9223372036854775.808"), None);
}

#[test]
fn formatting_like_the_sg() {
    assert_eq!(format_quantity(229.5, Unit::Volt, 1), "229.5 V");
    assert_eq!(format_quantity(2815.0, Unit::Watt, 3), "2.815 kW");
    assert_eq!(format_quantity(-312.4, Unit::Var, 1), "-312.4 var");
    assert_eq!(format_quantity(999.0, Unit::VoltAmpere, 1), "999.0 VA");
    assert_eq!(format_quantity(50.01, Unit::None, 2), "50.01");
    assert_eq!(format_quantity(30.7, Unit::Celsius, 2), "30.70 °C");
    assert_eq!(format_quantity(f64::NAN, Unit::Volt, 1), "N/A");
    assert_eq!(
        format_power_factor(PowerFactor::from_signed(-0.8984), 4),
        "0.8984 Cap"
    );
    assert_eq!(
        format_power_factor(PowerFactor::from_signed(1.0), 4),
        "1.0000"
    );
    assert_eq!(
        format_counter(184_233_125_000, EnergyUnit::Wh),
        "184233.125 kWh"
    );
    assert_eq!(format_counter(12_500, EnergyUnit::Wh), "0.0125 kWh");
    assert_eq!(format_counter(200_000, EnergyUnit::Varh), "0.200 kvarh");
    assert_eq!(format_counter(0, EnergyUnit::VAh), "0.000 kVAh");
    assert_eq!(format_counter(5_000_000, EnergyUnit::Wh), "5.000 kWh");
}

#[test]
fn local_time() {
    let t = parse_local_time("25.10.2026 02:30:00").unwrap();
    let expected = NaiveDate::from_ymd_opt(2026, 10, 25)
        .unwrap()
        .and_hms_opt(2, 30, 0)
        .unwrap();
    assert_eq!(t, expected);
    assert_eq!(format_local_time(t), "25.10.2026 02:30:00");
    assert!(parse_local_time("29.02.2024 23:59:59").is_ok());
}

#[test]
fn topics() {
    let layout = TopicLayout::default_for("SG000017").unwrap();
    assert_eq!(layout.root(), "sg/SG000017");
    assert_eq!(layout.publish_base(), "sg/SG000017/pub");
    assert_eq!(layout.publish_filter(), "sg/SG000017/pub/#");
    assert_eq!(layout.command_topic(), "sg/SG000017/sub");
    let parse = |t: &str| layout.parse_publish_topic(t).unwrap();
    assert_eq!(parse("sg/SG000017/pub/status"), SgTopic::Status);
    assert_eq!(parse("sg/SG000017/pub/log"), SgTopic::Log);
    assert_eq!(parse("sg/SG000017/pub/error"), SgTopic::Error);
    assert_eq!(
        parse("sg/SG000017/pub/measurements/ir"),
        SgTopic::Measurements(Port::Ir)
    );
    assert_eq!(
        parse("sg/SG000017/pub/counters/rs485/16"),
        SgTopic::Counters(Port::Rs485(16))
    );
    assert_eq!(
        parse("sg/SG000017/pub/bicom/rs485/2"),
        SgTopic::Bicom(Port::Rs485(2))
    );
    assert_eq!(
        SgTopic::Bicom(Port::Rs485(2)).to_topic(&layout),
        "sg/SG000017/pub/bicom/rs485/2"
    );
    let custom = TopicLayout::new("site/a/b", "up", "down").unwrap();
    assert_eq!(
        custom.parse_publish_topic("site/a/b/up/measurements/ir"),
        Ok(SgTopic::Measurements(Port::Ir))
    );
    let json = serde_json::to_string(&custom).unwrap();
    assert_eq!(serde_json::from_str::<TopicLayout>(&json).unwrap(), custom);
}

#[test]
fn commands() {
    let cases = [
        (
            Command::Bicom {
                target: RelayTarget::Index(0),
                action: RelayAction::On,
            },
            r#"{"data":{"cmd":"bicom","index":0,"val":"on"}}"#,
        ),
        (
            Command::Bicom {
                target: RelayTarget::Addr(40),
                action: RelayAction::Off,
            },
            r#"{"data":{"cmd":"bicom","addr":40,"val":"off"}}"#,
        ),
        (
            Command::Measurements { index: 0 },
            r#"{"data":{"cmd":"measurements","index":0}}"#,
        ),
        (
            Command::Counters { index: 1 },
            r#"{"data":{"cmd":"counters","index":1}}"#,
        ),
        (Command::Status, r#"{"data":{"cmd":"status"}}"#),
        (Command::GetBicoms, r#"{"data":{"cmd":"get_bicoms"}}"#),
        (Command::Reboot, r#"{"data":{"cmd":"reboot"}}"#),
        (
            Command::Ack {
                seq: 18_446_744_073_709_551_615,
            },
            r#"{"data":{"cmd":"ack","seq":18446744073709551615}}"#,
        ),
    ];
    for (command, json) in cases {
        assert_eq!(command.to_json(), json);
        assert_eq!(Command::parse(json.as_bytes()), Ok(command));
    }
    // Sloppy but unambiguous clients.
    assert_eq!(
        Command::parse(br#"{"data":{"cmd":"Bicom","index":"2","val":"STATE","extra":1}}"#),
        Ok(Command::Bicom {
            target: RelayTarget::Index(2),
            action: RelayAction::State
        })
    );
    // Where the gateway answers.
    let reply = |json: &str| Command::parse(json.as_bytes()).unwrap().reply_topic();
    assert_eq!(
        reply(r#"{"data":{"cmd":"bicom","index":2,"val":"state"}}"#),
        Some(SgTopic::Bicom(Port::Rs485(2)))
    );
    assert_eq!(
        reply(r#"{"data":{"cmd":"measurements","index":0}}"#),
        Some(SgTopic::Measurements(Port::Ir))
    );
    assert_eq!(
        reply(r#"{"data":{"cmd":"counters","index":1}}"#),
        Some(SgTopic::Counters(Port::Rs485(1)))
    );
    assert_eq!(
        reply(r#"{"data":{"cmd":"get_bicoms"}}"#),
        Some(SgTopic::Status)
    );
    assert_eq!(
        reply(r#"{"data":{"cmd":"bicom","addr":40,"val":"on"}}"#),
        None
    );
    assert_eq!(reply(r#"{"data":{"cmd":"reboot"}}"#), None);
    assert_eq!(Port::from_index(0), Ok(Port::Ir));
    assert_eq!(Port::from_index(3).map(Port::index), Ok(3));
}
