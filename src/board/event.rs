//! Board events as the layers above receive them: the parsed [`Event`] with the host time it
//! arrived and, when it carries board microseconds, its unwrapped 64-bit board time.

use std::time::{Instant, SystemTime};

use firmware_protocol::Event;

/// An asynchronous event from the board.
#[derive(Debug, Clone, PartialEq)]
pub struct BoardEvent {
    /// The event.
    pub event: Event,
    /// Host monotonic time of arrival.
    pub received: Instant,
    /// Host wall-clock time of arrival (for logs and the bus).
    pub received_wall: SystemTime,
    /// The event's board time (`time_us`, or `start` of an interval), unwrapped to 64 bits.
    pub board_time_us: Option<u64>,
    /// That board time mapped to host monotonic time, when the clock is synchronised.
    pub board_time_host: Option<Instant>,
}

/// The 32-bit board counter value an event carries, if any.
pub fn raw_board_time(event: &Event) -> Option<u32> {
    let raw = match event {
        Event::CapacitanceUpdated { time_us, .. } | Event::CapacitanceExceeded { time_us, .. } => {
            *time_us
        }
        Event::ChannelsUpdated { start, .. } | Event::DropsDetected { start, .. } => *start,
        _ => return None,
    };
    // The counter is 32 bits wide; JSON carries it as a number, so keep its low 32 bits.
    Some(raw as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_board_time_field() {
        let e = Event::ChannelsUpdated {
            actuated: vec![],
            start: 7,
            end: 9,
            n: 0,
        };
        assert_eq!(raw_board_time(&e), Some(7));
        assert_eq!(raw_board_time(&Event::OutputEnabled), None);
        let e = Event::CapacitanceUpdated {
            new_value: 0.0,
            time_us: (1 << 32) + 5,
            n_samples: 1,
            v_a: 0.0,
        };
        assert_eq!(raw_board_time(&e), Some(5));
    }
}
