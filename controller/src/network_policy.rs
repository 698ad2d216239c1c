//! NetworkPolicy (networking.k8s.io/v1) semantics, as a pure function of one policy and the
//! pods and namespaces the controller sees: which ports the policy isolates, and for each of
//! its ingress and egress rules which peers and ports it allows. `topology::network_policy`
//! turns the result into OVN rows, laid out as Kube-OVN lays them out.
//!
//! The rules of the API (as Kubernetes' own netpol e2e suite checks them):
//! - a policy selects pods of its own namespace (`podSelector`, `{}` = all);
//! - `policyTypes` absent means Ingress, plus Egress when the policy has egress rules;
//! - a selected pod is isolated in each direction the policy types name: only what some rule
//!   of some policy allows gets through (policies union);
//! - a rule with no peers allows every peer; with no ports, every port;
//! - a peer is a `podSelector` (pods of the policy's namespace), a `namespaceSelector` (every
//!   pod of the matching namespaces), both (pods matching the pod selector in the matching
//!   namespaces), or an `ipBlock` (a CIDR minus its `except` CIDRs);
//! - a port is a protocol (default TCP) with a number, a range (`endPort`), a name (the
//!   container port of that name on the pod the traffic goes to) or none (every port).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use api::Owner;
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort as ApiPort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A policy's identity: `<namespace>/<name>` (what Kube-OVN records in `external_ids:np`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    pub namespace: String,
    pub name: String,
}

impl PolicyKey {
    pub fn of(policy: &NetworkPolicy) -> PolicyKey {
        PolicyKey {
            namespace: policy.metadata.namespace.clone().unwrap_or_default(),
            name: policy.metadata.name.clone().unwrap_or_default(),
        }
    }

    /// OVN names (`@pg` and `$as` in matches) allow letters, digits, `_` and `.`, and must not
    /// start with a digit: Kube-OVN prefixes `np` to such names and turns dashes into dots.
    pub fn port_group(&self) -> String {
        let name = if self.name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            self.name.clone()
        } else {
            format!("np{}", self.name)
        };
        format!("{name}.{}", self.namespace).replace('-', ".")
    }
}

impl std::fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the policy engine needs to know of a pod: who it is, its labels, the addresses IPAM
/// gave it (never what its annotations claim) and its named container ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub owner: Owner,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub ips: Vec<IpAddr>,
    /// Container port name → (protocol upper-case, number).
    pub named_ports: BTreeMap<String, (String, u16)>,
}

/// The layer-4 protocols NetworkPolicy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(name: Option<&str>) -> Result<Protocol, String> {
        match name.unwrap_or("TCP") {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            other => Err(format!("unknown protocol {other}")),
        }
    }

    /// OVN's match field prefix.
    pub fn as_ovn(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// Which destination ports of one protocol a rule allows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PortMatch {
    /// Every port of the protocol.
    All(Protocol),
    /// `first..=last` (one port when equal).
    Range(Protocol, u16, u16),
    /// Any of these ports (a named port resolved on the pods it names).
    Set(Protocol, BTreeSet<u16>),
}

/// One CIDR a rule allows, minus its exceptions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Block {
    pub cidr: IpNet,
    pub except: Vec<IpNet>,
}

/// One ingress or egress rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// No peers at all: every source (ingress) or destination (egress).
    pub any_peer: bool,
    /// Addresses of the pods the rule's selector peers select.
    pub addresses: BTreeSet<IpAddr>,
    pub blocks: Vec<Block>,
    /// Empty: every port. A port entry that resolves to nothing (a name no pod has) is left
    /// out, and a rule whose every entry resolved to nothing allows nothing.
    pub ports: Vec<PortMatch>,
    /// Some port entries were given but none resolved: the rule allows nothing.
    pub no_port_resolved: bool,
}

/// What one policy asks of OVN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyPlan {
    pub key: PolicyKey,
    /// The selected pods.
    pub selected: Vec<Owner>,
    /// Ingress rules when the policy isolates ingress.
    pub ingress: Option<Vec<Rule>>,
    /// Egress rules when the policy isolates egress.
    pub egress: Option<Vec<Rule>>,
    /// Which of its ACLs' verdicts ovn-controller logs.
    pub log: AclLogging,
}

