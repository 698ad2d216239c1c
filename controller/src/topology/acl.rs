//! A private subnet's ACLs (Kube-OVN's `private` and `allowSubnets`): on the subnet's switch,
//! traffic towards its pods is allowed from the subnet itself, from each allowed subnet and
//! from the join subnet (node traffic, health checks); everything else towards it is dropped.

use ipnet::IpNet;
use ovsdb::models::ovn_northbound::{Acl, AclAction, AclDirection, LogicalSwitch};
use ovsdb::{Atom, Cache, Transaction};

use super::owned::{OwnedRow, Parent, Synced, owner, sync_owned_rows};
use super::{find, ip_family};

pub const PRIORITY_ALLOW: i64 = 3001;
pub const PRIORITY_DROP: i64 = 3000;

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
