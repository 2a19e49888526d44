//! Decoding the words of block reads. Every byte is hostile: a value that cannot be
//! represented becomes a [`DecodeIssue`], never a panic.

use std::collections::HashMap;

use crate::decimal::scale_pow10;
use crate::iskra;
use crate::map::{Field, ValueType, WordOrder};
use crate::{BlockRead, CounterValue, DecodeIssue, Decoded, Function, RegisterMap};

struct Words(HashMap<(Function, u16), u16>);

impl Words {
    fn new(blocks: &[(BlockRead, Vec<u16>)]) -> Self {
        let mut map = HashMap::new();
        for (block, words) in blocks {
            for (n, word) in words.iter().take(usize::from(block.count)).enumerate() {
                // n < count <= 65535 - start for a well-formed block; skip anything past 65535.
                if let Some(address) = u16::try_from(n)
                    .ok()
                    .and_then(|n| block.start.checked_add(n))
                {
                    map.insert((block.function, address), *word);
                }
            }
        }
        Words(map)
    }

    /// The words of `field` in register order, or `None` when any was not read.
    fn get(&self, function: Function, address: u16, count: u16) -> Option<Vec<u16>> {
        (0..count)
            .map(|n| {
                address
                    .checked_add(n)
                    .and_then(|a| self.0.get(&(function, a)).copied())
            })
            .collect()
    }

    fn field(&self, field: &Field) -> Option<Vec<u16>> {
        let mut words = self.get(field.function, field.address, field.ty.words())?;
        if field.order == WordOrder::LowFirst && !matches!(field.ty, ValueType::Ascii(_)) {
            words.reverse();
        }
        Some(words)
    }
}

/// A raw value: an exact integer times a power of ten, a float, or a power factor.
enum Raw {
    Exact { value: i128, exponent: i32 },
    Float(f64),
    PowerFactor(f64),
}

fn join(words: &[u16]) -> u64 {
    words
        .iter()
        .fold(0u64, |acc, w| (acc << 16) | u64::from(*w))
}

/// Decodes big-endian (high word first) words of a numeric type.
fn raw(ty: ValueType, words: &[u16]) -> Result<Raw, String> {
    let bits = join(words);
    Ok(match ty {
        ValueType::U16 | ValueType::U32 | ValueType::U64 => Raw::Exact {
            value: i128::from(bits),
            exponent: 0,
        },
        ValueType::I16 => Raw::Exact {
            value: i128::from(bits as u16 as i16),
            exponent: 0,
        },
        ValueType::I32 => Raw::Exact {
            value: i128::from(bits as u32 as i32),
            exponent: 0,
        },
        ValueType::F32 => {
            let v = f32::from_bits(bits as u32);
            if !v.is_finite() {
                return Err(format!("f32 register holds {v} (bits {bits:#010X})"));
            }
            Raw::Float(f64::from(v))
        }
        ValueType::T5 | ValueType::T6 => {
            let (hi, lo) = ((bits >> 16) as u16, bits as u16);
            let scaled = if ty == ValueType::T5 {
                iskra::decode_t5(hi, lo)
            } else {
                iskra::decode_t6(hi, lo)
            };
            Raw::Exact {
                value: i128::from(scaled.mantissa),
                exponent: i32::from(scaled.exponent),
            }
        }
        ValueType::T7 => {
            let t7 = iskra::decode_t7((bits >> 16) as u16, bits as u16);
            let iskra::T7 {
                direction,
                kind,
                ten_thousandths: pf,
            } = t7;
            if !matches!(direction, 0x00 | 0xFF) || !matches!(kind, 0x00 | 0xFF) {
                return Err(format!(
                    "T7 flags {direction:02X} {kind:02X} are not 00/FF import/export, inductive/capacitive"
                ));
            }
            if pf > 10_000 {
                return Err(format!("T7 power factor {pf}/10000 is above 1"));
            }
            // Signed like the SG path: capacitive ("Cap") is negative.
            Raw::PowerFactor(if t7.capacitive() {
                -t7.value()
            } else {
                t7.value()
            })
        }
        ValueType::Ascii(_) => return Err("text is not a number".into()),
    })
}

fn text(words: &[u16]) -> String {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    let s: String = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                ' '
            }
        })
        .collect();
    s.trim().to_string()
}