/// Kube-OVN's ACL logging of a NetworkPolicy: `ovn.kubernetes.io/enable_log: "true"`, with
/// `ovn.kubernetes.io/log_acl_actions` naming the verdicts (`drop` when absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AclLogging {
    pub drop: bool,
    pub allow: bool,
}

impl AclLogging {
    /// From the policy's annotations. A verdict word kovn does not know fails the plan, so a
    /// typo is reported instead of silently logging less than asked.
    pub fn of(policy: &NetworkPolicy) -> Result<AclLogging, String> {
        let annotations = policy.metadata.annotations.clone().unwrap_or_default();
        if annotations
            .get(api::annotations::NETWORK_POLICY_LOG)
            .map(String::as_str)
            != Some("true")
        {
            return Ok(AclLogging::default());
        }
        let Some(actions) = annotations.get(api::annotations::ACL_LOG_ACTIONS) else {
            return Ok(AclLogging {
                drop: true,
                allow: false,
            });
        };
        let mut log = AclLogging::default();
        for word in actions.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "drop" => log.drop = true,
                "allow" | "allow-related" | "allow-stateless" => log.allow = true,
                other => {
                    return Err(format!(
                        "{}: {other:?} is not a verdict kovn logs (drop, allow)",
                        api::annotations::ACL_LOG_ACTIONS
                    ));
                }
            }
        }
        Ok(log)
    }
}

pub use api::selects;

/// The plan of `policy` given every pod and every namespace's labels. Fails on what the API
/// server would have refused (a bad CIDR or protocol), so nothing is half-applied.
pub fn plan(
    policy: &NetworkPolicy,
    pods: &[PodView],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<PolicyPlan, String> {
    let key = PolicyKey::of(policy);
    let log = AclLogging::of(policy)?;
    let spec = policy.spec.clone().unwrap_or_default();
    let pod_selector = spec.pod_selector.clone().unwrap_or_default();
    let selected: Vec<&PodView> = pods
        .iter()
        .filter(|p| p.namespace == key.namespace && selects(&pod_selector, &p.labels))
        .collect();
    let types: Vec<String> = match &spec.policy_types {
        Some(types) if !types.is_empty() => types.clone(),
        _ => {
            let mut types = vec!["Ingress".to_owned()];
            if spec.egress.is_some() {
                types.push("Egress".to_owned());
            }
            types
        }
    };
    let peers_of = |peers: &Option<Vec<NetworkPolicyPeer>>| -> Result<(bool, BTreeSet<IpAddr>, Vec<Block>), String> {
        let peers = peers.as_deref().unwrap_or_default();
        if peers.is_empty() {
            return Ok((true, BTreeSet::new(), Vec::new()));
        }
        let mut addresses = BTreeSet::new();
        let mut blocks = Vec::new();
        for peer in peers {
            if let Some(block) = &peer.ip_block {
                blocks.push(Block {
                    cidr: parse_cidr(&block.cidr)?,
                    except: block
                        .except
                        .iter()
                        .flatten()
                        .map(|c| parse_cidr(c))
                        .collect::<Result<_, _>>()?,
                });
                continue;
            }
            if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
                continue;
            }
            for pod in pods {
                let in_namespace = match &peer.namespace_selector {
                    None => pod.namespace == key.namespace,
                    Some(ns) => namespaces
                        .get(&pod.namespace)
                        .is_some_and(|labels| selects(ns, labels)),
                };
                let pod_matches = peer
                    .pod_selector
                    .as_ref()
                    .is_none_or(|s| selects(s, &pod.labels));
                if in_namespace && pod_matches {
                    addresses.extend(pod.ips.iter().copied());
                }
            }
        }
        Ok((false, addresses, blocks))
    };
    let mut ingress = None;
    if types.iter().any(|t| t == "Ingress") {
        let mut rules = Vec::new();
        for r in spec.ingress.iter().flatten() {
            let (any_peer, addresses, blocks) = peers_of(&r.from)?;
            // A named port on ingress is the port of the selected pod traffic goes to.
            let (ports, no_port_resolved) = ports_of(r.ports.as_deref(), &selected)?;
            rules.push(Rule {
                any_peer,
                addresses,
                blocks,
                ports,
                no_port_resolved,
            });
        }
        ingress = Some(rules);
    }
    let mut egress = None;
    if types.iter().any(|t| t == "Egress") {
        let mut rules = Vec::new();
        for r in spec.egress.iter().flatten() {
            let (any_peer, addresses, blocks) = peers_of(&r.to)?;
            // On egress, a named port is the port of the peer pods (any pod when the rule has
            // no selector peers).
            let targets: Vec<&PodView> = if any_peer || !blocks.is_empty() {
                pods.iter().collect()
            } else {
                pods.iter()
                    .filter(|p| p.ips.iter().any(|ip| addresses.contains(ip)))
                    .collect()
            };
            let (ports, no_port_resolved) = ports_of(r.ports.as_deref(), &targets)?;
            rules.push(Rule {
                any_peer,
                addresses,
                blocks,
                ports,
                no_port_resolved,
            });
        }
        egress = Some(rules);
    }
    let mut selected: Vec<Owner> = selected.into_iter().map(|p| p.owner.clone()).collect();
    selected.sort();
    Ok(PolicyPlan {
        key,
        selected,
        ingress,
        egress,
        log,
    })
}

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("ipBlock {text:?} is not a CIDR"))
}

