//! The documents the gateway publishes, built from `sg_wire`'s models and formatters so
//! that they have the shape of the fixtures in `tests/fixtures/sg-mqtt`.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use chrono::NaiveDateTime;
use serde::Serialize;
use serde_json::Value;
use sg_wire::message::{
    BicomBody, BicomDoc, CountersDoc, Header, Hello, MeasurementsDoc, RelayState, TextOrNumber,
};
use sg_wire::time::format_local_time;
use sg_wire::value::{format_counter, format_power_factor, format_quantity, PowerFactor, Unit};

use crate::config::{DeviceConfig, GatewayConfig, MeterInfo, RelayInfo, Slot};
use crate::source::{CounterValue, MeasurementValues, PhaseValues};

/// The hello published on `P/status` on every connect.
pub(crate) fn hello(config: &GatewayConfig) -> Hello {
    Hello {
        hello: String::from("hello world"),
        serial_number: config.serial.clone(),
        model_type: Some(config.model.clone()),
        sw_ver: Some(config.sw_ver.clone()),
        hw_ver: Some(config.hw_ver.clone()),
    }
}

/// The reply to `status`: the hello's identity without the `hello` field (which would make
/// Headend take it for a new connection), plus what the gateway knows about itself.
#[derive(Serialize)]
pub(crate) struct StatusReply<'a> {
    pub cmd: &'static str,
    #[serde(rename = "serial number")]
    pub serial_number: &'a str,
    pub model_type: &'a str,
    pub sw_ver: &'a TextOrNumber,
    pub hw_ver: &'a TextOrNumber,
    pub local_time: String,
    pub uptime_s: u64,
    /// Readings waiting per link.
    pub queued: [usize; 2],
    /// Readings dropped because a queue was full, per link.
    pub dropped: [u64; 2],
}

/// The reply to `get_bicoms`: every relay's state document.
#[derive(Serialize)]
pub(crate) struct BicomsReply {
    pub cmd: &'static str,
    pub bicoms: Vec<BicomBody>,
}

/// `"Left IR"` or `"RS485"`.
fn meter_port(slot: Slot) -> &'static str {
    match slot {
        Slot::Rs485(_) => "RS485",
        Slot::IrMeter | Slot::IrRelay => "Left IR",
    }
}

fn rs485_index(slot: Slot) -> Option<u8> {
    match slot {
        Slot::Rs485(n) => Some(n),
        Slot::IrMeter | Slot::IrRelay => None,
    }
}

fn meter_header(
    cmd: &str,
    slot: Slot,
    meter: &MeterInfo,
    local_time: NaiveDateTime,
    seq: Option<u64>,
) -> Header {
    Header {
        cmd: Some(String::from(cmd)),
        local_time: Some(format_local_time(local_time)),
        model: Some(meter.model.clone()),
        serial_number: Some(meter.serial.clone()),
        port: Some(String::from(meter_port(slot))),
        modbus_addr: Some(u16::from(meter.modbus_addr)),
        rs485_index: rs485_index(slot),
        location: Some(meter.location.clone()),
        description: Some(meter.description.clone()),
        sg_description: Some(meter.sg_description.clone()),
        seq,
        ..Header::default()
    }
}

/// Powers keep four significant digits as the SG shows them: `"942.1 W"`, `"2.815 kW"`.
fn power(value: f64, unit: Unit) -> Value {
    let decimals = if libm::fabs(value) >= 1000.0 { 3 } else { 1 };
    Value::String(format_quantity(value, unit, decimals))
}

fn plain(value: f64) -> Value {
    Value::String(format_quantity(value, Unit::None, 2))
}

fn power_factor(signed: f64) -> Value {
    Value::String(if signed.is_finite() {
        format_power_factor(PowerFactor::from_signed(signed), 4)
    } else {
        String::from("N/A")
    })
}

