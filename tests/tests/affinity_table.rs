//! The affinity table's size and what happens when it is full: the least recently used pin
//! goes, counted, and the newest flows keep theirs.

use anyhow::Result;
use aya::maps::{HashMap, MapData};
use cats_common::{
    counters::Event,
    flow::{FlowEntry, FlowKey},
    maps::{MAP_AFFINITY, PROG_HEADEND},
};
use cats_controller::{dataplane::Dataplane, netns};
use cats_tests::{
    fixture::{self, PORT, SERVICE6},
    packets::udp6,
    router::router,
    xdp::{self, XDP_REDIRECT},
};

const CLIENT: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0x33);
const TABLE: u32 = 1024;
const FLOWS: u16 = 3000;

fn key(sport: u16) -> FlowKey {
    FlowKey {
        src: CLIENT.octets(),
        dst: SERVICE6.octets(),
        sport,
        dport: PORT,
        proto: 17,
        _pad: [0; 3],
        service_slot: 0,
    }
}

#[test]
fn a_full_table_evicts_the_least_recently_used_pins_and_counts_them() {
    let r = router().unwrap();
    netns::run_in(&r.ns.path(), || -> Result<()> {
        let mut dp = Dataplane::load_sized(None, TABLE)?;
        assert_eq!(dp.affinity_table_size()?, TABLE);
        dp.apply_headend(&fixture::headend("cams", 1, 0))?;
        for sport in 0..FLOWS {
            let frame = udp6(CLIENT, SERVICE6, 10_000 + sport, PORT, 64, b"flow");
            assert_eq!(xdp::run(&mut dp, PROG_HEADEND, &frame)?.action, XDP_REDIRECT);
        }
        let occupancy = dp.affinity_occupancy()?;
        // The kernel's LRU evicts in batches per CPU, so a full table may hold a little less.
        assert!(occupancy <= u64::from(TABLE) && occupancy > u64::from(TABLE) / 2, "{occupancy}");
        assert_eq!(dp.events(Event::AffinityPinned)?, u64::from(FLOWS));
        assert_eq!(dp.affinity_evictions()?, u64::from(FLOWS) - occupancy);
        let pins: HashMap<&MapData, FlowKey, FlowEntry> =
            HashMap::try_from(dp.ebpf().map(MAP_AFFINITY).unwrap())?;
        assert!(pins.get(&key(10_000 + FLOWS - 1), 0).is_ok(), "the newest flow lost its pin");
        assert!(pins.get(&key(10_000), 0).is_err(), "the oldest flow kept its pin");
        // Every packet was steered, full table or not.
        assert_eq!(dp.service_counter(0)?.packets, u64::from(FLOWS));
        Ok(())
    })
    .unwrap();
}
