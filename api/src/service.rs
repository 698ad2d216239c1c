//! Services as kovn balances them: a Service and its EndpointSlices → the VIPs it should have
//! ([`vips`]), and an index of both kept from watch events ([`ServiceIndex`]). The agent
//! programs the VIPs into the eBPF datapath, the controller into OVN's load balancers.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::runtime::watcher;

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Kubernetes' default sessionAffinityConfig.clientIP.timeoutSeconds (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_S: u32 = 10_800;

/// One VIP of a Service as the datapath should balance it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    pub ip: IpAddr,
    pub port: u16,
    /// IP protocol number: 6 (TCP), 17 (UDP) or 132 (SCTP).
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
            "SCTP" => 132,
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
pub fn ready_backends(
    slice: &EndpointSlice,
    port_name: Option<&str>,
    proto: u8,
) -> Vec<SocketAddr> {
    let protocol = match proto {
        6 => "TCP",
        17 => "UDP",
        _ => "SCTP",
    };
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

/// What the Service and EndpointSlice watches have seen, indexed by Service
/// (`namespace/name`): every event names the one Service it concerns.
#[derive(Debug, Default)]
pub struct ServiceIndex {
    services: HashMap<String, Service>,
    /// Service → slice name → slice.
    slices: HashMap<String, HashMap<String, EndpointSlice>>,
    /// Objects seen since the last relist began (a relist drops what it does not list).
    relisting_services: Option<HashSet<String>>,
    relisting_slices: Option<HashSet<(String, String)>>,
}

fn slice_owner(slice: &EndpointSlice) -> Option<String> {
    let service = slice.labels().get(SERVICE_NAME_LABEL)?;
    Some(service_name(
        &slice.namespace().unwrap_or_default(),
        service,
    ))
}

impl ServiceIndex {
    /// Applies a Service watch event; returns the Services it changed.
    pub fn service_event(&mut self, event: watcher::Event<Service>) -> BTreeSet<String> {
        let mut dirty = BTreeSet::new();
        match event {
            watcher::Event::Init => self.relisting_services = Some(HashSet::new()),
            watcher::Event::Apply(s) | watcher::Event::InitApply(s) => {
                let name = service_name(&s.namespace().unwrap_or_default(), &s.name_any());
                if let Some(seen) = &mut self.relisting_services {
                    seen.insert(name.clone());
                }
                self.services.insert(name.clone(), s);
                dirty.insert(name);
            }
            watcher::Event::Delete(s) => {
                let name = service_name(&s.namespace().unwrap_or_default(), &s.name_any());
                self.services.remove(&name);
                dirty.insert(name);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relisting_services.take() {
                    let gone: Vec<String> = self
                        .services
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for name in gone {
                        self.services.remove(&name);
                        dirty.insert(name);
                    }
                }
            }
        }
        dirty
    }

    /// Applies an EndpointSlice watch event; returns the Services it changed.
    pub fn slice_event(&mut self, event: watcher::Event<EndpointSlice>) -> BTreeSet<String> {
        let mut dirty = BTreeSet::new();
        match event {
            watcher::Event::Init => self.relisting_slices = Some(HashSet::new()),
            watcher::Event::Apply(s) | watcher::Event::InitApply(s) => {
                let Some(owner) = slice_owner(&s) else {
                    return dirty;
                };
                if let Some(seen) = &mut self.relisting_slices {
                    seen.insert((owner.clone(), s.name_any()));
                }
                self.slices
                    .entry(owner.clone())
                    .or_default()
                    .insert(s.name_any(), s);
                dirty.insert(owner);
            }
            watcher::Event::Delete(s) => {
                if let Some(owner) = slice_owner(&s) {
                    if let Some(slices) = self.slices.get_mut(&owner) {
                        slices.remove(&s.name_any());
                    }
                    dirty.insert(owner);
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relisting_slices.take() {
                    for (owner, slices) in self.slices.iter_mut() {
                        let before = slices.len();
                        slices.retain(|name, _| seen.contains(&(owner.clone(), name.clone())));
                        if slices.len() != before {
                            dirty.insert(owner.clone());
                        }
                    }
                }
            }
        }
        dirty
    }

    /// Every Service's name (`namespace/name`).
    pub fn service_names(&self) -> impl Iterator<Item = &String> {
        self.services.keys()
    }

    /// The Service named `service` (`namespace/name`), if it exists.
    pub fn service(&self, service: &str) -> Option<&Service> {
        self.services.get(service)
    }

    /// The VIPs `service` should have now (none when it is gone).
    pub fn vips(&self, service: &str) -> Vec<Vip> {
        let Some(svc) = self.services.get(service) else {
            return Vec::new();
        };
        let slices: Vec<&EndpointSlice> = self
            .slices
            .get(service)
            .map(|s| s.values().collect())
            .unwrap_or_default();
        vips(svc, &slices)
    }
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
        assert_eq!(vips.len(), 3, "TCP, UDP and SCTP: {vips:?}");
        assert_eq!(vips[2].proto, 132);
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
