//! The health probe a headend's agent sends over an instance's segment list, and that the
//! instance (or a sidecar beside it) echoes back unchanged to the probe's source.
//!
//! A probe is one UDP datagram to the service address and the service's health port:
//! `PROBE_MAGIC`, then the instance slot (u32), the path (u8: 0 primary, 1 alternate),
//! three zero bytes, and a sequence number (u64), all big-endian: 24 bytes.

/// First bytes of every probe: an instance echoes a datagram that starts with them and
/// treats it as no request.
pub const PROBE_MAGIC: [u8; 8] = *b"CATSPROB";
/// Length of a probe datagram's payload.
pub const PROBE_LEN: usize = 24;

/// Which of an instance slot's segment lists a probe went over.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbePath {
    Primary = 0,
    Alternate = 1,
}

/// One probe's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub slot: u32,
    pub path: ProbePath,
    pub seq: u64,
}

impl Probe {
    pub fn encode(&self) -> [u8; PROBE_LEN] {
        let mut out = [0u8; PROBE_LEN];
        out[..8].copy_from_slice(&PROBE_MAGIC);
        out[8..12].copy_from_slice(&self.slot.to_be_bytes());
        out[12] = self.path as u8;
        out[16..24].copy_from_slice(&self.seq.to_be_bytes());
        out
    }

    /// `None` for anything that is not a whole probe.
    pub fn decode(bytes: &[u8]) -> Option<Probe> {
        if bytes.len() != PROBE_LEN || bytes[..8] != PROBE_MAGIC {
            return None;
        }
        let path = match bytes[12] {
            0 => ProbePath::Primary,
            1 => ProbePath::Alternate,
            _ => return None,
        };
        Some(Probe {
            slot: u32::from_be_bytes(bytes[8..12].try_into().ok()?),
            path,
            seq: u64::from_be_bytes(bytes[16..24].try_into().ok()?),
        })
    }
}

/// Whether a datagram is a probe to echo (the instance's side of the contract).
pub fn is_probe(bytes: &[u8]) -> bool {
    bytes.len() == PROBE_LEN && bytes[..8] == PROBE_MAGIC
}
