//! Rows kovn derives from one Kubernetes object (a subnet's ACLs, a node's router policy, a
//! VPC's routes): each carries `external_ids:kovn-owner=<kind>/<name>` and `kovn-key`, a string
//! that identifies its content. Syncing compares keys only: rows whose key is no longer wanted
//! are removed, missing ones inserted, so an unchanged object costs no write.

use std::collections::{BTreeMap, BTreeSet};

use ovsdb::{Atom, Cache, Column, Condition, Datum, Model, Transaction, Uuid};

use super::{VENDOR, uuid_name};

pub const OWNER: &str = "kovn-owner";
pub const KEY: &str = "kovn-key";

/// One row wanted in a child table (ACL, Logical_Router_Policy, Logical_Router_Static_Route):
/// the typed row, and the key that identifies its content.
#[derive(Debug, Clone)]
pub struct OwnedRow<C> {
    pub key: String,
    pub row: C,
}

/// A child table whose rows carry kovn's ownership in `external_ids`.
pub trait OwnedModel: Model {
    const EXTERNAL_IDS: Column<Self, BTreeMap<String, String>>;
}

impl OwnedModel for ovsdb::models::ovn_northbound::Acl {
    const EXTERNAL_IDS: Column<Self, BTreeMap<String, String>> = Self::EXTERNAL_IDS;
}

impl OwnedModel for ovsdb::models::ovn_northbound::LogicalRouterPolicy {
    const EXTERNAL_IDS: Column<Self, BTreeMap<String, String>> = Self::EXTERNAL_IDS;
}

impl OwnedModel for ovsdb::models::ovn_northbound::LogicalRouterStaticRoute {
    const EXTERNAL_IDS: Column<Self, BTreeMap<String, String>> = Self::EXTERNAL_IDS;
}

/// Where the children hang: the parent row and its reference column.
pub struct Parent<P> {
    pub row: Atom,
    pub children: Column<P, Vec<Uuid>>,
}

/// Appends to `t` what makes `owner`'s rows of `C` exactly `desired`. Returns whether
/// anything changed and whether a row was removed (removing an ACL or policy may revoke traffic).
pub fn sync_owned_rows<P: Model, C: OwnedModel>(
    cache: &Cache,
    t: &mut Transaction,
    parent: &Parent<P>,
    owner: &str,
    desired: Vec<OwnedRow<C>>,
) -> Synced {
    let ids = <C as OwnedModel>::EXTERNAL_IDS.name();
    let existing: Vec<(Uuid, String)> = cache
        .table(C::TABLE)
        .map(|table| {
            table
                .find(&[&format!("{ids}:{OWNER}")], &[Datum::atom(owner)])
                .into_iter()
                .map(|row| {
                    let key = row
                        .get(ids)
                        .and_then(|d| d.map_get(&Atom::from(KEY)))
                        .and_then(Atom::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    (row.uuid, key)
                })
                .collect()
        })
        .unwrap_or_default();
    let wanted: BTreeSet<&str> = desired.iter().map(|r| r.key.as_str()).collect();
    let have: BTreeSet<&str> = existing.iter().map(|(_, k)| k.as_str()).collect();
    let mut sync = Synced::default();
    let parent_condition = [Condition::row(&parent.row)];
    let mut seen = BTreeSet::new();
    for (uuid, key) in &existing {
        // Duplicates (two rows with one key) are removed too: one survives.
        if !wanted.contains(key.as_str()) || !seen.insert(key.as_str()) {
            t.mutate_where(&parent_condition, [parent.children.delete([*uuid])]);
            sync.removed = true;
        }
    }
    for row in desired {
        if have.contains(row.key.as_str()) {
            continue;
        }
        let external_ids = BTreeMap::from([
            (OWNER.to_owned(), owner.to_owned()),
            (KEY.to_owned(), row.key.clone()),
            (VENDOR.0.to_owned(), VENDOR.1.to_owned()),
        ]);
        let name = uuid_name(t, "owned");
        let child = t.insert_model_with(
            &name,
            &row.row,
            [<C as OwnedModel>::EXTERNAL_IDS.to(external_ids)],
        );
        t.mutate_where(&parent_condition, [parent.children.insert([child])]);
        sync.inserted = true;
    }
    sync
}

/// Appends to `t` the removal of `owner`'s rows of `C` from every row of `P` but `keep` (a
/// rule that moved to another router or switch, or `keep` None: removed everywhere). Returns
/// whether any went.
pub fn remove_owned_rows_elsewhere<P: Model, C: OwnedModel>(
    cache: &Cache,
    t: &mut Transaction,
    children: Column<P, Vec<Uuid>>,
    keep: Option<Uuid>,
    owner: &str,
) -> bool {
    let ids = <C as OwnedModel>::EXTERNAL_IDS.name();
    let owned: BTreeSet<Uuid> = cache
        .table(C::TABLE)
        .map(|table| {
            table
                .find(&[&format!("{ids}:{OWNER}")], &[Datum::atom(owner)])
                .into_iter()
                .map(|row| row.uuid)
                .collect()
        })
        .unwrap_or_default();
    if owned.is_empty() {
        return false;
    }
    let Some(parents) = cache.table(P::TABLE) else {
        return false;
    };
    let mut removed = false;
    for parent in parents.rows().filter(|r| Some(r.uuid) != keep) {
        let stale: Vec<Uuid> = parent
            .get(children.name())
            .and_then(Datum::as_set)
            .unwrap_or_default()
            .iter()
            .filter_map(Atom::as_uuid)
            .filter(|u| owned.contains(u))
            .collect();
        if !stale.is_empty() {
            t.mutate_where(&[Condition::uuid(parent.uuid)], [children.delete(stale)]);
            removed = true;
        }
    }
    removed
}

/// What [`sync_owned_rows`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    pub inserted: bool,
    pub removed: bool,
}

impl Synced {
    pub fn changed(self) -> bool {
        self.inserted || self.removed
    }

    /// Both syncs together.
    pub fn and(self, other: Synced) -> Synced {
        Synced {
            inserted: self.inserted || other.inserted,
            removed: self.removed || other.removed,
        }
    }
}

/// The owner string of a Kubernetes object.
pub fn owner(kind: &str, name: &str) -> String {
    format!("{kind}/{name}")
}
