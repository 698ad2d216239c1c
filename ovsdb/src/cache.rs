//! The client's copy of the monitored part of the database: rows by UUID per table, unique
//! lookups by the schema's indexes, and client-defined indexes (columns or map keys).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use uuid::Uuid;

use crate::datum::{Atom, Datum};
use crate::row::{Columns, Row};
use crate::schema::{DatabaseSchema, TableSchema};

/// One part of an index key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexColumn {
    /// A column's whole value.
    Column(String),
    /// The value of one key of a map column (`external_ids:pod`); absent keys index as an
    /// empty set.
    MapKey(String, String),
}

impl IndexColumn {
    /// Parses `column` or `column:key`.
    pub fn parse(spec: &str) -> IndexColumn {
        match spec.split_once(':') {
            Some((column, key)) => IndexColumn::MapKey(column.to_owned(), key.to_owned()),
            None => IndexColumn::Column(spec.to_owned()),
        }
    }

    fn value(&self, row: &Row) -> Datum {
        match self {
            IndexColumn::Column(c) => row.get(c).cloned().unwrap_or_else(Datum::empty_set),
            IndexColumn::MapKey(c, k) => row
                .get(c)
                .and_then(|m| m.map_get(&Atom::from(k.as_str())))
                .map_or_else(Datum::empty_set, |v| Datum::atom(v.clone())),
        }
    }
}

/// A client-defined index of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    pub table: String,
    pub columns: Vec<IndexColumn>,
}

impl IndexSpec {
    /// `IndexSpec::new("Logical_Switch_Port", &["external_ids:pod"])`.
    pub fn new(table: &str, columns: &[&str]) -> IndexSpec {
        IndexSpec {
            table: table.to_owned(),
            columns: columns.iter().map(|c| IndexColumn::parse(c)).collect(),
        }
    }
}

/// The rows that have one index key. Unique (schema) indexes hold one row per key, so the
/// common case needs no allocation.
#[derive(Debug, Clone)]
enum IndexSlot {
    One(Uuid),
    Many(Vec<Uuid>),
}

/// An index maps the hash of a row's key to the rows with that hash; lookups check the
/// candidates' actual key, so hash collisions cost a comparison, never a wrong answer. Storing
/// hashes instead of key copies keeps the index small.
#[derive(Debug, Clone)]
struct Index {
    columns: Vec<IndexColumn>,
    entries: HashMap<u64, IndexSlot>,
}

fn hash_key<'a>(values: impl IntoIterator<Item = &'a Datum>) -> u64 {
    let mut hasher = DefaultHasher::new();
    for value in values {
        value.hash(&mut hasher);
    }
    hasher.finish()
}

impl Index {
    fn key(&self, row: &Row) -> Vec<Datum> {
        self.columns.iter().map(|c| c.value(row)).collect()
    }

    fn add(&mut self, row: &Row) {
        let hash = hash_key(&self.key(row));
        match self.entries.get_mut(&hash) {
            None => {
                self.entries.insert(hash, IndexSlot::One(row.uuid));
            }
            Some(IndexSlot::One(other)) => {
                let other = *other;
                self.entries
                    .insert(hash, IndexSlot::Many(vec![other, row.uuid]));
            }
            Some(IndexSlot::Many(uuids)) => uuids.push(row.uuid),
        }
    }

    fn remove(&mut self, row: &Row) {
        let hash = hash_key(&self.key(row));
        match self.entries.get_mut(&hash) {
            Some(IndexSlot::One(u)) if *u == row.uuid => {
                self.entries.remove(&hash);
            }
            Some(IndexSlot::Many(uuids)) => {
                uuids.retain(|u| *u != row.uuid);
                if let [last] = uuids[..] {
                    self.entries.insert(hash, IndexSlot::One(last));
                }
            }
            _ => {}
        }
    }

    fn candidates(&self, values: &[Datum]) -> &[Uuid] {
        match self.entries.get(&hash_key(values)) {
            Some(IndexSlot::One(u)) => std::slice::from_ref(u),
            Some(IndexSlot::Many(uuids)) => uuids,
            None => &[],
        }
    }
}

/// One table of the cache.
#[derive(Debug, Clone)]
pub struct TableCache {
    rows: HashMap<Uuid, Row>,
    indexes: Vec<Index>,
}

impl TableCache {
    fn new(schema: &TableSchema, extra: &[IndexSpec]) -> TableCache {
        let mut indexes: Vec<Index> = schema
            .indexes
            .iter()
            .map(|cols| Index {
                columns: cols
                    .iter()
                    .map(|c| IndexColumn::Column(c.clone()))
                    .collect(),
                entries: HashMap::new(),
            })
            .collect();
        indexes.extend(
            extra
                .iter()
                .filter(|s| s.table == schema.name)
                .map(|s| Index {
                    columns: s.columns.clone(),
                    entries: HashMap::new(),
                }),
        );
        TableCache {
            rows: HashMap::new(),
            indexes,
        }
    }

