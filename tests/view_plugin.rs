//! The live view against the real plugin: a private mosquitto, the plugin with a simulated
//! board (the test kit's harness), and the view in this process serving real HTTP. Clicks go
//! through the bus to the plugin and the board; what the page is pushed must follow.

mod view_support;

use std::net::SocketAddr;
use std::sync::Arc;

use dropbot_plugin::device::Device;
use dropbot_plugin::sim::layout::default_grid_device;
use dropbot_plugin::sim::PhysicsParams;
use dropbot_plugin::view::{self, DropletSource, SimDroplets, ViewHandle, ViewOptions};
use dropbot_testkit::{PluginHarness, PluginOptions, ACTIVE_ELECTRODES_TOPIC, DEVICE_TOPIC};
use serde_json::{json, Value};
use view_support::{click, request, Events};

/// The view watching the harness's plugin; `stand_in` offered when the bus has no device.
async fn view_of(h: &PluginHarness, stand_in: Option<Value>, stream_ms: Option<u32>) -> ViewHandle {
    let droplets: Arc<dyn DropletSource> = Arc::new(SimDroplets::new(
        h.sim.clone(),
        PhysicsParams::default().gap_height_mm,
    ));
    view::start(ViewOptions {
        listen: "127.0.0.1:0".parse().expect("an address"),
        bus: h.broker.bus_options(&format!("{}-view", h.name)),
        plugin: h.name.clone(),
        droplets: Some(droplets),
        stand_in_device: stand_in,
        stream_ms,
    })
    .await
    .expect("the view starts")
}

/// The first neighbour of `id` on MicroDrop's default chip.
fn neighbour_of(id: &str) -> String {
    let device = Device::microdrop3_default().expect("the default chip");
    let at = device.index_of(id).expect("a known electrode");
    let next = device.neighbours(at)[0];
    device.electrodes()[next].id.clone()
}

