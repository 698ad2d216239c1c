//! Rows kovn derives from one Kubernetes object (a subnet's ACLs, a node's router policy, a
//! VPC's routes): each carries `external_ids:kovn-owner=<kind>/<name>` and `kovn-key`, a string
//! that identifies its content. Syncing compares keys only: rows whose key is no longer wanted
//! are removed, missing ones inserted, so an unchanged object costs no write.

use std::collections::BTreeSet;

use ovsdb::{Atom, Cache, Condition, Datum, Function, Mutation, Mutator, Transaction};

use super::{VENDOR, uuid_name};

pub const OWNER: &str = "kovn-owner";
pub const KEY: &str = "kovn-key";

/// One row wanted in a child table (ACL, Logical_Router_Policy, Logical_Router_Static_Route).
#[derive(Debug, Clone)]
pub struct OwnedRow {
    pub key: String,
    pub columns: Vec<(&'static str, Datum)>,
}

/// Where the children hang: the parent row and its reference column.
pub struct Parent<'a> {
    pub table: &'a str,
    pub row: Atom,
    pub column: &'a str,
}

/// Appends to `t` what makes `owner`'s rows in `child_table` exactly `desired`. Returns whether
/// anything changed and whether a row was removed (removing an ACL or policy may revoke traffic).
pub fn sync_owned_rows(
    cache: &Cache,
    t: &mut Transaction,
    parent: &Parent<'_>,
    child_table: &str,
    owner: &str,
    desired: Vec<OwnedRow>,
) -> Synced {
    let existing: Vec<(ovsdb::Uuid, String)> = cache
        .table(child_table)
        .map(|table| {
            table
                .find(&[&format!("external_ids:{OWNER}")], &[Datum::atom(owner)])
                .into_iter()
                .map(|row| {
                    let key = row
                        .get("external_ids")
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
    let parent_condition = [Condition::new(
        "_uuid",
        Function::Eq,
        Datum::atom(parent.row.clone()),
    )];
    let mut seen = BTreeSet::new();
    for (uuid, key) in &existing {
        // Duplicates (two rows with one key) are removed too: one survives.
        if !wanted.contains(key.as_str()) || !seen.insert(key.as_str()) {
            t.mutate(
                parent.table,
                &parent_condition,
                &[Mutation::new(
                    parent.column,
                    Mutator::Delete,
                    Datum::atom(*uuid),
                )],
            );
            sync.removed = true;
        }
    }
    for row in desired {
        if have.contains(row.key.as_str()) {
            continue;
        }
        let mut columns = row.columns;
        columns.push((
            "external_ids",
            Datum::map([
                (OWNER, owner.to_owned()),
                (KEY, row.key.clone()),
                (VENDOR.0, VENDOR.1.to_owned()),
            ]),
        ));
        let name = uuid_name(t, "owned");
        let (_, child) = t.insert_named(child_table, &name, columns);
        t.mutate(
            parent.table,
            &parent_condition,
            &[Mutation::new(
                parent.column,
                Mutator::Insert,
                Datum::atom(child),
            )],
        );
        sync.inserted = true;
    }
    sync
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
