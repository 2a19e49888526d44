//! Faults on demand in a running gateway: applied now (`POST /faults` calls this) or after a
//! delay (`--fault-after`), and refused when the gateway cannot apply them.

use std::time::Duration;

use sg_gateway::config::{Config, Link};
use sg_gateway::fault::FaultRefused;
use sg_gateway::RunningGateway;
use sg_gateway_core::{Fault, MeterSource, Slot};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);

/// A gateway with its links off: pushes queue up, nothing needs a broker.
async fn offline_gateway(state: &std::path::Path) -> RunningGateway {
    let mut config = Config::for_serial("SGF000001");
    config.first_push_delay_s = 0;
    config.set_push_interval(1);
    config.state_dir = Some(state.to_owned());
    config.link1 = Some(Link {
        enabled: Some(false),
        ..Link::default()
    });
    RunningGateway::start(config.resolve().unwrap(), 3)
        .await
        .unwrap()
}

/// The IR meter's resettable counter1, mWh.
fn counter1(gateway: &RunningGateway) -> i64 {
    gateway.with_core(|core| {
        core.source_mut()
            .read_counters(Slot::IrMeter)
            .unwrap()
            .iter()
            .find(|c| c.resettable && c.index == 1)
            .map(|c| c.value_milli)
            .expect("counter1")
    })
}

async fn eventually(mut condition: impl FnMut() -> bool) {
    timeout(WAIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("condition reached in time");
}

#[tokio::test]
async fn faults_apply_now_or_later_and_impossible_ones_are_refused() {
    let state = tempfile::tempdir().unwrap();
    let mut gateway = offline_gateway(state.path()).await;

    // A relay has no counters: refused, with the reason.
    let relay = Fault::CounterReset {
        slot: Slot::IrRelay,
    };
    let refused = gateway.inject(relay).unwrap_err();
    assert_eq!(refused, FaultRefused::NoSimulatedMeter(relay));
    assert!(
        refused.to_string().contains(r#"slot "ir_relay""#),
        "{refused}"
    );

    // The simulated meter counts from 0; a reset takes it back there.
    eventually(|| counter1(&gateway) > 1_000).await;
    let before = counter1(&gateway);
    gateway
        .inject(Fault::CounterReset {
            slot: Slot::IrMeter,
        })
        .unwrap();
    let after = counter1(&gateway);
    assert!(after < before, "{after} after the reset, {before} before");

    // A fault scheduled for later: the clock starts running twice as fast.
    let true_time = || chrono::Local::now().naive_local();
    gateway.inject_after(
        Duration::from_millis(100),
        Fault::ClockDrift { ppm: 1_000_000 },
    );
    eventually(|| {
        let ahead = gateway.with_core(|core| core.local_time()) - true_time();
        ahead > chrono::Duration::seconds(2)
    })
    .await;
    gateway.stop().await.unwrap();
}