    pub fn get(&self, uuid: &Uuid) -> Option<&Row> {
        self.rows.get(uuid)
    }

    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.values()
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows whose index columns equal `values`. `columns` must name a schema index or a
    /// client-defined index exactly (`name`, `external_ids:pod`).
    pub fn find(&self, columns: &[&str], values: &[Datum]) -> Vec<&Row> {
        let wanted: Vec<IndexColumn> = columns.iter().map(|c| IndexColumn::parse(c)).collect();
        let Some(index) = self.indexes.iter().find(|i| i.columns == wanted) else {
            return Vec::new();
        };
        index
            .candidates(values)
            .iter()
            .filter_map(|u| self.rows.get(u))
            .filter(|row| index.key(row) == values)
            .collect()
    }

    /// Whether an index over exactly these columns exists.
    pub fn has_index(&self, columns: &[&str]) -> bool {
        let wanted: Vec<IndexColumn> = columns.iter().map(|c| IndexColumn::parse(c)).collect();
        self.indexes.iter().any(|i| i.columns == wanted)
    }

    /// The row whose string column `column` (an index) equals `value`.
    pub fn find_one(&self, column: &str, value: &str) -> Option<&Row> {
        self.find(&[column], &[Datum::atom(value)])
            .into_iter()
            .next()
    }

    fn put(&mut self, row: Row) -> Option<Row> {
        let old = self.rows.remove(&row.uuid);
        if let Some(old) = &old {
            for index in &mut self.indexes {
                index.remove(old);
            }
        }
        for index in &mut self.indexes {
            index.add(&row);
        }
        self.rows.insert(row.uuid, row);
        old
    }

    fn take(&mut self, uuid: &Uuid) -> Option<Row> {
        let old = self.rows.remove(uuid)?;
        for index in &mut self.indexes {
            index.remove(&old);
        }
        Some(old)
    }
}

/// What happened to one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Modify,
    Delete,
}

/// A change to the cache, as the change stream delivers it.
#[derive(Debug, Clone)]
pub struct Change {
    pub table: String,
    pub uuid: Uuid,
    pub kind: ChangeKind,
    /// The row before (modify, delete).
    pub old: Option<Row>,
    /// The row after (insert, modify).
    pub new: Option<Row>,
}

/// The cache of every monitored table.
#[derive(Debug, Clone)]
pub struct Cache {
    schema: Arc<DatabaseSchema>,
    tables: BTreeMap<String, TableCache>,
}

impl Cache {
    pub(crate) fn new(
        schema: Arc<DatabaseSchema>,
        tables: &[String],
        indexes: &[IndexSpec],
    ) -> Cache {
        let tables = tables
            .iter()
            .filter_map(|t| schema.tables.get(t))
            .map(|t| (t.name.clone(), TableCache::new(t, indexes)))
            .collect();
        Cache { schema, tables }
    }

    pub fn schema(&self) -> &DatabaseSchema {
        &self.schema
    }

    /// A monitored table (`None` if it is not monitored).
    pub fn table(&self, name: &str) -> Option<&TableCache> {
        self.tables.get(name)
    }

    pub fn tables(&self) -> impl Iterator<Item = (&str, &TableCache)> {
        self.tables.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub(crate) fn insert(&mut self, table: &str, row: Row) -> Option<Change> {
        let t = self.tables.get_mut(table)?;
        let new = row.clone();
        let old = t.put(row);
        Some(Change {
            table: table.to_owned(),
            uuid: new.uuid,
            kind: if old.is_some() {
                ChangeKind::Modify
            } else {
                ChangeKind::Insert
            },
            old,
            new: Some(new),
        })
    }

    pub(crate) fn modify(&mut self, table: &str, uuid: Uuid, diff: Columns) -> Option<Change> {
        let schema = self.schema.tables.get(table)?;
        let t = self.tables.get_mut(table)?;
        let old = t.take(&uuid)?;
        let mut new = old.clone();
        for (column, diff) in diff {
            let Some(col) = schema.columns.get(&column) else {
                continue;
            };
            let mut value = new
                .get(&column)
                .cloned()
                .unwrap_or_else(|| Datum::default_for(&col.ty));
            value.apply_diff(diff, &col.ty);
            let is_default = value.is_default_for(&col.ty);
            new.set(&col.name, value, is_default);
        }
        t.put(new.clone());
        Some(Change {
            table: table.to_owned(),
            uuid,
            kind: ChangeKind::Modify,
            old: Some(old),
            new: Some(new),
        })
    }

    pub(crate) fn delete(&mut self, table: &str, uuid: Uuid) -> Option<Change> {
        let old = self.tables.get_mut(table)?.take(&uuid)?;
        Some(Change {
            table: table.to_owned(),
            uuid,
            kind: ChangeKind::Delete,
            old: Some(old),
            new: None,
        })
    }

    /// Replaces the contents of `table` with `rows`, returning the changes that turn the old
    /// contents into the new (used after a resync that could not resume).
    pub(crate) fn replace_table(&mut self, table: &str, rows: Vec<Row>) -> Vec<Change> {
        let Some(t) = self.tables.get(table) else {
            return Vec::new();
        };
        let mut gone: BTreeSet<Uuid> = t.rows.keys().copied().collect();
        let mut changes = Vec::new();
        for row in rows {
            gone.remove(&row.uuid);
            if self.tables[table].get(&row.uuid) == Some(&row) {
                continue;
            }
            changes.extend(self.insert(table, row));
        }
        for uuid in gone {
            changes.extend(self.delete(table, uuid));
        }
        changes
    }

    /// Total rows cached.
    pub fn row_count(&self) -> usize {
        self.tables.values().map(TableCache::len).sum()
    }
}
