//! XDP programs of the cats dataplane.
//!
//! `cats_headend` steers packets addressed to a compute service into SRv6 towards one instance;
//! `cats_pass` passes everything (benchmark baseline, and receive hook for redirected frames).
#![no_std]
#![no_main]

mod counters;
mod domain;
mod encap;
mod endpoint;
mod failover;
mod forward;
mod headend;
mod headers;
mod log;
mod maps;
mod packet;
mod srv6;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn cats_headend(ctx: XdpContext) -> u32 {
    match headend::steer(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            counters::drop(reason);
            log::headend_drop(reason as u32);
            xdp_action::XDP_DROP
        }
    }
}

#[xdp]
pub fn cats_endpoint(ctx: XdpContext) -> u32 {
    match endpoint::process(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            counters::drop(reason);
            log::endpoint_drop(reason as u32);
            xdp_action::XDP_DROP
        }
    }
}

#[xdp]
pub fn cats_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
