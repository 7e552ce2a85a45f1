//! [`BusOptions`]: how to reach the broker and who we are on it.

use std::path::PathBuf;
use std::time::Duration;

use rand::Rng;
use rumqttc::{LastWill, MqttOptions, QoS};
use serde_json::Value;

use super::envelope::{encode, Header};
use super::error::BusError;
use super::limits::{PayloadLimits, MQTT_MAX_PACKET};
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

/// Everything needed to connect. Its `Debug` leaves the password out.
#[derive(Clone)]
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
    /// the connection (and a retained one comes again at every resubscription), so the
    /// default is MQTT's own maximum, what a broker with default settings forwards; the
    /// limits that protect the plugin are [`payload_limits`](Self::payload_limits).
    pub max_packet_size: usize,
    /// Largest payload [`BusHandle::publish_json`](super::BusHandle::publish_json) sends, and
    /// the incoming limit of topics that no filter of `payload_limits` matches.
    pub max_payload: usize,
    /// Incoming payload limits per MQTT filter (the most specific match wins, see
    /// [`PayloadLimits`]): a larger message is dropped as it arrives, the connection stays
    /// up, and the message is handed on empty with its size, so that its handler can say
    /// which topic it was and what is allowed.
    pub payload_limits: Vec<(String, usize)>,
    /// Bytes of incoming messages that may wait to be handled (the poll task waits when
    /// they would not fit; a message larger than this waits until nothing else does).
    pub incoming_bytes: usize,
    /// Clean session (MicroDrop uses clean sessions).
    pub clean_session: bool,
    /// Our last will, if any.
    pub will: Option<Will>,
    /// More wills: each on an idle connection of its own, for retained topics that must not
    /// outlive us either (see the bus layer's `guard` module).
    pub guards: Vec<Will>,
    /// Capacity of rumqttc's request queue; beyond it plain messages are dropped.
    pub request_capacity: usize,
    /// Capacity of the incoming-message channel (the poll task waits when it is full).
    pub incoming_capacity: usize,
    /// How long a packet from the broker may stay unanswered before an empty packet
    /// acknowledges it (see the bus layer's `ack` module; the plugin's own answers, and its
    /// word that nothing will answer, go sooner).
    pub ack_grace: Duration,
}

impl BusOptions {
    /// Defaults for plugin `name` on `host:port`: TCP, keep-alive 60 s, MQTT's largest packets,
    /// 8 MiB payloads, 8 MiB of messages waiting, clean session, no will.
    pub fn new(name: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        BusOptions {
            name: name.into(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            host: host.into(),
            port,
            transport: BusTransport::Tcp,
            credentials: None,
            keep_alive: Duration::from_secs(60),
            max_packet_size: MQTT_MAX_PACKET,
            max_payload: 8 * 1024 * 1024,
            payload_limits: Vec::new(),
            incoming_bytes: 8 * 1024 * 1024,
            clean_session: true,
            will: None,
            guards: Vec::new(),
            request_capacity: 256,
            incoming_capacity: 1024,
            ack_grace: super::ack::ACK_GRACE,
        }
    }

    /// A MicroDrop client id: `<name>>>unknown>>microdrop>><uuid1>-<uuid4>`.
    pub fn client_id(name: &str) -> String {
        let node: [u8; 6] = rand::rng().random();
        let v1 = uuid::Uuid::now_v1(&node);
        let v4 = uuid::Uuid::new_v4();
        format!("{name}>>unknown>>microdrop>>{v1}-{v4}")
    }

    /// The incoming payload limits: `payload_limits`, and `max_payload` for the rest.
    pub fn limits(&self) -> PayloadLimits {
        PayloadLimits {
            default: self.max_payload,
            topics: self.payload_limits.clone(),
        }
    }

    /// Checks everything that does not need the network.
    pub fn validate(&self) -> Result<(), BusError> {
        validate_name(&self.name)
            .and_then(|()| Topic::status(&self.name).map(drop))
            .map_err(|e| BusError::Options(format!("plugin name: {e}")))?;
        if !self.keep_alive.is_zero() && self.keep_alive < Duration::from_secs(1) {
            return Err(BusError::Options(
                "keep_alive must be 0 (off) or at least 1 s".into(),
            ));
        }
        if self.request_capacity == 0 || self.incoming_capacity == 0 || self.incoming_bytes == 0 {
            return Err(BusError::Options(
                "channel capacities must be at least 1".into(),
            ));
        }
        for (filter, limit) in &self.payload_limits {
            if !rumqttc::valid_filter(filter) {
                return Err(BusError::Options(format!(
                    "payload limit for `{filter}`: not an MQTT filter"
                )));
            }
            if *limit > self.max_packet_size {
                return Err(BusError::Options(format!(
                    "payload limit for `{filter}` ({limit} bytes) is above max_packet_size \
                     ({} bytes): such a message would drop the connection instead",
                    self.max_packet_size
                )));
            }
        }
        if self.max_payload > self.max_packet_size {
            return Err(BusError::Options(format!(
                "max_payload ({} bytes) is above max_packet_size ({} bytes)",
                self.max_payload, self.max_packet_size
            )));
        }
        Ok(())
    }

    pub(crate) fn to_mqtt(&self) -> Result<MqttOptions, BusError> {
        self.validate()?;
        self.mqtt_options(Self::client_id(&self.name), self.will.as_ref())
    }

    /// rumqttc's options for a connection with client id `id` and `will`.
    pub(crate) fn mqtt_options(
        &self,
        id: String,
        will: Option<&Will>,
    ) -> Result<MqttOptions, BusError> {
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
        if let Some(will) = will {
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

impl std::fmt::Debug for BusOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let credentials = self
            .credentials
            .as_ref()
            .map(|(user, _)| format!("{user} (password not shown)"));
        f.debug_struct("BusOptions")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("transport", &self.transport)
            .field("credentials", &credentials)
            .field("keep_alive", &self.keep_alive)
            .field("max_packet_size", &self.max_packet_size)
            .field("max_payload", &self.max_payload)
            .field("payload_limits", &self.payload_limits)
            .field("incoming_bytes", &self.incoming_bytes)
            .field("clean_session", &self.clean_session)
            .field("will", &self.will)
            .field("guards", &self.guards)
            .field("request_capacity", &self.request_capacity)
            .field("incoming_capacity", &self.incoming_capacity)
            .field("ack_grace", &self.ack_grace)
            .finish()
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
        let mut o = ok.clone();
        o.request_capacity = 0;
        assert!(o.to_mqtt().is_err());
        let mut o = ok.clone();
        o.max_packet_size = 1024;
        o.max_payload = 512;
        o.payload_limits = vec![("microdrop/#".into(), 2048)];
        assert!(o.to_mqtt().is_err(), "a limit above the packet size");
        o.payload_limits = vec![("microdrop/#/x".into(), 100)];
        assert!(o.to_mqtt().is_err(), "not a filter");
    }

    #[test]
    fn debug_leaves_the_password_out() {
        let mut o = BusOptions::new("dropbot", "127.0.0.1", 1884);
        o.credentials = Some(("lab".into(), "s3cret-Pa55".into()));
        let text = format!("{o:?}");
        assert!(
            text.contains("lab") && !text.contains("s3cret-Pa55"),
            "{text}"
        );
    }
}
