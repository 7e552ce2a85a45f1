//! Asynchronous events: STREAM packets whose payload is UTF-8 JSON `{"event": "<name>", ...}`.
//!
//! Events with a gating bit (shorts-detected 28, channels-updated 30, drops-detected 27) are sent
//! only when both their bit and bit 0 (master enable) are set in the state's `event_mask`; the
//! others are always sent.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Bit 0 of `event_mask`: master enable for gated events.
pub const EVENT_ENABLE: u32 = 1 << 0;
/// Gating bit of `drops-detected`.
pub const EVENT_DROPS_DETECTED: u32 = 1 << 27;
/// Gating bit of `shorts-detected`.
pub const EVENT_SHORTS_DETECTED: u32 = 1 << 28;
/// Gating bit of `channels-updated`.
pub const EVENT_CHANNELS_UPDATED: u32 = 1 << 30;

/// An event payload that does not parse.
#[derive(Debug, Error)]
pub enum EventError {
    /// Not JSON of a known event's shape.
    #[error("not a known event: {0}")]
    Json(#[from] serde_json::Error),
}

/// Why the board halted (the `error` object of `halted` and `capacitance_saturated`).
///
/// The fields are optional so that a halt is never lost to a missing key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name")]
pub enum HaltReason {
    /// RMS output current over `output_current_limit` (checked every second).
    #[serde(rename = "output-current-exceeded")]
    OutputCurrentExceeded {
        /// Measured RMS output current, amperes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output_current: Option<f64>,
    },
    /// The chip load reading came within `margin` of either end of the ADC range.
    #[serde(rename = "chip-load-saturated")]
    ChipLoadSaturated {
        /// The differential chip-load reading, ADC counts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chip_load: Option<i32>,
        /// `chip_load_range_margin` in ADC counts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        margin: Option<i32>,
    },
}

/// Drops found by a drop scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drops {
    /// Channels of each drop.
    pub channels: Vec<Vec<u16>>,
    /// Capacitance of each channel of each drop, farads (same shape as `channels`).
    pub capacitances: Vec<Vec<f64>>,
}

/// Every event the board sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event")]
pub enum Event {
    /// Chip inserted (interlock closed, 1 s debounce): HV output is possible.
    #[serde(rename = "output_enabled")]
    OutputEnabled,
    /// Chip removed: HV output is cut.
    #[serde(rename = "output_disabled")]
    OutputDisabled,
    /// A capacitance sample, every `capacitance_update_interval_ms` while HV is on and selected.
    #[serde(rename = "capacitance-updated")]
    CapacitanceUpdated {
        /// Farads.
        new_value: f64,
        /// Board microseconds (32-bit counter).
        time_us: u64,
        /// Samples averaged.
        n_samples: u32,
        /// Actuation RMS voltage at the sample, volts.
        #[serde(rename = "V_a")]
        v_a: f64,
    },
    /// `target_count` consecutive samples at or above `target_capacitance`.
    #[serde(rename = "capacitance-exceeded")]
    CapacitanceExceeded {
        /// Farads.
        new_value: f64,
        /// The target, farads.
        target: f64,
        /// Board microseconds.
        time_us: u64,
        /// Samples averaged.
        n_samples: u32,
        /// Consecutive samples over the target.
        count: u32,
        /// Actuation RMS voltage, volts.
        #[serde(rename = "V_a")]
        v_a: f64,
    },
    /// HV off and channels disabled by the board itself.
    #[serde(rename = "halted")]
    Halted {
        /// Board time of the halt, seconds.
        wall_time: f64,
        /// Why.
        error: HaltReason,
    },
    /// The chip load saturated while `halt_on_chip_load_saturated` is false: reported, not
    /// halted (Blue-Ocean-Technologies-Inc/dropbot.py fork only).
    #[serde(rename = "capacitance_saturated")]
    CapacitanceSaturated {
        /// Board time, seconds.
        wall_time: f64,
        /// The reading (always `chip-load-saturated`).
        error: HaltReason,
    },
    /// Channels found shorted (after `detect_shorts` and on chip insertion).
    #[serde(rename = "shorts-detected")]
    ShortsDetected {
        /// Shorted channels.
        values: Vec<u16>,
    },
    /// Channels applied by `set_state_of_channels`.
    #[serde(rename = "channels-updated")]
    ChannelsUpdated {
        /// Channels now actuated.
        actuated: Vec<u16>,
        /// Board microseconds when the update started.
        start: u64,
        /// Board microseconds when it ended.
        end: u64,
        /// Number of channels actuated.
        n: u32,
    },
    /// Result of a drop scan.
    #[serde(rename = "drops-detected")]
    DropsDetected {
        /// The drops.
        drops: Drops,
        /// Board microseconds when the scan started.
        start: u64,
        /// Board microseconds when it ended.
        end: u64,
    },
}

