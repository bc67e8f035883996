#!/usr/bin/python3
"""Hostile-packet corpus for the cats XDP programs, built with scapy (independently of cats'
own encoders and of the Rust test builders).

    /usr/bin/python3 tests/corpus/generate.py        # from the repository root, or anywhere

rewrites, deterministically (no randomness, fixed capture timestamps):

    tests/corpus/endpoint.pcap   frames for cats_endpoint
    tests/corpus/headend.pcap    frames for cats_headend
    tests/corpus/expected.tsv    one line per frame: the verdict and counter it must produce

`tests/tests/hostile_corpus.rs` runs every frame once through its program with
BPF_PROG_TEST_RUN and checks the line.

Expected outcomes come from the RFCs (8200 IPv6, 8754 SRH, 8986 SRv6 network programming,
4443 ICMPv6, 2675 jumbograms, 6946 atomic fragments, 791/1812 IPv4) and from the programs'
documented behaviour where the RFCs leave a choice (local policy, or an ICMP error that XDP
cannot send: then "drop with a named reason" or "pass to the stack, which sends it").

Lines may end in a comment:
    # KNOWN: ...   the program disagrees with the expectation and the program is wrong
                   (a bug left for a fix); the test reports these as failures.
    # NOTE: ...    the RFC alone would allow or ask for something else; the expectation
                   follows a documented choice of the program, and says why that is fine.

The node under test for the endpoint is node 4 of block fc00::/32 as in
`tests/src/endpoint_fixture.rs` (End fc00:0:4:1::, End.X fc00:0:4:100::, End.DT6 fc00:0:4:6::,
End.DX6 fc00:0:4:4001::1, End.DX4 fc00:0:4:8001::1; node 3's locator behind a resolved
neighbour, node 2's behind an unresolved one), with no PSP/USD flavour and `up0` set to an MTU
of 9000 (a jumbo link). The headend is `tests/src/fixture.rs`'s smart-traffic service
(2001:db8:ca75::1 and 198.51.100.1, UDP 7000, all weight on the edge instance).

Scapy's SRH TLV classes do not follow RFC 8754 (its Pad1 is three bytes long and its HMAC
length is off by ten), so TLVs are written as raw bytes here.
"""

import os
import struct
import sys

from scapy.config import conf

