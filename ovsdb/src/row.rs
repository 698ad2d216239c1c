//! A table row as the client sees it: its UUID and its columns.
//!
//! A row stores only the columns that differ from their default value (as OVSDB's own files
//! do), with column names shared from the schema: the monitor cache holds every row of a
//! database, so this is what its memory is made of. A column that is absent reads as its
//! default; [`Row::value`] fills it in, the generated models do so too.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use uuid::Uuid;

use crate::datum::{Atom, Datum};
use crate::error::{Error, Result};
use crate::schema::TableSchema;

/// Column values by name, as decoded from the wire (every column the message carried).
pub type Columns = BTreeMap<String, Datum>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub uuid: Uuid,
    /// Non-default columns, sorted by name.
    columns: Box<[(Arc<str>, Datum)]>,
}

impl Row {
    /// A row from column values; default values are dropped.
    pub fn new(uuid: Uuid, columns: Columns, table: &TableSchema) -> Result<Row> {
        let mut stored = Vec::with_capacity(columns.len());
        for (name, datum) in columns {
            let column = table.column(&name)?;
            if !datum.is_default_for(&column.ty) {
                stored.push((column.name.clone(), datum));
            }
        }
        // BTreeMap iteration is sorted by name already.
        Ok(Row {
            uuid,
            columns: stored.into_boxed_slice(),
        })
    }

    /// Decodes the JSON `<row>` of table `table`. `_uuid` and `_version` are taken out; an
    /// unknown column is an error (the schema is the contract).
    pub fn from_json(uuid: Uuid, json: &Value, table: &TableSchema) -> Result<Row> {
        Row::new(uuid, decode_columns(json, table)?, table)
    }

    /// A stored (non-default) column.
    pub fn get(&self, column: &str) -> Option<&Datum> {
        self.columns
            .binary_search_by(|(name, _)| (**name).cmp(column))
            .ok()
            .map(|i| &self.columns[i].1)
    }

    /// A column's value, its default if the row does not store it.
    pub fn value(&self, column: &str, table: &TableSchema) -> Result<Datum> {
        match self.get(column) {
            Some(d) => Ok(d.clone()),
            None => Ok(Datum::default_for(&table.column(column)?.ty)),
        }
    }

    /// The stored (non-default) columns, sorted by name.
    pub fn columns(&self) -> impl Iterator<Item = (&str, &Datum)> {
        self.columns.iter().map(|(n, d)| (&**n, d))
    }

    /// The stored columns as a map (for comparisons).
    pub fn to_map(&self) -> BTreeMap<String, Datum> {
        self.columns()
            .map(|(n, d)| (n.to_owned(), d.clone()))
            .collect()
    }

    /// Replaces, adds (non-default) or removes (default) one column.
    pub(crate) fn set(&mut self, column: &Arc<str>, value: Datum, is_default: bool) {
        let mut columns = std::mem::take(&mut self.columns).into_vec();
        match columns.binary_search_by(|(name, _)| (**name).cmp(column)) {
            Ok(i) if is_default => {
                columns.remove(i);
            }
            Ok(i) => columns[i].1 = value,
            Err(_) if is_default => {}
            Err(i) => columns.insert(i, (column.clone(), value)),
        }
        self.columns = columns.into_boxed_slice();
    }

    /// The string value of a scalar string column ("" when it holds the default).
    pub fn string(&self, column: &str) -> Option<&str> {
        match self.get(column) {
            Some(d) => d.as_atom()?.as_str(),
            None => Some(""),
        }
    }

    /// The value of a scalar integer column (0 when it holds the default).
    pub fn integer(&self, column: &str) -> Option<i64> {
        match self.get(column) {
            Some(d) => d.as_atom()?.as_i64(),
            None => Some(0),
        }
    }

    pub fn boolean(&self, column: &str) -> Option<bool> {
        match self.get(column) {
            Some(d) => d.as_atom()?.as_bool(),
            None => Some(false),
        }
    }

    /// The value of `key` in a string→string map column.
    pub fn map_value(&self, column: &str, key: &str) -> Option<&str> {
        self.get(column)?.map_get(&Atom::from(key))?.as_str()
    }
}

/// Decodes the columns of a JSON `<row>` (or a `<row>` diff) of `table`.
pub fn decode_columns(json: &Value, table: &TableSchema) -> Result<Columns> {
    let obj = json.as_object().ok_or_else(|| Error::Value {
        table: table.name.clone(),
        column: String::new(),
        detail: format!("row is not an object: {json:.200}"),
    })?;
    let mut columns = BTreeMap::new();
    for (name, value) in obj {
        if name == "_uuid" || name == "_version" {
            continue;
        }
        let column = table.column(name)?;
        let datum = Datum::from_json(value, &column.ty).map_err(|detail| Error::Value {
            table: table.name.clone(),
            column: name.clone(),
            detail,
        })?;
        columns.insert(name.clone(), datum);
    }
    Ok(columns)
}

/// The `_uuid` of a row returned by `select`.
pub fn row_uuid(json: &Value) -> Option<Uuid> {
    match json.get("_uuid")?.as_array()?.as_slice() {
        [tag, Value::String(s)] if tag == "uuid" => Uuid::parse_str(s).ok(),
        _ => None,
    }
}
