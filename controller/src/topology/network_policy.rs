//! A NetworkPolicy in OVN, laid out as Kube-OVN lays it out:
//! - a Port_Group named after the policy ([`PolicyKey::port_group`]) holding the selected
//!   pods' ports, `external_ids:np=<namespace>/<name>`;
//! - per rule, direction and address family an Address_Set of the addresses its selector
//!   peers select (`<pg>.ingress.allow.IPv4.<rule>`; `0.0.0.0/0` for a rule without peers);
//!   ipBlocks are written inline, each with its own `except`, so one block's exceptions never
//!   narrow another peer;
//! - ACLs on the port group: the default drop of each isolated direction (priority 2000,
//!   `outport == @pg && ip` / `inport == @pg && ip`) and one `allow-related` ACL (priority
//!   2001) per rule, peer kind and port entry. Egress ACLs apply after the load balancer, so a
//!   Service is judged on its backend, as the eBPF balancer (which translates before OVS) also
//!   has it.
//!
//! Every change bumps `NB_Global.nb_cfg` in the same transaction: adding a drop, adding a pod to
//! an isolated group, or removing an address can each revoke traffic that node agents'
//! fast paths carry.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use ovsdb::models::ovn_northbound::{
    Acl, AclAction, AclDirection, AclSeverity, AddressSet, PortGroup,
};
use ovsdb::{Cache, Condition, Model, Transaction};

use super::owned::{OwnedRow, Parent, Synced, owner, sync_owned_rows};
use super::{VENDOR, bump_nb_cfg, find, ip_family, uuid_name};
use crate::network_policy::{AclLogging, PolicyKey, PolicyPlan, PortMatch, Rule};

/// `external_ids` key naming the policy of a port group or address set (Kube-OVN's).
pub const NP_KEY: &str = "np";
/// Kube-OVN's NetworkPolicy priorities.
pub const PRIORITY_ALLOW: i64 = 2001;
pub const PRIORITY_DEFAULT_DROP: i64 = 2000;
/// Kube-OVN's priority for a node's own traffic to its pods (kubelet probes).
pub const PRIORITY_NODE_ALLOW: i64 = 3000;

/// The two directions a policy isolates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
    fn acl(self) -> AclDirection {
        match self {
            Direction::Ingress => AclDirection::ToLport,
            Direction::Egress => AclDirection::FromLport,
        }
    }
    /// The port the direction's ACLs test (`outport` towards the pod, `inport` from it).
    fn port_field(self) -> &'static str {
        match self {
            Direction::Ingress => "outport",
            Direction::Egress => "inport",
        }
    }
    /// Which end of the packet is the peer.
    fn peer_field(self) -> &'static str {
        match self {
            Direction::Ingress => "src",
            Direction::Egress => "dst",
        }
    }
}

/// An ACL row owned by a policy or node, keyed by its whole content.
pub(crate) fn acl(
    direction: AclDirection,
    priority: i64,
    matches: String,
    action: AclAction,
    name: &str,
) -> OwnedRow<Acl> {
    let mut options = BTreeMap::new();
    if direction == AclDirection::FromLport {
        // Judge what the pod reaches after OVN's load balancer translated a VIP.
        options.insert("apply-after-lb".to_owned(), "true".to_owned());
    }
    OwnedRow {
        key: format!(
            "{}|{priority}|{matches}|{}",
            direction.as_str(),
            action.as_str()
        ),
        row: Acl {
            direction,
            priority,
            r#match: matches,
            action,
            options,
            // The schema caps names at 63 characters.
            name: Some(name.chars().take(63).collect()),
            ..Acl::default()
        },
    }
}

/// Kube-OVN's family word in address set names.
fn family_word(family: &str) -> &'static str {
    if family == "ip4" { "IPv4" } else { "IPv6" }
}

fn everything(family: &str) -> &'static str {
    if family == "ip4" { "0.0.0.0/0" } else { "::/0" }
}

fn same_family(net: &IpNet, family: &str) -> bool {
    ip_family(net.addr()) == family
}

