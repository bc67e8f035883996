//! Types shared by the cats eBPF programs and userspace.
//!
//! Everything here is `#[repr(C)]` with explicit padding so the kernel and the controller agree
//! on every byte, and every encoding (SIDs, flow hashes) is a `const fn` used by both sides.
#![no_std]

pub mod counters;
pub mod flow;
pub mod health;
pub mod maps;
pub mod sid;
pub mod srh;

#[cfg(feature = "user")]
mod pod {
    //! aya needs `Pod` to copy these types in and out of maps.
    use crate::{counters::Counter, flow::*, maps::*};
    macro_rules! pod {
        ($($t:ty),* $(,)?) => { $( unsafe impl aya::Pod for $t {} )* };
    }
    pod!(
        ServiceKey,
        ServiceEntry,
        InstanceTarget,
        FlowKey,
        FlowEntry,
        HeadendConfig,
        Counter,
        SidKey,
        SidEntry,
        InterfaceFlags,
        Failover,
    );
}
