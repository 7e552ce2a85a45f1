//! Discovery against simulated boards on real ptys, listed by a fake `PortLister` as USB
//! devices: two DropBots with different serials and uuids, plus a Teensy that is not a DropBot
//! (same USB id). Several matches are never resolved silently.

use std::sync::Arc;
use std::time::Duration;

use dropbot_plugin::board::{
    describe_ports, discover, DiscoveryError, LinkOptions, PortInfo, PortLister, Probe, Selector,
};
use dropbot_plugin::sim::{self, SimHandle, SimOptions, Timing};
use firmware_protocol::TableSet;

struct FakePorts(Vec<PortInfo>);

impl PortLister for FakePorts {
    fn list(&self) -> Result<Vec<PortInfo>, DiscoveryError> {
        Ok(self.0.clone())
    }
}

const UUID_A: &str = "aaaaaaaa-0000-0000-0000-000000000001";
const UUID_B: &str = "bbbbbbbb-0000-0000-0000-000000000002";

fn uuid_bytes(text: &str) -> [u8; 16] {
    *uuid::Uuid::parse_str(text).unwrap().as_bytes()
}

async fn sim_board(uuid: &str, firmware_id: Option<&str>) -> SimHandle {
    let mut opts = SimOptions {
        timing: Timing::Fast,
        uuid: Some(uuid_bytes(uuid)),
        ..SimOptions::default()
    };
    if let Some(id) = firmware_id {
        opts.firmware_id = id.into();
    }
    sim::spawn_pty(opts).await.unwrap()
}

fn usb(sim: &SimHandle, vid: u16, serial: &str) -> PortInfo {
    PortInfo {
        path: sim.path().display().to_string(),
        vid,
        pid: 0x0483,
        serial: Some(serial.into()),
        product: Some("USB Serial".into()),
    }
}

struct Bench {
    _sims: Vec<SimHandle>,
    ports: FakePorts,
    probe: Probe,
}

/// Two DropBots (serials A and B), a non-DropBot Teensy (serial T) and an unrelated device.
async fn bench() -> Bench {
    let a = sim_board(UUID_A, None).await;
    let b = sim_board(UUID_B, None).await;
    let t = sim_board(
        "cccccccc-0000-0000-0000-000000000003",
        Some("teensy::blink"),
    )
    .await;
    let other = sim_board("dddddddd-0000-0000-0000-000000000004", None).await;
    let ports = FakePorts(vec![
        usb(&t, 0x16c0, "T"),
        usb(&a, 0x16c0, "A"),
        usb(&b, 0x16c0, "B"),
        usb(&other, 0x0403, "FTDI"),
    ]);
    let probe = Probe {
        link: LinkOptions {
            request_timeout: Duration::from_millis(300),
            ..LinkOptions::default()
        },
        ..Probe::new(Arc::new(TableSet::builtin()))
    };
    Bench {
        _sims: vec![a, b, t, other],
        ports,
        probe,
    }
}

async fn find(bench: &Bench, selector: &str) -> Result<String, DiscoveryError> {
    let selector: Selector = selector.parse().unwrap();
    let bot = discover(&bench.ports, &selector, &bench.probe).await?;
    let uuid = bot.info().uuid.clone();
    bot.disconnect().await;
    Ok(uuid)
}

#[tokio::test]
async fn several_dropbots_without_a_choice_is_an_error_listing_them() {
    let bench = bench().await;
    match find(&bench, "16c0:0483").await {
        Err(DiscoveryError::Ambiguous { boards, .. }) => {
            assert_eq!(
                boards.len(),
                2,
                "the Teensy that is not a DropBot is left out"
            );
            let text = boards.join("\n");
            assert!(
                text.contains("16c0:0483:A") && text.contains("16c0:0483:B"),
                "{text}"
            );
            assert!(text.contains(UUID_A) && text.contains(UUID_B), "{text}");
        }
        other => panic!("{other:?}"),
    }
    // The probed ports were released: choosing now works at once.
    assert_eq!(find(&bench, "16c0:0483:B").await.unwrap(), UUID_B);
}

#[tokio::test]
async fn chooses_by_serial_uuid_or_path() {
    let bench = bench().await;
    assert_eq!(find(&bench, "16c0:0483:A").await.unwrap(), UUID_A);
    assert_eq!(find(&bench, "16C0:0483:B").await.unwrap(), UUID_B);
    assert_eq!(
        find(&bench, &format!("uuid:{}", UUID_B.to_uppercase()))
            .await
            .unwrap(),
        UUID_B
    );
    let path = bench.ports.0[1].path.clone();
    assert_eq!(find(&bench, &path).await.unwrap(), UUID_A);
}

#[tokio::test]
async fn nothing_matching_says_what_was_tried() {
    let bench = bench().await;
    match find(&bench, "16c0:0483:T").await {
        Err(e @ DiscoveryError::NotFound { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("blink"),
                "the reason names the identity: {text}"
            );
        }
        other => panic!("{other:?}"),
    }
    match find(&bench, "uuid:eeeeeeee-0000-0000-0000-000000000000").await {
        Err(e @ DiscoveryError::NotFound { .. }) => {
            let text = e.to_string();
            assert!(text.contains(UUID_A) && text.contains(UUID_B), "{text}");
        }
        other => panic!("{other:?}"),
    }
    let empty = FakePorts(Vec::new());
    let err = discover(&empty, &Selector::default(), &bench.probe)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("plugged in"), "{err}");
    assert!(describe_ports(&bench.ports.0).contains("FTDI"));
}