impl Event {
    /// Parse a STREAM payload.
    pub fn parse(payload: &[u8]) -> Result<Self, EventError> {
        Ok(serde_json::from_slice(payload)?)
    }

    /// The STREAM payload of this event.
    pub fn to_payload(&self) -> Vec<u8> {
        // Serialising these plain data types cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The event's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Event::OutputEnabled => "output_enabled",
            Event::OutputDisabled => "output_disabled",
            Event::CapacitanceUpdated { .. } => "capacitance-updated",
            Event::CapacitanceExceeded { .. } => "capacitance-exceeded",
            Event::Halted { .. } => "halted",
            Event::CapacitanceSaturated { .. } => "capacitance_saturated",
            Event::ShortsDetected { .. } => "shorts-detected",
            Event::ChannelsUpdated { .. } => "channels-updated",
            Event::DropsDetected { .. } => "drops-detected",
        }
    }

    /// The `event_mask` bit gating this event, if it is gated.
    pub fn gate_bit(&self) -> Option<u32> {
        match self {
            Event::ShortsDetected { .. } => Some(EVENT_SHORTS_DETECTED),
            Event::ChannelsUpdated { .. } => Some(EVENT_CHANNELS_UPDATED),
            Event::DropsDetected { .. } => Some(EVENT_DROPS_DETECTED),
            _ => None,
        }
    }

    /// Whether a board with `event_mask` sends this event.
    pub fn is_enabled(&self, event_mask: u32) -> bool {
        match self.gate_bit() {
            Some(bit) => event_mask & bit != 0 && event_mask & EVENT_ENABLE != 0,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_firmware_shapes() {
        let e = Event::parse(br#"{"event":"capacitance-updated","new_value":1.5e-12,"time_us":10,"n_samples":50,"V_a":100.0}"#).unwrap();
        assert!(matches!(e, Event::CapacitanceUpdated { n_samples: 50, .. }));
        let h = Event::parse(
            br#"{"event": "halted", "wall_time": 12.500000, "error": {"name": "output-current-exceeded", "output_current": 0.0312}}"#,
        )
        .unwrap();
        assert_eq!(
            h,
            Event::Halted {
                wall_time: 12.5,
                error: HaltReason::OutputCurrentExceeded {
                    output_current: Some(0.0312)
                },
            }
        );
        let chip = br#"{"event": "halted", "wall_time": 3.000000, "error": {"name": "chip-load-saturated", "chip_load": 32000, "margin": 983}}"#;
        let error = HaltReason::ChipLoadSaturated {
            chip_load: Some(32000),
            margin: Some(983),
        };
        assert_eq!(
            Event::parse(chip).unwrap(),
            Event::Halted {
                wall_time: 3.0,
                error: error.clone()
            }
        );
        let saturated = br#"{"event": "capacitance_saturated", "wall_time": 3.000000, "error": {"name": "chip-load-saturated", "chip_load": -32000, "margin": 983}}"#;
        assert!(matches!(
            Event::parse(saturated).unwrap(),
            Event::CapacitanceSaturated { .. }
        ));
        // A halt missing its detail is still a halt.
        let bare =
            br#"{"event":"halted","wall_time":1.0,"error":{"name":"output-current-exceeded"}}"#;
        assert!(matches!(
            Event::parse(bare).unwrap(),
            Event::Halted {
                error: HaltReason::OutputCurrentExceeded {
                    output_current: None
                },
                ..
            }
        ));
        // drops-detected as the firmware formats it (dropbot.py src/format.h).
        let drops = br#"{"event":"drops-detected", "drops": {"channels": [[1, 2], [9]], "capacitances": [[3.1e-12, 4e-12], [5e-12]]}, "start": 10, "end": 20}"#;
        match Event::parse(drops).unwrap() {
            Event::DropsDetected { drops, start, end } => {
                assert_eq!(drops.channels, vec![vec![1, 2], vec![9]]);
                assert_eq!(drops.capacitances, vec![vec![3.1e-12, 4e-12], vec![5e-12]]);
                assert_eq!((start, end), (10, 20));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            Event::parse(br#"{"event":"output_enabled"}"#).unwrap(),
            Event::OutputEnabled
        );
        assert!(Event::parse(br#"{"event":"unknown"}"#).is_err());
        assert!(Event::parse(b"\xff").is_err());
    }

    #[test]
    fn round_trips_through_payload() {
        let e = Event::ChannelsUpdated {
            actuated: vec![1, 2],
            start: 5,
            end: 9,
            n: 2,
        };
        assert_eq!(Event::parse(&e.to_payload()).unwrap(), e);
        assert!(String::from_utf8(e.to_payload())
            .unwrap()
            .contains(r#""event":"channels-updated""#));
    }

    #[test]
    fn gating_needs_both_bits() {
        let e = Event::ShortsDetected { values: vec![] };
        assert!(!e.is_enabled(EVENT_SHORTS_DETECTED));
        assert!(!e.is_enabled(EVENT_ENABLE));
        assert!(e.is_enabled(EVENT_ENABLE | EVENT_SHORTS_DETECTED));
        // The default mask 0xFFFFFFFE has bit 0 clear: gated events are off by default.
        assert!(!e.is_enabled(0xFFFF_FFFE));
        assert!(Event::OutputEnabled.is_enabled(0));
    }

    #[test]
    fn every_event_names_itself_and_its_gate() {
        let halted = Event::Halted {
            wall_time: 1.0,
            error: HaltReason::ChipLoadSaturated {
                chip_load: Some(1),
                margin: None,
            },
        };
        let saturated = Event::CapacitanceSaturated {
            wall_time: 2.0,
            error: HaltReason::ChipLoadSaturated {
                chip_load: Some(-5),
                margin: Some(3),
            },
        };
        let cases = [
            (Event::OutputEnabled, None),
            (Event::OutputDisabled, None),
            (halted, None),
            (saturated, None),
            (Event::ShortsDetected { values: vec![1] }, Some(28)),
            (
                Event::ChannelsUpdated {
                    actuated: vec![],
                    start: 0,
                    end: 0,
                    n: 0,
                },
                Some(30),
            ),
            (
                Event::DropsDetected {
                    drops: Drops {
                        channels: vec![vec![1]],
                        capacitances: vec![vec![1e-12]],
                    },
                    start: 0,
                    end: 1,
                },
                Some(27),
            ),
        ];
        for (event, bit) in cases {
            assert_eq!(event.gate_bit().map(u32::trailing_zeros), bit);
            let text = String::from_utf8(event.to_payload()).unwrap();
            assert!(text.starts_with(&format!(r#"{{"event":"{}""#, event.name())));
            assert_eq!(Event::parse(text.as_bytes()).unwrap(), event);
        }
    }
}
