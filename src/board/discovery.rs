//! Finding the board: list serial ports with their USB ids, parse a [`Selector`] (a path,
//! `vid:pid`, `vid:pid:serial` or `uuid:<uuid>`), probe the candidates with the handshake, and
//! choose. The USB id 16c0:0483 is shared by every Teensy, so only the handshake proves a
//! DropBot; and when several DropBots match, the user is asked to choose, never the first.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use firmware_protocol::TableSet;
use thiserror::Error;

use super::dropbot::{BoardInfo, DropBot};
use super::link::LinkOptions;
pub use super::selector::Selector;

/// The DropBot's USB vendor id (PJRC, shared by every Teensy).
pub const DROPBOT_VID: u16 = 0x16c0;
/// The DropBot's USB product id (Teensy USB serial).
pub const DROPBOT_PID: u16 = 0x0483;

/// A USB serial port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Device path, e.g. `/dev/ttyACM0`.
    pub path: String,
    /// USB vendor id.
    pub vid: u16,
    /// USB product id.
    pub pid: u16,
    /// USB serial number, if the device reports one.
    pub serial: Option<String>,
    /// USB product string.
    pub product: Option<String>,
}

/// Lists serial ports; a trait so discovery can be tested without USB.
pub trait PortLister: Send + Sync {
    /// The USB serial ports present now.
    fn list(&self) -> Result<Vec<PortInfo>, DiscoveryError>;
}

/// The system's USB serial ports (non-USB ports are left out).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemPorts;

impl PortLister for SystemPorts {
    fn list(&self) -> Result<Vec<PortInfo>, DiscoveryError> {
        let ports =
            tokio_serial::available_ports().map_err(|e| DiscoveryError::List(e.to_string()))?;
        Ok(ports
            .into_iter()
            .filter_map(|p| match p.port_type {
                tokio_serial::SerialPortType::UsbPort(usb) => Some(PortInfo {
                    path: p.port_name,
                    vid: usb.vid,
                    pid: usb.pid,
                    serial: usb.serial_number,
                    product: usb.product,
                }),
                _ => None,
            })
            .collect())
    }
}

/// Finding or choosing a board failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DiscoveryError {
    /// The selector does not parse.
    #[error(
        "board selector `{selector}` is not valid: {why} (use a path like /dev/ttyACM0, \
             VID:PID like 16c0:0483, VID:PID:SERIAL, or uuid:<uuid>)"
    )]
    BadSelector {
        /// The text given.
        selector: String,
        /// What is wrong.
        why: String,
    },
    /// The ports could not be listed.
    #[error("cannot list serial ports: {0}")]
    List(String),
    /// No DropBot matched.
    #[error("no DropBot found for `{selector}`; {}", describe_probes(.probed))]
    NotFound {
        /// The selector.
        selector: String,
        /// Each port probed and why it was not taken.
        probed: Vec<(String, String)>,
    },
    /// Several DropBots matched and nothing chose among them.
    #[error("{} DropBots match `{selector}`; choose one with a selector: {}", .boards.len(), .boards.join("; "))]
    Ambiguous {
        /// The selector.
        selector: String,
        /// Each board: path, USB serial and uuid, with a selector that picks it.
        boards: Vec<String>,
    },
}

fn describe_probes(probed: &[(String, String)]) -> String {
    if probed.is_empty() {
        return "no candidate port is present (is the board plugged in and powered?)".into();
    }
    let each: Vec<String> = probed
        .iter()
        .map(|(p, why)| format!("{p}: {why}"))
        .collect();
    format!("ports tried: {}", each.join("; "))
}

/// How candidates are probed.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Command tables by firmware version.
    pub tables: Arc<TableSet>,
    /// Options of the link to the chosen board; its handshake timeout is replaced by
    /// `handshake_timeout` while probing.
    pub link: LinkOptions,
    /// Handshake timeout for each candidate (short: a port that is not a DropBot stays silent).
    pub handshake_timeout: Duration,
}

