//! The contract form's fields as typed (text), read from a stored contract or a submitted
//! form, and checked into a contract with every mistake named by its form field.

use chrono::NaiveDate;
use headend_energy::tariff::{Contract, TariffError};
use serde_json::{json, Map, Value};

use super::contract::text;
use crate::web::pages::form::FieldErrors;

/// Rows of the contract form: enough for the tariffs published in practice.
pub(super) const BANDS: usize = 6;
pub(super) const RULES: usize = 8;
pub(super) const METER_TARIFFS: u8 = 6;
pub(super) const DAYS: [&str; 8] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"];

#[derive(Default, Clone)]
pub struct BandRow {
    pub name: String,
    pub import: String,
    pub export: String,
}

#[derive(Default, Clone)]
pub struct RuleRow {
    pub name: String,
    pub band: String,
    pub days: Vec<String>,
    pub from: String,
    pub to: String,
    /// The months ticked (1 to 12, as text: what was sent).
    pub months: Vec<String>,
}

impl RuleRow {
    pub fn has(&self, day: &str) -> bool {
        self.days.iter().any(|d| d == day)
    }

    pub fn has_month(&self, month: impl std::fmt::Display) -> bool {
        let month = month.to_string();
        self.months.iter().any(|m| m.trim() == month)
    }
}

/// The contract form's fields, as typed (text), so a refused form is shown again unchanged.
#[derive(Default)]
pub struct ContractFields {
    pub(super) id: Option<i64>,
    pub(super) valid_from: String,
    pub(super) currency: String,
    pub(super) default_band: String,
    pub(super) holidays: String,
    pub(super) demand_charge: String,
    pub(super) tan_phi_max: String,
    pub(super) reactive_price: String,
    pub(super) bands: Vec<BandRow>,
    pub(super) rules: Vec<RuleRow>,
    pub(super) tariffs: Vec<(u8, String)>,
}

/// A local time as the schedule takes it (`HH:MM`, `HH:MM:SS`; `24:00` as an end).
fn time_ok(t: &str, end: bool) -> bool {
    let t = t.trim();
    (end && (t == "24:00" || t == "24:00:00"))
        || chrono::NaiveTime::parse_from_str(t, "%H:%M").is_ok()
        || chrono::NaiveTime::parse_from_str(t, "%H:%M:%S").is_ok()
}

impl ContractFields {
    pub(super) fn padded(mut self) -> Self {
        self.bands
            .resize(BANDS.max(self.bands.len()), BandRow::default());
        self.rules
            .resize(RULES.max(self.rules.len()), RuleRow::default());
        for n in 1..=METER_TARIFFS {
            if !self.tariffs.iter().any(|(t, _)| *t == n) {
                self.tariffs.push((n, String::new()));
            }
        }
        self.tariffs.sort();
        self
    }

