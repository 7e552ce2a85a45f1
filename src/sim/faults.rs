//! Fault injection on the bytes the board writes: corruption and loss, drawn from a seeded
//! generator so that a faulty run is reproducible.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::options::Faults;

/// Applies [`Faults`] to outgoing bytes.
#[derive(Debug, Clone)]
pub struct FaultInjector {
    faults: Faults,
    rng: ChaCha8Rng,
}

/// What [`FaultInjector::mangle`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mangled {
    /// Bytes replaced by another value.
    pub corrupted: usize,
    /// Bytes left out.
    pub dropped: usize,
}

impl FaultInjector {
    /// An injector with `faults`, its randomness from `seed`.
    pub fn new(faults: Faults, seed: u64) -> Self {
        Self {
            faults,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The active faults.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Replace the active faults.
    pub fn set(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// Corrupt and drop bytes of `bytes` as configured.
    pub fn mangle(&mut self, bytes: &mut Vec<u8>) -> Mangled {
        let corrupt = self.faults.corrupt_fraction.clamp(0.0, 1.0);
        let drop = self.faults.drop_fraction.clamp(0.0, 1.0);
        let mut done = Mangled::default();
        if corrupt <= 0.0 && drop <= 0.0 {
            return done;
        }
        let mut out = Vec::with_capacity(bytes.len());
        for &b in bytes.iter() {
            if drop > 0.0 && self.rng.random_bool(drop) {
                done.dropped += 1;
                continue;
            }
            if corrupt > 0.0 && self.rng.random_bool(corrupt) {
                // XOR with a non-zero value: the byte always changes.
                let flip: u8 = self.rng.random_range(1..=255);
                out.push(b ^ flip);
                done.corrupted += 1;
            } else {
                out.push(b);
            }
        }
        *bytes = out;
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mangles_about_the_asked_fraction_reproducibly() {
        let faults = Faults {
            corrupt_fraction: 0.1,
            drop_fraction: 0.05,
            ..Faults::default()
        };
        let original = vec![0x55u8; 10_000];
        let mut a = original.clone();
        let mut b = original.clone();
        let done = FaultInjector::new(faults.clone(), 1).mangle(&mut a);
        FaultInjector::new(faults, 1).mangle(&mut b);
        assert_eq!(a, b);
        assert!((300..700).contains(&done.dropped), "{done:?}");
        assert!((700..1300).contains(&done.corrupted), "{done:?}");
        assert_eq!(a.len(), original.len() - done.dropped);
        assert_eq!(a.iter().filter(|&&x| x != 0x55).count(), done.corrupted);
        let mut clean = original.clone();
        FaultInjector::new(Faults::default(), 1).mangle(&mut clean);
        assert_eq!(clean, original);
    }
}
