//! The safety policy, as a pure state machine the engine consults before anything that could
//! energise the chip. It lives inside the engine, under no lock: the engine's thread is the
//! only reader and writer, so "halted?" and "apply" can never be split by a race.
//!
//! - **Halt latch**: a halt (the board's, the `halt` trigger, a lost bus, a board reset) refuses
//!   channels and HV-on until a user resumes (an explicit HV-on request).
//! - **Auto-HV**: a live electrode request turns HV on with it, unless the user switched HV off
//!   explicitly since the board connected (or since they last switched it on), or auto-HV is
//!   off altogether.

use super::picture::Halt;
use super::ActuationError;

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    auto_hv: bool,
    halted: Option<Halt>,
    hv_off_by_user: bool,
}

/// What a request for channels may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelsVerdict {
    /// Apply the channels; also turn HV on.
    WithHv,
    /// Apply the channels, leave HV as it is.
    AsIs,
}

impl Policy {
    /// A policy with auto-HV on or off.
    pub fn new(auto_hv: bool) -> Self {
        Policy {
            auto_hv,
            ..Policy::default()
        }
    }

    /// The halt, if latched.
    pub fn halted(&self) -> Option<&Halt> {
        self.halted.as_ref()
    }

    /// A board connected: an explicit HV-off belonged to the previous one. A halt stays.
    pub fn on_connect(&mut self) {
        self.hv_off_by_user = false;
    }

    /// Latch a halt (the first reason is kept until a resume).
    pub fn halt(&mut self, halt: Halt) {
        if self.halted.is_none() {
            self.halted = Some(halt);
        }
    }

    /// The user switched HV off (or all off): no auto-HV until they switch it on.
    pub fn hv_off_by_user(&mut self) {
        self.hv_off_by_user = true;
    }

    /// The user asked for HV on: this is how a halt is resumed. Returns the halt it cleared.
    pub fn resume(&mut self) -> Option<Halt> {
        self.hv_off_by_user = false;
        self.halted.take()
    }

    /// May a request for `channels` (empty: all off) go ahead, and with HV? `live` requests
    /// (a click, a route, a step) are the only ones auto-HV applies to; `hv_on` says whether
    /// HV is on now.
    pub fn channels(
        &self,
        non_empty: bool,
        live: bool,
        hv_on: bool,
    ) -> Result<ChannelsVerdict, ActuationError> {
        if !non_empty {
            return Ok(ChannelsVerdict::AsIs);
        }
        if let Some(h) = &self.halted {
            return Err(ActuationError::Halted(h.reason.clone()));
        }
        let auto = self.auto_hv && live && !hv_on && !self.hv_off_by_user;
        Ok(if auto {
            ChannelsVerdict::WithHv
        } else {
            ChannelsVerdict::AsIs
        })
    }

    /// May a sequence start? It needs HV: refused while halted, and while the user has HV
    /// switched off (it would move nothing); otherwise it turns HV on when auto-HV allows.
    pub fn sequence(&self, hv_on: bool) -> Result<ChannelsVerdict, ActuationError> {
        if let Some(h) = &self.halted {
            return Err(ActuationError::Halted(h.reason.clone()));
        }
        if hv_on {
            return Ok(ChannelsVerdict::AsIs);
        }
        if self.hv_off_by_user || !self.auto_hv {
            return Err(ActuationError::HvOff);
        }
        Ok(ChannelsVerdict::WithHv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn auto_hv_only_for_live_requests_and_not_after_an_explicit_off() {
        let mut p = Policy::new(true);
        assert!(matches!(
            p.channels(true, true, false),
            Ok(ChannelsVerdict::WithHv)
        ));
        assert!(matches!(
            p.channels(true, false, false),
            Ok(ChannelsVerdict::AsIs)
        ));
        assert!(matches!(
            p.channels(true, true, true),
            Ok(ChannelsVerdict::AsIs)
        ));
        p.hv_off_by_user();
        assert!(matches!(
            p.channels(true, true, false),
            Ok(ChannelsVerdict::AsIs)
        ));
        assert!(matches!(p.sequence(false), Err(ActuationError::HvOff)));
        // A new board, or the user's own HV-on, ends the explicit off.
        p.on_connect();
        assert!(matches!(
            p.channels(true, true, false),
            Ok(ChannelsVerdict::WithHv)
        ));
        p.hv_off_by_user();
        p.resume();
        assert!(matches!(
            p.channels(true, true, false),
            Ok(ChannelsVerdict::WithHv)
        ));
        assert!(matches!(
            Policy::new(false).channels(true, true, false),
            Ok(ChannelsVerdict::AsIs)
        ));
    }

    #[test]
    fn a_halt_refuses_channels_until_resumed_and_survives_reconnects() {
        let mut p = Policy::new(true);
        p.halt(Halt::new("output-current-exceeded", json!(null)));
        p.halt(Halt::new("requested", json!(null)));
        let refused = |r: Result<ChannelsVerdict, ActuationError>| matches!(r, Err(ActuationError::Halted(reason)) if reason == "output-current-exceeded");
        assert!(refused(p.channels(true, true, false)));
        assert!(refused(p.sequence(true)));
        // Switching everything off is always allowed.
        assert!(matches!(
            p.channels(false, true, false),
            Ok(ChannelsVerdict::AsIs)
        ));
        p.on_connect();
        assert!(p.halted().is_some());
        assert_eq!(
            p.resume().map(|h| h.reason),
            Some("output-current-exceeded".into())
        );
        assert!(matches!(
            p.channels(true, true, false),
            Ok(ChannelsVerdict::WithHv)
        ));
    }
}