impl Probe {
    /// Probe with the built-in tables and default options.
    pub fn new(tables: Arc<TableSet>) -> Self {
        Self {
            tables,
            link: LinkOptions::default(),
            handshake_timeout: Duration::from_millis(250),
        }
    }

    /// Who answers on `path`: the handshake and identity reads, then the port is released.
    pub async fn identify(&self, path: &str) -> Result<Arc<BoardInfo>, String> {
        let bot = self.open(path).await?;
        let info = bot.info_arc();
        bot.disconnect().await;
        Ok(info)
    }

    async fn open(&self, path: &str) -> Result<DropBot, String> {
        let mut link = self.link.clone();
        link.handshake_timeout = self.handshake_timeout;
        DropBot::open(path, &self.tables, link)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Find the board `selector` names: probe the candidate ports with the handshake, keep the
/// DropBots, and return the one that matches. Several matches without a serial number or
/// uuid to choose are an error listing them.
pub async fn discover(
    lister: &dyn PortLister,
    selector: &Selector,
    probe: &Probe,
) -> Result<DropBot, DiscoveryError> {
    let not_found = |probed| DiscoveryError::NotFound {
        selector: selector.to_string(),
        probed,
    };
    if let Selector::Path(path) = selector {
        return probe
            .open(path)
            .await
            .map_err(|why| not_found(vec![(path.clone(), why)]));
    }
    let ports = lister.list()?;
    let candidates = ports.iter().filter(|p| match selector {
        Selector::Usb { vid, pid, serial } => {
            p.vid == *vid
                && p.pid == *pid
                && serial.as_ref().is_none_or(|s| p.serial.as_ref() == Some(s))
        }
        Selector::Uuid(_) => p.vid == DROPBOT_VID && p.pid == DROPBOT_PID,
        Selector::Path(_) => false,
    });
    let mut found = Vec::new();
    let mut probed = Vec::new();
    for port in candidates {
        match probe.open(&port.path).await {
            Ok(bot) => match selector {
                Selector::Uuid(uuid) if bot.info().uuid != *uuid => {
                    probed.push((port.path.clone(), format!("uuid {}", bot.info().uuid)));
                    bot.disconnect().await;
                }
                _ => found.push((port.clone(), bot)),
            },
            Err(why) => probed.push((port.path.clone(), why)),
        }
    }
    match found.len() {
        0 => Err(not_found(probed)),
        1 => Ok(found.remove(0).1),
        _ => {
            let boards = found
                .iter()
                .map(|(port, bot)| {
                    let pick = match &port.serial {
                        Some(s) => format!("{:04x}:{:04x}:{s}", port.vid, port.pid),
                        None => format!("uuid:{}", bot.info().uuid),
                    };
                    format!(
                        "{} (uuid {}; select with `{pick}`)",
                        port.path,
                        bot.info().uuid
                    )
                })
                .collect();
            for (_, bot) in &found {
                bot.disconnect().await;
            }
            Err(DiscoveryError::Ambiguous {
                selector: selector.to_string(),
                boards,
            })
        }
    }
}

/// The ports as a table for the `ports` command.
pub fn describe_ports(ports: &[PortInfo]) -> String {
    if ports.is_empty() {
        return "no USB serial ports found\n".into();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<9} {:<20} PRODUCT",
        "PATH", "VID:PID", "SERIAL"
    );
    for p in ports {
        let teensy = if p.vid == DROPBOT_VID && p.pid == DROPBOT_PID {
            "  (Teensy: a DropBot?)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:<24} {:04x}:{:04x} {:<20} {}{teensy}",
            p.path,
            p.vid,
            p.pid,
            p.serial.as_deref().unwrap_or("-"),
            p.product.as_deref().unwrap_or("-"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_ports() {
        let ports = vec![PortInfo {
            path: "/dev/ttyACM0".into(),
            vid: 0x16c0,
            pid: 0x0483,
            serial: Some("1234".into()),
            product: None,
        }];
        let text = describe_ports(&ports);
        assert!(text.contains("16c0:0483") && text.contains("1234") && text.contains("Teensy"));
        assert!(describe_ports(&[]).contains("no USB serial ports"));
    }
}
