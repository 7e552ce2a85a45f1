//! [`BusOptions`]: how to reach the broker and who we are on it.

use std::path::PathBuf;
use std::time::Duration;

use rand::Rng;
use rumqttc::{LastWill, MqttOptions, QoS};
use serde_json::Value;

use super::envelope::{encode, Header};
use super::error::BusError;
use super::topics::{validate_name, Topic};

/// How to reach the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusTransport {
    /// Plain TCP to `host:port`.
    Tcp,
    /// A Unix domain socket at this path (`host` and `port` are ignored).
    Unix(PathBuf),
    /// TLS over TCP to `host:port` (feature `tls`), trusting the PEM certificates in `ca_pem`.
    #[cfg(feature = "tls")]
    Tls {
        /// PEM text of the certificate authorities to trust.
        ca_pem: Vec<u8>,
    },
}

/// A retained message the broker publishes for us if we vanish without saying goodbye.
#[derive(Debug, Clone, PartialEq)]
pub struct Will {
    /// Topic, e.g. `microdrop/dropbot/state/status`.
    pub topic: String,
    /// Value (objects get our `__head__`).
    pub value: Value,
}

/// Everything needed to connect.
#[derive(Debug, Clone)]
pub struct BusOptions {
    /// Our plugin name, e.g. `dropbot`: sender in our topics and first field of the client id.
    pub name: String,
    /// Our version, sent as `__head__.plugin_version`.
    pub version: String,
    /// Broker host name or address (TCP and TLS).
    pub host: String,
    /// Broker port (MicroDrop 3's broker: 1884).
    pub port: u16,
    /// TCP, Unix socket or TLS.
    pub transport: BusTransport,
    /// User name and password, if the broker wants them.
    pub credentials: Option<(String, String)>,
    /// MQTT keep-alive (at least 1 s).
    pub keep_alive: Duration,
    /// Largest MQTT packet, both directions. A larger incoming packet makes rumqttc drop
    /// the connection, so keep this above the largest message anyone publishes to us.
    pub max_packet_size: usize,
    /// Largest payload [`BusMessage::envelope`](super::BusMessage::envelope) accepts and
    /// [`BusHandle::publish_json`](super::BusHandle::publish_json) sends.
    pub max_payload: usize,
    /// Clean session (MicroDrop uses clean sessions).
    pub clean_session: bool,
    /// Our last will, if any.
    pub will: Option<Will>,
    /// Capacity of rumqttc's request queue; beyond it plain messages are dropped.
    pub request_capacity: usize,
    /// Capacity of the incoming-message channel (the poll task waits when it is full).
    pub incoming_capacity: usize,
}

impl BusOptions {
    /// Defaults for plugin `name` on `host:port`: TCP, keep-alive 60 s, 8 MiB packets, clean
    /// session, no will.
    pub fn new(name: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        BusOptions {
            name: name.into(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            host: host.into(),
            port,
            transport: BusTransport::Tcp,
            credentials: None,
            keep_alive: Duration::from_secs(60),
            max_packet_size: 8 * 1024 * 1024,
            max_payload: 8 * 1024 * 1024,
            clean_session: true,
            will: None,
            request_capacity: 256,
            incoming_capacity: 1024,
        }
    }

    /// A MicroDrop client id: `<name>>>unknown>>microdrop>><uuid1>-<uuid4>`.
    pub fn client_id(name: &str) -> String {
        let node: [u8; 6] = rand::rng().random();
        let v1 = uuid::Uuid::now_v1(&node);
        let v4 = uuid::Uuid::new_v4();
        format!("{name}>>unknown>>microdrop>>{v1}-{v4}")
    }

    pub(crate) fn to_mqtt(&self) -> Result<MqttOptions, BusError> {
        validate_name(&self.name)
            .and_then(|()| Topic::status(&self.name).map(drop))
            .map_err(|e| BusError::Options(format!("plugin name: {e}")))?;
        if !self.keep_alive.is_zero() && self.keep_alive < Duration::from_secs(1) {
            return Err(BusError::Options(
                "keep_alive must be 0 (off) or at least 1 s".into(),
            ));
        }
        if self.request_capacity == 0 || self.incoming_capacity == 0 {
            return Err(BusError::Options(
                "channel capacities must be at least 1".into(),
            ));
        }
        let id = Self::client_id(&self.name);
        let mut mqtt = match &self.transport {
            BusTransport::Unix(path) => {
                let path = path
                    .to_str()
                    .ok_or_else(|| BusError::Options("socket path is not UTF-8".into()))?;
                let mut m = MqttOptions::new(id, path, 0);
                m.set_transport(rumqttc::Transport::Unix);
                m
            }
            BusTransport::Tcp => MqttOptions::new(id, self.host.clone(), self.port),
            #[cfg(feature = "tls")]
            BusTransport::Tls { ca_pem } => {
                let mut m = MqttOptions::new(id, self.host.clone(), self.port);
                m.set_transport(super::tls::transport(ca_pem)?);
                m
            }
        };
        mqtt.set_keep_alive(self.keep_alive)
            .set_clean_session(self.clean_session)
            .set_max_packet_size(self.max_packet_size, self.max_packet_size)
            .set_request_channel_capacity(self.request_capacity);
        if let Some((user, pass)) = &self.credentials {
            mqtt.set_credentials(user.clone(), pass.clone());
        }
        if let Some(will) = &self.will {
            let header = Header::new(self.name.clone(), self.version.clone());
            let payload = encode(&will.value, &header, self.max_payload)?;
            mqtt.set_last_will(LastWill::new(
                will.topic.clone(),
                payload,
                QoS::AtMostOnce,
                true,
            ));
        }
        Ok(mqtt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_has_microdrop_format() {
        let id = BusOptions::client_id("dropbot");
        let fields: Vec<&str> = id.split(">>").collect();
        assert_eq!(fields.len(), 4, "{id}");
        assert_eq!(fields.first(), Some(&"dropbot"));
        assert_eq!(fields.get(1), Some(&"unknown"));
        assert_eq!(fields.get(2), Some(&"microdrop"));
        let uuids = fields.get(3).copied().unwrap_or_default();
        assert_eq!(uuids.len(), 36 * 2 + 1, "{uuids}");
        let (v1, v4) = uuids.split_at(36);
        assert_eq!(
            uuid::Uuid::parse_str(v1).map(|u| u.get_version_num()).ok(),
            Some(1)
        );
        assert_eq!(
            uuid::Uuid::parse_str(v4.trim_start_matches('-'))
                .map(|u| u.get_version_num())
                .ok(),
            Some(4)
        );
        assert_ne!(id, BusOptions::client_id("dropbot"));
    }

    #[test]
    fn options_are_checked() {
        let ok = BusOptions::new("dropbot", "127.0.0.1", 1884);
        assert!(ok.to_mqtt().is_ok());
        for name in ["", "a/b", "put", "x+"] {
            let o = BusOptions::new(name, "127.0.0.1", 1884);
            assert!(matches!(o.to_mqtt(), Err(BusError::Options(_))), "{name:?}");
        }
        let mut o = ok.clone();
        o.keep_alive = Duration::from_millis(500);
        assert!(
            o.to_mqtt().is_err(),
            "rumqttc would panic on sub-second keep-alive"
        );
        let mut o = ok;
        o.request_capacity = 0;
        assert!(o.to_mqtt().is_err());
    }
}