fn ids(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The board's channels of electrode `id` on the default chip.
fn channels_of(id: &str) -> Vec<u16> {
    let device = Device::microdrop3_default().expect("the default chip");
    device
        .by_id(id)
        .expect("a known electrode")
        .channels
        .clone()
}

async fn harness() -> PluginHarness {
    PluginHarness::start(PluginOptions::default())
        .await
        .expect("the harness starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_goes_through_the_plugin_to_the_board_and_back_to_the_page() {
    let h = harness().await;
    let volume = h.sim.unit_volume("electrode030").unwrap();
    h.sim.add_droplet("electrode030", volume).unwrap();
    let view = view_of(&h, None, None).await;
    let addr: SocketAddr = view.addr();
    let mut page = Events::open(addr).await;
    let device = page
        .until("device", |d| {
            d["electrodes"].as_array().map(Vec::len) == Some(92)
        })
        .await;
    assert!(device["bounds"]["w"].as_f64().unwrap() > 0.0);
    page.until("live", |l| {
        l["status"]["board"] == "connected" && l["droplets"][0]["electrode"] == "electrode030"
    })
    .await;

    let next = neighbour_of("electrode030");
    let (status, answer) = click(addr, &next).await;
    assert_eq!(
        (status, &answer),
        (200, &json!({"active-electrodes": [next]}))
    );
    let live = page
        .until("live", |l| {
            ids(&l["actuated"]) == [next.as_str()] && l["hv"] == true
        })
        .await;
    assert_eq!(live["requested"], json!([next]));
    let board = h.sim.snapshot();
    assert!(board.hv_enabled, "{board:?}");
    assert_eq!(board.actuated, channels_of(&next));
    // The droplet follows the electrode, and the page is told.
    page.until("live", |l| l["droplets"][0]["electrode"] == next.as_str())
        .await;

    // A second click switches it off, and MicroDrop's retained list says so too.
    let (status, answer) = click(addr, &next).await;
    assert_eq!((status, answer), (200, json!({"active-electrodes": []})));
    page.until("live", |l| ids(&l["actuated"]).is_empty()).await;
    let retained = h
        .client
        .wait_retained_where(ACTIVE_ELECTRODES_TOPIC, |v| *v == json!([]))
        .await;
    assert!(retained.is_ok(), "{retained:?}");

    let (status, answer) = click(addr, "electrode999").await;
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("electrode999"),
        "{answer}"
    );
    view.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_device_on_the_bus_the_view_offers_the_simulated_chip() {
    let h = PluginHarness::start(PluginOptions {
        retained: Vec::new(),
        ..PluginOptions::default()
    })
    .await
    .expect("the harness starts");
    let chip = Device::microdrop3_default()
        .unwrap()
        .to_three_object_value();
    let view = view_of(&h, Some(chip), None).await;
    let device = h
        .client
        .wait_retained(DEVICE_TOPIC)
        .await
        .expect("a device on the bus");
    assert_eq!(device.as_array().map(Vec::len), Some(92));
    // The plugin took it: a click actuates.
    let next = neighbour_of("electrode030");
    let mut page = Events::open(view.addr()).await;
    page.until("device", |d| !d.is_null()).await;
    assert_eq!(click(view.addr(), &next).await.0, 200);
    page.until("live", |l| ids(&l["actuated"]) == [next.as_str()])
        .await;
    assert_eq!(h.sim.snapshot().actuated, channels_of(&next));
    view.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_already_on_the_bus_is_left_alone() {
    let h = harness().await;
    let other_chip = default_grid_device().unwrap().to_three_object_value();
    let view = view_of(&h, Some(other_chip), None).await;
    let mut page = Events::open(view.addr()).await;
    page.until("device", |d| {
        d["electrodes"].as_array().map(Vec::len) == Some(92)
    })
    .await;
    // A click published after any stand-in would have been: once the plugin applied it,
    // the broker has seen everything the view sent before it.
    let next = neighbour_of("electrode030");
    assert_eq!(click(view.addr(), &next).await.0, 200);
    page.until("live", |l| ids(&l["actuated"]) == [next.as_str()])
        .await;
    let device = h.client.wait_retained(DEVICE_TOPIC).await.unwrap();
    assert_eq!(
        device.as_array().map(Vec::len),
        Some(92),
        "the view replaced the device"
    );
    view.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_view_asks_for_a_capacitance_stream_and_pushes_the_readings() {
    let h = harness().await;
    let view = view_of(&h, None, Some(100)).await;
    let period = h
        .state_where("capacitance-update-interval-ms", |v| *v == json!(100))
        .await;
    assert!(period.is_ok(), "{period:?}");
    let mut page = Events::open(view.addr()).await;
    page.until("device", |d| !d.is_null()).await;
    // Readings come while HV is on.
    assert_eq!(
        click(view.addr(), &neighbour_of("electrode030")).await.0,
        200
    );
    let readings = page
        .until("capacitance", |c| {
            c["samples"].as_array().is_some_and(|s| !s.is_empty())
        })
        .await;
    let first = &readings["samples"][0];
    assert!(
        first[0].as_f64().unwrap() > 1.7e12,
        "host time in ms: {first}"
    );
    assert!(first[1].as_f64().unwrap() > 0.0, "farads: {first}");
    view.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_halt_the_plugin_refuses_clicks_and_the_page_says_so() {
    let h = harness().await;
    let view = view_of(&h, None, None).await;
    let mut page = Events::open(view.addr()).await;
    // A click needs the device: the view has it once the page is sent it.
    page.until("device", |d| !d.is_null()).await;
    let first = neighbour_of("electrode030");
    assert_eq!(click(view.addr(), &first).await.0, 200);
    page.until("live", |l| l["hv"] == true).await;
    let halt = h.trigger("halt", json!({})).await.expect("a reply");
    assert!(halt.is_success(), "{halt:?}");
    page.until("live", |l| !l["halted"].is_null() && l["hv"] == false)
        .await;

    // The view publishes the click as MicroDrop would; the plugin refuses it, the page shows
    // the plugin's answer, and the board stays off.
    let (status, _) = click(view.addr(), "electrode000").await;
    assert_eq!(status, 200);
    let live = page
        .until("live", |l| {
            l["log"].as_array().is_some_and(|log| {
                log.iter().any(|line| {
                    line["text"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("error active-electrodes"))
                })
            })
        })
        .await;
    assert!(ids(&live["actuated"]).is_empty(), "{live}");
    let board = h.sim.snapshot();
    assert!(!board.hv_enabled && board.actuated.is_empty(), "{board:?}");
    view.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_changes_reaches_a_page_coalesced() {
    let h = harness().await;
    let view = view_of(&h, None, None).await;
    let mut page = Events::open(view.addr()).await;
    page.until("live", |l| l["status"]["board"] == "connected")
        .await;
    let signal = format!("microdrop/{}/signal/flood", h.name);
    let total = 2000;
    for i in 0..total {
        h.client.publish(&signal, &json!(i), false).await.unwrap();
    }
    let last = format!("signal flood: {}", total - 1);
    let mut seen = 0;
    page.until("live", |l| {
        seen += 1;
        l["log"]
            .as_array()
            .is_some_and(|log| log.iter().any(|line| line["text"] == last.as_str()))
    })
    .await;
    assert!(seen <= total / 4, "{seen} live events for {total} changes");
    // The state endpoint gives the same picture to a plain HTTP client.
    let (status, body) = request(view.addr(), "GET", "/api/state", None).await;
    assert_eq!(status, 200);
    assert!(body.contains(&last), "{body}");
    view.shutdown().await;
}