conf.verb = 0
from scapy.layers.inet import ICMP, IP, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import (  # noqa: E402
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    IPv6ExtHdrSegmentRouting,
    Jumbo,
    PadN,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether  # noqa: E402
from scapy.packet import Raw  # noqa: E402
from scapy.utils import PcapWriter  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# --- Addresses (tests/src/endpoint_fixture.rs, tests/src/fixture.rs, tests/src/packets.rs) ---

GATEWAY_MAC = "02:ca:75:00:00:02"
CLIENT_MAC = "02:ca:75:00:00:01"

OUTER_SRC = "fc00:0:1::1"  # the headend that encapsulated (node 1)
END = "fc00:0:4:1::"
END_X = "fc00:0:4:100::"  # End.X to fd00:99::2
DT6 = "fc00:0:4:6::"  # End.DT6, main table
DX6 = "fc00:0:4:4001::1"  # End.DX6 to fd00:21::10
DX4 = "fc00:0:4:8001::1"  # End.DX4 to 198.18.21.10
UNKNOWN_FUNCTION = "fc00:0:4:777::"  # in node 4's locator, no SID programmed
FAR = "fc00:0:3:4001::7"  # node 3 (resolved neighbour)
NODE3_END = "fc00:0:3:1::"
NODE3_A = "fc00:0:3:4001::a"
NODE3_B = "fc00:0:3:4001::b"
NODE2_END = "fc00:0:2:1::"  # node 2 (neighbour unresolved)
NODE9 = "fc00:0:9:1::"  # in the block, no route
CLIENT6 = "fd00:10::64"
SERVICE6 = "2001:db8:ca75::1"
SERVICE4 = "198.51.100.1"
OTHER6 = "2001:db8::99"
CLIENT4 = "198.18.10.100"
HEADEND_CLIENT6 = "fd00:10::21"
HEADEND_CLIENT4 = "198.18.10.21"
PORT = 7000

ETH = 14
IP6 = 40
JUMBO_MTU = 9000  # MTU of up0 in the corpus namespace (set by hostile_corpus.rs)

# BPF_PROG_TEST_RUN for XDP on this kernel (Linux 6.18, 4 KiB pages, CONFIG_MAX_SKB_FRAGS=17)
# takes frames up to 73152 bytes: a linear part of PAGE_SIZE - XDP_PACKET_HEADROOM (256) -
# skb_shared_info (320) = 3520 bytes, then up to 17 page-sized fragments (3520 + 17 * 4096).
# 73153 fails with ENOMEM. Found by bisecting data_size_in with a two-instruction XDP program.
# Frames above 3520 bytes reach the program as multi-buffer XDP even though cats' programs are
# not loaded with BPF_F_XDP_HAS_FRAGS: the program sees the first 3520 bytes between data and
# data_end, which is enough for every header it reads.
TEST_RUN_LINEAR_MAX = 3520
TEST_RUN_FRAME_MAX = 73152


def eth(ether_type=None):
    if ether_type is None:
        return Ether(dst=GATEWAY_MAC, src=CLIENT_MAC)
    return Ether(dst=GATEWAY_MAC, src=CLIENT_MAC, type=ether_type)


def outer(dst, nh, hlim=64, src=OUTER_SRC):
    return eth() / IPv6(src=src, dst=dst, nh=nh, hlim=hlim)


def srh(segments, sl, nh=41, tlvs=b"", hdr_len=None, last_entry=None, rtype=4, tag=1):
    """An SRH with `segments` in SRH order (Segment List[0], the last to visit, first)."""
    if hdr_len is None:
        total = 8 + 16 * len(segments) + len(tlvs)
        assert total % 8 == 0, f"SRH of {total} bytes is not 8-octet aligned"
        hdr_len = total // 8 - 1
    if last_entry is None:
        last_entry = len(segments) - 1
    return IPv6ExtHdrSegmentRouting(
        nh=nh,
        len=hdr_len,
        type=rtype,
        segleft=sl,
        lastentry=last_entry,
        tag=tag,
        addresses=list(segments),
        tlv_objects=[Raw(tlvs)] if tlvs else [],
    )


def hbh(nh, pad=4):
    """An 8-byte hop-by-hop options header (one PadN option)."""
    return IPv6ExtHdrHopByHop(nh=nh, options=[PadN(optdata=b"\x00" * pad)])


def dest(nh, pad=4):
    """An 8-byte destination options header (one PadN option)."""
    return IPv6ExtHdrDestOpt(nh=nh, options=[PadN(optdata=b"\x00" * pad)])


def inner6(payload=b"plate", hlim=64):
    """A client request as the edge instance receives it (the End.DX6 payload)."""
    return IPv6(src=CLIENT6, dst=SERVICE6, hlim=hlim) / UDP(sport=40000, dport=PORT) / payload


def reply6(payload=b"y", hlim=64):
    """A reply towards the client prefix (the End.DT6 payload)."""
    return IPv6(src=SERVICE6, dst=CLIENT6, hlim=hlim) / UDP(sport=PORT, dport=40000) / payload


def inner4(payload=b"x", ttl=64):
    return IP(src=CLIENT4, dst=SERVICE4, ttl=ttl) / UDP(sport=40000, dport=PORT) / payload


# TLVs (RFC 8754 section 2.1), as bytes.
PAD1 = b"\x00"


def padn(n):
    """PadN with n bytes of padding (2 + n bytes in all)."""
    return bytes([4, n]) + b"\x00" * n


def hmac_tlv():
    """HMAC TLV (RFC 8754 2.1.2): type 5, length 38 = D/reserved (2) + key id (4) + 32-byte
    HMAC; 40 bytes in all."""
    return bytes([5, 38, 0, 0]) + struct.pack("!I", 7) + bytes(range(32))


def unknown_tlv(value_len):
    """A TLV of an unassigned type (0x7e): RFC 8754 2.1 says unrecognized types are ignored."""
    return bytes([0x7E, value_len]) + b"\xab" * value_len


def set_payload_len(frame, plen):
    b = bytearray(frame)
    b[ETH + 4 : ETH + 6] = struct.pack("!H", plen)
    return bytes(b)


# --- The corpus -------------------------------------------------------------------------------

CASES = {"endpoint": [], "headend": []}


def case(program, name, frame, verdict, counter, side="-", note=None, known=None):
    frame = bytes(frame)
    assert verdict in ("DROP", "PASS", "REDIRECT", "TX"), verdict
    assert counter.startswith(("drop:", "event:")), counter
    assert len(frame) >= ETH, f"{name}: BPF_PROG_TEST_RUN refuses frames shorter than Ethernet"
    assert len(frame) <= TEST_RUN_FRAME_MAX, f"{name}: {len(frame)} bytes"
    assert all(c["name"] != name for c in CASES[program]), f"duplicate name {name}"
    assert not (note and known)
    CASES[program].append(
        dict(name=name, frame=frame, verdict=verdict, counter=counter, side=side, note=note,
             known=known)
    )


def endpoint(*args, **kwargs):
    case("endpoint", *args, **kwargs)


def headend(*args, **kwargs):
    case("headend", *args, **kwargs)


ADVANCED = ("REDIRECT", "event:segment_advanced")
DECAPSULATED = ("REDIRECT", "event:decapsulated")
TRANSIT = ("REDIRECT", "event:transit_forwarded")
TO_STACK = ("PASS", "event:endpoint_to_stack")
NOT_FOR_US = ("PASS", "event:not_for_us")
HOP_LIMIT = ("PASS", "event:hop_limit_to_stack")




def end_packet(payload=None, hlim=64):
    """End with SL 1: [FAR, END], destination END: the base of the malformation cases."""
    inner = payload if payload is not None else inner6()
    return outer(END, 43, hlim) / srh([FAR, END], 1) / inner


def endpoint_cases():
    # ---- Valid packets (RFC 8986 4.1-4.6, RFC 8754 4.2) ----
    endpoint("end_sl1_2_segments", end_packet(), *ADVANCED)
    endpoint("end_sl2_3_segments", outer(END, 43) / srh([FAR, NODE3_END, END], 2) / inner6(),
             *ADVANCED)
    endpoint("end_sl3_4_segments",
             outer(END, 43) / srh([FAR, NODE3_A, NODE3_B, END], 3) / inner6(), *ADVANCED)
    endpoint("end_sl5_6_segments",
             outer(END, 43) / srh([FAR, NODE2_END, NODE3_END, NODE3_B, NODE3_A, END], 5)
             / inner6(), *ADVANCED)
    endpoint("end_sl1_of_6_segments",
             outer(END, 43) / srh([FAR, END, NODE2_END, NODE3_END, NODE3_B, NODE3_A], 1)
             / inner6(), *ADVANCED)
    # RFC 8754 4.3.1.1 allows Segments Left = Last Entry + 1: the first segment (this End) is
    # only in the destination address (a reduced SRH).
    endpoint("end_reduced_srh_sl_eq_last_entry_plus_1",
             outer(END, 43) / srh([FAR], 1) / inner6(), *ADVANCED)
    # 60 segments (a 968-byte SRH), and 127: Hdr Ext Len 254, the longest list an SRH holds.
    endpoint("end_60_segments",
             outer(END, 43) / srh([NODE3_A] * 58 + [NODE3_B, END], 59) / inner6(), *ADVANCED)
    endpoint("end_127_segments",
             outer(END, 43) / srh([NODE3_A] * 125 + [NODE3_B, END], 126) / inner6(), *ADVANCED)
    # RFC 8200 4.7: bytes after No Next Header are ignored and forwarded unchanged.
    endpoint("end_next_header_59_with_trailing_bytes",
             outer(END, 43) / srh([FAR, END], 1, nh=59) / Raw(b"\x00" * 24), *ADVANCED)
    # Ethernet padding after the IPv6 packet (payload length shorter than the frame) is fine.
    endpoint("end_frame_padded_past_payload", bytes(end_packet()) + b"\x00" * 30, *ADVANCED)
    endpoint("end_x_sl1", outer(END_X, 43) / srh(["fc00:0:9:1::", END_X], 1) / inner6(),
             *ADVANCED)
    endpoint("end_x_sl2_4_segments",
             outer(END_X, 43) / srh([FAR, NODE9, END_X, NODE3_A], 2) / inner6(), *ADVANCED)
    endpoint("end_dx6_full_srh", outer(DX6, 43) / srh([DX6, END], 0) / inner6(), *DECAPSULATED)
    endpoint("end_dx6_reduced_no_srh", outer(DX6, 41) / inner6(), *DECAPSULATED)
    endpoint("end_dx6_single_segment_srh", outer(DX6, 43) / srh([DX6], 0) / inner6(),
             *DECAPSULATED)
    # RFC 8986 4.4: the outer hop limit is not checked when the outer packet ends here.
    endpoint("end_dx6_outer_hop_limit_1", outer(DX6, 43, hlim=1) / srh([DX6], 0) / inner6(),
             *DECAPSULATED)
    endpoint("end_dx4_full_srh", outer(DX4, 43) / srh([DX4, END], 0, nh=4) / inner4(),
             *DECAPSULATED)
    endpoint("end_dx4_reduced_no_srh", outer(DX4, 4) / inner4(), *DECAPSULATED)
    endpoint("end_dt6_full_srh", outer(DT6, 43) / srh([DT6, END], 0) / reply6(), *DECAPSULATED)
    endpoint("end_dt6_reduced_no_srh", outer(DT6, 41) / reply6(), *DECAPSULATED)
    endpoint("transit_with_srh", outer(FAR, 43) / srh([FAR, END], 0) / inner6(), *TRANSIT)
    endpoint("transit_no_srh", outer(FAR, 41) / inner6(), *TRANSIT)
    # RFC 8754 4.2: a transit node does not inspect the SRH, however broken.
    endpoint("transit_with_garbage_srh",
             outer(FAR, 43) / srh([FAR, END], 9, last_entry=200) / inner6(), *TRANSIT)
    endpoint("transit_hop_limit_1", outer(FAR, 41, hlim=1) / inner6(), *HOP_LIMIT)
    endpoint("transit_hop_limit_0", outer(FAR, 41, hlim=0) / inner6(), *HOP_LIMIT)
    endpoint("transit_to_unresolved_neighbour", outer(NODE2_END, 41) / inner6(), *TO_STACK)
    endpoint("transit_to_unrouted_sid", outer(NODE9, 41) / inner6(), *TO_STACK)
    endpoint("end_next_segment_unresolved",
             outer(END, 43) / srh([NODE2_END, END], 1) / inner6(), *TO_STACK)
    endpoint("end_next_segment_unrouted", outer(END, 43) / srh([NODE9, END], 1) / inner6(),
             *TO_STACK)
    # RFC 8986 4.1 S02-S03: Segments Left 0 at End: the upper layer is this node's.
    endpoint("end_sl0", outer(END, 43) / srh([END], 0) / inner6(), *TO_STACK)
    endpoint("end_sl0_hop_limit_1", outer(END, 43, hlim=1) / srh([END], 0) / inner6(),
             *TO_STACK)
    endpoint("end_x_sl0", outer(END_X, 43) / srh([END_X], 0) / inner6(), *TO_STACK)
    endpoint("end_no_srh_icmpv6_echo",
             outer(END, 58) / ICMPv6EchoRequest(id=1, seq=1, data=b"ping"), *TO_STACK)
    endpoint("end_no_next_header", outer(END, 59), *TO_STACK)
    endpoint("unknown_function_of_own_locator",
             outer(UNKNOWN_FUNCTION, 43) / srh([UNKNOWN_FUNCTION], 0) / inner6(), *TO_STACK)
    endpoint("plain_ipv6_not_for_us",
             eth() / IPv6(src=CLIENT6, dst=SERVICE6) / UDP(sport=1, dport=2) / b"z",
             *NOT_FOR_US)
    endpoint("plain_ipv4_not_for_us",
             eth() / IP(src=CLIENT4, dst=SERVICE4) / UDP(sport=1, dport=2) / b"z", *NOT_FOR_US)
    endpoint("arp_not_for_us",
             eth() / ARP(op=1, hwsrc=CLIENT_MAC, psrc=CLIENT4, pdst="198.18.10.1"),
             *NOT_FOR_US)
    endpoint("vlan_tagged_srv6_to_end", eth() / Dot1Q(vlan=10) / IPv6(src=OUTER_SRC, dst=END,
             nh=43) / srh([FAR, END], 1) / inner6(), *NOT_FOR_US)

    # ---- Hop limit (RFC 8986 4.1 S05-S06: Time Exceeded, which the stack sends) ----
    endpoint("end_hop_limit_1", end_packet(hlim=1), *HOP_LIMIT)
    endpoint("end_hop_limit_0", end_packet(hlim=0), *HOP_LIMIT)
    endpoint("end_dx6_inner_hop_limit_1", outer(DX6, 43) / srh([DX6], 0) / inner6(hlim=1),
             *HOP_LIMIT)
    endpoint("end_dx4_inner_ttl_1", outer(DX4, 43) / srh([DX4], 0, nh=4) / inner4(ttl=1),
             *HOP_LIMIT)

    # ---- Truncated at every header boundary and inside the SRH ----
    full = bytes(end_packet())
    srh_end = ETH + IP6 + 40  # [FAR, END]: 8 + 32
    for name, cut in [
        ("cut_after_ethernet", ETH),
        ("cut_inside_ipv6_header", ETH + 20),
        ("cut_one_byte_short_of_ipv6_header", ETH + IP6 - 1),
        ("cut_after_ipv6_header", ETH + IP6),
        ("cut_inside_fixed_srh", ETH + IP6 + 4),
        ("cut_after_fixed_srh", ETH + IP6 + 8),
        ("cut_inside_segment_list", ETH + IP6 + 8 + 5),
        ("cut_between_segments", ETH + IP6 + 8 + 16),
        ("cut_inside_last_segment", srh_end - 1),
    ]:
        endpoint(name, full[:cut], "DROP", "drop:truncated")
    endpoint("cut_after_srh", full[:srh_end], "DROP", "drop:truncated")
    endpoint("cut_inside_inner_header", full[:srh_end + 20], "DROP", "drop:truncated")
    with_tlv = bytes(outer(END, 43) / srh([FAR, END], 1, tlvs=hmac_tlv()) / inner6())
    endpoint("cut_inside_hmac_tlv", with_tlv[:srh_end + 20], "DROP", "drop:truncated")
    with_hbh = bytes(outer(END, 0) / hbh(43, pad=12) / srh([FAR, END], 1) / inner6())
    endpoint("cut_inside_hop_by_hop", with_hbh[:ETH + IP6 + 1], "DROP", "drop:truncated")
    endpoint("cut_after_hop_by_hop_length", with_hbh[:ETH + IP6 + 10], "DROP", "drop:truncated")
    endpoint("cut_after_hop_by_hop", with_hbh[:ETH + IP6 + 16], "DROP", "drop:truncated")
    dx6_full = bytes(outer(DX6, 43) / srh([DX6], 0) / inner6())
    dx6_srh_end = ETH + IP6 + 24
    endpoint("dx6_cut_after_srh", dx6_full[:dx6_srh_end], "DROP", "drop:truncated")
    endpoint("dx6_cut_inside_inner_header", dx6_full[:dx6_srh_end + 39], "DROP",
             "drop:truncated")
    endpoint("dx6_cut_inside_inner_payload", dx6_full[:dx6_srh_end + 40 + 4], "DROP",
             "drop:truncated")
    dx4_full = bytes(outer(DX4, 43) / srh([DX4], 0, nh=4) / inner4())
    endpoint("dx4_cut_inside_inner_header", dx4_full[:dx6_srh_end + 12], "DROP",
             "drop:truncated")

    # ---- Inconsistent lengths (RFC 8754 4.3.1.1 S09-S12: Parameter Problem and discard) ----
    # Last Entry 1 (two segments) in an SRH of Hdr Ext Len 2 (room for one).
    endpoint("hdr_ext_len_short_of_segment_list",
             outer(END, 43) / srh([FAR], 1, hdr_len=2, last_entry=1) / inner6(),
             "DROP", "drop:srh_invalid")
    endpoint("hdr_ext_len_zero",
             outer(END, 43) / IPv6ExtHdrSegmentRouting(nh=41, len=0, type=4, segleft=1,
                                                       lastentry=0, tag=1, addresses=[])
             / inner6(), "DROP", "drop:srh_invalid")
    endpoint("last_entry_255", outer(END, 43) / srh([FAR, END], 1, last_entry=255) / inner6(),
             "DROP", "drop:srh_invalid")
    endpoint("sl_above_last_entry_plus_1", outer(END, 43) / srh([FAR, END], 3) / inner6(),
             "DROP", "drop:srh_invalid")
    endpoint("sl_255", outer(END, 43) / srh([FAR, END], 255) / inner6(), "DROP",
             "drop:srh_invalid")
    endpoint("sl0_hdr_ext_len_short_of_segment_list",
             outer(END, 43) / srh([END], 0, hdr_len=2, last_entry=1) / inner6(),
             "DROP", "drop:srh_invalid",
             note="RFC 8754 4.3.1.1 and RFC 8986 4.1 check the SRH only when Segments Left > 0, "
                  "so the RFC would hand this to the upper layer; cats validates every SRH it "
                  "walks, as Linux's seg6_validate_srh does, and the stack would drop it too")
    endpoint("payload_len_exceeds_frame", set_payload_len(full, len(full) - ETH - IP6 + 100),
             "DROP", "drop:truncated")
    endpoint("payload_len_shorter_than_srh", set_payload_len(full, 16), "DROP",
             "drop:truncated")
    # Odd Hdr Ext Len: 2 segments + an 8-byte TLV area = 48 bytes, Hdr Ext Len 5. RFC 8754
    # only needs 8-octet units; an odd value is valid (counters.rs's SrhInvalid doc says odd
    # lengths are invalid, but the program rightly does not check that).
    endpoint("odd_hdr_ext_len_with_tlvs",
             outer(END, 43) / srh([FAR, END], 1, tlvs=padn(4) + padn(0)) / inner6(), *ADVANCED)

    # ---- Routing headers of other types (RFC 8200 4.4, RFC 5095) ----
    for rtype in (0, 2, 3):
        rh = IPv6ExtHdrRouting(nh=41, type=rtype, segleft=1, addresses=[FAR])
        endpoint(f"routing_type_{rtype}_sl1_to_end", outer(END, 43) / rh / inner6(), *TO_STACK)
        rh0 = IPv6ExtHdrRouting(nh=41, type=rtype, segleft=0, addresses=[FAR])
        # Segments Left 0: ignored, the next header is processed (no SRH: upper layer is ours).
        endpoint(f"routing_type_{rtype}_sl0_to_end", outer(END, 43) / rh0 / inner6(), *TO_STACK)
    endpoint("routing_type_0_sl0_to_dx6",
             outer(DX6, 43) / IPv6ExtHdrRouting(nh=41, type=0, segleft=0, addresses=[FAR])
             / inner6(), *DECAPSULATED)
    endpoint("routing_type_5_sl1_to_end",
             outer(END, 43) / IPv6ExtHdrRouting(nh=41, type=5, segleft=1, addresses=[FAR])
             / inner6(), *TO_STACK)

    # ---- Two SRHs ----
    two_note = ("RFC 8200 4.1 says an extension header should occur once but receivers must "
                "accept repeats, so strictly the first SRH would be processed; dropping a second "
                "routing header is the program's documented SR-domain policy")
    endpoint("two_srhs",
             outer(END, 43) / srh([FAR, END], 1, nh=43) / srh([END], 0) / inner6(),
             "DROP", "drop:routing_header_repeated", note=two_note)
    endpoint("two_srhs_first_sl0",
             outer(END, 43) / srh([END], 0, nh=43) / srh([FAR, END], 1) / inner6(),
             "DROP", "drop:routing_header_repeated", note=two_note)

    # ---- Extension header chains ----
    endpoint("hbh_srh", outer(END, 0) / hbh(43) / srh([FAR, END], 1) / inner6(), *ADVANCED)
    endpoint("hbh_dest_srh", outer(END, 0) / hbh(60) / dest(43) / srh([FAR, END], 1) / inner6(),
             *ADVANCED)
    endpoint("dest_srh_dx6", outer(DX6, 60) / dest(43) / srh([DX6], 0) / inner6(),
             *DECAPSULATED)
    endpoint("srh_dest_end", outer(END, 43) / srh([FAR, END], 1, nh=60) / dest(41) / inner6(),
             *ADVANCED)
    endpoint("hbh_dest_dest_srh",
             outer(END, 0) / hbh(60) / dest(60) / dest(43) / srh([FAR, END], 1) / inner6(),
             *ADVANCED)
    # The RFC 8200 4.1 order with both destination options headers: 2 headers before the SRH.
    endpoint("hbh_dest_srh_dest_rfc8200_order",
             outer(END, 0) / hbh(60) / dest(43) / srh([FAR, END], 1, nh=60) / dest(41)
             / inner6(), *ADVANCED)
    limit_note = ("more extension headers than the program walks; RFC 8200 asks receivers to "
                  "accept any number, RFC 8504 5.3 lets a node limit them: a documented limit")
    endpoint("hbh_4dest_srh",
             outer(END, 0) / hbh(60) / dest(60) / dest(60) / dest(60) / dest(43)
             / srh([FAR, END], 1) / inner6(), "DROP", "drop:too_many_extension_headers",
             note=limit_note)
    endpoint("hbh_6dest_srh",
             outer(END, 0) / hbh(60) / dest(60) / dest(60) / dest(60) / dest(60) / dest(60)
             / dest(43) / srh([FAR, END], 1) / inner6(), "DROP",
             "drop:too_many_extension_headers", note=limit_note)
    endpoint("six_dest_to_dx6_no_srh",
             outer(DX6, 60) / dest(60) / dest(60) / dest(60) / dest(60) / dest(60) / dest(41)
             / inner6(), "DROP", "drop:too_many_extension_headers", note=limit_note)
    # Long chains to addresses that are not local SIDs are not walked at all.
    endpoint("six_dest_transit",
             outer(FAR, 60) / dest(60) / dest(60) / dest(60) / dest(60) / dest(60) / dest(43)
             / srh([FAR], 0) / inner6(), *TRANSIT)
    endpoint("six_dest_not_for_us",
             eth() / IPv6(src=CLIENT6, dst=SERVICE6, nh=60) / dest(60) / dest(60) / dest(60)
             / dest(60) / dest(60) / dest(17) / UDP(sport=1, dport=2) / b"z", *NOT_FOR_US)
    # RFC 8200 4.1: a hop-by-hop header anywhere but right after the IPv6 header is an
    # unrecognized next header (Parameter Problem code 1, which the stack sends).
    endpoint("hop_by_hop_after_dest", outer(END, 60) / dest(0) / hbh(43) / srh([FAR, END], 1)
             / inner6(), *TO_STACK)

    # ---- Fragments ----
    frag_note = ("the packet ends here and must be reassembled first (RFC 8200 4.5); XDP does "
                 "not reassemble: the documented Fragment drop")
    endpoint("fragment_header_before_srh",
             outer(END, 44) / IPv6ExtHdrFragment(nh=43, offset=0, m=1, id=0x1234)
             / srh([FAR, END], 1) / inner6(), "DROP", "drop:fragment",
             note="the SRH is in the fragmentable part, which only the reassembled packet "
                  "reveals (RFC 8200 4.5 keeps routing headers in the unfragmentable part); XDP "
                  "does not reassemble: the documented Fragment drop")
    endpoint("end_sl1_first_fragment",
             outer(END, 43) / srh([FAR, END], 1, nh=44)
             / IPv6ExtHdrFragment(nh=41, offset=0, m=1, id=0x1234) / inner6(b"first"),
             *ADVANCED)
    endpoint("end_sl1_later_fragment",
             outer(END, 43) / srh([FAR, END], 1, nh=44)
             / IPv6ExtHdrFragment(nh=41, offset=8, m=0, id=0x1234) / Raw(b"\x00" * 24),
             *ADVANCED)
    endpoint("dx6_first_fragment",
             outer(DX6, 43) / srh([DX6], 0, nh=44)
             / IPv6ExtHdrFragment(nh=41, offset=0, m=1, id=0x1234) / inner6(b"first"),
             "DROP", "drop:fragment", note=frag_note)
    endpoint("dx6_later_fragment",
             outer(DX6, 43) / srh([DX6], 0, nh=44)
             / IPv6ExtHdrFragment(nh=41, offset=8, m=0, id=0x1234) / Raw(b"\x00" * 24),
             "DROP", "drop:fragment", note=frag_note)
    endpoint("dx6_reduced_first_fragment",
             outer(DX6, 44) / IPv6ExtHdrFragment(nh=41, offset=0, m=1, id=0x1234) / inner6(),
             "DROP", "drop:fragment", note=frag_note)
    endpoint("dx6_atomic_fragment",
             outer(DX6, 43) / srh([DX6], 0, nh=44)
             / IPv6ExtHdrFragment(nh=41, offset=0, m=0, id=0x1234) / inner6(),
             *DECAPSULATED)
    endpoint("transit_fragment", outer(FAR, 44)
             / IPv6ExtHdrFragment(nh=41, offset=0, m=1, id=0x1234) / inner6(), *TRANSIT)

    # ---- TLVs (RFC 8754 2.1) ----
    endpoint("tlv_pad1_padn", outer(END, 43) / srh([FAR, END], 1, tlvs=PAD1 + padn(5))
             / inner6(), *ADVANCED)
    endpoint("tlv_padn_padn", outer(END, 43) / srh([FAR, END], 1, tlvs=padn(4) + padn(0))
             / inner6(), *ADVANCED)
    endpoint("tlv_hmac", outer(END, 43) / srh([FAR, END], 1, tlvs=hmac_tlv()) / inner6(),
             *ADVANCED)
    endpoint("tlv_hmac_at_dx6", outer(DX6, 43) / srh([DX6, END], 0, tlvs=hmac_tlv())
             / inner6(), *DECAPSULATED)
    endpoint("tlv_eight_small", outer(END, 43)
             / srh([FAR, END], 1, tlvs=unknown_tlv(0) * 7 + padn(0)) / inner6(), *ADVANCED)
    endpoint("tlv_ten_small", outer(END, 43)
             / srh([FAR, END], 1, tlvs=unknown_tlv(0) * 9 + padn(4)) / inner6(), *ADVANCED)
    # Hdr Ext Len 255 (2048 bytes): 2 segments and eight 251-byte TLVs.
    endpoint("tlv_largest_srh", outer(END, 43)
             / srh([FAR, END], 1, tlvs=unknown_tlv(249) * 8) / inner6(), *ADVANCED)
    endpoint("tlv_pad1_last_byte_of_frame",
             outer(END, 43) / srh([FAR, END], 1, nh=59, tlvs=padn(5) + PAD1), *ADVANCED)
    endpoint("tlv_padn_overruns_srh", outer(END, 43)
             / srh([FAR, END], 1, tlvs=bytes([4, 30]) + b"\x00" * 6) / inner6(),
             "DROP", "drop:tlv_invalid")
    endpoint("tlv_overruns_by_one_byte", outer(END, 43)
             / srh([FAR, END], 1, tlvs=bytes([0x7E, 7]) + b"\x00" * 6) / inner6(),
             "DROP", "drop:tlv_invalid")
    endpoint("tlv_hmac_length_overruns", outer(END, 43)
             / srh([FAR, END], 1, tlvs=bytes([5, 200]) + hmac_tlv()[2:]) / inner6(),
             "DROP", "drop:tlv_invalid")

    # ---- Version field ----
    bad_version = bytearray(bytes(end_packet()))
    bad_version[ETH] = 0x40  # version 4 in an IPv6 ethertype frame
    endpoint("ipv6_ethertype_version_4_to_end", bytes(bad_version), *NOT_FOR_US)

    # ---- Frames larger than the link MTU, and jumbo frames ----
    def end_of_size(frame_len):
        """A valid End packet (SL 1, No Next Header) of exactly `frame_len` bytes."""
        pad = frame_len - (ETH + IP6 + 40)
        return outer(END, 43) / srh([FAR, END], 1, nh=59) / Raw(b"\x5a" * pad)

    endpoint("end_largest_linear_frame", end_of_size(TEST_RUN_LINEAR_MAX), *ADVANCED)
    endpoint("end_multi_buffer_frame_3521", end_of_size(TEST_RUN_LINEAR_MAX + 1), *ADVANCED)
    endpoint("end_jumbo_frame_mtu_9000", end_of_size(ETH + JUMBO_MTU), *ADVANCED)
    too_big = ("RFC 4443 3.1: a router MUST send Packet Too Big for a packet larger than the "
               "egress MTU; the endpoint drops it silently ('frag_needed'), a PMTUD black hole. "
               "It decided before changing anything, so the stack can take the packet and send "
               "the ICMP")
    endpoint("end_one_byte_over_mtu", end_of_size(ETH + JUMBO_MTU + 1), *TO_STACK)
    endpoint("transit_one_byte_over_mtu",
             outer(FAR, 59) / Raw(b"\x5a" * (JUMBO_MTU + 1 - IP6)), *TO_STACK)
    endpoint("end_largest_ipv6_packet_65589", end_of_size(ETH + IP6 + 65535), *TO_STACK)
    # The largest frame test_run accepts, as a valid packet: an RFC 2675 jumbogram (Payload
    # Length 0, Jumbo Payload option in the hop-by-hop header) whose SRH ends in No Next Header.
    jumbo_len = TEST_RUN_FRAME_MAX - ETH - IP6
    srh_bytes = bytes(srh([FAR, END], 1, nh=59))
    jumbogram = (eth() / IPv6(src=OUTER_SRC, dst=END, nh=0, plen=0)
                 / IPv6ExtHdrHopByHop(nh=43, options=[Jumbo(jumboplen=jumbo_len)])
                 / Raw(srh_bytes) / Raw(b"\x5a" * (jumbo_len - 8 - len(srh_bytes))))
    endpoint("end_jumbogram_largest_test_run_frame", jumbogram, *TO_STACK)


def headend_cases():
    # A steered packet starts a flow (the test empties the affinity table before each one):
    # a miss that adds a new key to the table.
    steered = ("REDIRECT", "event:redirected", "event:affinity_miss,event:affinity_pinned")
    not_service = ("PASS", "event:not_service")

    def udp6(dst=SERVICE6, dport=PORT, hlim=64, payload=b"plate please"):
        return eth() / IPv6(src=HEADEND_CLIENT6, dst=dst, hlim=hlim) / UDP(sport=40000,
                                                                           dport=dport) / payload

    def udp4(dst=SERVICE4, dport=PORT, ttl=64, payload=b"hi", **ip):
        return eth() / IP(src=HEADEND_CLIENT4, dst=dst, ttl=ttl, **ip) / UDP(sport=40001,
                                                                            dport=dport) / payload

    headend("udp6_request", udp6(), *steered)
    headend("udp4_request", udp4(), *steered)
    headend("udp4_request_ethernet_padded_to_60", bytes(udp4()).ljust(60, b"\x00"), *steered)
    headend("udp6_request_with_trailing_bytes", bytes(udp6()) + b"\xee" * 17, *steered)
    headend("udp4_dont_fragment", udp4(flags="DF"), *steered)
    # RFC 791: the reserved flag must be zero, but forwarding does not depend on it.
    headend("udp4_reserved_flag_set", udp4(flags="evil"), *steered)
    # RFC 791 options: IHL 6 (three NOPs and End of List) and IHL 15 (40 bytes of options).
    headend("udp4_options_ihl_6", udp4(options=[b"\x01\x01\x01\x00"]), *steered)
    headend("udp4_options_ihl_15", udp4(options=[b"\x01" * 39 + b"\x00"]), *steered)
    ihl4 = bytearray(bytes(udp4()))
    ihl4[ETH] = 0x44
    headend("udp4_ihl_4", bytes(ihl4), "DROP", "drop:truncated")
    frag_note = ("the service is matched by port and a fragment's ports cannot be read or "
                 "followed to the later fragments: the documented ports_unreadable drop")
    headend("udp4_first_fragment", udp4(flags="MF", payload=b"a" * 64), "DROP",
            "drop:ports_unreadable", note=frag_note)
    headend("udp4_later_fragment",
            eth() / IP(src=HEADEND_CLIENT4, dst=SERVICE4, frag=8, proto=17) / (b"b" * 32),
            "DROP", "drop:ports_unreadable", note=frag_note)
    headend("udp4_last_fragment_with_mf_clear",
            eth() / IP(src=HEADEND_CLIENT4, dst=SERVICE4, frag=3, flags=0, proto=17) / (b"c" * 8),
            "DROP", "drop:ports_unreadable", note=frag_note)
    ext_note = ("extension headers before UDP: the ports are not at a fixed place, the "
                "documented ports_unreadable drop")
    headend("udp6_hop_by_hop_before_udp",
            eth() / IPv6(src=HEADEND_CLIENT6, dst=SERVICE6, nh=0) / hbh(17)
            / UDP(sport=40000, dport=PORT) / b"x", "DROP", "drop:ports_unreadable",
            note=ext_note)
    headend("udp6_dest_opts_before_udp",
            eth() / IPv6(src=HEADEND_CLIENT6, dst=SERVICE6, nh=60) / dest(17)
            / UDP(sport=40000, dport=PORT) / b"x", "DROP", "drop:ports_unreadable",
            note=ext_note)
    headend("udp6_fragment",
            eth() / IPv6(src=HEADEND_CLIENT6, dst=SERVICE6, nh=44)
            / IPv6ExtHdrFragment(nh=17, offset=0, m=1, id=99) / UDP(sport=40000, dport=PORT)
            / (b"x" * 16), "DROP", "drop:ports_unreadable", note=ext_note)
    # Truncated UDP: the frame ends inside the ports, or after them but short of what the IP
    # header declares.
    full6 = bytes(udp6())
    headend("udp6_cut_inside_ports", full6[:ETH + IP6 + 2], "DROP", "drop:truncated")
    headend("udp6_cut_after_ports", full6[:ETH + IP6 + 4], "DROP", "drop:truncated")
    headend("udp6_cut_inside_ipv6_header", full6[:ETH + 20], "DROP", "drop:truncated")
    headend("udp6_cut_after_ethernet", full6[:ETH], "DROP", "drop:truncated")
    headend("udp6_payload_len_exceeds_frame", set_payload_len(full6, len(full6) - ETH - IP6 + 1),
            "DROP", "drop:truncated")
    full4 = bytes(udp4())
    headend("udp4_cut_inside_ports", full4[:ETH + 20 + 3], "DROP", "drop:truncated")
    headend("udp4_cut_inside_ipv4_header", full4[:ETH + 12], "DROP", "drop:truncated")
    # A UDP header of 4 bytes whose IP length says so: malformed UDP, but a forwarder does not
    # validate the transport header (RFC 1812 5.2.2 checks only IP); the ports are readable.
    short_udp = eth() / IPv6(src=HEADEND_CLIENT6, dst=SERVICE6, nh=17) / Raw(
        struct.pack("!HH", 40000, PORT))
    headend("udp6_four_byte_udp_header", short_udp, *steered)
    b = bytearray(full6)
    b[ETH + 4:ETH + 6] = b"\x00\x00"
    headend("udp6_payload_len_0_ports_in_padding", bytes(b), "DROP", "drop:truncated")
    short_total = IP(src=HEADEND_CLIENT4, dst=SERVICE4, proto=17, len=20)
    headend("udp4_total_length_20_ports_in_padding",
            eth() / short_total / Raw(bytes(UDP(sport=40001, dport=PORT) / b"hi")),
            "DROP", "drop:truncated")
    bad_sum = IP(bytes(IP(src=HEADEND_CLIENT4, dst=SERVICE4, ttl=64) / UDP(sport=40001,
                                                                           dport=PORT) / b"hi"))
    bad_sum.chksum ^= 0x00FF
    headend("udp4_bad_header_checksum", eth() / bad_sum, *not_service)
    headend("udp4_ttl_1", udp4(ttl=1), "PASS", "event:hop_limit_to_stack")
    headend("udp4_ttl_0", udp4(ttl=0), "PASS", "event:hop_limit_to_stack")
    headend("udp4_options_ttl_1", udp4(ttl=1, options=[b"\x01\x01\x01\x00"]), "PASS",
            "event:hop_limit_to_stack")
    headend("udp6_hop_limit_1", udp6(hlim=1), "PASS", "event:hop_limit_to_stack")
    headend("udp6_hop_limit_0", udp6(hlim=0), "PASS", "event:hop_limit_to_stack")
    # Not service traffic.
    headend("udp6_other_address", udp6(dst=OTHER6), *not_service)
    headend("udp6_other_port", udp6(dport=53), *not_service)
    headend("udp4_other_port", udp4(dport=53), *not_service)
    headend("tcp6_service_port",
            eth() / IPv6(src=HEADEND_CLIENT6, dst=SERVICE6) / TCP(sport=40000, dport=PORT,
                                                                  flags="S"), *not_service)
    headend("icmp4_echo_to_service",
            eth() / IP(src=HEADEND_CLIENT4, dst=SERVICE4) / ICMP(id=1, seq=1) / b"ping",
            *not_service)
    headend("icmpv6_echo_to_service",
            eth() / IPv6(src=HEADEND_CLIENT6, dst=SERVICE6) / ICMPv6EchoRequest(id=1, seq=1),
            *not_service)
    headend("arp_request",
            Ether(dst="ff:ff:ff:ff:ff:ff", src=CLIENT_MAC)
            / ARP(op=1, hwsrc=CLIENT_MAC, psrc=HEADEND_CLIENT4, pdst=SERVICE4), *not_service)
    headend("lldp_ethertype", eth(0x88CC) / Raw(b"\x02\x07\x04" + b"\x00" * 43), *not_service)
    headend("mpls_ethertype", eth(0x8847) / Raw(b"\x00\x01\x01\x40") / bytes(IPv6(
        src=HEADEND_CLIENT6, dst=SERVICE6) / UDP(sport=40000, dport=PORT) / b"x"),
            *not_service)
    headend("ieee_802_3_length_field", eth(0x002E) / Raw(b"\xaa\xaa\x03" + b"\x00" * 43),
            *not_service)
    headend("vlan_tagged_udp6_request",
            eth() / Dot1Q(vlan=100) / IPv6(src=HEADEND_CLIENT6, dst=SERVICE6)
            / UDP(sport=40000, dport=PORT) / b"x", *not_service)
    headend("qinq_tagged_udp4_request",
            eth() / Dot1AD(vlan=200) / Dot1Q(vlan=100) / IP(src=HEADEND_CLIENT4, dst=SERVICE4)
            / UDP(sport=40001, dport=PORT) / b"x", *not_service)
    # An IPv4 ethertype with an IPv6 header behind it: IHL reads as 0.
    headend("ipv4_ethertype_carrying_ipv6", eth(0x0800) / Raw(bytes(
        IPv6(src=HEADEND_CLIENT6, dst=SERVICE6) / UDP(sport=40000, dport=PORT) / b"x")),
        "DROP", "drop:truncated")


def write(program, cases):
    path = os.path.join(HERE, f"{program}.pcap")
    # Little-endian microsecond pcap, Ethernet link type; snaplen above the largest frame.
    writer = PcapWriter(path, linktype=1, endianness="<", snaplen=262144)
    writer.write_header(None)
    for i, c in enumerate(cases):
        writer.write_packet(c["frame"], sec=1_700_000_000 + i, usec=0)
    writer.close()


def main():
    endpoint_cases()
    headend_cases()
    lines = [
        "# Generated by tests/corpus/generate.py: do not edit, change the generator.",
        "# program\tindex\tname\tverdict\tcounter\tside counters\t(comment)",
        "# verdict: the XDP action. counter: the one drop reason or event that must move by",
        "# exactly one. side counters: other events that must move by one too ('-': none).",
        "# Every other drop and event counter must stay put.",
        "# '# KNOWN:' marks a program bug (the line states the right outcome; the test fails",
        "# until the program is fixed); '# NOTE:' a deliberate deviation from the RFC letter.",
    ]
    for program in ("endpoint", "headend"):
        write(program, CASES[program])
        for i, c in enumerate(CASES[program]):
            line = f"{program}\t{i}\t{c['name']}\t{c['verdict']}\t{c['counter']}\t{c['side']}"
            if c["known"]:
                line += f"\t# KNOWN: {c['known']}"
            elif c["note"]:
                line += f"\t# NOTE: {c['note']}"
            lines.append(line)
    with open(os.path.join(HERE, "expected.tsv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    for program in ("endpoint", "headend"):
        known = sum(1 for c in CASES[program] if c["known"])
        print(f"{program}: {len(CASES[program])} packets ({known} KNOWN)", file=sys.stderr)


if __name__ == "__main__":
    main()
