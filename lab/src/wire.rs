//! The lab's request/reply messages, one per UDP datagram, in a fixed little-endian layout.
//!
//! Request (28 bytes; bytes after them are ignored, so a sender may pad):
//!
//! | offset | size | field                                         |
//! |--------|------|-----------------------------------------------|
//! | 0      | 4    | magic `b"CATQ"`                               |
//! | 4      | 8    | flow id (u64)                                 |
//! | 12     | 8    | sequence number within the flow (u64)         |
//! | 20     | 8    | client send timestamp, ns on the client's own clock (u64) |
//!
//! Reply (45 bytes + name):
//!
//! | offset | size | field                                         |
//! |--------|------|-----------------------------------------------|
//! | 0      | 4    | magic `b"CATR"`                               |
//! | 4      | 8    | flow id, echoed                               |
//! | 12     | 8    | sequence number, echoed                       |
//! | 20     | 8    | send timestamp, echoed                        |
//! | 28     | 8    | queueing delay at the instance, µs (u64)      |
//! | 36     | 8    | service time at the instance, µs (u64)        |
//! | 44     | 1    | instance name length n (at most 32)           |
//! | 45     | n    | instance name, UTF-8                          |

/// Longest instance name a reply carries; longer names are cut at a character boundary.
pub const MAX_NAME: usize = 32;

const REQUEST_MAGIC: &[u8; 4] = b"CATQ";
const REPLY_MAGIC: &[u8; 4] = b"CATR";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flow: u64,
    pub seq: u64,
    pub sent_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub flow: u64,
    pub seq: u64,
    pub sent_ns: u64,
    pub instance: String,
    pub queue_us: u64,
    pub service_us: u64,
}

impl Request {
    pub const LEN: usize = 28;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..4].copy_from_slice(REQUEST_MAGIC);
        b[4..12].copy_from_slice(&self.flow.to_le_bytes());
        b[12..20].copy_from_slice(&self.seq.to_le_bytes());
        b[20..28].copy_from_slice(&self.sent_ns.to_le_bytes());
        b
    }

    /// `None` for anything that is not a request (wrong magic or too short).
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < Self::LEN || &b[0..4] != REQUEST_MAGIC {
            return None;
        }
        Some(Request { flow: u64_at(b, 4), seq: u64_at(b, 12), sent_ns: u64_at(b, 20) })
    }
}

impl Reply {
    /// Fixed part; the name follows.
    pub const HEADER_LEN: usize = 45;
    pub const MAX_LEN: usize = Self::HEADER_LEN + MAX_NAME;

    /// The reply to `req`, echoing its identifiers.
    pub fn to(req: &Request, instance: &str, queue_us: u64, service_us: u64) -> Self {
        Reply {
            flow: req.flow,
            seq: req.seq,
            sent_ns: req.sent_ns,
            instance: instance.to_string(),
            queue_us,
            service_us,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let name = truncate_name(&self.instance);
        let mut b = Vec::with_capacity(Self::HEADER_LEN + name.len());
        b.extend_from_slice(REPLY_MAGIC);
        for v in [self.flow, self.seq, self.sent_ns, self.queue_us, self.service_us] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.push(name.len() as u8);
        b.extend_from_slice(name.as_bytes());
        b
    }

    /// `None` for anything that is not a well-formed reply.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < Self::HEADER_LEN || &b[0..4] != REPLY_MAGIC {
            return None;
        }
        let n = b[44] as usize;
        let name = b.get(Self::HEADER_LEN..Self::HEADER_LEN + n)?;
        Some(Reply {
            flow: u64_at(b, 4),
            seq: u64_at(b, 12),
            sent_ns: u64_at(b, 20),
            queue_us: u64_at(b, 28),
            service_us: u64_at(b, 36),
            instance: std::str::from_utf8(name).ok()?.to_string(),
        })
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn truncate_name(name: &str) -> &str {
    let mut end = name.len().min(MAX_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        let r = Request { flow: 7, seq: 1 << 40, sent_ns: 123_456_789 };
        let mut padded = r.encode().to_vec();
        padded.extend_from_slice(&[0xaa; 100]);
        assert_eq!(Request::decode(&padded), Some(r));
        assert_eq!(Request::decode(&padded[..27]), None);
        assert_eq!(Reply::decode(&padded), None);
    }

    #[test]
    fn reply_round_trip_and_long_names() {
        let req = Request { flow: 1, seq: 2, sent_ns: 3 };
        let r = Reply::to(&req, "edge-a", 40, 5000);
        assert_eq!(Reply::decode(&r.encode()), Some(r));
        let long = "é".repeat(20); // 40 bytes; cut to 32 at a char boundary
        let got = Reply::decode(&Reply::to(&req, &long, 0, 0).encode()).unwrap();
        assert_eq!(got.instance, "é".repeat(16));
        assert!(Reply::to(&req, &long, 0, 0).encode().len() <= Reply::MAX_LEN);
    }
}
