//! Configuration: validation, serde, identity helpers.

mod common;

use common::{monday, SERIAL};
use sg_gateway_core::config::{ConfigError, GatewayConfig};
use sg_gateway_core::sim::SimSource;
use sg_gateway_core::{Gateway, Link, Slot};

fn refused(change: impl FnOnce(&mut GatewayConfig)) -> ConfigError {
    let mut config = GatewayConfig::example(SERIAL);
    change(&mut config);
    Gateway::new(config, SimSource::new(), 0, monday(0, 0, 0)).expect_err("refused")
}

#[test]
fn invalid_configurations_are_refused() {
    assert!(matches!(
        refused(|c| c.serial = " x".into()),
        ConfigError::Serial(_)
    ));
    assert_eq!(
        refused(|c| c.devices[1].slot = Slot::IrMeter),
        ConfigError::DuplicateSlot(Slot::IrMeter)
    );
    assert_eq!(
        refused(|c| c.devices[2].slot = Slot::Rs485(17)),
        ConfigError::NoSuchSlot(17)
    );
    assert_eq!(
        refused(|c| c.devices[0].slot = Slot::IrRelay),
        ConfigError::WrongKind(Slot::IrRelay)
    );
    assert_eq!(
        refused(|c| c.devices[2].push_interval_s = 0),
        ConfigError::ZeroInterval(Slot::Rs485(1))
    );
    let two_relays_at_40 = |c: &mut GatewayConfig| {
        let mut relay = c.devices[3].clone();
        relay.slot = Slot::Rs485(9);
        c.devices.push(relay);
    };
    assert_eq!(
        refused(two_relays_at_40),
        ConfigError::DuplicateRelayAddr(40)
    );
    assert!(matches!(
        refused(|c| c.links[0].queue_capacity = 0),
        ConfigError::Link { link: 1, .. }
    ));
    let phases = |c: &mut GatewayConfig| {
        if let sg_gateway_core::DeviceKind::Meter(m) = &mut c.devices[0].kind {
            m.phases = 2;
        }
    };
    assert_eq!(
        refused(phases),
        ConfigError::Phases {
            slot: Slot::IrMeter,
            phases: 2
        }
    );
}

#[test]
fn configuration_round_trips_through_serde_with_defaults() {
    let config = GatewayConfig::example(SERIAL);
    let text = serde_json::to_string(&config).unwrap();
    assert_eq!(
        serde_json::from_str::<GatewayConfig>(&text).unwrap(),
        config
    );

    let mut value = serde_json::to_value(&config).unwrap();
    let object = value.as_object_mut().unwrap();
    object.remove("first_push_delay_s");
    object.remove("receipts");
    let defaulted: GatewayConfig = serde_json::from_value(value).unwrap();
    assert_eq!(defaulted.first_push_delay_s, 60);
    assert!(!defaulted.receipts);
}

#[test]
fn identity_helpers() {
    let serial = "SG0000170000000000000000000X"; // the longest a root topic allows
    let config = GatewayConfig::example(serial);
    let gw = Gateway::new(config, SimSource::new(), 0, monday(0, 0, 0)).unwrap();
    assert_eq!(gw.client_id(Link::Two), format!("{serial}-2"));
    assert_eq!(gw.command_topic(Link::One), format!("sg/{serial}/sub"));
}
