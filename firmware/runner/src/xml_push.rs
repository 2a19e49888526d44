//! `sg-gateway xml-push`: an older gateway that pushes MiSmart XML ("Standard TCP", see
//! `sg_wire::mismart` and Headend's `docs/xml-push.md`) instead of speaking MQTT.
//!
//! It opens a plain TCP connection to the push server and writes, every interval, one
//! document per simulated meter: the interval's mean values (voltages, currents, active and
//! reactive power, frequency) and the energy registers `E1nr` (active import), `E2nr`
//! (active export) and `E3nr` (reactive import) in exact milli-units, continuing from the
//! given start values. The load follows the local clock of the process (`TZ`): a shop's day,
//! open 09–21, a base load at night. Acks (`<ack .../>`) are read and logged, never waited
//! for, as a MiSmart gateway does; a broken connection is reopened with a backoff, and a
//! document that could not be written is written again on the next connection.

use std::time::Duration;

use chrono::{DateTime, Local, SubsecRound, Timelike, Utc};
use sg_wire::mismart::{
    write_document, DateTimeSpec, Document, Ident, Measurement, Number, Phase, Quantity, Register,
    Value,
};
use sg_wire::value::Unit;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// One simulated meter behind the pushing gateway.
#[derive(Debug, Clone)]
pub struct XmlMeter {
    /// `data@controlUnit`.
    pub serial: String,
    /// `data@deviceType`.
    pub device_type: String,
    /// Mean power when the shop is open, W.
    pub power_w: f64,
    /// Reactive per active energy.
    pub tan_phi: f64,
    /// `E1nr`, `E2nr`, `E3nr` at start, milli-units.
    pub start: [i64; 3],
}

/// Settings of [`run`].
#[derive(Debug, Clone)]
pub struct XmlPushSettings {
    /// The push server, `host:port`.
    pub to: String,
    pub interval: Duration,
    /// The first documents are this long after start.
    pub first_push_delay: Duration,
    pub meters: Vec<XmlMeter>,
}

/// A meter's registers as they run.
struct Running {
    meter: XmlMeter,
    registers: [i64; 3],
    /// The end of the last document's interval.
    at: DateTime<Utc>,
}

/// Load fraction at a local hour: ~1 while open (09–21), 0.25 at night.
pub fn shop_shape(hour: f64) -> f64 {
    let rise = 1.0 / (1.0 + (-(hour - 9.0) * 3.0).exp());
    let fall = 1.0 / (1.0 + ((hour - 21.0) * 3.0).exp());
    0.25 + 0.75 * rise * fall
}

fn local_hour(at: DateTime<Utc>) -> f64 {
    let local = at.with_timezone(&Local);
    f64::from(local.hour()) + f64::from(local.minute()) / 60.0
}

/// Mean power over `(from, to]`, W: the shape at the middle, with a small deterministic wobble.
fn mean_power(meter: &XmlMeter, from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    let mid = from + (to - from) / 2;
    let wobble = 1.0 + 0.05 * ((mid.timestamp() as f64) / 97.0).sin();
    meter.power_w * shop_shape(local_hour(mid)) * wobble
}

fn fixed(value: f64, decimals: i32) -> Number {
    let scaled = (value * 10f64.powi(decimals)).round() as i64;
    Number::new(scaled, -decimals).unwrap_or(Number::ZERO)
}

fn value(quantity: Quantity, number: Number, unit: Unit) -> Value {
    Value {
        ident: Ident::avg(quantity),
        value: number,
        unit,
    }
}

impl Running {
    /// Advances the registers to `now` and returns the interval's document.
    fn document(&mut self, now: DateTime<Utc>, log_id: u64, interval: u32) -> Document {
        let from = self.at;
        let p = mean_power(&self.meter, from, now);
        let ms = (now - from).num_milliseconds().max(0);
        // mWh = W × ms / 3600.
        let import = (p * ms as f64 / 3600.0).round() as i64;
        let reactive = (import as f64 * self.meter.tan_phi).round() as i64;
        self.registers[0] += import;
        self.registers[2] += reactive;
        self.at = now;
        let q = p * self.meter.tan_phi;
        let s = (p * p + q * q).sqrt();
        let minute = f64::from(now.minute());
        let mut values = vec![value(
            Quantity::Frequency,
            fixed(49.98 + 0.0007 * minute, 2),
            Unit::Hertz,
        )];
        for (k, phase) in [Phase::L1, Phase::L2, Phase::L3].into_iter().enumerate() {
            let u = 229.4 + 0.6 * k as f64 + 0.03 * minute;
            values.push(value(Quantity::Voltage(phase), fixed(u, 2), Unit::Volt));
            values.push(value(
                Quantity::Current(phase),
                fixed(s / 3.0 / u, 2),
                Unit::Ampere,
            ));
        }
        values.push(value(Quantity::ActivePower(None), fixed(p, 1), Unit::Watt));
        values.push(value(Quantity::ReactivePower(None), fixed(q, 1), Unit::Var));
        values.push(value(
            Quantity::ApparentPower(None),
            fixed(s, 1),
            Unit::VoltAmpere,
        ));
        for (index, unit) in [(1, Unit::WattHour), (2, Unit::WattHour), (3, Unit::VarHour)] {
            if let Some(register) = Register::new(index, false) {
                values.push(value(
                    Quantity::Energy(register),
                    Number::from_milli(self.registers[usize::from(index) - 1]),
                    unit,
                ));
            }
        }
        Document {
            log_id,
            control_unit: self.meter.serial.clone(),
            device_type: self.meter.device_type.clone(),
            part: 1,
            measurements: vec![Measurement {
                date_time: DateTimeSpec::Utc(now),
                interval_secs: interval,
                values,
            }],
        }
    }
}

