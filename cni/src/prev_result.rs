//! What cats reads from the previous plugin's result. Results from 0.3.0 to 1.1.0 share the
//! parts read here: `interfaces` (`name`, `sandbox` for the pod's side) and `ips` (`address`,
//! `interface` index). Calico's thin 0.3.1 result names only its host-side interface and has
//! `/32` addresses without an interface index: those count as the pod's.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::{Map, Value};

use crate::spec::{CniError, Code};

/// The pod's addresses: `ips` entries on a sandbox (pod-side) interface or on none.
pub fn pod_addresses(result: &Map<String, Value>) -> Result<Vec<IpAddr>, CniError> {
    let interfaces = match result.get("interfaces") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list.clone(),
        Some(_) => return Err(decode("prevResult.interfaces is not a list")),
    };
    let in_pod = |index: usize| {
        interfaces
            .get(index)
            .and_then(|i| i.get("sandbox"))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    let ips = match result.get("ips") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(decode("prevResult.ips is not a list")),
    };
    let mut addresses = Vec::new();
    for (k, ip) in ips.iter().enumerate() {
        let text = ip
            .get("address")
            .and_then(Value::as_str)
            .ok_or_else(|| decode(&format!("prevResult.ips[{k}].address is missing")))?;
        let parsed = match text.contains('/') {
            true => text.parse::<IpNetwork>().map_err(|e| e.to_string()),
            false => Err("no prefix length".to_owned()),
        };
        let address = parsed.map_err(|e| {
            CniError::caused(
                Code::Decode,
                format!("prevResult.ips[{k}].address {text:?} is not an address/prefix"),
                e,
            )
        })?;
        let on_pod = match ip.get("interface") {
            None | Some(Value::Null) => true,
            Some(index) => {
                let index = index.as_u64().ok_or_else(|| {
                    decode(&format!("prevResult.ips[{k}].interface is not an index"))
                })?;
                in_pod(index as usize)
            }
        };
        if on_pod {
            addresses.push(address.ip());
        }
    }
    Ok(addresses)
}

/// Host-side interface names the result lists (no sandbox). With `bridge` that is the
/// bridge and the veth, so it only cross-checks what the namespace lookup finds.
pub fn host_interfaces(result: &Map<String, Value>) -> Vec<String> {
    let Some(Value::Array(list)) = result.get("interfaces") else { return Vec::new() };
    list.iter()
        .filter(|i| i.get("sandbox").and_then(Value::as_str).is_none_or(str::is_empty))
        .filter_map(|i| i.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

fn decode(msg: &str) -> CniError {
    CniError::new(Code::Decode, msg)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn calico_thin_result() {
        let result = object(json!({
            "cniVersion": "0.3.1",
            "interfaces": [{"name": "cali1a2b3c4d5e6"}],
            "ips": [{"version": "4", "address": "10.65.0.7/32"}, {"version": "6", "address": "fd00:65::7/128"}],
            "dns": {}
        }));
        let addresses: Vec<String> =
            pod_addresses(&result).unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(addresses, ["10.65.0.7", "fd00:65::7"]);
        assert_eq!(host_interfaces(&result), ["cali1a2b3c4d5e6"]);
    }

    #[test]
    fn bridge_result_keeps_the_pod_side() {
        let result = object(json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:aa:aa:aa:aa:aa"},
                {"name": "veth1234", "mac": "bb:bb:bb:bb:bb:bb"},
                {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/netns/pod"}
            ],
            "ips": [{"interface": 2, "address": "10.1.0.5/24", "gateway": "10.1.0.1"},
                    {"interface": 0, "address": "10.1.0.1/24"}]
        }));
        assert_eq!(pod_addresses(&result).unwrap(), ["10.1.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(host_interfaces(&result), ["cni0", "veth1234"]);
    }

    #[test]
    fn malformed_results_are_decode_errors() {
        for bad in [
            json!({"ips": {}}),
            json!({"ips": [{"address": "10.0.0.1"}]}),
            json!({"ips": [{}]}),
            json!({"ips": [{"address": "10.0.0.1/24", "interface": "eth0"}]}),
        ] {
            assert_eq!(pod_addresses(&object(bad)).unwrap_err().code, Code::Decode);
        }
    }
}
