//! The CNI result of an ADD, in the version the configuration asks for: 1.1.0 and 1.0.0, and
//! the 0.3.x/0.4.0 layout (each IP carries its `version`). When kube-ovn serves only IPAM, the
//! result has addresses and routes but no interface of its own.

use serde_json::{Value, json};

use crate::wire::{CniResponse, Route};

/// `ip/prefix` of an address within its CIDR (`10.16.0.5` in `10.16.0.0/16` → `10.16.0.5/16`).
fn with_prefix(ip: &str, cidr: &str) -> String {
    match cidr.split_once('/') {
        Some((_, prefix)) => format!("{ip}/{prefix}"),
        None => ip.to_owned(),
    }
}

fn route_json(r: &Route) -> Value {
    let dst = if !r.destination.is_empty() {
        r.destination.clone()
    } else if r.gateway.contains(':') {
        "::/0".into()
    } else {
        "0.0.0.0/0".into()
    };
    let mut v = json!({ "dst": dst });
    if !r.gateway.is_empty() {
        v["gw"] = json!(r.gateway);
    }
    v
}

/// The result JSON for `cni_version`.
pub fn add_result(
    cni_version: &str,
    response: &CniResponse,
    netns: &str,
    ipam_only: bool,
) -> Value {
    let legacy = cni_version.starts_with("0.");
    let ips: Vec<Value> = response
        .ips
        .iter()
        .map(|ip| {
            let mut v = json!({ "address": with_prefix(&ip.ip, &ip.cidr) });
            if !ip.gateway.is_empty() {
                v["gateway"] = json!(ip.gateway);
            }
            if !ipam_only {
                v["interface"] = json!(0);
            }
            if legacy {
                v["version"] = json!(if ip.protocol == "IPv6" { "6" } else { "4" });
            }
            v
        })
        .collect();
    // No routes from the agent: a default route through each family's gateway, as Kube-OVN.
    let routes: Vec<Value> = if response.routes.is_empty() {
        response
            .ips
            .iter()
            .filter(|ip| !ip.gateway.is_empty())
            .map(|ip| {
                route_json(&Route {
                    destination: String::new(),
                    gateway: ip.gateway.clone(),
                })
            })
            .collect()
    } else {
        response.routes.iter().map(route_json).collect()
    };
    let mut result = json!({
        "cniVersion": cni_version,
        "ips": ips,
        "routes": routes,
        "dns": serde_json::to_value(&response.dns).unwrap_or(json!({})),
    });
    if !ipam_only {
        let mut interface = json!({
            "name": response.nic_name,
            "mac": response.mac_address,
            "sandbox": netns,
        });
        if cni_version == "1.1.0" && response.mtu > 0 {
            interface["mtu"] = json!(response.mtu);
        }
        result["interfaces"] = json!([interface]);
    }
    result
}
