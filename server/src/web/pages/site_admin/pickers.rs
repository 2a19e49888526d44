//! The choices of the administration forms: time zones, currencies, usage categories, with
//! labels people read. Values are what the server stores; labels are only shown.

use chrono::{Offset, TimeZone, Utc};

/// One `<option>`.
pub struct Choice {
    pub value: String,
    pub label: String,
}

/// One `<optgroup>`.
pub struct ChoiceGroup {
    pub label: String,
    pub choices: Vec<Choice>,
}

/// Regions of the IANA database offered in the time zone picker (the rest are legacy aliases,
/// still accepted and still shown when a site already uses one).
const REGIONS: [&str; 9] = [
    "Africa",
    "America",
    "Antarctica",
    "Asia",
    "Atlantic",
    "Australia",
    "Europe",
    "Indian",
    "Pacific",
];

/// The time zones grouped by region, with their UTC offset now; `current` is always offered
/// (under "Other" when it is not a regional zone), so the picker shows what is stored.
pub fn zone_groups(current: &str) -> Vec<ChoiceGroup> {
    let now = Utc::now();
    let choice = |tz: chrono_tz::Tz, label: String| {
        let secs = tz
            .offset_from_utc_datetime(&now.naive_utc())
            .fix()
            .local_minus_utc();
        let sign = if secs < 0 { '-' } else { '+' };
        let (h, m) = (secs.abs() / 3600, secs.abs() % 3600 / 60);
        Choice {
            value: tz.name().to_owned(),
            label: format!("{label} (UTC{sign}{h:02}:{m:02})"),
        }
    };
    let mut groups: Vec<ChoiceGroup> = vec![ChoiceGroup {
        label: "Universal".into(),
        choices: vec![choice(chrono_tz::UTC, "UTC".into())],
    }];
    for region in REGIONS {
        let mut choices: Vec<Choice> = chrono_tz::TZ_VARIANTS
            .iter()
            .filter_map(|tz| {
                let place = tz.name().strip_prefix(region)?.strip_prefix('/')?;
                Some(choice(*tz, place.replace('_', " ").replace('/', " / ")))
            })
            .collect();
        choices.sort_by(|a, b| a.label.cmp(&b.label));
        groups.push(ChoiceGroup {
            label: region.into(),
            choices,
        });
    }
    let offered = groups
        .iter()
        .any(|g| g.choices.iter().any(|c| c.value == current));
    if !offered && !current.is_empty() {
        let label = match current.parse::<chrono_tz::Tz>() {
            Ok(tz) => choice(tz, current.to_owned()),
            Err(_) => Choice {
                value: current.to_owned(),
                label: format!("{current} (not a known zone)"),
            },
        };
        groups.push(ChoiceGroup {
            label: "Other".into(),
            choices: vec![label],
        });
    }
    groups
}

/// Currencies of the supply contracts Headend is used with (ISO 4217); a stored currency
/// outside the list is offered too.
const CURRENCIES: [(&str, &str); 24] = [
    ("EUR", "euro"),
    ("BAM", "convertible mark"),
    ("BGN", "Bulgarian lev"),
    ("CHF", "Swiss franc"),
    ("CZK", "Czech koruna"),
    ("DKK", "Danish krone"),
    ("GBP", "pound sterling"),
    ("HUF", "Hungarian forint"),
    ("ISK", "Icelandic króna"),
    ("MKD", "Macedonian denar"),
    ("NOK", "Norwegian krone"),
    ("PLN", "Polish złoty"),
    ("RON", "Romanian leu"),
    ("RSD", "Serbian dinar"),
    ("SEK", "Swedish krona"),
    ("TRY", "Turkish lira"),
    ("UAH", "Ukrainian hryvnia"),
    ("AUD", "Australian dollar"),
    ("CAD", "Canadian dollar"),
    ("CNY", "renminbi"),
    ("INR", "Indian rupee"),
    ("JPY", "yen"),
    ("USD", "US dollar"),
    ("ZAR", "rand"),
];

pub fn currencies(current: &str) -> Vec<Choice> {
    let mut list: Vec<Choice> = CURRENCIES
        .iter()
        .map(|(code, name)| Choice {
            value: (*code).to_owned(),
            label: format!("{code} — {name}"),
        })
        .collect();
    let current = current.trim();
    if !current.is_empty() && !list.iter().any(|c| c.value == current) {
        list.push(Choice {
            value: current.to_owned(),
            label: current.to_owned(),
        });
    }
    list
}

/// The usage categories of circuits and meters (`structure::USAGES`) with readable labels.
pub fn usages() -> Vec<Choice> {
    crate::accounting::structure::USAGES
        .iter()
        .map(|u| Choice {
            value: (*u).to_owned(),
            label: usage_label(u).to_owned(),
        })
        .collect()
}

pub fn usage_label(usage: &str) -> &str {
    match usage {
        "heating" => "Heating",
        "cooling" => "Cooling",
        "hot_water" => "Hot water",
        "lighting" => "Lighting",
        "sockets" => "Sockets",
        "ventilation" => "Ventilation",
        "process" => "Process",
        "other" => "Other",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_grouped_and_the_stored_one_is_always_offered() {
        let groups = zone_groups("Europe/Ljubljana");
        let europe = groups.iter().find(|g| g.label == "Europe").unwrap();
        let lj = europe
            .choices
            .iter()
            .find(|c| c.value == "Europe/Ljubljana")
            .unwrap();
        assert!(lj.label.starts_with("Ljubljana (UTC+0"), "{}", lj.label);
        assert!(!groups.iter().any(|g| g.label == "Other"));
        let ny = zone_groups("")
            .into_iter()
            .flat_map(|g| g.choices)
            .find(|c| c.value == "America/Argentina/Buenos_Aires")
            .unwrap();
        assert!(ny.label.starts_with("Argentina / Buenos Aires"));
        let legacy = zone_groups("US/Eastern");
        assert_eq!(legacy.last().unwrap().label, "Other");
        assert_eq!(legacy.last().unwrap().choices[0].value, "US/Eastern");
        assert_eq!(currencies("XAF").last().unwrap().value, "XAF");
        assert_eq!(currencies("EUR").len(), CURRENCIES.len());
        assert_eq!(usages().len(), crate::accounting::structure::USAGES.len());
    }
}
