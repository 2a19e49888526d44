//! Faults on demand from outside the process, in the serde form of [`Fault`]: the body of the
//! REST API's `POST /faults` and the `JSON` of `sg-gateway --fault-after SECS:JSON`.
//!
//! ```text
//! {"counter_reset":{"slot":"ir_meter"}}              resettable counters of the IR meter to 0
//! {"meter_silent":{"slot":{"rs485":1},"pushes":3}}   RS485 slot 1 does not answer 3 pushes
//! {"clock_drift":{"ppm":500}}                        the gateway clock runs 500 ppm fast
//! {"go_offline":{"secs":10}}                         both links down for 10 s
//! "garble"                                           the next message is cut off mid-JSON
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sg_gateway_core::Fault;

/// The accepted forms, for error messages.
pub const EXAMPLES: &str = r#"{"counter_reset":{"slot":"ir_meter"}}, {"meter_silent":{"slot":{"rs485":1},"pushes":3}}, {"clock_drift":{"ppm":500}}, {"go_offline":{"secs":10}} or "garble""#;

/// Parses a fault. A bare word (`garble`) is taken as the JSON string `"garble"`, which saves
/// a level of shell quoting.
///
/// # Errors
/// A message naming what is wrong and the accepted forms.
pub fn parse_fault(text: &str) -> Result<Fault, String> {
    let text = text.trim();
    let bare_word = !text.is_empty() && text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    let parsed = if bare_word {
        serde_json::from_str(&format!("\"{text}\""))
    } else {
        serde_json::from_str(text)
    };
    parsed.map_err(|error| format!("not a fault ({error}); expected {EXAMPLES}"))
}

/// A fault to inject some time after the gateway started (`--fault-after SECS:JSON`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduledFault {
    pub after: Duration,
    pub fault: Fault,
}

impl FromStr for ScheduledFault {
    type Err = String;

    /// `SECS:JSON`, e.g. `30:{"go_offline":{"secs":20}}` or `2.5:garble`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (secs, fault) = text.split_once(':').ok_or_else(|| {
            format!("expected SECS:JSON, e.g. 30:{{\"go_offline\":{{\"secs\":20}}}}, got `{text}`")
        })?;
        let after = secs
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| format!("`{secs}`: expected a number of seconds (0 or more)"))?;
        Ok(Self {
            after,
            fault: parse_fault(fault)?,
        })
    }
}

impl fmt::Display for ScheduledFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_string(&self.fault).map_err(|_| fmt::Error)?;
        write!(f, "{}:{json}", self.after.as_secs_f64())
    }
}

/// Why a fault could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultRefused {
    /// A device fault for a slot with no simulated meter (none configured there, or a real
    /// meter over Modbus, which cannot be made to misbehave from here).
    NoSimulatedMeter(Fault),
}

impl fmt::Display for FaultRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSimulatedMeter(fault) => {
                let slot = match fault {
                    Fault::CounterReset { slot }
                    | Fault::MeterSilent { slot, .. }
                    | Fault::RelayStuck { slot, .. } => {
                        serde_json::to_string(slot).unwrap_or_default()
                    }
                    _ => String::new(),
                };
                if matches!(fault, Fault::RelayStuck { .. }) {
                    write!(
                        f,
                        "no simulated relay in slot {slot}: relay_stuck acts on a simulated relay only"
                    )
                } else {
                    write!(
                        f,
                        "no simulated meter in slot {slot}: counter_reset and meter_silent act on a \
                         simulated meter only"
                    )
                }
            }
        }
    }
}

impl std::error::Error for FaultRefused {}

#[cfg(test)]
mod tests {
    use super::*;
    use sg_gateway_core::Slot;

    #[test]
    fn parses_every_fault_form() {
        assert_eq!(
            parse_fault(r#"{"counter_reset":{"slot":"ir_meter"}}"#),
            Ok(Fault::CounterReset {
                slot: Slot::IrMeter
            })
        );
        assert_eq!(
            parse_fault(r#" {"meter_silent":{"slot":{"rs485":3},"pushes":2}} "#),
            Ok(Fault::MeterSilent {
                slot: Slot::Rs485(3),
                pushes: 2
            })
        );
        assert_eq!(
            parse_fault(r#"{"clock_drift":{"ppm":-250}}"#),
            Ok(Fault::ClockDrift { ppm: -250 })
        );
        assert_eq!(
            parse_fault(r#"{"go_offline":{"secs":5}}"#),
            Ok(Fault::GoOffline { secs: 5 })
        );
        assert_eq!(parse_fault(r#""garble""#), Ok(Fault::Garble));
        assert_eq!(parse_fault("garble"), Ok(Fault::Garble));
    }

    #[test]
    fn mistakes_are_explained() {
        let error = parse_fault(r#"{"counter_reset":{}}"#).unwrap_err();
        assert!(error.contains("missing field `slot`"), "{error}");
        assert!(error.contains("expected {\"counter_reset\""), "{error}");
        let error = parse_fault(r#"{"melt_down":{}}"#).unwrap_err();
        assert!(error.contains("unknown variant `melt_down`"), "{error}");
        assert!(parse_fault("").is_err());
        assert!(parse_fault("go_offline").is_err(), "needs its seconds");
        assert!(parse_fault(r#"{"go_offline":{"secs":-1}}"#).is_err());
    }

    #[test]
    fn scheduled_faults_parse_and_print() {
        let scheduled: ScheduledFault = r#"30:{"go_offline":{"secs":20}}"#.parse().unwrap();
        assert_eq!(scheduled.after, Duration::from_secs(30));
        assert_eq!(scheduled.fault, Fault::GoOffline { secs: 20 });
        assert_eq!(scheduled.to_string(), r#"30:{"go_offline":{"secs":20}}"#);
        let scheduled: ScheduledFault = "2.5:garble".parse().unwrap();
        assert_eq!(scheduled.after, Duration::from_millis(2500));
        assert_eq!(scheduled.to_string(), r#"2.5:"garble""#);
        for bad in ["garble", "-1:garble", "soon:garble", "5:", "5:{"] {
            assert!(bad.parse::<ScheduledFault>().is_err(), "{bad}");
        }
    }
}
