//! `[retention]`: how long raw data is kept and how far ahead partitions are made.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Raw measurements are kept this many days; a month partition whose end is older is
    /// downsampled into `measurements_15min` and dropped. Counter readings and energy intervals
    /// are the billing truth and are kept forever.
    pub measurements_days: u32,
    /// Month partitions are created this many months ahead of the current one (daily), so a
    /// month never starts without its partition.
    pub partitions_ahead_months: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            measurements_days: 400,
            partitions_ahead_months: 3,
        }
    }
}

impl RetentionConfig {
    /// Raw measurements dated before this are downsampled and dropped.
    pub fn cutoff(&self, now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        now - chrono::Duration::days(i64::from(self.measurements_days.max(1)))
    }

    pub fn ahead_months(&self) -> u32 {
        self.partitions_ahead_months.clamp(1, 36)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn defaults_and_environment_names() {
        let defaults = Config::default().retention;
        assert_eq!(
            (defaults.measurements_days, defaults.partitions_ahead_months),
            (400, 3)
        );
        let config = Config::load_from(
            None,
            [
                ("HEADEND_RETENTION__MEASUREMENTS_DAYS", "30"),
                ("HEADEND_RETENTION__PARTITIONS_AHEAD_MONTHS", "6"),
            ],
        )
        .expect("config");
        assert_eq!(config.retention.measurements_days, 30);
        assert_eq!(config.retention.ahead_months(), 6);
    }
}
