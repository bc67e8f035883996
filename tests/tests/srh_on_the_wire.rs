//! tshark, an independent dissector, reads the SRv6 packets on a transit node's links:
//! the headend's SRH going in, and after the kernel's End at the transit, the segment
//! list advanced going out.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use cats_tests::lab_env::{
    LabEnv, ask, network_with_dataplane, policy_via_core, without_health_probes,
};

#[test]
fn tshark_sees_the_segment_list_and_tag_on_both_sides_of_the_transit() {
    // Force the path through the core's End SID: two segments.
    let env = LabEnv::start(|dir| {
        // The kernel's End at the core: cats' XDP endpoint is tested in lab_xdp.
        std::fs::write(dir.join("network.yaml"), network_with_dataplane("kernel"))?;
        // Without health probes: they are SRv6 packets on these links too.
        std::fs::write(dir.join("policy.yaml"), without_health_probes(&policy_via_core()))?;
        Ok(())
    })
    .unwrap();
    let core = env.lab().node("core").name().to_string();
    // ip netns exec CORE tshark -f "ip6[6] == 43" -i gw -i edge1 -i edge2 -c 4 -T fields ...
    let mut tshark = Command::new("ip")
        // The capture filter goes first so it applies to every interface.
        .args(["netns", "exec", &core, "tshark", "-n", "-l", "-f", "ip6[6] == 43"])
        .args(["-i", "gw", "-i", "edge1", "-i", "edge2"])
        .args(["-c", "4", "-a", "duration:20", "-T", "fields", "-E", "separator=|"])
        .args([
            "-e",
            "frame.interface_name",
            "-e",
            "ipv6.src",
            "-e",
            "ipv6.dst",
            "-e",
            "ipv6.routing.type",
        ])
        .args([
            "-e",
            "ipv6.routing.segleft",
            "-e",
            "ipv6.routing.srh.last_entry",
            "-e",
            "ipv6.routing.srh.tag",
        ])
        .args(["-e", "ipv6.routing.srh.addr"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tshark (cargo xtask bootstrap installs it)");
    // Wait until dumpcap is capturing on all three interfaces.
    let mut stderr = BufReader::new(tshark.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 && !line.contains("Capturing on") {
        line.clear();
    }
    std::thread::sleep(Duration::from_millis(300));

    let flow = env.flow("gw", "[2001:db8:ca75::1]:7000".parse().unwrap()).unwrap();
    let (instance, _) = ask(&flow, 1, 0).unwrap();
    ask(&flow, 1, 1).unwrap();
    let out = tshark.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 4, "{text}");

    let (egress_if, compute_sid) = match instance.as_str() {
        "edge1-a" => ("edge1", "fc00:0:3:4001::1"),
        "edge2-a" => ("edge2", "fc00:0:4:4001::2"),
        other => panic!("unexpected instance {other}"),
    };
    for row in &rows {
        let [iface, src, dst, rtype, segleft, last_entry, tag, addrs] = row[..] else {
            panic!("unexpected row {row:?}");
        };
        // IPv6 fields list the outer header, then the inner one.
        let (src, dst) = (src.split(',').collect::<Vec<_>>(), dst.split(',').collect::<Vec<_>>());
        assert_eq!(
            src,
            ["fc00:0:1::1", "fd00:10::64"],
            "outer: gateway router address; inner: the camera"
        );
        assert_eq!(dst[1], "2001:db8:ca75::1", "inner destination is the service address");
        let dst = dst[0];
        assert_eq!(rtype, "4", "routing type 4 (SRH)");
        assert_eq!(last_entry, "1");
        assert_eq!(
            u16::from_str_radix(tag.trim_start_matches("0x"), 16).unwrap(),
            1,
            "tag carries the service number"
        );
        // Segment List[0] is the compute SID, [1] the core's End SID.
        assert_eq!(addrs, format!("{compute_sid},fc00:0:2:1::"));
        match iface {
            "gw" => assert_eq!((dst, segleft), ("fc00:0:2:1::", "1"), "arriving at the core"),
            i if i == egress_if => {
                assert_eq!((dst, segleft), (compute_sid, "0"), "after the kernel's End")
            }
            other => panic!("SRv6 packet on unexpected interface {other}"),
        }
    }
}
