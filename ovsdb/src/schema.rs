//! Database schemas (RFC 7047 §3.2): tables, columns and their types, indexes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};

/// The atomic types of OVSDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomicType {
    Integer,
    Real,
    Boolean,
    String,
    Uuid,
}

impl AtomicType {
    fn parse(name: &str) -> Result<AtomicType> {
        Ok(match name {
            "integer" => AtomicType::Integer,
            "real" => AtomicType::Real,
            "boolean" => AtomicType::Boolean,
            "string" => AtomicType::String,
            "uuid" => AtomicType::Uuid,
            other => return Err(Error::Schema(format!("unknown atomic type {other:?}"))),
        })
    }
}

/// A key or value type: an atomic type with optional constraints.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseType {
    pub atomic: AtomicType,
    /// Allowed values, if the type is an enumeration.
    pub enum_values: Option<Vec<Value>>,
    /// For uuids: the table referred to, and whether the reference is strong.
    pub ref_table: Option<String>,
    pub ref_strong: bool,
}

impl BaseType {
    fn parse(json: &Value) -> Result<BaseType> {
        match json {
            Value::String(name) => Ok(BaseType {
                atomic: AtomicType::parse(name)?,
                enum_values: None,
                ref_table: None,
                ref_strong: true,
            }),
            Value::Object(obj) => {
                let atomic =
                    AtomicType::parse(obj.get("type").and_then(Value::as_str).ok_or_else(
                        || Error::Schema(format!("base type without type: {json}")),
                    )?)?;
                let enum_values = obj.get("enum").map(|e| match e {
                    Value::Array(a) if a.first().and_then(Value::as_str) == Some("set") => a
                        .get(1)
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                    single => vec![single.clone()],
                });
                Ok(BaseType {
                    atomic,
                    enum_values,
                    ref_table: obj
                        .get("refTable")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    ref_strong: obj.get("refType").and_then(Value::as_str) != Some("weak"),
                })
            }
            other => Err(Error::Schema(format!("bad base type {other}"))),
        }
    }
}

/// A column type: a key type, an optional value type (a map), and cardinality.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnType {
    pub key: BaseType,
    pub value: Option<BaseType>,
    pub min: u64,
    /// `None` means unlimited.
    pub max: Option<u64>,
}

impl ColumnType {
    fn parse(json: &Value) -> Result<ColumnType> {
        match json {
            Value::String(_) => Ok(ColumnType {
                key: BaseType::parse(json)?,
                value: None,
                min: 1,
                max: Some(1),
            }),
            Value::Object(obj) => {
                let key =
                    BaseType::parse(obj.get("key").ok_or_else(|| {
                        Error::Schema(format!("column type without key: {json}"))
                    })?)?;
                let value = obj.get("value").map(BaseType::parse).transpose()?;
                let min = obj.get("min").and_then(Value::as_u64).unwrap_or(1);
                let max = match obj.get("max") {
                    None => Some(1),
                    Some(Value::String(s)) if s == "unlimited" => None,
                    Some(v) => Some(
                        v.as_u64()
                            .ok_or_else(|| Error::Schema(format!("bad max {v}")))?,
                    ),
                };
                Ok(ColumnType {
                    key,
                    value,
                    min,
                    max,
                })
            }
            other => Err(Error::Schema(format!("bad column type {other}"))),
        }
    }

    pub fn is_map(&self) -> bool {
        self.value.is_some()
    }

    /// Exactly one atom (not a set, not optional).
    pub fn is_scalar(&self) -> bool {
        self.value.is_none() && self.min == 1 && self.max == Some(1)
    }

    /// Zero or one atom.
    pub fn is_optional(&self) -> bool {
        self.value.is_none() && self.min == 0 && self.max == Some(1)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSchema {
    /// Shared by every cached row that holds this column.
    pub name: Arc<str>,
    pub ty: ColumnType,
    pub ephemeral: bool,
    pub mutable: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableSchema {
    pub name: String,
    pub columns: BTreeMap<String, ColumnSchema>,
    /// Each index is a set of columns whose values together are unique.
    pub indexes: Vec<Vec<String>>,
    pub is_root: bool,
    pub max_rows: Option<u64>,
}

impl TableSchema {
    pub fn column(&self, name: &str) -> Result<&ColumnSchema> {
        self.columns
            .get(name)
            .ok_or_else(|| Error::Schema(format!("table {} has no column {name}", self.name)))
    }
}

/// A database schema as `get_schema` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseSchema {
    pub name: String,
    pub version: String,
    pub cksum: Option<String>,
    pub tables: BTreeMap<String, TableSchema>,
}

impl DatabaseSchema {
    pub fn from_json(json: &Value) -> Result<DatabaseSchema> {
        let obj = json
            .as_object()
            .ok_or_else(|| Error::Schema("schema is not an object".into()))?;
        let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
        let name = text("name").ok_or_else(|| Error::Schema("schema without name".into()))?;
        let mut tables = BTreeMap::new();
        let table_json = obj
            .get("tables")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::Schema("schema without tables".into()))?;
        for (table_name, t) in table_json {
            let mut columns = BTreeMap::new();
            let cols = t
                .get("columns")
                .and_then(Value::as_object)
                .ok_or_else(|| Error::Schema(format!("table {table_name} without columns")))?;
            for (col_name, c) in cols {
                let ty = ColumnType::parse(c.get("type").ok_or_else(|| {
                    Error::Schema(format!("column {table_name}.{col_name} without type"))
                })?)?;
                columns.insert(
                    col_name.clone(),
                    ColumnSchema {
                        name: Arc::from(col_name.as_str()),
                        ty,
                        ephemeral: c.get("ephemeral").and_then(Value::as_bool).unwrap_or(false),
                        mutable: c.get("mutable").and_then(Value::as_bool).unwrap_or(true),
                    },
                );
            }
            let indexes = t
                .get("indexes")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(Value::as_array)
                        .map(|cols| {
                            cols.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .collect()
                })
                .unwrap_or_default();
            tables.insert(
                table_name.clone(),
                TableSchema {
                    name: table_name.clone(),
                    columns,
                    indexes,
                    is_root: t.get("isRoot").and_then(Value::as_bool).unwrap_or(false),
                    max_rows: t.get("maxRows").and_then(Value::as_u64),
                },
            );
        }
        Ok(DatabaseSchema {
            name,
            version: text("version").unwrap_or_default(),
            cksum: text("cksum"),
            tables,
        })
    }

    pub fn table(&self, name: &str) -> Result<&TableSchema> {
        self.tables
            .get(name)
            .ok_or_else(|| Error::Schema(format!("database {} has no table {name}", self.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_installed_northbound_schema() {
        let Ok(text) = std::fs::read_to_string("/usr/share/ovn/ovn-nb.ovsschema") else {
            eprintln!("SKIPPED: no OVN schema installed (run `cargo xtask setup`)");
            return;
        };
        let schema = DatabaseSchema::from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(schema.name, "OVN_Northbound");
        let lsp = schema.table("Logical_Switch_Port").unwrap();
        assert_eq!(lsp.indexes, vec![vec!["name".to_owned()]]);
        assert!(lsp.column("name").unwrap().ty.is_scalar());
        assert!(lsp.column("up").unwrap().ty.is_optional());
        assert!(lsp.column("external_ids").unwrap().ty.is_map());
        let addresses = &lsp.column("addresses").unwrap().ty;
        assert_eq!((addresses.min, addresses.max), (0, None));
        let tag = &lsp.column("ha_chassis_group").unwrap().ty;
        assert_eq!(tag.key.ref_table.as_deref(), Some("HA_Chassis_Group"));
    }
}
