//! Iskra's 32-bit register formats T5, T6 and T7 (two words, high word first), decoded once:
//! the maps' `t5`/`t6`/`t7` types and the gateway runner's fixed Iskra block reads both use
//! these. Layouts in `tests/fixtures/modbus/README.md`.

/// A T5 or T6 value, exact: `mantissa × 10^exponent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scaled {
    /// 24 bits: 0..=16_777_215 in T5, -8_388_608..=8_388_607 in T6.
    pub mantissa: i32,
    pub exponent: i8,
}

impl Scaled {
    /// The value as a float (instantaneous values; counters stay exact).
    #[must_use]
    pub fn to_f64(self) -> f64 {
        f64::from(self.mantissa) * 10f64.powi(i32::from(self.exponent))
    }
}

/// A T7 power factor as its three fields, unchecked (a map refuses flags other than 00/FF
/// and a value above 1; the gateway reads them as they come).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct T7 {
    /// 00 import, FF export.
    pub direction: u8,
    /// 00 inductive, FF capacitive.
    pub kind: u8,
    /// The power factor × 10000.
    pub ten_thousandths: u16,
}

impl T7 {
    /// Energy flows to the grid.
    #[must_use]
    pub fn export(self) -> bool {
        self.direction == 0xFF
    }

    /// Capacitive (`Cap`) rather than inductive (`Ind`).
    #[must_use]
    pub fn capacitive(self) -> bool {
        self.kind == 0xFF
    }

    /// The power factor, unsigned.
    #[must_use]
    pub fn value(self) -> f64 {
        f64::from(self.ten_thousandths) / 10_000.0
    }
}

fn join(hi: u16, lo: u16) -> u32 {
    (u32::from(hi) << 16) | u32::from(lo)
}

fn exponent(raw: u32) -> i8 {
    (raw >> 24) as u8 as i8
}

/// T5: the top byte a signed decimal exponent, the low 24 bits an unsigned mantissa.
#[must_use]
pub fn decode_t5(hi: u16, lo: u16) -> Scaled {
    let raw = join(hi, lo);
    Scaled {
        // 24 bits fit an i32.
        mantissa: (raw & 0x00FF_FFFF) as i32,
        exponent: exponent(raw),
    }
}

/// T6: as T5, but the 24-bit mantissa is two's complement.
#[must_use]
pub fn decode_t6(hi: u16, lo: u16) -> Scaled {
    let raw = join(hi, lo);
    Scaled {
        // The mantissa shifted to the top of an i32 and back, to sign-extend it.
        mantissa: ((raw << 8) as i32) >> 8,
        exponent: exponent(raw),
    }
}

/// T7: the top byte the direction, the next the kind, the low 16 bits the power factor × 10000.
#[must_use]
pub fn decode_t7(hi: u16, lo: u16) -> T7 {
    T7 {
        direction: (hi >> 8) as u8,
        kind: hi as u8,
        ten_thousandths: lo,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaled(mantissa: i32, exponent: i8) -> Scaled {
        Scaled { mantissa, exponent }
    }

    #[test]
    fn t5_is_an_unsigned_mantissa_times_ten_to_the_exponent() {
        // FD 03 80 C4: exponent -3, mantissa 229572 → 229.572 (a voltage).
        assert_eq!(decode_t5(0xFD03, 0x80C4), scaled(229_572, -3));
        // 02 00 00 07: 7 × 10² = 700.
        assert_eq!(decode_t5(0x0200, 0x0007), scaled(7, 2));
        assert_eq!(decode_t5(0x0200, 0x0007).to_f64(), 700.0);
        // The mantissa is unsigned in T5: FF FF FF ED is 16777197 × 10⁻¹.
        assert_eq!(decode_t5(0xFFFF, 0xFFED), scaled(16_777_197, -1));
    }

    #[test]
    fn t6_mantissa_is_twos_complement() {
        // The README's FF FF FF ED, read as T6: exponent -1, mantissa -19 → -1.9.
        assert_eq!(decode_t6(0xFFFF, 0xFFED), scaled(-19, -1));
        // 00 00 00 13: +19.
        assert_eq!(decode_t6(0x0000, 0x0013), scaled(19, 0));
        // FE 00 03 E8: 1000 × 10⁻² (positive mantissa, negative exponent).
        assert_eq!(decode_t6(0xFE00, 0x03E8), scaled(1000, -2));
        assert_eq!(decode_t6(0xFE00, 0x03E8).to_f64(), 10.0);
        // FD 80 00 00: the most negative mantissa.
        assert_eq!(decode_t6(0xFD80, 0x0000), scaled(-8_388_608, -3));
    }

    #[test]
    fn t7_carries_direction_kind_and_value() {
        // A power factor of 0.82, imported, inductive.
        let pf = decode_t7(0x0000, 8200);
        assert!(!pf.export() && !pf.capacitive() && pf.value() == 0.82);
        let pf = decode_t7(0xFFFF, 2124);
        assert!(pf.export() && pf.capacitive() && pf.value() == 0.2124);
        let pf = decode_t7(0x00FF, 10_000);
        assert!(!pf.export() && pf.capacitive() && pf.value() == 1.0);
        // Flags other than 00/FF are kept as they are, for the caller to judge.
        assert_eq!(decode_t7(0x12FE, 1).direction, 0x12);
        assert_eq!(decode_t7(0x12FE, 1).kind, 0xFE);
    }
}
