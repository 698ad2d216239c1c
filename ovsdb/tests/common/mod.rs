#![allow(dead_code)] // each test binary uses a different part
//! Shared by the integration tests.

use std::path::PathBuf;

/// A schema with a column of every kind (see kinds.ovsschema).
pub fn kinds_schema() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kinds.ovsschema")
        .display()
        .to_string()
}

use std::collections::BTreeMap;

use ovsdb::{Client, DatabaseSchema, Datum, Uuid};
use serde_json::Value;

/// Table → row UUID → columns.
pub type Contents = BTreeMap<String, BTreeMap<Uuid, BTreeMap<String, Datum>>>;

/// Decodes `ovsdb-client dump --format=json` output with the schema.
pub fn dump_contents(dump: &str, schema: &DatabaseSchema) -> Contents {
    let mut out = BTreeMap::new();
    for line in dump.lines().filter(|l| !l.trim().is_empty()) {
        let table: Value = serde_json::from_str(line).expect("dump JSON");
        let name = table["caption"]
            .as_str()
            .unwrap()
            .trim_end_matches(" table")
            .to_owned();
        let Ok(table_schema) = schema.table(&name) else {
            continue;
        };
        let headings: Vec<&str> = table["headings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        let mut rows = BTreeMap::new();
        for data in table["data"].as_array().unwrap() {
            let mut uuid = Uuid::nil();
            let mut columns = BTreeMap::new();
            for (heading, value) in headings.iter().zip(data.as_array().unwrap()) {
                if *heading == "_uuid" {
                    uuid = Uuid::parse_str(value[1].as_str().unwrap()).unwrap();
                } else {
                    // The cache stores only non-default values, as OVSDB's own files do.
                    let ty = &table_schema.column(heading).unwrap().ty;
                    let datum = Datum::from_json(value, ty).unwrap();
                    if !datum.is_default_for(ty) {
                        columns.insert((*heading).to_owned(), datum);
                    }
                }
            }
            rows.insert(uuid, columns);
        }
        out.insert(name, rows);
    }
    out
}

/// The client's cache in the same shape.
pub fn cache_contents(client: &Client) -> Contents {
    client.read(|cache| {
        cache
            .tables()
            .map(|(name, t)| {
                (
                    name.to_owned(),
                    t.rows().map(|r| (r.uuid, r.to_map())).collect(),
                )
            })
            .collect()
    })
}
