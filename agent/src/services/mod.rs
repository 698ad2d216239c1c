//! Services: Kubernetes Services and EndpointSlices → the datapath's service maps (VIP,
//! backends, Maglev tables). The lifecycle of one Service: [`vips`] turns it and its slices
//! into the VIPs it should have ([`Vip`]); [`ServiceSync`] programs the difference into the
//! maps; [`watch`] runs the two together on every Service or EndpointSlice event.

pub mod maglev;
mod sync;
mod watch;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

pub use sync::{ProgrammedVip, ServiceSync};
pub use watch::run;

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Kubernetes' default sessionAffinityConfig.clientIP.timeoutSeconds (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_S: u32 = 10_800;

/// One VIP of a Service as the datapath should balance it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    pub ip: IpAddr,
    pub port: u16,
    /// 6 (TCP) or 17 (UDP); SCTP is left to OVN's load balancer.
    pub proto: u8,
    /// sessionAffinity ClientIP and its timeout.
    pub affinity_timeout_s: Option<u32>,
    /// Ready endpoints, sorted (every node builds the same Maglev table from them).
    pub backends: BTreeSet<SocketAddr>,
}

/// `namespace/name` of a Service (the key [`ServiceSync`] groups VIPs by).
pub fn service_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The VIPs `service` should have, given its EndpointSlices. Headless and ExternalName
/// Services have none. A VIP without ready endpoints is kept with no backends: the datapath
/// answers it with ICMP port unreachable, as kube-proxy does.
pub fn vips(service: &Service, slices: &[&EndpointSlice]) -> Vec<Vip> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let cluster_ips: Vec<IpAddr> = spec
        .cluster_ips
        .clone()
        .or_else(|| spec.cluster_ip.clone().map(|ip| vec![ip]))
        .unwrap_or_default()
        .iter()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    let affinity_timeout_s = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_S)
    });
    let mut out = Vec::new();
    for port in spec.ports.iter().flatten() {
        let proto = match port.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => 6,
            "UDP" => 17,
            _ => continue,
        };
        let Ok(vport) = u16::try_from(port.port) else {
            continue;
        };
        for vip in &cluster_ips {
            let backends = slices
                .iter()
                .filter(|s| same_family(&s.address_type, vip))
                .flat_map(|slice| ready_backends(slice, port.name.as_deref(), proto))
                .collect();
            out.push(Vip {
                ip: *vip,
                port: vport,
                proto,
                affinity_timeout_s,
                backends,
            });
        }
    }
    out
}

fn same_family(address_type: &str, vip: &IpAddr) -> bool {
    matches!(
        (address_type, vip),
        ("IPv4", IpAddr::V4(_)) | ("IPv6", IpAddr::V6(_))
    )
}

/// The ready endpoints of one slice for the Service port named `port_name` (EndpointSlice
/// ports carry the Service port's name and the resolved target port).
fn ready_backends(slice: &EndpointSlice, port_name: Option<&str>, proto: u8) -> Vec<SocketAddr> {
    let protocol = if proto == 6 { "TCP" } else { "UDP" };
    let Some(target) = slice.ports.iter().flatten().find(|p| {
        p.name.as_deref().unwrap_or("") == port_name.unwrap_or("")
            && p.protocol.as_deref().unwrap_or("TCP") == protocol
    }) else {
        return Vec::new();
    };
    let Some(target_port) = target.port.and_then(|p| u16::try_from(p).ok()) else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        // Ready unless said otherwise (the API's rule for a missing condition).
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, target_port))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(extra: serde_json::Value) -> Service {
        let mut spec = json!({
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
                {"name": "sctp", "port": 9, "protocol": "SCTP"}
            ]
        });
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": spec
        }))
        .unwrap()
    }

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "dns", "port": 5353, "protocol": "UDP"}],
            "endpoints": endpoints
        }))
        .unwrap()
    }

    #[test]
    fn ready_endpoints_become_backends_per_port_and_protocol() {
        let s = slice(json!([
            {"addresses": ["10.16.0.5"], "conditions": {"ready": true}},
            {"addresses": ["10.16.0.6"]},
            {"addresses": ["10.16.0.7"], "conditions": {"ready": false}}
        ]));
        let vips = vips(&service(json!({})), &[&s]);
        assert_eq!(vips.len(), 2, "TCP and UDP; SCTP is OVN's: {vips:?}");
        let http = &vips[0];
        assert_eq!((http.port, http.proto), (80, 6));
        let want: BTreeSet<SocketAddr> = [
            "10.16.0.5:8080".parse().unwrap(),
            "10.16.0.6:8080".parse().unwrap(),
        ]
        .into();
        assert_eq!(http.backends, want, "the not-ready endpoint is left out");
        assert_eq!(vips[1].proto, 17);
        assert!(
            vips[1]
                .backends
                .contains(&"10.16.0.5:5353".parse().unwrap())
        );
        assert_eq!(http.affinity_timeout_s, None);
    }

    #[test]
    fn client_ip_affinity_and_its_timeout() {
        let s = slice(json!([]));
        let with_default = vips(&service(json!({"sessionAffinity": "ClientIP"})), &[&s]);
        assert_eq!(
            with_default[0].affinity_timeout_s,
            Some(DEFAULT_AFFINITY_TIMEOUT_S)
        );
        let with_timeout = vips(
            &service(json!({"sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}})),
            &[&s],
        );
        assert_eq!(with_timeout[0].affinity_timeout_s, Some(60));
        assert!(
            with_timeout[0].backends.is_empty(),
            "no endpoints: kept, with none"
        );
    }

    #[test]
    fn headless_and_external_name_services_have_no_vips() {
        let s = slice(json!([{"addresses": ["10.16.0.5"]}]));
        assert!(
            vips(
                &service(json!({"clusterIP": "None", "clusterIPs": ["None"]})),
                &[&s]
            )
            .is_empty()
        );
        assert!(
            vips(
                &service(json!({"type": "ExternalName", "clusterIPs": null, "clusterIP": null})),
                &[&s]
            )
            .is_empty()
        );
    }
}
