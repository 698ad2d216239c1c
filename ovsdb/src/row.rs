//! A table row as the client sees it: its UUID and its columns.

use std::collections::BTreeMap;

use serde_json::Value;
use uuid::Uuid;

use crate::datum::{Atom, Datum};
use crate::error::{Error, Result};
use crate::schema::TableSchema;

/// Column values of a row, by column name.
pub type Columns = BTreeMap<String, Datum>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub uuid: Uuid,
    pub columns: Columns,
}

impl Row {
    /// Decodes the JSON `<row>` of table `table`. `_uuid` and `_version` are taken out; an
    /// unknown column is an error (the schema is the contract).
    pub fn from_json(uuid: Uuid, json: &Value, table: &TableSchema) -> Result<Row> {
        Ok(Row {
            uuid,
            columns: decode_columns(json, table)?,
        })
    }

    pub fn get(&self, column: &str) -> Option<&Datum> {
        self.columns.get(column)
    }

    /// The string value of a scalar string column.
    pub fn string(&self, column: &str) -> Option<&str> {
        self.get(column)?.as_atom()?.as_str()
    }

    pub fn integer(&self, column: &str) -> Option<i64> {
        self.get(column)?.as_atom()?.as_i64()
    }

    pub fn boolean(&self, column: &str) -> Option<bool> {
        self.get(column)?.as_atom()?.as_bool()
    }

    /// The value of `key` in a string→string map column.
    pub fn map_value(&self, column: &str, key: &str) -> Option<&str> {
        self.get(column)?.as_map()?.get(&Atom::from(key))?.as_str()
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
