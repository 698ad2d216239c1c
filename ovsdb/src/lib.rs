//! An OVSDB (RFC 7047) client for kovn's controller (OVN Northbound) and agent (the node's
//! Open_vSwitch database).

pub mod codec;
pub mod datum;
pub mod error;
pub mod schema;

pub use datum::{Atom, Datum};
pub use error::{Error, Result};
pub use schema::{ColumnType, DatabaseSchema, TableSchema};
pub use uuid::Uuid;
