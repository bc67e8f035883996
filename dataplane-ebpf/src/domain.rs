//! The SR domain's SID block (RFC 8754 section 5.1): what a packet from outside the domain
//! must never be addressed to.

use crate::{maps::CONFIG, packet::eight};

/// Whether `addr` lies in the SID block the agent configured (false while none is).
#[inline(always)]
pub fn in_sid_block(addr: &[u8; 16]) -> bool {
    let Some(config) = CONFIG.get(0) else { return false };
    let len = config.sr_block_len as u32;
    if len == 0 || len > 128 {
        return false;
    }
    // Two 64-bit halves and masks.
    let half = |b: &[u8; 16], i: usize| u64::from_be_bytes(eight(b, i));
    let (mask_hi, mask_lo) = if len >= 64 {
        (u64::MAX, if len == 64 { 0 } else { u64::MAX << (128 - len) })
    } else {
        (u64::MAX << (64 - len), 0)
    };
    (half(addr, 0) ^ half(&config.sr_block, 0)) & mask_hi == 0
        && (half(addr, 8) ^ half(&config.sr_block, 8)) & mask_lo == 0
}