pub fn decode(map: &RegisterMap, blocks: &[(BlockRead, Vec<u16>)]) -> Decoded {
    let words = Words::new(blocks);
    let mut out = Decoded::default();
    let issue = |quantity: &str, register: u16, message: String| DecodeIssue {
        quantity: quantity.to_string(),
        register,
        message,
    };
    let not_read = |field: &Field| {
        format!(
            "registers {}..{} (function {}) were not read",
            field.address,
            u32::from(field.address) + u32::from(field.ty.words()) - 1,
            field.function.code()
        )
    };

    for m in &map.measurements {
        let Some(w) = words.field(&m.field) else {
            out.issues
                .push(issue(m.column, m.field.address, not_read(&m.field)));
            continue;
        };
        let value = match raw(m.field.ty, &w) {
            Err(e) => Err(e),
            Ok(Raw::PowerFactor(pf)) => Ok(pf),
            Ok(Raw::Exact { value, exponent }) => {
                Ok(value as f64 * 10f64.powi(exponent) * m.scale.to_f64() * m.factor)
            }
            Ok(Raw::Float(v)) => Ok(v * m.scale.to_f64() * m.factor),
        };
        let value = value.and_then(|v| {
            if !v.is_finite() || v.abs() > f64::from(f32::MAX) {
                Err(format!("value {v} does not fit a measurement"))
            } else if m.power_factor && v.abs() > 1.0 + 1e-9 {
                Err(format!("power factor {v} is outside -1..1"))
            } else {
                Ok(v as f32)
            }
        });
        match value {
            Ok(v) => out.measurements.push((m.column, v)),
            Err(e) => out.issues.push(issue(m.column, m.field.address, e)),
        }
    }

    for c in &map.counters {
        let name = c.spec.name.as_str();
        let Some(w) = words.field(&c.field) else {
            out.issues
                .push(issue(name, c.field.address, not_read(&c.field)));
            continue;
        };
        let register_exponent = match c.exponent {
            None => Ok(0),
            Some((function, address)) => match words.get(function, address, 1) {
                None => Err(format!(
                    "exponent register {address} (function {}) was not read",
                    function.code()
                )),
                Some(e) => {
                    let e = e[0] as i16;
                    // Real meters use a few units either way; anything beyond is garbage.
                    if (-9..=9).contains(&e) {
                        Ok(i32::from(e))
                    } else {
                        Err(format!(
                            "exponent register {address} holds {e}, outside -9..9"
                        ))
                    }
                }
            },
        };
        let value = register_exponent.and_then(|reg_exp| match raw(c.field.ty, &w)? {
            Raw::Exact { value, exponent } => {
                let product = value
                    .checked_mul(i128::from(c.scale.mantissa))
                    .ok_or_else(|| "counter overflows".to_string())?;
                let exp = exponent + c.scale.exponent + reg_exp + c.unit_pow10 + 3;
                scale_pow10(product, exp).ok_or_else(|| {
                    format!("counter {value}e{exponent} × scale {} overflows", c.scale)
                })
            }
            _ => Err("counter register is not an exact number".into()),
        });
        match value {
            Ok(value_milli) => out.counters.push(CounterValue {
                name: name.to_string(),
                unit: c.spec.unit,
                resettable: c.spec.resettable,
                value_milli,
            }),
            Err(e) => out.issues.push(issue(name, c.field.address, e)),
        }
    }

    if let Some(r) = &map.relay {
        match words.field(&r.state) {
            None => out
                .issues
                .push(issue("relay", r.state.address, not_read(&r.state))),
            Some(w) if w[0] == r.on_value => out.relay_state = Some(true),
            Some(w) if w[0] == r.off_value => out.relay_state = Some(false),
            Some(w) => out.issues.push(issue(
                "relay",
                r.state.address,
                format!(
                    "state {} is neither on ({}) nor off ({})",
                    w[0], r.on_value, r.off_value
                ),
            )),
        }
    }

    if let Some(t) = &map.tariff {
        match words.field(&t.field) {
            None => out
                .issues
                .push(issue("tariff", t.field.address, not_read(&t.field))),
            Some(w) => match t.field.ty {
                ValueType::I16 => out.tariff = Some(w[0] as i16),
                _ => match i16::try_from(w[0]) {
                    Ok(v) => out.tariff = Some(v),
                    Err(_) => out.issues.push(issue(
                        "tariff",
                        t.field.address,
                        format!("tariff {} is out of range", w[0]),
                    )),
                },
            },
        }
    }

    for i in &map.info {
        match words.field(&i.field) {
            None => out
                .issues
                .push(issue(&i.name, i.field.address, not_read(&i.field))),
            Some(w) => out.info.push((i.name.clone(), text(&w))),
        }
    }
    out
}
