//! Every topic the plugin listens to, as data.
//!
//! Each put and trigger gets its own subscription (no `+` for our own endpoints): MicroDrop's
//! step editor and step runner read `get-subscriptions` to learn which properties a plugin
//! takes and whether it wants `execute`.

use crate::bus::{BusError, Router};

use super::properties::Property;

/// Actions a client may trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Answers `"pong"`.
    Ping,
    /// Answers the JSON schema.
    GetSchema,
    /// Answers our subscriptions.
    GetSubscriptions,
    /// Migrates a stored protocol state (ours needs no migration yet).
    UpdateVersion,
    /// Shuts down cleanly.
    Exit,
    /// Reports the board connection (the 2018 plugin's connect button).
    ConnectDropbot,
    /// Measures the capacitance of the actuated electrodes.
    MeasureCapacitance,
    /// Measures the RMS output voltage.
    MeasureVoltage,
    /// Sets voltage and frequency together.
    PutVoltageFrequency,
    /// Finds shorted channels and disables them.
    DetectShorts,
    /// HV off, all channels off, board halted until resumed.
    Halt,
    /// All channels off and HV off.
    AllOff,
    /// Capacitance of each channel actuated alone.
    ScanCapacitances,
    /// MicroDrop's step runner: apply the step, answer when applied.
    Execute,
    /// Runs a sequence of phases; answers when it ends.
    RunSequence,
    /// Runs MicroDrop 3 routes; answers when they end.
    RunRoutes,
    /// Stops the running sequence (its electrodes off).
    Stop,
    /// Holds the running sequence.
    Pause,
    /// Goes on with a held sequence.
    Resume,
    /// Liquid and filler capacitance per mm² from electrode sets.
    CalibrateCapacitance,
    /// The feedback correction from the on-board test capacitors.
    CalibrateFeedback,
    /// Droplets from a per-channel scan against the calibration.
    DetectDroplets,
    /// The electrowetting force per unit length at the measured voltage.
    MeasureForce,
    /// Record every sample until `stop-recording`.
    StartRecording,
    /// End the recording started by hand.
    StopRecording,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 25] = [
        Action::Ping,
        Action::GetSchema,
        Action::GetSubscriptions,
        Action::UpdateVersion,
        Action::Exit,
        Action::ConnectDropbot,
        Action::MeasureCapacitance,
        Action::MeasureVoltage,
        Action::PutVoltageFrequency,
        Action::DetectShorts,
        Action::Halt,
        Action::AllOff,
        Action::ScanCapacitances,
        Action::Execute,
        Action::RunSequence,
        Action::RunRoutes,
        Action::Stop,
        Action::Pause,
        Action::Resume,
        Action::CalibrateCapacitance,
        Action::CalibrateFeedback,
        Action::DetectDroplets,
        Action::MeasureForce,
        Action::StartRecording,
        Action::StopRecording,
    ];

    /// The action's name in topics.
    pub fn name(self) -> &'static str {
        match self {
            Action::Ping => "ping",
            Action::GetSchema => "get-schema",
            Action::GetSubscriptions => "get-subscriptions",
            Action::UpdateVersion => "update-version",
            Action::Exit => "exit",
            Action::ConnectDropbot => "connect-dropbot",
            Action::MeasureCapacitance => "measure-capacitance",
            Action::MeasureVoltage => "measure-voltage",
            Action::PutVoltageFrequency => "put-voltage-frequency",
            Action::DetectShorts => "detect-shorts",
            Action::Halt => "halt",
            Action::AllOff => "all-off",
            Action::ScanCapacitances => "scan-capacitances",
            Action::Execute => "execute",
            Action::RunSequence => "run-sequence",
            Action::RunRoutes => "run-routes",
            Action::Stop => "stop",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::CalibrateCapacitance => "calibrate-capacitance",
            Action::CalibrateFeedback => "calibrate-feedback",
            Action::DetectDroplets => "detect-droplets",
            Action::MeasureForce => "measure-force",
            Action::StartRecording => "start-recording",
            Action::StopRecording => "stop-recording",
        }
    }
}