/// A rule's ports; named ports resolved on `targets`. Returns whether entries were given but
/// none resolved.
fn ports_of(
    ports: Option<&[ApiPort]>,
    targets: &[&PodView],
) -> Result<(Vec<PortMatch>, bool), String> {
    let ports = ports.unwrap_or_default();
    let mut out = Vec::new();
    for p in ports {
        let protocol = Protocol::parse(p.protocol.as_deref())?;
        match &p.port {
            None => out.push(PortMatch::All(protocol)),
            Some(IntOrString::Int(n)) => {
                let first = u16::try_from(*n).map_err(|_| format!("port {n} out of range"))?;
                let last = match p.end_port {
                    Some(end) => {
                        u16::try_from(end).map_err(|_| format!("endPort {end} out of range"))?
                    }
                    None => first,
                };
                if last < first {
                    return Err(format!("endPort {last} is below port {first}"));
                }
                out.push(PortMatch::Range(protocol, first, last));
            }
            Some(IntOrString::String(name)) => {
                let numbers: BTreeSet<u16> = targets
                    .iter()
                    .filter_map(|pod| pod.named_ports.get(name))
                    .filter(|(proto, _)| Protocol::parse(Some(proto)).ok() == Some(protocol))
                    .map(|(_, n)| *n)
                    .collect();
                if !numbers.is_empty() {
                    out.push(PortMatch::Set(protocol, numbers));
                }
            }
        }
    }
    let none_resolved = !ports.is_empty() && out.is_empty();
    Ok((out, none_resolved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::{
        IPBlock, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicySpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use kube::api::ObjectMeta;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pod(ns: &str, name: &str, ip: &str, l: &[(&str, &str)]) -> PodView {
        PodView {
            owner: Owner::pod(ns, name),
            namespace: ns.into(),
            labels: labels(l),
            ips: vec![ip.parse().unwrap()],
            named_ports: BTreeMap::new(),
        }
    }

    fn selector(l: &[(&str, &str)]) -> LabelSelector {
        LabelSelector {
            match_labels: Some(labels(l)),
            ..LabelSelector::default()
        }
    }

    fn policy(ns: &str, spec: NetworkPolicySpec) -> NetworkPolicy {
        NetworkPolicy {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some(ns.into()),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        }
    }

    fn world() -> (Vec<PodView>, BTreeMap<String, BTreeMap<String, String>>) {
        let pods = vec![
            pod("x", "a", "10.0.0.1", &[("pod", "a")]),
            pod("x", "b", "10.0.0.2", &[("pod", "b")]),
            pod("y", "a", "10.0.0.3", &[("pod", "a")]),
            pod("y", "b", "10.0.0.4", &[("pod", "b")]),
        ];
        let namespaces = BTreeMap::from([
            ("x".to_owned(), labels(&[("ns", "x")])),
            ("y".to_owned(), labels(&[("ns", "y")])),
        ]);
        (pods, namespaces)
    }

    fn ips(rule: &Rule) -> Vec<String> {
        rule.addresses.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn acl_logging_follows_kube_ovns_annotations() {
        let with = |pairs: &[(&str, &str)]| {
            let mut p = policy("x", NetworkPolicySpec::default());
            p.metadata.annotations = Some(labels(pairs));
            AclLogging::of(&p)
        };
        let none = AclLogging::default();
        let drops = AclLogging {
            drop: true,
            allow: false,
        };
        assert_eq!(with(&[]), Ok(none));
        assert_eq!(
            with(&[(api::annotations::NETWORK_POLICY_LOG, "false")]),
            Ok(none)
        );
        assert_eq!(
            with(&[(api::annotations::ACL_LOG_ACTIONS, "drop,allow")]),
            Ok(none),
            "the actions alone enable nothing"
        );
        assert_eq!(
            with(&[(api::annotations::NETWORK_POLICY_LOG, "true")]),
            Ok(drops)
        );
        assert_eq!(
            with(&[
                (api::annotations::NETWORK_POLICY_LOG, "true"),
                (api::annotations::ACL_LOG_ACTIONS, "allow, drop")
            ]),
            Ok(AclLogging {
                drop: true,
                allow: true
            })
        );
        let typo = with(&[
            (api::annotations::NETWORK_POLICY_LOG, "true"),
            (api::annotations::ACL_LOG_ACTIONS, "dorp"),
        ]);
        assert!(typo.unwrap_err().contains("dorp"));
    }

    #[test]
    fn policy_types_default_to_ingress_plus_egress_when_egress_rules_exist() {
        let (pods, ns) = world();
        let deny = plan(&policy("x", NetworkPolicySpec::default()), &pods, &ns).unwrap();
        assert_eq!(deny.ingress, Some(vec![]));
        assert_eq!(deny.egress, None);
        assert_eq!(deny.selected.len(), 2, "{{}} selects every pod of x only");
        let egress_only = plan(
            &policy(
                "x",
                NetworkPolicySpec {
                    egress: Some(vec![NetworkPolicyEgressRule::default()]),
                    ..NetworkPolicySpec::default()
                },
            ),
            &pods,
            &ns,
        )
        .unwrap();
        assert!(egress_only.ingress.is_some() && egress_only.egress.is_some());
        let typed = plan(
            &policy(
                "x",
                NetworkPolicySpec {
                    policy_types: Some(vec!["Egress".into()]),
                    ..NetworkPolicySpec::default()
                },
            ),
            &pods,
            &ns,
        )
        .unwrap();
        assert_eq!((typed.ingress, typed.egress), (None, Some(vec![])));
    }

    #[test]
    fn pod_and_namespace_selectors_alone_and_combined() {
        let (pods, ns) = world();
        let rule = |peer: NetworkPolicyPeer| {
            let p = policy(
                "x",
                NetworkPolicySpec {
                    ingress: Some(vec![NetworkPolicyIngressRule {
                        from: Some(vec![peer]),
                        ports: None,
                    }]),
                    ..NetworkPolicySpec::default()
                },
            );
            plan(&p, &pods, &ns).unwrap().ingress.unwrap().remove(0)
        };
        // A pod selector alone: the policy's namespace only.
        let r = rule(NetworkPolicyPeer {
            pod_selector: Some(selector(&[("pod", "b")])),
            ..NetworkPolicyPeer::default()
        });
        assert_eq!(ips(&r), ["10.0.0.2"]);
        // A namespace selector alone: every pod there.
        let r = rule(NetworkPolicyPeer {
            namespace_selector: Some(selector(&[("ns", "y")])),
            ..NetworkPolicyPeer::default()
        });
        assert_eq!(ips(&r), ["10.0.0.3", "10.0.0.4"]);
        // Both in one peer: an AND.
        let r = rule(NetworkPolicyPeer {
            namespace_selector: Some(selector(&[("ns", "y")])),
            pod_selector: Some(selector(&[("pod", "b")])),
            ..NetworkPolicyPeer::default()
        });
        assert_eq!(ips(&r), ["10.0.0.4"]);
        // An empty namespace selector: every namespace.
        let r = rule(NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            ..NetworkPolicyPeer::default()
        });
        assert_eq!(r.addresses.len(), 4);
        assert!(!r.any_peer);
    }

    #[test]
    fn match_expressions_and_unknown_operators() {
        let l = labels(&[("pod", "a"), ("tier", "web")]);
        let expr = |key: &str, op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            ..LabelSelector::default()
        };
        assert!(selects(&expr("pod", "In", &["a", "b"]), &l));
        assert!(!selects(&expr("pod", "NotIn", &["a"]), &l));
        assert!(selects(&expr("pod", "NotIn", &["b"]), &l));
        assert!(selects(&expr("tier", "Exists", &[]), &l));
        assert!(!selects(&expr("tier", "DoesNotExist", &[]), &l));
        assert!(selects(&expr("missing", "NotIn", &["x"]), &l));
        assert!(!selects(&expr("pod", "Matches", &["a"]), &l));
    }

    #[test]
    fn ports_numbers_ranges_names_and_protocols() {
        let (mut pods, ns) = world();
        pods[0]
            .named_ports
            .insert("serve-80".into(), ("TCP".into(), 80));
        pods[1]
            .named_ports
            .insert("serve-80".into(), ("TCP".into(), 8080));
        let port = |protocol: Option<&str>, port: Option<IntOrString>, end: Option<i32>| ApiPort {
            protocol: protocol.map(str::to_owned),
            port,
            end_port: end,
        };
        let p = policy(
            "x",
            NetworkPolicySpec {
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(vec![
                        port(None, Some(IntOrString::Int(81)), None),
                        port(Some("UDP"), Some(IntOrString::Int(80)), Some(90)),
                        port(None, Some(IntOrString::String("serve-80".into())), None),
                        port(Some("SCTP"), None, None),
                        port(
                            Some("UDP"),
                            Some(IntOrString::String("serve-80".into())),
                            None,
                        ),
                    ]),
                }]),
                ..NetworkPolicySpec::default()
            },
        );
        let rule = plan(&p, &pods, &ns).unwrap().ingress.unwrap().remove(0);
        assert!(rule.any_peer);
        assert_eq!(
            rule.ports,
            vec![
                PortMatch::Range(Protocol::Tcp, 81, 81),
                PortMatch::Range(Protocol::Udp, 80, 90),
                PortMatch::Set(Protocol::Tcp, BTreeSet::from([80, 8080])),
                PortMatch::All(Protocol::Sctp),
            ],
            "the UDP name resolves to nothing and is left out"
        );
        let unresolved = policy(
            "x",
            NetworkPolicySpec {
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(vec![port(
                        None,
                        Some(IntOrString::String("nope".into())),
                        None,
                    )]),
                }]),
                ..NetworkPolicySpec::default()
            },
        );
        let rule = plan(&unresolved, &pods, &ns)
            .unwrap()
            .ingress
            .unwrap()
            .remove(0);
        assert!(rule.no_port_resolved && rule.ports.is_empty());
        let bad = policy(
            "x",
            NetworkPolicySpec {
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(vec![port(Some("ICMP"), None, None)]),
                }]),
                ..NetworkPolicySpec::default()
            },
        );
        assert!(plan(&bad, &pods, &ns).is_err());
    }

    #[test]
    fn ip_blocks_with_except_and_bad_cidrs() {
        let (pods, ns) = world();
        let with_block = |cidr: &str, except: &[&str]| {
            policy(
                "x",
                NetworkPolicySpec {
                    egress: Some(vec![NetworkPolicyEgressRule {
                        to: Some(vec![NetworkPolicyPeer {
                            ip_block: Some(IPBlock {
                                cidr: cidr.into(),
                                except: Some(except.iter().map(|e| e.to_string()).collect()),
                            }),
                            ..NetworkPolicyPeer::default()
                        }]),
                        ports: None,
                    }]),
                    ..NetworkPolicySpec::default()
                },
            )
        };
        let rule = plan(&with_block("10.0.0.0/24", &["10.0.0.4/32"]), &pods, &ns)
            .unwrap()
            .egress
            .unwrap()
            .remove(0);
        assert_eq!(
            rule.blocks,
            vec![Block {
                cidr: "10.0.0.0/24".parse().unwrap(),
                except: vec!["10.0.0.4/32".parse().unwrap()],
            }]
        );
        assert!(!rule.any_peer && rule.addresses.is_empty());
        assert!(plan(&with_block("10.0.0.0/33", &[]), &pods, &ns).is_err());
    }

    #[test]
    fn port_group_names_are_ovn_identifiers_as_kube_ovn_makes_them() {
        let key = |ns: &str, name: &str| PolicyKey {
            namespace: ns.into(),
            name: name.into(),
        };
        assert_eq!(key("x-1", "deny-all").port_group(), "deny.all.x.1");
        assert_eq!(key("x", "1st").port_group(), "np1st.x");
    }
}
