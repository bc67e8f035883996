//! Offload settings cats needs on veths (the lab's, and pods' through the CNI plugin), set
//! the way `ethtool -K` does (SIOCETHTOOL).
//!
//! - GRO on: XDP_REDIRECT into a veth in native mode only delivers when the *receiving* peer
//!   runs NAPI, and a veth turns NAPI on when GRO is on (or it has an XDP program of its own).
//! - TX checksum off on hosts and pods: a veth otherwise leaves the UDP/TCP checksum for "the NIC" to
//!   finish, and a packet that XDP encapsulates loses the note saying so, arriving with a bad
//!   checksum. A real NIC hands XDP finished checksums, so hosts must do the same.

use std::{ffi::c_void, io, os::fd::AsRawFd, os::fd::FromRawFd, os::fd::OwnedFd};

use anyhow::{Context, Result, bail};

// From <linux/ethtool.h>.
const ETHTOOL_GGRO: u32 = 0x0000_002b;
const ETHTOOL_SGRO: u32 = 0x0000_002c;
const ETHTOOL_STXCSUM: u32 = 0x0000_0017;
const SIOCETHTOOL: libc::c_ulong = 0x8946;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member of its union (40 bytes on 64-bit).
#[repr(C)]
struct IfreqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut c_void,
    _pad: [u8; 16],
}

/// Turns GRO on for `ifname` in the calling thread's network namespace.
pub fn enable_gro(ifname: &str) -> Result<()> {
    let mut v = EthtoolValue { cmd: ETHTOOL_SGRO, data: 1 };
    ethtool(ifname, &mut v).with_context(|| format!("enabling GRO on {ifname}"))
}

/// Makes the stack compute transmit checksums itself on `ifname` (calling thread's netns).
pub fn disable_tx_checksum(ifname: &str) -> Result<()> {
    let mut v = EthtoolValue { cmd: ETHTOOL_STXCSUM, data: 0 };
    ethtool(ifname, &mut v).with_context(|| format!("disabling TX checksum offload on {ifname}"))
}

/// Whether GRO is on for `ifname` in the calling thread's network namespace.
pub fn gro_enabled(ifname: &str) -> Result<bool> {
    let mut v = EthtoolValue { cmd: ETHTOOL_GGRO, data: 0 };
    ethtool(ifname, &mut v).with_context(|| format!("reading GRO state of {ifname}"))?;
    Ok(v.data != 0)
}

fn ethtool(ifname: &str, value: &mut EthtoolValue) -> Result<()> {
    let mut req = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: (value as *mut EthtoolValue).cast(),
        _pad: [0; 16],
    };
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
        bail!("bad interface name {ifname:?}");
    }
    for (dst, src) in req.name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    // Any socket will do for SIOCETHTOOL; a datagram socket needs no privileges to open.
    // SAFETY: plain socket(2) call; the fd is owned (and closed) by OwnedFd below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("opening a socket for SIOCETHTOOL");
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: req is a properly laid out ifreq whose data pointer refers to `value`, which
    // outlives the call; the kernel reads/writes only those two structs.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error().into());
    }
    Ok(())
}
