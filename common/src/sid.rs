//! SID encoding: `block (32 bits) | node (16) | function (16) | argument (64)`.
//!
//! The function of a compute SID names the service (CS-ID number) and the address family of the
//! payload, its argument names the instance (CSCI-ID number), so the egress delivers without an
//! extra lookup and any capture shows which compute target a packet is bound for.

/// Largest service number: it must fit the 14 low bits of the function field.
pub const MAX_CS_ID: u16 = 0x3FFF;

/// Function of the node's own address (argument 1): not a SID, the headend's encap source.
pub const FUNC_NODE_ADDRESS: u16 = 0x0000;
/// Function of the node's End SID.
pub const FUNC_END: u16 = 0x0001;
/// Function of the node's End.DT6 SID (decapsulate, look up the main table).
pub const FUNC_END_DT6: u16 = 0x0006;
/// Functions of the node's End.X SIDs: this plus the adjacency (link) number.
pub const FUNC_END_X_BASE: u16 = 0x0100;
/// Adjacencies an End.X function can name.
pub const MAX_ADJACENCIES: u16 = 0x3F00;
/// Compute SID whose payload is IPv6: End.DX6 to the instance.
pub const FUNC_COMPUTE_V6: u16 = 0x4000;
/// Compute SID whose payload is IPv4: End.DX4 to the instance.
pub const FUNC_COMPUTE_V4: u16 = 0x8000;
const FUNC_KIND_MASK: u16 = 0xC000;

/// What a SID asks its node to do, decoded from the function and argument bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SidFunction {
    NodeAddress,
    End,
    EndDt6,
    /// Advance and send to adjacency `adjacency`.
    EndX {
        adjacency: u16,
    },
    /// Deliver the IPv6 payload to instance `instance` of service `cs_id`.
    ComputeV6 {
        cs_id: u16,
        instance: u32,
    },
    /// Deliver the IPv4 payload to instance `instance` of service `cs_id`.
    ComputeV4 {
        cs_id: u16,
        instance: u32,
    },
    Unknown {
        function: u16,
        argument: u64,
    },
}

/// Builds a SID from its fields. `block` holds the first 32 bits of the SR domain block.
pub const fn encode(block: [u8; 4], node: u16, function: u16, argument: u64) -> [u8; 16] {
    let n = node.to_be_bytes();
    let f = function.to_be_bytes();
    let a = argument.to_be_bytes();
    [
        block[0], block[1], block[2], block[3], n[0], n[1], f[0], f[1], a[0], a[1], a[2], a[3],
        a[4], a[5], a[6], a[7],
    ]
}

/// The compute SID for instance `instance` of service `cs_id` behind node `node`.
pub const fn compute_sid(
    block: [u8; 4],
    node: u16,
    ipv4_payload: bool,
    cs_id: u16,
    instance: u32,
) -> [u8; 16] {
    let kind = if ipv4_payload { FUNC_COMPUTE_V4 } else { FUNC_COMPUTE_V6 };
    encode(block, node, kind | (cs_id & MAX_CS_ID), instance as u64)
}

/// The node number (locator bits after the block) of a SID.
pub const fn node_of(sid: &[u8; 16]) -> u16 {
    u16::from_be_bytes([sid[4], sid[5]])
}

/// Decodes the function and argument bits of a SID.
pub const fn decode(sid: &[u8; 16]) -> SidFunction {
    let function = u16::from_be_bytes([sid[6], sid[7]]);
    let argument =
        u64::from_be_bytes([sid[8], sid[9], sid[10], sid[11], sid[12], sid[13], sid[14], sid[15]]);
    let cs_id = function & MAX_CS_ID;
    match function & FUNC_KIND_MASK {
        FUNC_COMPUTE_V6 if argument <= u32::MAX as u64 => {
            SidFunction::ComputeV6 { cs_id, instance: argument as u32 }
        }
        FUNC_COMPUTE_V4 if argument <= u32::MAX as u64 => {
            SidFunction::ComputeV4 { cs_id, instance: argument as u32 }
        }
        _ => match function {
            FUNC_NODE_ADDRESS if argument == 1 => SidFunction::NodeAddress,
            FUNC_END if argument == 0 => SidFunction::End,
            FUNC_END_DT6 if argument == 0 => SidFunction::EndDt6,
            f if f >= FUNC_END_X_BASE && f < FUNC_END_X_BASE + MAX_ADJACENCIES && argument == 0 => {
                SidFunction::EndX { adjacency: f - FUNC_END_X_BASE }
            }
            _ => SidFunction::Unknown { function, argument },
        },
    }
}