fn port_clause(port: &PortMatch) -> String {
    match port {
        PortMatch::All(p) => p.as_ovn().to_owned(),
        PortMatch::Range(p, first, last) if first == last => {
            format!("{}.dst == {first}", p.as_ovn())
        }
        PortMatch::Range(p, first, last) => {
            format!("{0}.dst >= {first} && {0}.dst <= {last}", p.as_ovn())
        }
        PortMatch::Set(p, numbers) => format!(
            "{}.dst == {{{}}}",
            p.as_ovn(),
            numbers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The rows one policy wants: address sets by name (with their addresses) and ACLs.
#[derive(Debug, Clone, Default)]
pub struct PolicyRows {
    pub address_sets: BTreeMap<String, BTreeSet<String>>,
    pub acls: Vec<OwnedRow<Acl>>,
}

/// The rows of `plan` for pods of the address `families` (`ip4`, `ip6`).
pub fn policy_rows(plan: &PolicyPlan, families: &BTreeSet<&'static str>) -> PolicyRows {
    let pg = plan.key.port_group();
    let name = plan.key.to_string();
    let mut rows = PolicyRows::default();
    for (direction, rules) in [
        (Direction::Ingress, &plan.ingress),
        (Direction::Egress, &plan.egress),
    ] {
        let Some(rules) = rules else { continue };
        let port = direction.port_field();
        rows.acls.push(acl(
            direction.acl(),
            PRIORITY_DEFAULT_DROP,
            format!("{port} == @{pg} && ip"),
            AclAction::Drop,
            &name,
        ));
        // Replies to what the pod itself opened stay allowed (Kubernetes' semantics). OVN
        // tracks connections, and lets replies through, only on switches with an
        // `allow-related` ACL: a policy of drops alone (deny-all) would cut every reply to
        // its pods. This ACL makes the pods' switches stateful; the replies themselves are
        // accepted by OVN's conntrack flows before any ACL.
        rows.acls.push(acl(
            direction.acl(),
            PRIORITY_ALLOW,
            format!("{port} == @{pg} && ip && ct.rpl"),
            AclAction::AllowRelated,
            &name,
        ));
        for family in families {
            if *family == "ip6" {
                // Neighbour discovery is IP too: the default drop must not cut it.
                rows.acls.push(acl(
                    direction.acl(),
                    PRIORITY_ALLOW,
                    format!("{port} == @{pg} && (nd || nd_ra || nd_rs)"),
                    AclAction::AllowRelated,
                    &name,
                ));
            }
            let peer = format!("{family}.{}", direction.peer_field());
            for (index, rule) in rules.iter().enumerate() {
                rule_rows(
                    &mut rows,
                    RuleContext {
                        pg: &pg,
                        name: &name,
                        direction,
                        family,
                        peer: &peer,
                        index,
                    },
                    rule,
                );
            }
        }
    }
    log_verdicts(&mut rows.acls, plan.log);
    rows
}

/// Marks the ACLs whose verdicts the policy logs (Kube-OVN's severities: warning for drops,
/// info for allows). Logging is part of a row's key, so turning it on or off rewrites them.
fn log_verdicts(acls: &mut [OwnedRow<Acl>], log: AclLogging) {
    for acl in acls {
        let severity = match acl.row.action {
            AclAction::Drop if log.drop => AclSeverity::Warning,
            AclAction::Allow | AclAction::AllowRelated | AclAction::AllowStateless if log.allow => {
                AclSeverity::Info
            }
            _ => continue,
        };
        acl.row.log = true;
        acl.row.severity = Some(severity);
        acl.key.push_str("|log");
    }
}

struct RuleContext<'a> {
    pg: &'a str,
    name: &'a str,
    direction: Direction,
    family: &'a str,
    /// `ip4.src` etc.
    peer: &'a str,
    index: usize,
}

fn rule_rows(rows: &mut PolicyRows, c: RuleContext<'_>, rule: &Rule) {
    let set = format!(
        "{}.{}.allow.{}.{}",
        c.pg,
        c.direction.as_str(),
        family_word(c.family),
        c.index
    );
    let addresses: BTreeSet<String> = if rule.any_peer {
        BTreeSet::from([everything(c.family).to_owned()])
    } else {
        rule.addresses
            .iter()
            .filter(|ip| super::ip_family(**ip) == c.family)
            .map(IpAddr::to_string)
            .collect()
    };
    rows.address_sets.insert(set.clone(), addresses);
    if rule.no_port_resolved {
        return;
    }
    let mut peers = Vec::new();
    if rule.any_peer || !rule.addresses.is_empty() {
        peers.push(format!("{} == ${set}", c.peer));
    }
    for block in rule
        .blocks
        .iter()
        .filter(|b| same_family(&b.cidr, c.family))
    {
        let except: Vec<String> = block
            .except
            .iter()
            .filter(|e| same_family(e, c.family))
            .map(ToString::to_string)
            .collect();
        peers.push(if except.is_empty() {
            format!("{} == {}", c.peer, block.cidr)
        } else {
            format!(
                "{0} == {1} && {0} != {{{2}}}",
                c.peer,
                block.cidr,
                except.join(", ")
            )
        });
    }
    let port_clauses: Vec<Option<String>> = if rule.ports.is_empty() {
        vec![None]
    } else {
        rule.ports.iter().map(|p| Some(port_clause(p))).collect()
    };
    for peer in &peers {
        for ports in &port_clauses {
            let mut m = format!("{} == @{} && ip && {peer}", c.direction.port_field(), c.pg);
            if let Some(ports) = ports {
                m.push_str(" && ");
                m.push_str(ports);
            }
            rows.acls.push(acl(
                c.direction.acl(),
                PRIORITY_ALLOW,
                m,
                AclAction::AllowRelated,
                c.name,
            ));
        }
    }
}

fn policy_owner(key: &PolicyKey) -> String {
    owner("networkpolicy", &key.to_string())
}

/// Address sets whose `external_ids:np` names `key` (any direction).
fn owned_address_sets(cache: &Cache, key: &PolicyKey) -> Vec<AddressSet> {
    let prefix = key.to_string();
    cache
        .table(AddressSet::TABLE)
        .map(|t| t.typed::<AddressSet>())
        .unwrap_or_default()
        .into_iter()
        .filter(|s| {
            s.external_ids.get(NP_KEY).is_some_and(|v| {
                v == &prefix || v.strip_prefix(&prefix).is_some_and(|r| r.starts_with('/'))
            })
        })
        .collect()
}

/// A port group named like ours but recorded for another policy (`a-b/c` and `a/b-c` both
/// make `a.b.c`): refused rather than shared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("port group {port_group} already belongs to NetworkPolicy {holder}")]
pub struct NameClash {
    pub port_group: String,
    pub holder: String,
}

/// Appends to `t` what makes NB hold exactly `plan`'s rows: its port group with the ports
/// `ports` (LSP names of the selected pods), its address sets and ACLs. Returns whether anything
/// changed (the NB config generation is then bumped too).
pub fn policy_ops(
    cache: &Cache,
    t: &mut Transaction,
    plan: &PolicyPlan,
    ports: &[String],
    rows: PolicyRows,
) -> Result<bool, NameClash> {
    let pg_name = plan.key.port_group();
    let key = plan.key.to_string();
    let existing = find::<PortGroup>(cache, &pg_name);
    if let Some(holder) = existing.as_ref().and_then(|pg| pg.external_ids.get(NP_KEY))
        && holder != &key
    {
        return Err(NameClash {
            port_group: pg_name,
            holder: holder.clone(),
        });
    }
    let external_ids = BTreeMap::from([
        (NP_KEY.to_owned(), key.clone()),
        (VENDOR.0.to_owned(), VENDOR.1.to_owned()),
    ]);
    let (pg_ref, group) =
        super::port_group_ops(cache, t, existing.as_ref(), &pg_name, ports, external_ids);
    let mut changed = group.changed();
    // Address sets: stale ones go, missing ones come, changed ones are set.
    let existing = owned_address_sets(cache, &plan.key);
    for set in &existing {
        if !rows.address_sets.contains_key(&set.name) {
            t.delete_where::<AddressSet>(&[Condition::uuid(set.uuid)]);
            changed = true;
        }
    }
    for (name, addresses) in &rows.address_sets {
        let direction = if name.contains(".egress.allow.") {
            "egress"
        } else {
            "ingress"
        };
        let wanted: Vec<String> = addresses.iter().cloned().collect();
        match existing.iter().find(|s| &s.name == name) {
            Some(set) => {
                let mut have = set.addresses.clone();
                have.sort();
                if have != wanted {
                    t.update_where(
                        &[Condition::uuid(set.uuid)],
                        [AddressSet::ADDRESSES.to(wanted)],
                    );
                    changed = true;
                }
            }
            None => {
                // A set of that name owned by nobody we know (left by an older layout): ours now.
                if let Some(other) = find::<AddressSet>(cache, name) {
                    t.delete_where::<AddressSet>(&[Condition::uuid(other.uuid)]);
                }
                t.insert_model_with(
                    &uuid_name(t, "as"),
                    &AddressSet {
                        name: name.clone(),
                        addresses: wanted,
                        external_ids: BTreeMap::from([
                            (NP_KEY.to_owned(), format!("{key}/{direction}")),
                            (VENDOR.0.to_owned(), VENDOR.1.to_owned()),
                        ]),
                        ..AddressSet::default()
                    },
                    [],
                );
                changed = true;
            }
        }
    }
    let synced: Synced = sync_owned_rows(
        cache,
        t,
        &Parent {
            row: pg_ref,
            children: PortGroup::ACLS,
        },
        &policy_owner(&plan.key),
        rows.acls,
    );
    changed |= synced.changed();
    if changed {
        bump_nb_cfg(t);
    }
    Ok(changed)
}

/// Appends to `t` the removal of a policy's port group (its ACLs go with it) and address
/// sets. Bumps the NB config generation when there was anything.
pub fn delete_policy_ops(cache: &Cache, t: &mut Transaction, key: &PolicyKey) {
    let mut any = false;
    if let Some(pg) = find::<PortGroup>(cache, &key.port_group())
        && pg.external_ids.get(NP_KEY) == Some(&key.to_string())
    {
        t.delete_where::<PortGroup>(&[Condition::uuid(pg.uuid)]);
        any = true;
    }
    for set in owned_address_sets(cache, key) {
        t.delete_where::<AddressSet>(&[Condition::uuid(set.uuid)]);
        any = true;
    }
    if any {
        bump_nb_cfg(t);
    }
}

/// Every policy recorded in NB (by its port group), for garbage collection.
pub fn recorded_policies(cache: &Cache) -> Vec<PolicyKey> {
    cache
        .table(PortGroup::TABLE)
        .map(|t| t.typed::<PortGroup>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|pg| {
            let (namespace, name) = pg.external_ids.get(NP_KEY)?.split_once('/')?;
            Some(PolicyKey {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
        })
        .collect()
}

/// The ACLs of a node's port group under NetworkPolicy: its own join addresses reach its pods
/// (kubelet probes) and its pods reach them, whatever policies isolate them (Kube-OVN's node
/// ACLs).
pub fn node_acl_rows(node_pg: &str, join_ips: &[IpAddr]) -> Vec<OwnedRow<Acl>> {
    let mut rows = Vec::new();
    for ip in join_ips {
        let fam = ip_family(*ip);
        rows.push(acl(
            AclDirection::ToLport,
            PRIORITY_NODE_ALLOW,
            format!("{fam}.src == {ip} && {fam}.dst == ${node_pg}_{fam}"),
            AclAction::AllowRelated,
            node_pg,
        ));
        rows.push(acl(
            AclDirection::FromLport,
            PRIORITY_NODE_ALLOW,
            format!("{fam}.dst == {ip} && {fam}.src == ${node_pg}_{fam}"),
            AclAction::AllowRelated,
            node_pg,
        ));
    }
    rows
}
