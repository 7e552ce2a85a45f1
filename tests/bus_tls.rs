//! TLS to a real mosquitto (feature `tls`; needs the `openssl` command for the certificates).
#![cfg(feature = "tls")]

use std::time::Duration;

use dropbot_plugin::bus::{BusClient, BusError, BusTransport};
use dropbot_testkit::{Mosquitto, TestClient};
use serde_json::json;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test]
async fn tls_connection_with_a_trusted_ca() -> TestResult {
    let broker = Mosquitto::start_tls()?;
    let mut options = broker.bus_options("dropbot");
    options.port = broker.tls_port().ok_or("no TLS port")?;
    options.transport = BusTransport::Tls {
        ca_pem: broker.ca_pem()?,
    };
    let client = BusClient::start(options)?;
    client.wait_connected(Duration::from_secs(10)).await?;
    client.handle().publish_state("status", &json!("online"))?;
    let ui = TestClient::connect(broker.host(), broker.port()).await?;
    let status = ui.wait_retained("microdrop/dropbot/state/status").await?;
    assert_eq!(status, "online");
    Ok(())
}

#[tokio::test]
async fn tls_refuses_an_untrusted_server() -> TestResult {
    let broker = Mosquitto::start_tls()?;
    let other = Mosquitto::start_tls()?;
    let mut options = broker.bus_options("dropbot");
    options.port = broker.tls_port().ok_or("no TLS port")?;
    // A CA that did not sign this broker's certificate.
    options.transport = BusTransport::Tls {
        ca_pem: other.ca_pem()?,
    };
    let client = BusClient::start(options)?;
    let res = client.wait_connected(Duration::from_millis(1500)).await;
    assert!(matches!(res, Err(BusError::Timeout(..))), "{res:?}");
    assert_eq!(client.handle().stats().connections, 0);
    assert!(client.handle().stats().connection_attempts >= 1);
    Ok(())
}
