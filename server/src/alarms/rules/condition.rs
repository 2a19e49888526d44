//! A rule's condition as written (above, below or outside a band, with hysteresis, delays and
//! active hours): its document, its checks, and the comparisons the state machine makes.

use chrono::{DateTime, Datelike, NaiveTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// How the watched value is compared.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Compare {
    /// Raised when the value is above `threshold`; clears at or below `threshold - hysteresis`.
    Above { threshold: f64 },
    /// Raised when the value is below `threshold`; clears at or above `threshold + hysteresis`.
    Below { threshold: f64 },
    /// Raised outside `[low, high]`; clears inside `[low + hysteresis, high - hysteresis]`.
    Outside { low: f64, high: f64 },
}

/// Local hours (in the site's zone) during which the rule may raise. `from > to` spans midnight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveHours {
    #[schema(example = "08:00:00")]
    pub from: NaiveTime,
    pub to: NaiveTime,
    /// ISO weekdays (1 = Monday … 7 = Sunday) of the window's start; empty means every day.
    #[serde(default)]
    pub days: Vec<u8>,
}

/// Serialised flat: `{"op": "above", "threshold": 250, "hysteresis": 5, ...}`. Unknown keys
/// are refused (serde cannot combine `flatten` with `deny_unknown_fields`, hence the check in
/// `Deserialize`), so a misspelt `hysteresis` is an error, not a silent default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct Condition {
    #[serde(flatten)]
    pub compare: Compare,
    /// An alarm clears only past the threshold by this much (inside the band by this much).
    #[serde(default)]
    #[schema(minimum = 0)]
    pub hysteresis: f64,
    /// The condition must hold this long before the alarm is raised.
    #[serde(default)]
    pub on_delay_s: u32,
    /// The value must stay clear this long before the alarm clears.
    #[serde(default)]
    pub off_delay_s: u32,
    #[serde(default)]
    pub active_hours: Option<ActiveHours>,
}

#[derive(Deserialize)]
struct ConditionDoc {
    #[serde(flatten)]
    compare: Compare,
    #[serde(default)]
    hysteresis: f64,
    #[serde(default)]
    on_delay_s: u32,
    #[serde(default)]
    off_delay_s: u32,
    #[serde(default)]
    active_hours: Option<ActiveHours>,
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for Condition {
    type Error = String;

    fn try_from(map: serde_json::Map<String, serde_json::Value>) -> Result<Self, String> {
        const KEYS: [&str; 8] = [
            "op",
            "threshold",
            "low",
            "high",
            "hysteresis",
            "on_delay_s",
            "off_delay_s",
            "active_hours",
        ];
        if let Some(bad) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(format!("unknown condition field {bad:?}"));
        }
        let doc: ConditionDoc =
            serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| e.to_string())?;
        Ok(Self {
            compare: doc.compare,
            hysteresis: doc.hysteresis,
            on_delay_s: doc.on_delay_s,
            off_delay_s: doc.off_delay_s,
            active_hours: doc.active_hours,
        })
    }
}

/// Longest delay accepted (a week): longer ones are surely a unit mistake.
pub(super) const MAX_DELAY_S: u32 = 7 * 86_400;

impl Condition {
    pub fn validate(&self) -> Result<(), String> {
        let finite = |v: f64, what: &str| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(format!("{what} must be a finite number"))
            }
        };
        match self.compare {
            Compare::Above { threshold } | Compare::Below { threshold } => {
                finite(threshold, "threshold")?
            }
            Compare::Outside { low, high } => {
                finite(low, "low")?;
                finite(high, "high")?;
                if low >= high {
                    return Err("low must be below high".into());
                }
                if 2.0 * self.hysteresis >= high - low {
                    return Err("the hysteresis must be less than half the band".into());
                }
            }
        }
        finite(self.hysteresis, "hysteresis")?;
        if self.hysteresis < 0.0 {
            return Err("hysteresis must not be negative".into());
        }
        if self.on_delay_s > MAX_DELAY_S || self.off_delay_s > MAX_DELAY_S {
            return Err(format!("delays are at most {MAX_DELAY_S} s"));
        }
        if let Some(hours) = &self.active_hours {
            if hours.from == hours.to {
                return Err(
                    "active hours from and to are equal; leave active_hours out for always".into(),
                );
            }
            if hours.days.iter().any(|d| !(1..=7).contains(d)) {
                return Err("active days are 1 (Monday) to 7 (Sunday)".into());
            }
        }
        Ok(())
    }

    pub fn violates(&self, v: f64) -> bool {
        match self.compare {
            Compare::Above { threshold } => v > threshold,
            Compare::Below { threshold } => v < threshold,
            Compare::Outside { low, high } => v < low || v > high,
        }
    }

    /// Clear enough to end an alarm: past the hysteresis band.
    pub fn clears(&self, v: f64) -> bool {
        let h = self.hysteresis;
        match self.compare {
            Compare::Above { threshold } => v <= threshold - h,
            Compare::Below { threshold } => v >= threshold + h,
            Compare::Outside { low, high } => v >= low + h && v <= high - h,
        }
    }

    pub fn in_active_hours(&self, at: DateTime<Utc>, zone: Tz) -> bool {
        let Some(hours) = &self.active_hours else {
            return true;
        };
        let local = at.with_timezone(&zone);
        let time = local.time();
        let weekday = |date: chrono::NaiveDate| date.weekday().number_from_monday() as u8;
        let day_ok = |d: u8| hours.days.is_empty() || hours.days.contains(&d);
        if hours.from < hours.to {
            time >= hours.from && time < hours.to && day_ok(weekday(local.date_naive()))
        } else if time >= hours.from {
            day_ok(weekday(local.date_naive()))
        } else if time < hours.to {
            // After midnight: the window started the day before.
            local
                .date_naive()
                .pred_opt()
                .is_some_and(|d| day_ok(weekday(d)))
        } else {
            false
        }
    }

    pub fn describe(&self) -> String {
        match self.compare {
            Compare::Above { threshold } => format!("above {threshold}"),
            Compare::Below { threshold } => format!("below {threshold}"),
            Compare::Outside { low, high } => format!("outside {low} … {high}"),
        }
    }
}
