//! Which meters add up to a site's total without double counting.
//!
//! A meter measures a site, a panel or a circuit (or is not placed yet). The site's total is
//! its site meters when it has any; otherwise, per panel, the panel's meters when it has any,
//! else the meters of its circuits; plus meters not placed anywhere. A parent meter that is
//! counted makes its children "details": they are shown, never added again.

use std::collections::{HashMap, HashSet};

/// What a meter is placed on, as stored on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub device_id: i64,
    pub measures: Option<String>,
    pub panel_id: Option<i64>,
    /// For a circuit meter: the circuit and the panel that circuit belongs to.
    pub circuit_id: Option<i64>,
    pub circuit_panel_id: Option<i64>,
}

impl Placement {
    /// The panel a meter lies in, directly or through its circuit.
    fn panel(&self) -> Option<i64> {
        match self.measures.as_deref() {
            Some("panel") => self.panel_id,
            Some("circuit") => self.circuit_panel_id.or(self.panel_id),
            _ => None,
        }
    }
}

/// The meters whose sum is the site total.
pub fn top_level(meters: &[Placement]) -> HashSet<i64> {
    let site_meters: HashSet<i64> = meters
        .iter()
        .filter(|m| m.measures.as_deref() == Some("site"))
        .map(|m| m.device_id)
        .collect();
    if !site_meters.is_empty() {
        return site_meters;
    }
    let metered_panels: HashSet<i64> = meters
        .iter()
        .filter(|m| m.measures.as_deref() == Some("panel"))
        .filter_map(|m| m.panel_id)
        .collect();
    meters
        .iter()
        .filter(|m| match m.measures.as_deref() {
            Some("panel") => true,
            Some("circuit") => m.panel().is_none_or(|p| !metered_panels.contains(&p)),
            _ => true,
        })
        .map(|m| m.device_id)
        .collect()
}

/// For each counted parent meter (site or panel), the meters directly below it: a site meter's
/// children are the panel meters, or the circuit meters of unmetered panels, and unplaced
/// meters; a panel meter's children are the meters of its circuits.
pub fn children(meters: &[Placement]) -> HashMap<i64, Vec<i64>> {
    let mut out: HashMap<i64, Vec<i64>> = HashMap::new();
    let site_meters: Vec<i64> = meters
        .iter()
        .filter(|m| m.measures.as_deref() == Some("site"))
        .map(|m| m.device_id)
        .collect();
    let below_site: Vec<Placement> = meters
        .iter()
        .filter(|m| m.measures.as_deref() != Some("site"))
        .cloned()
        .collect();
    let second_level = top_level(&below_site);
    // With several site meters (e.g. two supplies), the children cannot be split between them;
    // the remainder is then reported against the first.
    if let Some(first) = site_meters.first() {
        let mut kids: Vec<i64> = second_level.iter().copied().collect();
        kids.sort_unstable();
        out.insert(*first, kids);
    }
    for panel_meter in meters
        .iter()
        .filter(|m| m.measures.as_deref() == Some("panel"))
    {
        let mut kids: Vec<i64> = meters
            .iter()
            .filter(|m| {
                m.measures.as_deref() == Some("circuit") && m.panel() == panel_meter.panel_id
            })
            .map(|m| m.device_id)
            .collect();
        kids.sort_unstable();
        // Two meters on one panel: the first one carries the circuits.
        if !out.values().any(|v| v == &kids && !kids.is_empty()) {
            out.insert(panel_meter.device_id, kids);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(
        id: i64,
        measures: Option<&str>,
        panel: Option<i64>,
        circuit_panel: Option<i64>,
    ) -> Placement {
        Placement {
            device_id: id,
            measures: measures.map(str::to_owned),
            panel_id: panel,
            circuit_id: circuit_panel.map(|p| p * 100 + id),
            circuit_panel_id: circuit_panel,
        }
    }

    fn sorted(set: HashSet<i64>) -> Vec<i64> {
        let mut v: Vec<i64> = set.into_iter().collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn site_meter_wins() {
        let meters = [
            m(1, Some("site"), None, None),
            m(2, Some("panel"), Some(10), None),
            m(3, Some("circuit"), None, Some(10)),
            m(4, None, None, None),
        ];
        assert_eq!(sorted(top_level(&meters)), vec![1]);
        assert_eq!(children(&meters)[&1], vec![2, 4]);
        assert_eq!(children(&meters)[&2], vec![3]);
    }

    #[test]
    fn panel_meter_replaces_its_circuits_but_not_others() {
        let meters = [
            m(2, Some("panel"), Some(10), None),
            m(3, Some("circuit"), None, Some(10)),
            m(5, Some("circuit"), None, Some(11)),
            m(6, Some("circuit"), None, Some(11)),
            m(4, None, None, None),
        ];
        assert_eq!(sorted(top_level(&meters)), vec![2, 4, 5, 6]);
    }

    #[test]
    fn only_circuits() {
        let meters = [
            m(3, Some("circuit"), None, Some(10)),
            m(5, Some("circuit"), None, Some(11)),
        ];
        assert_eq!(sorted(top_level(&meters)), vec![3, 5]);
        assert!(children(&meters).is_empty());
    }
}
