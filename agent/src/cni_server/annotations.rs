//! Waiting for the controller's pod annotations, and reading them: the addresses, MAC and
//! gateways kovn-controller (or Kube-OVN's controller) allocated for one of the pod's
//! networks, under that network's keys (`<provider>.kubernetes.io/*`).

use std::net::IpAddr;
use std::time::Duration;

use api::annotations::NetworkKeys;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::wait::await_condition;
use kube::{Api, ResourceExt};

use super::CniError;

/// The pod's network as its annotations describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    pub mac: String,
    /// (address, prefix length, gateway) per family.
    pub ips: Vec<(IpAddr, u8, Option<IpAddr>)>,
    pub logical_switch: String,
}

fn ready(pod: &Pod, keys: &NetworkKeys) -> bool {
    let a = pod.annotations();
    a.get(&keys.allocated).map(String::as_str) == Some("true")
        && a.get(&keys.routed).map(String::as_str) == Some("true")
}

/// Waits (a watch, not a poll) until the pod is allocated and routed, at most `timeout`.
pub async fn wait_for(
    pods: &Api<Pod>,
    namespace: &str,
    name: &str,
    timeout: Duration,
    keys: &NetworkKeys,
) -> Result<Pod, CniError> {
    let pod = pods
        .get_opt(name)
        .await
        .map_err(|e| CniError::Kubernetes(format!("reading pod {namespace}/{name}: {e}")))?
        .ok_or_else(|| CniError::PodNotFound(format!("{namespace}/{name}")))?;
    if ready(&pod, keys) {
        return Ok(pod);
    }
    let condition = await_condition(pods.clone(), name, |p: Option<&Pod>| {
        p.is_some_and(|p| ready(p, keys))
    });
    match tokio::time::timeout(timeout, condition).await {
        Ok(Ok(Some(pod))) => Ok(pod),
        Ok(Ok(None)) => Err(CniError::PodNotFound(format!("{namespace}/{name}"))),
        Ok(Err(e)) => Err(CniError::Kubernetes(format!(
            "watching pod {namespace}/{name}: {e}"
        ))),
        Err(_) => {
            let missing = match pods.get_opt(name).await.ok().flatten() {
                Some(p) if p.annotations().get(&keys.allocated).is_none() => &keys.allocated,
                _ => &keys.routed,
            };
            Err(CniError::AnnotationTimeout {
                pod: format!("{namespace}/{name}"),
                missing: missing.clone(),
                waited: timeout,
            })
        }
    }
}

/// Reads the addresses out of a ready pod's annotations.
pub fn parse(pod: &Pod, keys: &NetworkKeys) -> Result<PodNetwork, CniError> {
    let a = pod.annotations();
    let get = |key: &str| {
        a.get(key)
            .cloned()
            .ok_or_else(|| CniError::BadAnnotation(format!("{key} is missing")))
    };
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let ips = list(&get(&keys.ip_address)?);
    let cidrs = list(&get(&keys.cidr)?);
    let gateways = list(a.get(&keys.gateway).map(String::as_str).unwrap_or(""));
    let mut out = Vec::new();
    for ip in ips {
        let address: IpAddr = ip
            .split('/')
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|e| CniError::BadAnnotation(format!("ip_address {ip:?}: {e}")))?;
        let prefix = cidrs
            .iter()
            .filter_map(|c| c.parse::<ipnet::IpNet>().ok())
            .find(|net| net.addr().is_ipv4() == address.is_ipv4())
            .map(|net| net.prefix_len())
            .ok_or_else(|| CniError::BadAnnotation(format!("no cidr of {address}'s family")))?;
        let gateway = gateways
            .iter()
            .filter_map(|g| g.parse::<IpAddr>().ok())
            .find(|g| g.is_ipv4() == address.is_ipv4());
        out.push((address, prefix, gateway));
    }
    if out.is_empty() {
        return Err(CniError::BadAnnotation("ip_address is empty".into()));
    }
    Ok(PodNetwork {
        mac: get(&keys.mac_address)?,
        ips: out,
        logical_switch: a.get(&keys.logical_switch).cloned().unwrap_or_default(),
    })
}
