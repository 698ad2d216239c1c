//! An OVSDB (RFC 7047) client for kovn's controller (OVN Northbound) and agent (the node's
//! Open_vSwitch database).

pub mod cache;
pub mod client;
pub mod codec;
pub mod codegen;
pub mod column;
pub mod connection;
pub mod datum;
pub mod error;
pub mod model;
pub mod models;
pub mod row;
pub mod schema;
pub mod tls;
pub mod transact;

pub use cache::{Cache, Change, ChangeKind, IndexSpec, TableCache};
pub use client::{Client, ClientConfig, ClientMetrics, ClientStats, MonitorRequest};
pub use column::{Assignment, Column, ColumnValue, Element, TypedMutation};
pub use connection::{Connection, ConnectionOptions, Notification, Remote};
pub use datum::{Atom, Datum};
pub use error::{Error, Result};
pub use model::Model;
pub use row::{Columns, Row};
pub use schema::{ColumnType, DatabaseSchema, TableSchema};
pub use tls::TlsFiles;
pub use transact::{
    Condition, Function, Mutation, Mutator, Transaction, TransactionResult, WaitUntil,
};
pub use uuid::Uuid;
