//! Which board to use: a [`Selector`] parsed from the user's text (a path, `vid:pid`,
//! `vid:pid:serial` or `uuid:<uuid>`), with errors that show the accepted forms.

use std::str::FromStr;

use super::discovery::{DiscoveryError, DROPBOT_PID, DROPBOT_VID};

/// Which board to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A device path (anything containing `/`).
    Path(String),
    /// USB ids, optionally narrowed by serial number.
    Usb {
        /// Vendor id.
        vid: u16,
        /// Product id.
        pid: u16,
        /// Serial number (exact match).
        serial: Option<String>,
    },
    /// The board whose uuid (from the handshake) is this, hyphenated lowercase.
    Uuid(String),
}

impl Default for Selector {
    /// Any DropBot (Teensy USB id); fails if several are present.
    fn default() -> Self {
        Selector::Usb {
            vid: DROPBOT_VID,
            pid: DROPBOT_PID,
            serial: None,
        }
    }
}

impl FromStr for Selector {
    type Err = DiscoveryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = |why: &str| DiscoveryError::BadSelector {
            selector: s.to_owned(),
            why: why.to_owned(),
        };
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.contains('/') {
            return Ok(Selector::Path(s.to_owned()));
        }
        if let Some(u) = s.strip_prefix("uuid:") {
            return uuid::Uuid::parse_str(u.trim())
                .map(|u| Selector::Uuid(u.hyphenated().to_string()))
                .map_err(|e| bad(&format!("`{u}` is not a uuid ({e})")));
        }
        let mut parts = s.splitn(3, ':');
        let hex = |part: Option<&str>, what: &str| {
            let part = part.unwrap_or_default();
            u16::from_str_radix(part, 16)
                .ok()
                .filter(|_| (1..=4).contains(&part.len()))
                .ok_or_else(|| bad(&format!("{what} `{part}` is not 1 to 4 hex digits")))
        };
        let vid = hex(parts.next(), "vendor id")?;
        let pid = hex(parts.next(), "product id")?;
        let serial = match parts.next() {
            Some("") => return Err(bad("the serial number after the second `:` is empty")),
            other => other.map(str::to_owned),
        };
        Ok(Selector::Usb { vid, pid, serial })
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Path(p) => f.write_str(p),
            Selector::Usb { vid, pid, serial } => {
                write!(f, "{vid:04x}:{pid:04x}")?;
                match serial {
                    Some(s) => write!(f, ":{s}"),
                    None => Ok(()),
                }
            }
            Selector::Uuid(u) => write!(f, "uuid:{u}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_selectors() {
        assert_eq!(
            "/dev/ttyACM0".parse::<Selector>().unwrap(),
            Selector::Path("/dev/ttyACM0".into())
        );
        assert_eq!(
            "16C0:0483".parse::<Selector>().unwrap(),
            Selector::default()
        );
        assert_eq!(
            "16c0:483:ABC-1".parse::<Selector>().unwrap(),
            Selector::Usb {
                vid: 0x16c0,
                pid: 0x0483,
                serial: Some("ABC-1".into())
            }
        );
        assert_eq!(
            "uuid:00010203-0405-0607-0809-0A0B0C0D0E0F"
                .parse::<Selector>()
                .unwrap(),
            Selector::Uuid("00010203-0405-0607-0809-0a0b0c0d0e0f".into())
        );
        // Serial numbers may themselves contain ':'.
        assert!(matches!(
            "16c0:0483:a:b".parse::<Selector>().unwrap(),
            Selector::Usb { serial: Some(s), .. } if s == "a:b"
        ));
    }

    #[test]
    fn rejects_bad_selectors_clearly() {
        for (text, needle) in [
            ("", "empty"),
            ("16c0", "product id"),
            ("xyz:0483", "vendor id `xyz`"),
            ("16c0:12345", "product id `12345`"),
            ("16c0:0483:", "serial"),
            ("uuid:nope", "not a uuid"),
        ] {
            let err = text.parse::<Selector>().unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(err.contains("VID:PID"), "{err}");
        }
    }

    #[test]
    fn selectors_display_as_they_parse() {
        for s in [
            "16c0:0483",
            "16c0:0483:X1",
            "uuid:00010203-0405-0607-0809-0a0b0c0d0e0f",
        ] {
            assert_eq!(s.parse::<Selector>().unwrap().to_string(), s);
        }
    }
}