    /// The band names given so far, for the band pickers (`<datalist>`).
    pub fn band_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .bands
            .iter()
            .map(|b| b.name.trim())
            .filter(|n| !n.is_empty())
            .collect();
        names.dedup();
        names
    }

    /// The fields of a stored contract.
    pub(super) fn of_stored(id: i64, valid_from: NaiveDate, c: &Value) -> Self {
        let list = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().map(text).collect())
                .unwrap_or_default()
        };
        Self {
            id: Some(id),
            valid_from: valid_from.to_string(),
            currency: text(&c["currency"]),
            default_band: text(&c["default_band"]),
            holidays: list(&c["holidays"]).join("\n"),
            demand_charge: text(&c["demand_charge"]),
            tan_phi_max: text(&c["reactive"]["tan_phi_max"]),
            reactive_price: text(&c["reactive"]["price"]),
            bands: c["bands"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|b| BandRow {
                            name: text(&b["name"]),
                            import: text(&b["import_price"]),
                            export: text(&b["export_price"]),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            rules: c["schedule"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|r| RuleRow {
                            name: text(&r["name"]),
                            band: text(&r["band"]),
                            days: list(&r["days"]),
                            from: text(&r["from"]),
                            to: text(&r["to"]),
                            months: list(&r["months"]),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            tariffs: c["meter_tariff_bands"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.parse().ok()?, text(v))))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The fields of a submitted form (`band3_name`, `rule2_days` repeated, `tariff1`, ...).
    /// Months come as ticked boxes (`rule0_months` repeated) or a list (`11,12,1`).
    pub(super) fn of_form(pairs: &[(String, String)]) -> Self {
        let mut f = Self {
            bands: vec![BandRow::default(); BANDS],
            rules: vec![RuleRow::default(); RULES],
            ..Self::default()
        };
        let row = |key: &str, prefix: &str| -> Option<(usize, String)> {
            let rest = key.strip_prefix(prefix)?;
            let (n, field) = rest.split_once('_')?;
            Some((n.parse().ok()?, field.to_owned()))
        };
        for (key, value) in pairs {
            let value = value.clone();
            match key.as_str() {
                "contract_id" => f.id = value.parse().ok(),
                "valid_from" => f.valid_from = value,
                "currency" => f.currency = value,
                "default_band" => f.default_band = value,
                "holidays" => f.holidays = value,
                "demand_charge" => f.demand_charge = value,
                "tan_phi_max" => f.tan_phi_max = value,
                "reactive_price" => f.reactive_price = value,
                k => {
                    if let Some((i, field)) = row(k, "band").filter(|(i, _)| *i < BANDS) {
                        let b = &mut f.bands[i];
                        match field.as_str() {
                            "name" => b.name = value,
                            "import" => b.import = value,
                            "export" => b.export = value,
                            _ => {}
                        }
                    } else if let Some((i, field)) = row(k, "rule").filter(|(i, _)| *i < RULES) {
                        let r = &mut f.rules[i];
                        match field.as_str() {
                            "name" => r.name = value,
                            "band" => r.band = value,
                            "days" if DAYS.contains(&value.as_str()) => r.days.push(value),
                            "from" => r.from = value,
                            "to" => r.to = value,
                            "months" => r.months.extend(
                                value
                                    .split(|c: char| c == ',' || c.is_whitespace())
                                    .filter(|m| !m.is_empty())
                                    .map(str::to_owned),
                            ),
                            _ => {}
                        }
                    } else if let Some(n) = k
                        .strip_prefix("tariff")
                        .and_then(|n| n.parse::<u8>().ok())
                        .filter(|n| (1..=METER_TARIFFS).contains(n))
                    {
                        f.tariffs.push((n, value));
                    }
                }
            }
        }
        f
    }

    /// The contract, or every mistake beside its field (named by the form's field names).
    pub(super) fn check(&self) -> Result<(NaiveDate, Contract), FieldErrors> {
        let mut e = FieldErrors::new();
        let valid_from = self.valid_from.trim().parse::<NaiveDate>().ok();
        if valid_from.is_none() {
            e.add(
                "valid_from",
                "give the first day the contract applies (a date)",
            );
        }
        // Rows left empty are skipped; the contract's indexes map back to the form's rows.
        let mut band_rows = Vec::new();
        let mut bands = Vec::new();
        for (i, b) in self.bands.iter().enumerate() {
            if b.name.trim().is_empty() && b.import.trim().is_empty() && b.export.trim().is_empty()
            {
                continue;
            }
            if b.name.trim().is_empty() {
                e.add(&format!("band{i}_name"), "give the band a name");
            }
            if b.import.trim().is_empty() {
                e.add(&format!("band{i}_import"), "give the import price per kWh");
            }
            let mut band = json!({ "name": b.name.trim(), "import_price": b.import.trim() });
            if !b.export.trim().is_empty() {
                band["export_price"] = json!(b.export.trim());
            }
            band_rows.push(i);
            bands.push(band);
        }
        if bands.is_empty() {
            e.add("band0_name", "give at least one band with its price");
        }
        let mut rule_rows = Vec::new();
        let mut schedule = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            if r.band.trim().is_empty() {
                let typed = !r.days.is_empty()
                    || !r.from.trim().is_empty()
                    || !r.to.trim().is_empty()
                    || !r.months.is_empty();
                if typed {
                    e.add(&format!("rule{i}_band"), "choose the band of this rule");
                }
                continue;
            }
            if r.days.is_empty() {
                e.add(&format!("rule{i}_days"), "tick at least one day");
            }
            if !time_ok(&r.from, false) {
                e.add(&format!("rule{i}_from"), "give a start time such as 06:00");
            }
            if !time_ok(&r.to, true) {
                e.add(
                    &format!("rule{i}_to"),
                    "give an end time such as 22:00 (24:00 for midnight)",
                );
            }
            let mut rule = json!({
                "band": r.band.trim(), "days": r.days, "from": r.from.trim(), "to": r.to.trim()
            });
            if !r.name.trim().is_empty() {
                rule["name"] = json!(r.name.trim());
            }
            if !r.months.is_empty() {
                let months: Result<Vec<u8>, _> =
                    r.months.iter().map(|m| m.trim().parse::<u8>()).collect();
                match months {
                    Ok(m) if m.iter().all(|m| (1..=12).contains(m)) => rule["months"] = json!(m),
                    _ => e.add(&format!("rule{i}_months"), "months are 1 to 12"),
                }
            }
            rule_rows.push(i);
            schedule.push(rule);
        }
        let holidays: Vec<&str> = self
            .holidays
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|d| !d.is_empty())
            .collect();
        if let Some(d) = holidays.iter().find(|d| d.parse::<NaiveDate>().is_err()) {
            e.add(
                "holidays",
                format!(
                    "{:?} is not a date (YYYY-MM-DD)",
                    crate::ingest::normalize::truncate(d, 40)
                ),
            );
        }
        let mut contract = Map::new();
        contract.insert("currency".into(), json!(self.currency.trim()));
        contract.insert("bands".into(), json!(bands));
        contract.insert("schedule".into(), json!(schedule));
        contract.insert("default_band".into(), json!(self.default_band.trim()));
        contract.insert("holidays".into(), json!(holidays));
        let tariffs: Map<String, Value> = self
            .tariffs
            .iter()
            .filter(|(_, band)| !band.trim().is_empty())
            .map(|(n, band)| (n.to_string(), json!(band.trim())))
            .collect();
        if !tariffs.is_empty() {
            contract.insert("meter_tariff_bands".into(), Value::Object(tariffs));
        }
        if !self.demand_charge.trim().is_empty() {
            contract.insert("demand_charge".into(), json!(self.demand_charge.trim()));
        }
        match (self.tan_phi_max.trim(), self.reactive_price.trim()) {
            ("", "") => {}
            ("", _) => e.add("tan_phi_max", "a reactive charge needs tan φ max too"),
            (_, "") => e.add(
                "reactive_price",
                "a reactive charge needs a price per kvarh",
            ),
            (tan, price) => match tan.parse::<f64>() {
                Ok(tan) => {
                    contract.insert(
                        "reactive".into(),
                        json!({ "tan_phi_max": tan, "price": price }),
                    );
                }
                Err(_) => e.add("tan_phi_max", "tan φ max is a number such as 0.33"),
            },
        }
        if !e.is_empty() {
            return Err(e);
        }
        match Contract::from_value(Value::Object(contract)) {
            Ok(c) => Ok((valid_from.unwrap_or_default(), c)),
            Err(TariffError::Invalid { field, message }) => {
                e.add(&form_field(&field, &band_rows, &rule_rows), message);
                Err(e)
            }
            Err(TariffError::Json(message)) => {
                e.add("", message);
                Err(e)
            }
        }
    }
}