/// Pushes until `stop`. Errors only on settings that cannot work.
///
/// # Errors
/// An empty meter list.
pub async fn run(settings: XmlPushSettings, stop: CancellationToken) -> anyhow::Result<()> {
    anyhow::ensure!(!settings.meters.is_empty(), "no meter to push for");
    let start = Utc::now().trunc_subsecs(0);
    let mut meters: Vec<Running> = settings
        .meters
        .iter()
        .map(|m| Running {
            meter: m.clone(),
            registers: m.start,
            at: start,
        })
        .collect();
    let interval = u32::try_from(settings.interval.as_secs().max(1)).unwrap_or(u32::MAX);
    let mut log_id: u64 = 0;
    let mut pending: Vec<String> = Vec::new();
    let mut link: Option<TcpStream> = None;
    let mut backoff = Duration::from_millis(500);
    let mut next = tokio::time::Instant::now() + settings.first_push_delay;
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep_until(next) => {}
        }
        next += settings.interval;
        let now = Utc::now().trunc_subsecs(0);
        for meter in &mut meters {
            if now > meter.at {
                log_id += 1;
                pending.push(write_document(&meter.document(now, log_id, interval)));
            }
        }
        if link.is_none() {
            match TcpStream::connect(&settings.to).await {
                Ok(stream) => {
                    tracing::info!(to = %settings.to, "XML push connection open");
                    backoff = Duration::from_millis(500);
                    link = Some(stream);
                }
                Err(e) => {
                    tracing::warn!(to = %settings.to, error = %e, "cannot connect; documents wait");
                    next = next.max(tokio::time::Instant::now() + backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            }
        }
        let Some(stream) = link.as_mut() else {
            continue;
        };
        let text: String = pending.concat();
        match stream.write_all(text.as_bytes()).await {
            Ok(()) => {
                tracing::debug!(documents = pending.len(), "pushed");
                pending.clear();
                drain_acks(stream);
            }
            Err(e) => {
                tracing::warn!(error = %e, "XML push connection lost; reconnecting");
                link = None;
            }
        }
        // A gateway keeps at most a day of documents.
        let keep = 86_400 / interval.max(1) as usize * meters.len();
        if pending.len() > keep {
            pending.drain(..pending.len() - keep);
        }
    }
}

/// Reads what acks have arrived (without waiting) and logs refusals.
fn drain_acks(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match stream.try_read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                for ack in text.split("/>").filter(|a| a.contains("rejected")) {
                    tracing::warn!(ack = %ack.trim(), "document refused");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_continue_the_registers_exactly() {
        let meter = XmlMeter {
            serial: "X0000701".into(),
            device_type: "IE38MD".into(),
            power_w: 4000.0,
            tan_phi: 0.4,
            start: [1_000_000_001, 5, 300_000_000],
        };
        let t0 = DateTime::<Utc>::from_timestamp(1_781_694_000, 0).unwrap();
        let mut running = Running {
            meter,
            registers: [1_000_000_001, 5, 300_000_000],
            at: t0,
        };
        let doc = running.document(t0 + chrono::Duration::seconds(15), 1, 15);
        let text = write_document(&doc);
        assert!(text.contains(r#"controlUnit="X0000701""#), "{text}");
        let m = &doc.measurements[0];
        let (counters, issues) = m.counters();
        assert!(issues.is_empty(), "{issues:?}");
        let e1 = counters.iter().find(|c| c.name == "counter1nr").unwrap();
        assert!(e1.value_milli > 1_000_000_001, "{e1:?}");
        assert!(e1.value_milli < 1_000_000_001 + 4000 * 15 * 1000 / 3600 * 2);
        let e2 = counters.iter().find(|c| c.name == "counter2nr").unwrap();
        assert_eq!(e2.value_milli, 5);
    }
}
