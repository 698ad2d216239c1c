//! A subnet's ACLs on its switch:
//! - a private subnet's (Kube-OVN's `private` and `allowSubnets`): traffic towards its pods is
//!   allowed from the subnet itself, from each allowed subnet and from the join subnet (node
//!   traffic, health checks); everything else towards it is dropped;
//! - the user's own (`spec.acls`), written as they are;
//! - under NetworkPolicy, the one that makes the switch track connections from the start.

use api::SubnetAcl;
use ipnet::IpNet;
use ovsdb::models::ovn_northbound::{Acl, AclAction, AclDirection, LogicalSwitch};
use ovsdb::{Atom, Cache, Transaction};

use super::owned::{OwnedRow, Parent, Synced, owner, sync_owned_rows};
use super::{find, ip_family};

pub const PRIORITY_ALLOW: i64 = 3001;
pub const PRIORITY_DROP: i64 = 3000;
/// Below every ACL that judges anything.
pub const PRIORITY_CONNTRACK: i64 = 1;

fn family(net: &IpNet) -> &'static str {
    ip_family(net.addr())
}

fn acl_row(priority: i64, matches: String, action: AclAction) -> OwnedRow<Acl> {
    OwnedRow {
        key: format!("to-lport|{priority}|{matches}|{}", action.as_str()),
        row: Acl {
            direction: AclDirection::ToLport,
            priority,
            r#match: matches,
            action,
            ..Acl::default()
        },
    }
}

/// Under NetworkPolicy, a pod switch tracks connections from the start. OVN sends a switch's
/// traffic through conntrack only while a stateful ACL is on it, and conntrack takes the
/// first packet it sees of a connection for its request: a connection opened before the
/// first policy on a switch without stateful ACLs was first seen, in the zone of its server,
/// through a reply, so its later requests counted as replies, which OVN lets through
/// whatever the policy (the netpol test found a learned TCP connection in a custom VPC
/// answered after deny-all). An allow-related ACL that matches replies only changes no
/// verdict and makes the switch stateful. (The default VPC's switches were stateful already
/// through the node port groups' ACLs.)
pub fn conntrack_acl() -> OwnedRow<Acl> {
    acl_row(
        PRIORITY_CONNTRACK,
        "ip && ct.rpl".to_owned(),
        AclAction::AllowRelated,
    )
}

/// The ACLs a subnet should carry: none unless private.
pub fn private_subnet_acls(
    private: bool,
    cidrs: &[IpNet],
    allowed: &[IpNet],
) -> Vec<OwnedRow<Acl>> {
    if !private {
        return Vec::new();
    }
    let mut rows = Vec::new();
    for own in cidrs {
        let fam = family(own);
        for source in cidrs.iter().chain(allowed) {
            if family(source) == fam {
                rows.push(acl_row(
                    PRIORITY_ALLOW,
                    format!("{fam}.src == {source} && {fam}.dst == {own}"),
                    AclAction::AllowRelated,
                ));
            }
        }
        rows.push(acl_row(
            PRIORITY_DROP,
            format!("{fam}.dst == {own}"),
            AclAction::Drop,
        ));
    }
    rows
}

/// The ACL a FIP or DNAT rule adds to a private subnet's switch: what the outside sends to
/// the published address (`matches`, e.g. `ip4.dst == 10.0.0.5 && tcp.dst == 22`) is allowed,
/// unless it comes from the VPC's own subnets (`vpc_cidrs`), which stay denied as the
/// subnet's `private` says. Without it, the subnet's drop would refuse what the rule
/// publishes (the pitfall Kube-OVN users hit with private subnets and EIPs).
pub fn published_acl(matches: &str, vpc_cidrs: &[IpNet]) -> OwnedRow<Acl> {
    let fam = vpc_cidrs.first().map_or("ip4", family);
    let cidrs: Vec<String> = vpc_cidrs
        .iter()
        .filter(|c| family(c) == fam)
        .map(ToString::to_string)
        .collect();
    let matches = if cidrs.is_empty() {
        matches.to_owned()
    } else {
        format!("{matches} && {fam}.src != {{{}}}", cidrs.join(", "))
    };
    acl_row(PRIORITY_ALLOW, matches, AclAction::AllowRelated)
}

/// Appends to `t` what makes `owner`'s ACLs exactly `desired` on `switch`, and none on any
/// other switch (`switch` None: removed everywhere). Returns whether one went.
pub fn owned_acl_ops(
    cache: &Cache,
    t: &mut Transaction,
    switch: Option<&str>,
    owner: &str,
    desired: Vec<OwnedRow<Acl>>,
) -> bool {
    let keep = switch.and_then(|s| find::<LogicalSwitch>(cache, s));
    let elsewhere = super::owned::remove_owned_rows_elsewhere::<LogicalSwitch, Acl>(
        cache,
        t,
        LogicalSwitch::ACLS,
        keep.as_ref().map(|s| s.uuid),
        owner,
    );
    let Some(keep) = keep else {
        return elsewhere;
    };
    let synced = sync_owned_rows(
        cache,
        t,
        &Parent {
            row: Atom::Uuid(keep.uuid),
            children: LogicalSwitch::ACLS,
        },
        owner,
        desired,
    );
    synced.removed || elsewhere
}

/// Why a `spec.acls` entry cannot be written.
pub fn check_spec_acl(acl: &SubnetAcl) -> Result<(), String> {
    parse_direction(&acl.direction)?;
    parse_action(&acl.action)?;
    if !(0..=32767).contains(&acl.priority) {
        return Err(format!(
            "acls: priority {} is outside 0..32767",
            acl.priority
        ));
    }
    if acl.r#match.trim().is_empty() {
        return Err("acls: an empty match".into());
    }
    Ok(())
}

fn parse_direction(text: &str) -> Result<AclDirection, String> {
    match text {
        "from-lport" => Ok(AclDirection::FromLport),
        "to-lport" => Ok(AclDirection::ToLport),
        other => Err(format!(
            "acls: direction {other:?} is neither from-lport nor to-lport"
        )),
    }
}

fn parse_action(text: &str) -> Result<AclAction, String> {
    AclAction::ALL
        .into_iter()
        .find(|a| a.as_str() == text)
        .ok_or_else(|| format!("acls: unknown action {text:?}"))
}

/// The rows of a subnet's `spec.acls` (entries that do not check are left out: validation
/// refuses such a Subnet before this is reached).
pub fn spec_acls(acls: &[SubnetAcl]) -> Vec<OwnedRow<Acl>> {
    acls.iter()
        .filter_map(|a| {
            let direction = parse_direction(&a.direction).ok()?;
            let action = parse_action(&a.action).ok()?;
            let priority = i64::from(a.priority);
            Some(OwnedRow {
                key: format!(
                    "spec|{}|{priority}|{}|{}",
                    a.direction,
                    a.r#match,
                    action.as_str()
                ),
                row: Acl {
                    direction,
                    priority,
                    r#match: a.r#match.clone(),
                    action,
                    ..Acl::default()
                },
            })
        })
        .collect()
}

/// Appends to `t` what makes the subnet switch's ACLs `desired`.
pub fn subnet_acl_ops(
    cache: &Cache,
    t: &mut Transaction,
    subnet: &str,
    desired: Vec<OwnedRow<Acl>>,
) -> Synced {
    let Some(switch) = find::<LogicalSwitch>(cache, subnet) else {
        return Synced::default();
    };
    sync_owned_rows(
        cache,
        t,
        &Parent {
            row: Atom::Uuid(switch.uuid),
            children: LogicalSwitch::ACLS,
        },
        &owner("subnet", subnet),
        desired,
    )
}