/// The form field of a contract field path (`bands[1].import_price` → `band3_import` when
/// the second band given is the form's fourth row).
fn form_field(path: &str, bands: &[usize], rules: &[usize]) -> String {
    let indexed = |prefix: &str| -> Option<(usize, &str)> {
        let rest = path.strip_prefix(prefix)?.strip_prefix('[')?;
        let (n, field) = rest.split_once(']')?;
        Some((n.parse().ok()?, field.trim_start_matches('.')))
    };
    if let Some((i, field)) = indexed("bands") {
        let row = bands.get(i).copied().unwrap_or(i);
        let part = match field {
            "import_price" => "import",
            "export_price" => "export",
            _ => "name",
        };
        return format!("band{row}_{part}");
    }
    if let Some((i, field)) = indexed("schedule") {
        let row = rules.get(i).copied().unwrap_or(i);
        let part = match field {
            "days" | "months" | "from" | "to" | "name" => field,
            _ => "band",
        };
        return format!("rule{row}_{part}");
    }
    match path {
        "currency" | "default_band" | "demand_charge" | "holidays" => path.to_owned(),
        "bands" => "band0_name".into(),
        "reactive.tan_phi_max" => "tan_phi_max".into(),
        "reactive.price" => "reactive_price".into(),
        other => match other.strip_prefix("meter_tariff_bands.") {
            Some(n) => format!("tariff{n}"),
            None if other.starts_with("meter_tariff_bands") => "tariff1".into(),
            None => String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_filled_form_makes_a_valid_contract_and_reads_back_the_same() {
        let form = pairs(&[
            ("valid_from", "2026-01-01"),
            ("currency", "EUR"),
            ("default_band", "night"),
            ("band0_name", "day"),
            ("band0_import", "0.142"),
            ("band0_export", "0.06"),
            ("band1_name", "night"),
            ("band1_import", "0.095"),
            ("rule0_band", "day"),
            ("rule0_days", "mon"),
            ("rule0_days", "fri"),
            ("rule0_from", "06:00"),
            ("rule0_to", "22:00"),
            ("rule0_months", "11, 12"),
            ("rule0_months", "1"),
            ("holidays", "2026-01-01\n2026-12-25"),
            ("tariff1", "day"),
            ("demand_charge", "3.75"),
            ("tan_phi_max", "0.33"),
            ("reactive_price", "0.015"),
        ]);
        let f = ContractFields::of_form(&form);
        let (from, contract) = f.check().unwrap();
        assert_eq!(from, NaiveDate::from_ymd_opt(2026, 1, 1).unwrap());
        assert_eq!(contract.bands[0].import_price.micro(), 142_000);
        assert_eq!(contract.schedule[0].months, Some(vec![11, 12, 1]));
        assert_eq!(contract.holidays.len(), 2);
        // Stored and shown again: the same fields, the months ticked.
        let stored = serde_json::to_value(&contract).unwrap();
        let again = ContractFields::of_stored(1, from, &stored).padded();
        assert!(again.rules[0].has_month(11) && !again.rules[0].has_month(2));
        assert_eq!(again.band_names(), vec!["day", "night"]);
        assert_eq!(again.check().unwrap().1, contract);
    }

    #[test]
    fn mistakes_are_named_beside_their_field() {
        let base = [
            ("valid_from", "2026-01-01"),
            ("currency", "EUR"),
            ("default_band", "day"),
            ("band0_name", "day"),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut all = pairs(&base);
            all.extend(pairs(extra));
            ContractFields::of_form(&all).check().unwrap_err()
        };
        assert!(with(&[]).has("band0_import"));
        let e = with(&[("band0_import", "0.1"), ("rule2_band", "day")]);
        assert!(e.has("rule2_days") && e.has("rule2_from") && e.has("rule2_to"));
        let e = with(&[("band0_import", "0.1"), ("holidays", "25.12.2026")]);
        assert!(e.get("holidays").unwrap().contains("25.12.2026"));
        assert!(with(&[("band0_import", "0.1"), ("tan_phi_max", "0.3")]).has("reactive_price"));
        // Validation of the contract itself comes from the tariff module, mapped to the row:
        // the second band given is the form's fourth row.
        let e = with(&[("band0_import", "0.1"), ("tariff2", "night")]);
        assert!(e.get("tariff2").unwrap().contains("night"), "{e:?}");
        let e = with(&[
            ("band0_import", "0.1"),
            ("band3_name", "peak"),
            ("band3_import", "1.1234567"),
        ]);
        assert!(e.has("band3_import"), "{e:?}");
        let e = with(&[
            ("band0_import", "0.1"),
            ("rule1_band", "dya"),
            ("rule1_days", "mon"),
            ("rule1_from", "06:00"),
            ("rule1_to", "24:00"),
        ]);
        assert!(e.get("rule1_band").unwrap().contains("dya"), "{e:?}");
        let e = with(&[("band0_import", "0.1"), ("currency", "eur")]);
        assert!(e.has("currency"), "{e:?}");
        assert_eq!(form_field("meter_tariff_bands", &[], &[]), "tariff1");
    }
}
