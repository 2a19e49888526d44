//! Serde helpers for fields that devices spell inconsistently.

use alloc::collections::btree_map::{BTreeMap, Entry};
use alloc::string::String;
use core::fmt;
use core::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Serializer;
use serde_json::Value;

use crate::text::truncate_chars;

/// A JSON object of raw values (`measurements`, `counters`, `settings`) that refuses a key
/// given twice with different values: serde_json would keep the last one silently, so
/// `{"U1":"111 V","U1":"222 V"}` would store 222 V and nobody would know the document
/// also said 111 V. The same value twice says one thing and is accepted.
pub(crate) fn unique_map<'de, D>(deserializer: D) -> Result<BTreeMap<String, Value>, D::Error>
where
    D: Deserializer<'de>,
{
    deserializer.deserialize_map(UniqueMap)
}

struct UniqueMap;

impl<'de> Visitor<'de> for UniqueMap {
    type Value = BTreeMap<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object whose keys are unique")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            match out.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(known) if *known.get() == value => {}
                Entry::Occupied(known) => {
                    return Err(de::Error::custom(alloc::format!(
                        "duplicate key {:?} with different values ({} and {})",
                        truncate_chars(known.key(), 64),
                        truncate_chars(&alloc::format!("{}", known.get()), 64),
                        truncate_chars(&alloc::format!("{value}"), 64),
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// An optional unsigned integer sent as a JSON number, a numeric string (`"12"`), `"N/A"`,
/// `""` or `null` (the last three mean absent). Anything else, including a value that does
/// not fit `T`, is an error: these header numbers say which device a document is about.
pub(crate) fn opt_uint<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    deserializer.deserialize_any(OptUint(PhantomData))
}

struct OptUint<T>(PhantomData<T>);

impl<T: TryFrom<u64>> OptUint<T> {
    fn fit<E: de::Error>(&self, value: u64) -> Result<Option<T>, E> {
        T::try_from(value)
            .map(Some)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(value), self))
    }
}

impl<'de, T: TryFrom<u64>> Visitor<'de> for OptUint<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "an unsigned integer up to {}, a numeric string, \"N/A\" or null",
            core::any::type_name::<T>()
        )
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        self.fit(value)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        match u64::try_from(value) {
            Ok(value) => self.fit(value),
            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(value), &self)),
        }
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        // `12.0` is twelve; `12.5` is not an address.
        let integer = value as u64;
        if value >= 0.0 && integer as f64 == value {
            self.fit(integer)
        } else {
            Err(E::invalid_value(de::Unexpected::Float(value), &self))
        }
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        let trimmed = value.trim();
        if trimmed.is_empty() || trimmed.eq_ignore_ascii_case("N/A") {
            return Ok(None);
        }
        match trimmed.parse::<u64>() {
            Ok(number) => self.fit(number),
            Err(_) => Err(E::invalid_value(de::Unexpected::Str(value), &self)),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// Serialises an absent Modbus address as the SG does in bicom documents: `"N/A"`.
pub(crate) fn addr_or_na<S: Serializer>(
    value: &Option<u16>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(addr) => serializer.serialize_u16(*addr),
        None => serializer.serialize_str("N/A"),
    }
}
