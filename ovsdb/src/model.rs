//! Typed rows. The structs in [`crate::models`] are generated from the schemas
//! (`cargo xtask gen-ovsdb-models`); this module holds what they share: the [`Model`] trait and
//! conversions between Rust types and OVSDB data for scalars (`T`), optional values
//! (`Option<T>`), sets (`Vec<T>`), maps (`BTreeMap<K, V>`), references (`Uuid`) and enums.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::datum::{Atom, Datum};
use crate::error::{Error, Result};
use crate::row::Row;

/// A typed row of one table.
pub trait Model: Sized {
    /// The table's name in the schema.
    const TABLE: &'static str;
    /// Decodes a cached or selected row.
    fn from_row(row: &Row) -> Result<Self>;
    /// The row's columns, for an insert or a full update.
    fn to_columns(&self) -> Vec<(&'static str, Datum)>;
    /// The row's UUID (nil for a row not yet inserted).
    fn uuid(&self) -> Uuid;
}

/// A Rust type that is one OVSDB atom.
pub trait AtomValue: Sized {
    fn from_atom(atom: &Atom) -> Option<Self>;
    fn to_atom(&self) -> Atom;
}

impl AtomValue for i64 {
    fn from_atom(atom: &Atom) -> Option<Self> {
        atom.as_i64()
    }
    fn to_atom(&self) -> Atom {
        Atom::Integer(*self)
    }
}

impl AtomValue for f64 {
    fn from_atom(atom: &Atom) -> Option<Self> {
        match atom {
            Atom::Real(r) => Some(*r),
            Atom::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }
    fn to_atom(&self) -> Atom {
        Atom::Real(*self)
    }
}

impl AtomValue for bool {
    fn from_atom(atom: &Atom) -> Option<Self> {
        atom.as_bool()
    }
    fn to_atom(&self) -> Atom {
        Atom::Boolean(*self)
    }
}

impl AtomValue for String {
    fn from_atom(atom: &Atom) -> Option<Self> {
        atom.as_str().map(str::to_owned)
    }
    fn to_atom(&self) -> Atom {
        Atom::String(self.as_str().into())
    }
}

impl AtomValue for Uuid {
    fn from_atom(atom: &Atom) -> Option<Self> {
        atom.as_uuid()
    }
    fn to_atom(&self) -> Atom {
        Atom::Uuid(*self)
    }
}

/// Implements [`AtomValue`] for a generated string enum (`as_str`/`from_str_opt`).
#[macro_export]
macro_rules! string_enum_atom {
    ($ty:ty) => {
        impl $crate::model::AtomValue for $ty {
            fn from_atom(atom: &$crate::Atom) -> Option<Self> {
                atom.as_str().and_then(<$ty>::from_str_opt)
            }
            fn to_atom(&self) -> $crate::Atom {
                $crate::Atom::String(self.as_str().into())
            }
        }
    };
}

fn missing(table: &str, column: &str, detail: &str) -> Error {
    Error::Value {
        table: table.to_owned(),
        column: column.to_owned(),
        detail: detail.to_owned(),
    }
}

/// Decodes a scalar column (a missing column reads as the type's default).
pub fn get_scalar<T: AtomValue + Default>(row: &Row, table: &str, column: &str) -> Result<T> {
    match row.get(column) {
        None => Ok(T::default()),
        Some(d) => d
            .as_atom()
            .and_then(T::from_atom)
            .ok_or_else(|| missing(table, column, "not a single value of the expected type")),
    }
}

/// Decodes an optional column (zero or one value).
pub fn get_optional<T: AtomValue>(row: &Row, table: &str, column: &str) -> Result<Option<T>> {
    let Some(set) = row.get(column).and_then(Datum::as_set) else {
        return Ok(None);
    };
    match set.iter().next() {
        None => Ok(None),
        Some(atom) => T::from_atom(atom)
            .map(Some)
            .ok_or_else(|| missing(table, column, "value of the wrong type")),
    }
}

/// Decodes a set column, in OVSDB's atom order.
pub fn get_set<T: AtomValue>(row: &Row, table: &str, column: &str) -> Result<Vec<T>> {
    let Some(set) = row.get(column).and_then(Datum::as_set) else {
        return Ok(Vec::new());
    };
    set.iter()
        .map(|a| T::from_atom(a).ok_or_else(|| missing(table, column, "element of the wrong type")))
        .collect()
}

/// Decodes a map column.
pub fn get_map<K: AtomValue + Ord, V: AtomValue>(
    row: &Row,
    table: &str,
    column: &str,
) -> Result<BTreeMap<K, V>> {
    let Some(map) = row.get(column).and_then(Datum::as_map) else {
        return Ok(BTreeMap::new());
    };
    map.iter()
        .map(|(k, v)| match (K::from_atom(k), V::from_atom(v)) {
            (Some(k), Some(v)) => Ok((k, v)),
            _ => Err(missing(table, column, "pair of the wrong types")),
        })
        .collect()
}

pub fn scalar<T: AtomValue>(value: &T) -> Datum {
    Datum::atom(value.to_atom())
}

pub fn optional<T: AtomValue>(value: &Option<T>) -> Datum {
    Datum::set(value.iter().map(AtomValue::to_atom))
}

pub fn set<T: AtomValue>(values: &[T]) -> Datum {
    Datum::set(values.iter().map(AtomValue::to_atom))
}

pub fn map<K: AtomValue, V: AtomValue>(values: &BTreeMap<K, V>) -> Datum {
    Datum::map(values.iter().map(|(k, v)| (k.to_atom(), v.to_atom())))
}

impl crate::cache::TableCache {
    /// Every row decoded as `M` (rows that do not decode are skipped and logged).
    pub fn typed<M: Model>(&self) -> Vec<M> {
        self.rows()
            .filter_map(|r| match M::from_row(r) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(table = M::TABLE, uuid = %r.uuid, error = %e, "undecodable row");
                    None
                }
            })
            .collect()
    }
}

impl crate::transact::Transaction {
    /// Inserts a typed row.
    pub fn insert_model<M: Model>(&mut self, model: &M) -> usize {
        self.insert(M::TABLE, model.to_columns())
    }

    /// Inserts a typed row that later operations refer to by the returned named UUID.
    pub fn insert_model_named<M: Model>(&mut self, uuid_name: &str, model: &M) -> (usize, Atom) {
        self.insert_named(M::TABLE, uuid_name, model.to_columns())
    }
}