/// A measurements document. Phases beyond the meter's configured count are left out;
/// phases the source did not provide are `"N/A"`.
pub(crate) fn measurements(
    device: &DeviceConfig,
    meter: &MeterInfo,
    values: &MeasurementValues,
    local_time: NaiveDateTime,
    seq: Option<u64>,
) -> MeasurementsDoc {
    let mut header = meter_header("get_measurements", device.slot, meter, local_time, seq);
    header.phases = Some(meter.phases);

    let mut m = BTreeMap::new();
    let mut put = |key: String, value: Value| {
        m.insert(key, value);
    };
    put(
        "frequency".into(),
        Value::String(format_quantity(values.frequency_hz, Unit::Hertz, 2)),
    );
    let missing = PhaseValues {
        u_v: f64::NAN,
        i_a: f64::NAN,
        p_w: f64::NAN,
        q_var: f64::NAN,
        s_va: f64::NAN,
        pf: f64::NAN,
        angle_deg: f64::NAN,
        thd_u_pct: f64::NAN,
        thd_i_pct: f64::NAN,
    };
    for n in 1..=usize::from(meter.phases) {
        let phase = values.phases.get(n - 1).unwrap_or(&missing);
        put(
            format!("U{n}"),
            Value::String(format_quantity(phase.u_v, Unit::Volt, 1)),
        );
        put(
            format!("I{n}"),
            Value::String(format_quantity(phase.i_a, Unit::Ampere, 3)),
        );
        put(format!("P{n}"), power(phase.p_w, Unit::Watt));
        put(format!("Q{n}"), power(phase.q_var, Unit::Var));
        put(format!("S{n}"), power(phase.s_va, Unit::VoltAmpere));
        put(format!("PF{n}"), power_factor(phase.pf));
        put(format!("PA{n}"), plain(phase.angle_deg));
        put(format!("THDI{n}"), plain(phase.thd_i_pct));
        put(format!("THDUp{n}"), plain(phase.thd_u_pct));
    }
    let total = &values.total;
    put("P0".into(), power(total.p_w, Unit::Watt));
    put("Q0".into(), power(total.q_var, Unit::Var));
    put("S0".into(), power(total.s_va, Unit::VoltAmpere));
    put("PF0".into(), power_factor(total.pf));
    put("PA0".into(), plain(total.angle_deg));
    put("Tint".into(), plain(values.temperature_c));
    if let Some(tariff) = values.tariff {
        put("tariff".into(), Value::from(tariff));
    }
    MeasurementsDoc {
        header,
        measurements: m,
    }
}

/// `counterN` / `counterNnr`.
fn counter_name(counter: &CounterValue) -> String {
    let suffix = if counter.resettable { "" } else { "nr" };
    format!("counter{}{suffix}", counter.index)
}

/// An energy counters document with its `phaseN` / `tariffN` settings.
pub(crate) fn counters(
    device: &DeviceConfig,
    meter: &MeterInfo,
    registers: &[CounterValue],
    local_time: NaiveDateTime,
    seq: Option<u64>,
) -> CountersDoc {
    let mut header = meter_header("get_energy_counters", device.slot, meter, local_time, seq);
    header.number = rs485_index(device.slot);
    let resettable = registers.iter().filter(|c| c.resettable).count();
    header.resetable_counters = u8::try_from(resettable).ok();
    header.non_resetable_counters = u8::try_from(registers.len() - resettable).ok();

    let mut counters = BTreeMap::new();
    let mut settings = BTreeMap::new();
    for register in registers {
        let name = counter_name(register);
        let suffix = &name["counter".len()..];
        counters.insert(
            name.clone(),
            Value::String(format_counter(register.value_milli, register.unit)),
        );
        let phase = register.phase.clone().unwrap_or_default();
        settings.insert(format!("phase{suffix}"), Value::String(phase));
        // The SG writes each tariff followed by a space: "1 2 3 4 ".
        let tariffs: String = register.tariffs.iter().map(|t| format!("{t} ")).collect();
        settings.insert(format!("tariff{suffix}"), Value::String(tariffs));
    }
    CountersDoc {
        header,
        counters,
        settings,
    }
}

/// A relay state document.
pub(crate) fn bicom(
    slot: Slot,
    relay: &RelayInfo,
    state: RelayState,
    local_time: NaiveDateTime,
    seq: Option<u64>,
) -> BicomDoc {
    let port = match slot {
        Slot::Rs485(_) => "RS485",
        Slot::IrMeter | Slot::IrRelay => "Right IR",
    };
    BicomDoc {
        bicom: BicomBody {
            cmd: Some(String::from("get_bicom_status")),
            rs485_index: rs485_index(slot),
            modbus_addr: relay.modbus_addr.map(u16::from),
            port: Some(String::from(port)),
            model: Some(relay.model.clone()),
            serial_number: Some(relay.serial.clone()),
            description: Some(relay.description.clone()),
            location: Some(relay.location.clone()),
            sg_description: Some(relay.sg_description.clone()),
            local_time: Some(format_local_time(local_time)),
            state: state.to_wire(),
            seq,
        },
    }
}

/// The `P/error` line for a device that does not answer, as the SG writes it:
/// `Error: RS485 device:2 Energy meter not responding. Addr:12`.
pub(crate) fn not_responding(device: &DeviceConfig) -> String {
    let what = match device.meter() {
        Some(_) => "Energy meter",
        None => "Bicom",
    };
    match device.slot {
        Slot::IrRelay => format!("Error: {} {what} not responding.", device.slot),
        _ => format!(
            "Error: {} {what} not responding. Addr:{}",
            device.slot,
            device.modbus_addr()
        ),
    }
}

/// JSON text of a document. Serialising these models cannot fail (string keys, no
/// non-finite floats), so an error would be a bug; it degrades to an empty object.
pub(crate) fn to_json<T: Serialize>(doc: &T) -> String {
    serde_json::to_string(doc).unwrap_or_else(|_| String::from("{}"))
}
