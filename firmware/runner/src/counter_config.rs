//! An Iskra meter's counter configuration, read from its holding registers the way Iskra's
//! own client library (pyiskra) reads them: 40151 the connection (bit 1 set: the meter is
//! wired in reverse, so import and export swap), and for counter `k` (0-based) 40421 + 10·k
//! its unit (low two bits: 1 Wh, 2 varh, 3 VAh) and 40422 + 10·k the quadrants it counts
//! (low four bits: 6 or 12 import, 3 or 9 export, 15 both ways).

use sg_wire::message::EnergyUnit;

use crate::source::Direction;

/// Holding register 40151 (wire address 151): the connection mode.
pub const CONNECTION: u16 = 151;
/// Holding registers 40421.. : ten words per counter; the first two of each are read.
pub const START: u16 = 421;
/// Up to counter 4's quadrant word (40452).
pub const LEN: u16 = 3 * 10 + 2;

/// What the meter says about one of its four counters; `None` where a register holds a
/// value without meaning (an unconfigured counter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterConfig {
    pub unit: Option<EnergyUnit>,
    pub direction: Option<Direction>,
}

/// Decodes [`CONNECTION`]'s word and the block read from [`START`]; counters whose words
/// are missing from a short block stay unknown.
#[must_use]
pub fn decode(connection: u16, words: &[u16]) -> [CounterConfig; 4] {
    let reversed = connection & 0b10 != 0;
    let mut out = [CounterConfig::default(); 4];
    for (k, config) in out.iter_mut().enumerate() {
        let (Some(&unit), Some(&quadrants)) = (words.get(10 * k), words.get(10 * k + 1)) else {
            continue;
        };
        config.unit = match unit & 0b11 {
            1 => Some(EnergyUnit::Wh),
            2 => Some(EnergyUnit::Varh),
            3 => Some(EnergyUnit::VAh),
            _ => None,
        };
        config.direction = match (quadrants & 0x0F, reversed) {
            (6 | 12, false) | (3 | 9, true) => Some(Direction::Import),
            (3 | 9, false) | (6 | 12, true) => Some(Direction::Export),
            (15, _) => Some(Direction::Bidirectional),
            _ => None,
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(pairs: [(u16, u16); 4]) -> Vec<u16> {
        let mut words = vec![0; usize::from(LEN)];
        for (k, (unit, quadrants)) in pairs.into_iter().enumerate() {
            words[10 * k] = unit;
            words[10 * k + 1] = quadrants;
        }
        words
    }

    #[test]
    fn units_and_directions_as_pyiskra_reads_them() {
        let words = block([(1, 6), (1, 9), (2, 12), (0x0103, 0x00F3)]);
        let config = decode(0, &words);
        assert_eq!(
            config,
            [
                CounterConfig {
                    unit: Some(EnergyUnit::Wh),
                    direction: Some(Direction::Import)
                },
                CounterConfig {
                    unit: Some(EnergyUnit::Wh),
                    direction: Some(Direction::Export)
                },
                CounterConfig {
                    unit: Some(EnergyUnit::Varh),
                    direction: Some(Direction::Import)
                },
                // Only the low bits count.
                CounterConfig {
                    unit: Some(EnergyUnit::VAh),
                    direction: Some(Direction::Export)
                },
            ]
        );
    }

    #[test]
    fn a_reversed_meter_swaps_import_and_export() {
        let words = block([(1, 6), (1, 3), (1, 15), (0, 0)]);
        let config = decode(0b10, &words);
        assert_eq!(config[0].direction, Some(Direction::Export));
        assert_eq!(config[1].direction, Some(Direction::Import));
        assert_eq!(config[2].direction, Some(Direction::Bidirectional));
        assert_eq!(config[3], CounterConfig::default(), "unconfigured");
        let short = decode(0, &words[..5]);
        assert_eq!(short[0].direction, Some(Direction::Import));
        assert_eq!(short[1], CounterConfig::default());
    }
}
