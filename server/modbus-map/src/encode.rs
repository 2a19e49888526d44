//! The inverse of decoding: register words that a device following the map would hold for
//! given values. Used by simulated devices and round-trip tests.

use crate::decimal::scale_pow10;
use crate::map::{Field, ValueType, WordOrder};
use crate::{Decoded, Function, RegisterMap};

/// Register words: (function, wire address, word).
pub type Registers = Vec<(Function, u16, u16)>;

fn put(out: &mut Registers, field: &Field, mut words: Vec<u16>) {
    if field.order == WordOrder::LowFirst && !matches!(field.ty, ValueType::Ascii(_)) {
        words.reverse();
    }
    for (n, w) in words.into_iter().enumerate() {
        out.push((field.function, field.address.wrapping_add(n as u16), w));
    }
}

fn split(bits: u64, words: u16) -> Vec<u16> {
    (0..words)
        .rev()
        .map(|n| (bits >> (16 * u32::from(n))) as u16)
        .collect()
}

/// Words of an exact integer `value × 10^exponent` in `ty` (for T5/T6 the exponent is part of
/// the value, for the others it must be 0).
fn exact_words(ty: ValueType, value: i128, exponent: i32) -> Option<Vec<u16>> {
    let fits = |lo: i128, hi: i128| (lo..=hi).contains(&value);
    match ty {
        ValueType::T5 | ValueType::T6 => {
            let exp = i8::try_from(exponent).ok()?;
            let ok = if ty == ValueType::T5 {
                fits(0, (1 << 24) - 1)
            } else {
                fits(-(1 << 23), (1 << 23) - 1)
            };
            ok.then(|| {
                let mantissa = (value as i64 as u64) & 0x00FF_FFFF;
                split((u64::from(exp as u8) << 24) | mantissa, 2)
            })
        }
        _ if exponent != 0 => None,
        ValueType::U16 => fits(0, 0xFFFF).then(|| split(value as u64, 1)),
        ValueType::I16 => {
            fits(i16::MIN.into(), i16::MAX.into()).then(|| split(value as i16 as u16 as u64, 1))
        }
        ValueType::U32 => fits(0, 0xFFFF_FFFF).then(|| split(value as u64, 2)),
        ValueType::I32 => {
            fits(i32::MIN.into(), i32::MAX.into()).then(|| split(value as i32 as u32 as u64, 2))
        }
        ValueType::U64 => fits(0, u64::MAX.into()).then(|| split(value as u64, 4)),
        ValueType::F32 | ValueType::T7 | ValueType::Ascii(_) => None,
    }
}

/// Words of a measurement `x` in raw units (value / (scale × unit factor)).
fn measurement_words(ty: ValueType, x: f64) -> Option<Vec<u16>> {
    if !x.is_finite() {
        return None;
    }
    match ty {
        ValueType::F32 => Some(split(u64::from((x as f32).to_bits()), 2)),
        ValueType::T7 => None,
        ValueType::T5 | ValueType::T6 => (-9..=20).find_map(|e| {
            let m = (x / 10f64.powi(e)).round();
            if m.abs() >= 16_777_216.0 {
                return None;
            }
            exact_words(ty, m as i128, e)
        }),
        _ => {
            let r = x.round();
            if r.abs() > 1.9e19 {
                return None;
            }
            exact_words(ty, r as i128, 0)
        }
    }
}

/// See [`RegisterMap::encode`].
pub fn encode(map: &RegisterMap, values: &Decoded) -> Result<Registers, String> {
    let mut out = Registers::new();
    for (column, value) in &values.measurements {
        let m = map
            .measurements
            .iter()
            .find(|m| m.column == *column)
            .ok_or_else(|| format!("model {} does not read {column}", map.model))?;
        let v = f64::from(*value);
        let words = if m.field.ty == ValueType::T7 {
            if v.abs() > 1.0 {
                None
            } else {
                let kind: u16 = if v < 0.0 { 0x00FF } else { 0 };
                Some(vec![kind, (v.abs() * 10_000.0).round() as u16])
            }
        } else {
            measurement_words(m.field.ty, v / (m.scale.to_f64() * m.factor))
        }
        .ok_or_else(|| format!("{column} = {value} cannot be encoded as {:?}", m.field.ty))?;
        put(&mut out, &m.field, words);
    }
    for value in &values.counters {
        let c = map
            .counters
            .iter()
            .find(|c| c.spec.name == value.name)
            .ok_or_else(|| format!("model {} has no counter {}", map.model, value.name))?;
        let exponents: Vec<i32> = if c.exponent.is_some() {
            (-3..=9).collect()
        } else {
            vec![0]
        };
        let type_exponents: Vec<i32> = if matches!(c.field.ty, ValueType::T5 | ValueType::T6) {
            (-9..=20).collect()
        } else {
            vec![0]
        };
        let mut found = None;
        'search: for reg_exp in &exponents {
            for type_exp in &type_exponents {
                // value_milli = r × scale × 10^(type_exp + reg_exp + unit + 3)
                let exp = c.scale.exponent + type_exp + reg_exp + c.unit_pow10 + 3;
                let divisor = i128::from(c.scale.mantissa);
                let Some(unscaled) = scale_pow10(i128::from(value.value_milli), -exp) else {
                    continue;
                };
                let unscaled = i128::from(unscaled);
                if unscaled % divisor != 0 {
                    continue;
                }
                let r = unscaled / divisor;
                if scale_pow10(r * divisor, exp) != Some(value.value_milli) {
                    continue;
                }
                if let Some(words) = exact_words(c.field.ty, r, *type_exp) {
                    found = Some((*reg_exp, words));
                    break 'search;
                }
            }
        }
        let (reg_exp, words) = found.ok_or_else(|| {
            format!(
                "counter {} = {} m{} cannot be encoded exactly",
                value.name, value.value_milli, value.unit
            )
        })?;
        put(&mut out, &c.field, words);
        if let Some((function, address)) = c.exponent {
            out.push((function, address, reg_exp as i16 as u16));
        }
    }
    if let Some(state) = values.relay_state {
        let r = map
            .relay
            .as_ref()
            .ok_or_else(|| format!("model {} has no relay", map.model))?;
        let v = if state { r.on_value } else { r.off_value };
        put(&mut out, &r.state, vec![v]);
    }
    if let Some(tariff) = values.tariff {
        let t = map
            .tariff
            .as_ref()
            .ok_or_else(|| format!("model {} reads no tariff", map.model))?;
        put(&mut out, &t.field, vec![tariff as u16]);
    }
    for (name, text) in &values.info {
        let i = map
            .info
            .iter()
            .find(|i| &i.name == name)
            .ok_or_else(|| format!("model {} has no info {name}", map.model))?;
        let n = usize::from(i.field.ty.words());
        let mut bytes: Vec<u8> = text.bytes().take(2 * n).collect();
        bytes.resize(2 * n, b' ');
        let words = bytes
            .chunks(2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
            .collect();
        put(&mut out, &i.field, words);
    }
    Ok(out)
}
