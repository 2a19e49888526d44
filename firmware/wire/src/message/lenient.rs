//! Serde helpers for fields that devices spell inconsistently.

use core::fmt;
use core::marker::PhantomData;

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

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
