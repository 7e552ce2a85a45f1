//! `update_state` as the firmware runs it: nanopb-helpers `pb_cpp_api.h` `Message::update`
//! answers whether the message decoded; `pb_validate.h` then visits the fields present in
//! field-number order, calls the field's `on_state_<field>_changed` callback when the `Node`
//! has one (sci-bots/dropbot.py `src/Node.h`) and copies the field only if it returns true.
//! Fields without a callback are copied as they come. A refused field therefore still gets
//! `true` back; only a message that does not decode gets `false`.

use firmware_protocol::State;

use super::firmware::Firmware;

impl Firmware {
    /// `update_state(serialized)`; see the module docs.
    pub(super) fn update_state(&mut self, bytes: &[u8]) -> bool {
        let update = match State::from_bytes(bytes) {
            Ok(update) => update,
            Err(e) => {
                self.note(format!("update_state: message does not decode: {e}"));
                return false;
            }
        };
        if let Some(v) = update.voltage {
            if self.set_voltage(v) {
                self.state.voltage = Some(v);
            } else {
                self.refused(
                    "voltage",
                    format!("{v} V (max_voltage {})", self.limits.max_voltage),
                );
            }
        }
        if let Some(f) = update.frequency {
            if self.frequency_allowed(f) {
                self.state.frequency = Some(f);
            } else {
                self.refused("frequency", format!("{f} Hz"));
            }
        }
        if let Some(on) = update.hv_output_enabled {
            // `on_state_hv_output_enabled_changed` runs whenever the field is present.
            if on {
                self.enable_hv("update_state: HV enable sequence");
            } else {
                let now = self.now();
                self.physics.hv_mut(now).disable();
            }
            self.state.hv_output_enabled = Some(on);
            let now = self.now();
            self.record_hv(now);
        }
        if let Some(selected) = update.hv_output_selected {
            self.select_output(selected, "update_state: HV output re-selected");
            self.state.hv_output_selected = Some(selected);
        }
        if update.channel_count.is_some() {
            self.refused("channel_count", "read only".into());
        }
        if update.target_capacitance.is_some() {
            // `on_state_target_capacitance_changed` resets the consecutive count.
            self.target_count = 0;
        }
        let s = &mut self.state;
        macro_rules! copy {
            ($($f:ident),*) => {$(if update.$f.is_some() { s.$f = update.$f; })*};
        }
        copy!(
            capacitance_update_interval_ms,
            target_capacitance,
            target_count,
            event_mask,
            drops_update_interval_ms,
            output_current_limit,
            chip_load_range_margin
        );
        // Field 13 exists in the fork only; sci-bots firmware skips it as unknown.
        if self.is_fork() && update.halt_on_chip_load_saturated.is_some() {
            self.state.halt_on_chip_load_saturated = update.halt_on_chip_load_saturated;
        }
        true
    }

    /// `voltage_source::_set_voltage`: refused over `max_voltage` (and NaN); the digipot
    /// clamps below the minimum waveform voltage.
    fn set_voltage(&mut self, volts: f32) -> bool {
        if volts.is_nan() || volts > self.limits.max_voltage {
            return false;
        }
        let now = self.now();
        let minimum = self.min_waveform_voltage();
        let hv = self.physics.hv_mut(now);
        hv.set_target(f64::from(volts).max(minimum));
        let now = self.now();
        self.record_hv(now);
        true
    }

    /// `voltage_source::set_frequency`: 0 (DC) or within the limits.
    fn frequency_allowed(&self, hz: f32) -> bool {
        hz == 0.0 || (self.limits.min_frequency <= hz && hz <= self.limits.max_frequency)
    }

    fn refused(&mut self, field: &str, detail: String) {
        self.note(format!(
            "update_state: {field} refused by its callback ({detail}); the reply is still true"
        ));
    }
}
