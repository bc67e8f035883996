//! Counters: every drop has a named reason, every decision an event, both per CPU.

/// Packets and bytes, per service or per instance slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

macro_rules! named_index {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal => $label:literal,)* }) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($(#[$vmeta])* $variant = $value,)* }

        impl $name {
            /// Every variant, in index order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            /// Number of slots the per-CPU array needs.
            pub const COUNT: u32 = $name::ALL.len() as u32;
            /// Stable snake_case name, used in metrics and CLI output.
            pub const fn label(self) -> &'static str {
                match self { $($name::$variant => $label,)* }
            }
        }
    };
}

named_index! {
    /// Why the dataplane dropped a packet. Index into the `DROPS` per-CPU array.
    DropReason {
        /// A header the verdict depends on runs past the end of the frame.
        Truncated = 0 => "truncated",
        /// The service has no instance with weight above zero at this headend.
        NoInstance = 1 => "no_instance",
        /// The chosen instance has an empty segment list (controller bug or race).
        NoSegments = 2 => "no_segments",
        /// `bpf_xdp_adjust_head` refused to grow the frame for the encapsulation.
        NoHeadroom = 3 => "no_headroom",
        /// The encapsulated packet is larger than the egress MTU.
        FragNeeded = 4 => "frag_needed",
        /// The FIB says the first segment is unreachable, blackholed or prohibited.
        Unreachable = 5 => "unreachable",
        /// The per-node configuration map is empty (agent not finished yet).
        NotConfigured = 6 => "not_configured",
        /// The service is matched by port, but the ports cannot be read (a fragment, or IPv6
        /// extension headers before the transport header).
        PortsUnreadable = 7 => "ports_unreadable",
        /// SRH fields disagree (RFC 8754 4.3.1.1): Hdr Ext Len too small for Last Entry, or
        /// Segments Left > Last Entry + 1.
        SrhInvalid = 8 => "srh_invalid",
        /// A TLV in the SRH runs past the header's end.
        TlvInvalid = 9 => "tlv_invalid",
        /// A second routing header follows the SRH (RFC 8200 allows one).
        RoutingHeaderRepeated = 10 => "routing_header_repeated",
        /// More extension headers (the SRH included) than the program walks.
        TooManyExtensionHeaders = 11 => "too_many_extension_headers",
        /// A fragment of a packet addressed to a local SID: not reassembled in XDP.
        Fragment = 12 => "fragment",
        /// End.DX/End.DT reached with Segments Left above 0 (RFC 8986 4.4-4.6).
        NotLastSegment = 13 => "not_last_segment",
        /// The payload after the last SID is not the family the behaviour decapsulates.
        WrongPayload = 14 => "wrong_payload",
        /// From an interface outside the SR domain, to an address in the SID block
        /// (RFC 8754 section 5.1).
        OutsideDomain = 15 => "outside_domain",
    }
}

named_index! {
    /// What the dataplane decided for a packet. Index into the `EVENTS` per-CPU array.
    Event {
        /// Not addressed to a service: passed to the stack untouched.
        NotService = 0 => "not_service",
        /// Service packet whose flow already had a live instance pin.
        AffinityHit = 1 => "affinity_hit",
        /// Service packet that started (or restarted after timeout) a flow.
        AffinityMiss = 2 => "affinity_miss",
        /// Encapsulated and redirected out of the interface the FIB chose.
        Redirected = 3 => "redirected",
        /// Encapsulated and handed to the stack (neighbour unresolved, or local route).
        EncapToStack = 4 => "encap_to_stack",
        /// Hop limit or TTL would expire here: passed to the stack to send ICMP.
        HopLimitToStack = 5 => "hop_limit_to_stack",
        /// Sent back out of the receiving interface (a hairpin), on top of the decision's
        /// own event.
        Transmitted = 6 => "transmitted",
        /// Endpoint program: not for a local SID and not SR transit: passed untouched.
        NotForUs = 7 => "not_for_us",
        /// A local SID behaviour ran: End, End.X (segment advanced).
        SegmentAdvanced = 8 => "segment_advanced",
        /// A local SID behaviour ran: End.DX6, End.DX4, End.DT6 (decapsulated).
        Decapsulated = 9 => "decapsulated",
        /// SRv6 transit: destination in the SID block, not local, forwarded by the FIB.
        TransitForwarded = 10 => "transit_forwarded",
        /// Left to the kernel on purpose: SL 0 at End, an unknown function of a local
        /// locator, a non-SRH routing header with segments left, or an unresolved neighbour.
        EndpointToStack = 11 => "endpoint_to_stack",
        /// PSP removed the SRH at the penultimate segment.
        SrhPopped = 12 => "srh_popped",
        /// A TCP RST of a five-tuple flow, steered by its pin, deleted that pin: the
        /// connection is over, its next SYN picks afresh.
        AffinityReset = 13 => "affinity_reset",
        /// A flow key was added to the affinity table (a miss whose key was absent; an expired
        /// pin re-pinned in place does not count). With `affinity_reset` and the table's
        /// occupancy this gives the LRU's evictions (see the controller's
        /// `dataplane::affinity::affinity_evictions`).
        AffinityPinned = 14 => "affinity_pinned",
        /// The flow's instance is down over its primary path but answers over its alternate
        /// (disjoint) path: sent there, the flow keeps its instance.
        FailoverAlternate = 15 => "failover_alternate",
        /// The flow's instance is unreachable: the flow was re-pinned to the slot's backup
        /// instance (once; it stays there when the first instance comes back).
        FailoverRepinned = 16 => "failover_repinned",
        /// The flow's instance is unreachable and so is its backup (or it has none): sent on
        /// the primary path anyway, the instance may be back before the prober notices.
        FailoverUnavailable = 17 => "failover_unavailable",
    }
}
