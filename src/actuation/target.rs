//! What is asked of the board, and what it confirmed.

use std::collections::BTreeSet;

use serde::Serialize;

/// A partial request: `None` fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Target {
    /// Channels to actuate (all others off).
    pub channels: Option<BTreeSet<u16>>,
    /// RMS voltage, V.
    pub voltage: Option<f32>,
    /// Frequency, Hz.
    pub frequency: Option<f32>,
    /// HV output on or off.
    pub hv_output_enabled: Option<bool>,
}

impl Target {
    /// Fold a newer request (or confirmation) into this one: newest wins, field by field.
    pub fn merge(&mut self, newer: Target) {
        if newer.channels.is_some() {
            self.channels = newer.channels;
        }
        if newer.voltage.is_some() {
            self.voltage = newer.voltage;
        }
        if newer.frequency.is_some() {
            self.frequency = newer.frequency;
        }
        if newer.hv_output_enabled.is_some() {
            self.hv_output_enabled = newer.hv_output_enabled;
        }
    }

    /// Nothing asked.
    pub fn is_empty(&self) -> bool {
        *self == Target::default()
    }
}

/// What the board confirmed: the same fields as a [`Target`], `None` where the board was not
/// told. Merging confirmations is the same newest-wins fold as merging requests.
pub type Confirmed = Target;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_newest_wins_per_field() {
        let mut pending = Target {
            channels: Some(BTreeSet::from([1])),
            voltage: Some(90.0),
            ..Target::default()
        };
        pending.merge(Target {
            channels: Some(BTreeSet::from([2])),
            frequency: Some(1000.0),
            ..Target::default()
        });
        assert_eq!(pending.channels, Some(BTreeSet::from([2])));
        assert_eq!(pending.voltage, Some(90.0));
        assert_eq!(pending.frequency, Some(1000.0));
        assert!(!pending.is_empty());
        assert!(Target::default().is_empty());
    }
}