/// What a topic is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `microdrop/put/<self>/<property>`.
    Put(Property),
    /// `microdrop/trigger/<self>/<action>`.
    Trigger(Action),
    /// `microdrop/device-model/state/three-object`.
    Device,
    /// `microdrop/electrodes-model/state/active-electrodes`.
    ActiveElectrodes,
    /// `microdrop/electrodes-model/state/voltage` (`"100 V"`) or `.../frequency` (`"1000 Hz"`):
    /// a protocol step's voltage and frequency (the one source of them).
    StepSetting(Property),
    /// `microdrop/electrodes-model/state/min-duration`: how long a step holds its electrodes.
    StepDuration,
    /// `microdrop/trigger/routes-model/stop`: what MicroDrop's Stop button (and the end of a
    /// protocol) sends; it stops our sequence too.
    RoutesStop,
    /// `microdrop/<self>/state/<property>` of a per-step property: MicroDrop's step loader
    /// writes it (no put) when a step is loaded. Only per-step properties: every other state
    /// topic of ours would send us our own publications back, for nothing. (Our own latest
    /// value coming back is not handed on by the bus.)
    OwnState(Property),
}

impl Route {
    /// The name used for replies and error topics.
    pub fn name(self) -> &'static str {
        match self {
            Route::Put(p) => p.name(),
            Route::Trigger(a) => a.name(),
            Route::Device => "three-object",
            Route::ActiveElectrodes => "active-electrodes",
            Route::StepDuration => "min-duration",
            Route::RoutesStop => "stop",
            Route::StepSetting(p) | Route::OwnState(p) => p.name(),
        }
    }
}

/// The plugin's router for bus name `name`.
pub fn router(name: &str) -> Result<Router<Route>, BusError> {
    let mut router = Router::for_plugin(name)?;
    for p in Property::ALL {
        router.add(
            &format!("microdrop/put/{{self}}/{}", p.name()),
            Route::Put(p),
        )?;
    }
    for a in Action::ALL {
        router.add(
            &format!("microdrop/trigger/{{self}}/{}", a.name()),
            Route::Trigger(a),
        )?;
    }
    router.add("microdrop/device-model/state/three-object", Route::Device)?;
    router.add(
        "microdrop/electrodes-model/state/active-electrodes",
        Route::ActiveElectrodes,
    )?;
    for p in [Property::Voltage, Property::Frequency] {
        router.add(
            &format!("microdrop/electrodes-model/state/{}", p.name()),
            Route::StepSetting(p),
        )?;
    }
    router.add(
        "microdrop/electrodes-model/state/min-duration",
        Route::StepDuration,
    )?;
    router.add("microdrop/trigger/routes-model/stop", Route::RoutesStop)?;
    for p in Property::ALL.into_iter().filter(|p| p.per_step()) {
        router.add(
            &format!("microdrop/{{self}}/state/{}", p.name()),
            Route::OwnState(p),
        )?;
    }
    Ok(router)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_has_its_own_subscription() {
        let r = router("dropbot").unwrap();
        let filters = r.filters();
        assert!(filters.contains(&"microdrop/trigger/dropbot/execute".to_owned()));
        assert!(filters.contains(&"microdrop/put/dropbot/voltage".to_owned()));
        assert!(filters.iter().all(|f| !f.contains('+')));
        assert_eq!(
            r.route("microdrop/put/dropbot/frequency").map(|(k, _)| *k),
            Some(Route::Put(Property::Frequency))
        );
        assert!(r.route("microdrop/put/other/frequency").is_none());
        // Our own voltage is not a step's: we do not listen to it (nor to its echoes).
        assert!(r.route("microdrop/dropbot/state/voltage").is_none());
        assert_eq!(
            r.route("microdrop/dropbot/state/wait-for-board")
                .map(|(k, _)| *k),
            Some(Route::OwnState(Property::WaitForBoard))
        );
    }
}
