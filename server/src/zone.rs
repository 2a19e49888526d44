//! [`TimeZone`]: an IANA time zone that is known to exist. Sites, gateways and the
//! configuration's default zone hold one, so a zone is checked where it enters (an API body, a
//! form, the configuration, a database row) and never silently replaced by UTC later: a
//! wrong zone would shift every local day, tariff band and quarter-hour of a site.

use std::fmt;
use std::str::FromStr;

use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres};

/// An IANA time zone (`Europe/Ljubljana`, `UTC`), by its canonical tz database name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeZone(Tz);

/// The text does not name a zone of the tz database this build carries; names the zone it
/// matches but for the letter case, if one does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown time zone {name:?} (use an IANA name such as Europe/Ljubljana){}",
    .suggestion.map(|tz| format!("; did you mean {:?}?", tz.name())).unwrap_or_default()
)]
pub struct UnknownZone {
    name: String,
    suggestion: Option<Tz>,
}

impl TimeZone {
    pub const UTC: Self = Self(Tz::UTC);

    /// The zone for chrono's conversions.
    pub fn tz(self) -> Tz {
        self.0
    }

    /// Its tz database name, as stored and shown.
    pub fn name(self) -> &'static str {
        self.0.name()
    }
}

impl Default for TimeZone {
    fn default() -> Self {
        Self::UTC
    }
}

impl From<Tz> for TimeZone {
    fn from(tz: Tz) -> Self {
        Self(tz)
    }
}

impl From<TimeZone> for Tz {
    fn from(zone: TimeZone) -> Self {
        zone.0
    }
}

impl FromStr for TimeZone {
    type Err = UnknownZone;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse::<Tz>().map(Self).map_err(|_| UnknownZone {
            name: s.chars().take(64).collect(),
            suggestion: chrono_tz::TZ_VARIANTS
                .iter()
                .copied()
                .find(|tz| tz.name().eq_ignore_ascii_case(s.trim())),
        })
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq<str> for TimeZone {
    fn eq(&self, other: &str) -> bool {
        self.name() == other
    }
}

impl PartialEq<&str> for TimeZone {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

impl Serialize for TimeZone {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl sqlx::Type<Postgres> for TimeZone {
    fn type_info() -> PgTypeInfo {
        <String as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <String as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for TimeZone {
    /// A stored zone this build does not know is an error, never UTC.
    fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as Decode<Postgres>>::decode(value)?;
        Ok(text.parse::<Self>()?)
    }
}

impl Encode<'_, Postgres> for TimeZone {
    fn encode_by_ref(
        &self,
        buf: &mut PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <&str as Encode<Postgres>>::encode(self.name(), buf)
    }
}

impl utoipa::PartialSchema for TimeZone {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("IANA time zone, e.g. Europe/Ljubljana"))
            .examples(["Europe/Ljubljana"])
            .into()
    }
}

impl utoipa::ToSchema for TimeZone {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_zones_parse_and_unknown_ones_are_refused() {
        let lj: TimeZone = "Europe/Ljubljana".parse().unwrap();
        assert_eq!(lj.to_string(), "Europe/Ljubljana");
        assert_eq!(lj.tz(), chrono_tz::Europe::Ljubljana);
        assert_eq!(" UTC ".parse::<TimeZone>().unwrap(), TimeZone::UTC);
        for bad in ["", "Mars/Olympus", "Europe/Ljubljana; DROP", "+01:00"] {
            let err = bad.parse::<TimeZone>().unwrap_err();
            assert!(
                err.to_string().contains("unknown time zone"),
                "{bad}: {err}"
            );
        }
        let err = "europe/ljubljana".parse::<TimeZone>().unwrap_err();
        assert!(
            err.to_string()
                .ends_with("did you mean \"Europe/Ljubljana\"?"),
            "{err}"
        );
    }

    #[test]
    fn serde_round_trips_by_name_and_refuses_unknown_zones() {
        let zone: TimeZone = serde_json::from_str("\"America/New_York\"").unwrap();
        assert_eq!(
            serde_json::to_string(&zone).unwrap(),
            "\"America/New_York\""
        );
        assert!(serde_json::from_str::<TimeZone>("\"Nowhere/Land\"").is_err());
    }
}
