//! Transactions (RFC 7047 §5.2): a typed builder for the operations, and their results. A
//! transaction is atomic: if any operation fails, nothing is applied, and the error names the
//! operation and carries the server's `error` and `details`.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::datum::{Atom, Datum};
use crate::error::{Error, Result};
use crate::row::{Row, row_uuid};
use crate::schema::TableSchema;

/// A condition of a `where` clause.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub column: String,
    pub function: Function,
    pub value: Datum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Lt,
    Le,
    Eq,
    Ne,
    Ge,
    Gt,
    Includes,
    Excludes,
}

impl Function {
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Lt => "<",
            Function::Le => "<=",
            Function::Eq => "==",
            Function::Ne => "!=",
            Function::Ge => ">=",
            Function::Gt => ">",
            Function::Includes => "includes",
            Function::Excludes => "excludes",
        }
    }
}

impl Condition {
    pub fn new(column: &str, function: Function, value: Datum) -> Condition {
        Condition {
            column: column.to_owned(),
            function,
            value,
        }
    }

    pub fn eq(column: &str, value: impl Into<Datum>) -> Condition {
        Condition::new(column, Function::Eq, value.into())
    }

    /// The row with this UUID.
    pub fn uuid(uuid: Uuid) -> Condition {
        Condition::eq("_uuid", Datum::atom(uuid))
    }

    pub fn to_json(&self) -> Value {
        json!([self.column, self.function.as_str(), self.value.to_json()])
    }
}

impl From<Atom> for Datum {
    fn from(atom: Atom) -> Datum {
        Datum::atom(atom)
    }
}

impl From<&str> for Datum {
    fn from(s: &str) -> Datum {
        Datum::atom(s)
    }
}

impl From<Uuid> for Datum {
    fn from(u: Uuid) -> Datum {
        Datum::atom(u)
    }
}

/// A mutation of a `mutate` operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    pub column: String,
    pub mutator: Mutator,
    pub value: Datum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutator {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Insert,
    Delete,
}

impl Mutator {
    pub fn as_str(self) -> &'static str {
        match self {
            Mutator::Add => "+=",
            Mutator::Sub => "-=",
            Mutator::Mul => "*=",
            Mutator::Div => "/=",
            Mutator::Mod => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        }
    }
}

impl Mutation {
    pub fn new(column: &str, mutator: Mutator, value: Datum) -> Mutation {
        Mutation {
            column: column.to_owned(),
            mutator,
            value,
        }
    }

    /// Adds the elements of a set, or the pairs of a map whose keys are absent.
    pub fn insert(column: &str, value: impl Into<Datum>) -> Mutation {
        Mutation::new(column, Mutator::Insert, value.into())
    }

    /// Removes the elements of a set; for a map, the given pairs, or the keys of a set.
    pub fn delete(column: &str, value: impl Into<Datum>) -> Mutation {
        Mutation::new(column, Mutator::Delete, value.into())
    }

    pub fn to_json(&self) -> Value {
        json!([self.column, self.mutator.as_str(), self.value.to_json()])
    }
}

/// What a `wait` operation waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitUntil {
    Equal,
    NotEqual,
}

/// A transaction under construction. Each operation method returns the operation's index,
/// which selects its result in [`TransactionResult`].
#[derive(Debug, Clone)]
pub struct Transaction {
    db: String,
    ops: Vec<Value>,
}

fn row_json<'a>(row: impl IntoIterator<Item = (&'a str, Datum)>) -> Value {
    Value::Object(
        row.into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_json()))
            .collect(),
    )
}

fn where_json(conditions: &[Condition]) -> Value {
    Value::Array(conditions.iter().map(Condition::to_json).collect())
}

impl Transaction {
    pub fn new(db: &str) -> Transaction {
        Transaction {
            db: db.to_owned(),
            ops: Vec::new(),
        }
    }

    pub fn db(&self) -> &str {
        &self.db
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Drops the operations after the first `len` (undoes a reconciler's partial work in a
    /// shared, batched transaction).
    pub fn truncate(&mut self, len: usize) {
        self.ops.truncate(len);
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    fn push(&mut self, op: Value) -> usize {
        self.ops.push(op);
        self.ops.len() - 1
    }

    /// Inserts a row; its UUID is in the result.
    pub fn insert<'a>(
        &mut self,
        table: &str,
        row: impl IntoIterator<Item = (&'a str, Datum)>,
    ) -> usize {
        self.push(json!({"op": "insert", "table": table, "row": row_json(row)}))
    }

    /// Inserts a row that later operations of this transaction refer to by the returned
    /// named UUID (`uuid_name` must be a valid identifier).
    pub fn insert_named<'a>(
        &mut self,
        table: &str,
        uuid_name: &str,
        row: impl IntoIterator<Item = (&'a str, Datum)>,
    ) -> (usize, Atom) {
        let index = self.push(json!({
            "op": "insert", "table": table, "row": row_json(row), "uuid-name": uuid_name
        }));
        (index, Atom::NamedUuid(uuid_name.into()))
    }

    /// Selects rows; `columns: None` selects every column.
    pub fn select(
        &mut self,
        table: &str,
        conditions: &[Condition],
        columns: Option<&[&str]>,
    ) -> usize {
        let mut op = json!({"op": "select", "table": table, "where": where_json(conditions)});
        if let Some(columns) = columns {
            op["columns"] = json!(columns);
        }
        self.push(op)
    }

    pub fn update<'a>(
        &mut self,
        table: &str,
        conditions: &[Condition],
        row: impl IntoIterator<Item = (&'a str, Datum)>,
    ) -> usize {
        self.push(json!({
            "op": "update", "table": table, "where": where_json(conditions), "row": row_json(row)
        }))
    }

    pub fn mutate(
        &mut self,
        table: &str,
        conditions: &[Condition],
        mutations: &[Mutation],
    ) -> usize {
        self.push(json!({
            "op": "mutate", "table": table, "where": where_json(conditions),
            "mutations": mutations.iter().map(Mutation::to_json).collect::<Vec<_>>()
        }))
    }

    pub fn delete(&mut self, table: &str, conditions: &[Condition]) -> usize {
        self.push(json!({"op": "delete", "table": table, "where": where_json(conditions)}))
    }

    /// Optimistic concurrency: the transaction fails (and applies nothing) unless the rows
    /// matching `conditions`, restricted to `columns`, are (or are not) exactly `rows`, within
    /// `timeout_ms` (0: check once).
    pub fn wait(
        &mut self,
        table: &str,
        conditions: &[Condition],
        columns: &[&str],
        until: WaitUntil,
        rows: &[Vec<(&str, Datum)>],
        timeout_ms: u64,
    ) -> usize {
        self.push(json!({
            "op": "wait", "table": table, "where": where_json(conditions), "columns": columns,
            "until": if until == WaitUntil::Equal { "==" } else { "!=" },
            "rows": rows.iter().map(|r| row_json(r.iter().cloned())).collect::<Vec<_>>(),
            "timeout": timeout_ms
        }))
    }

    pub fn commit(&mut self, durable: bool) -> usize {
        self.push(json!({"op": "commit", "durable": durable}))
    }

    pub fn abort(&mut self) -> usize {
        self.push(json!({"op": "abort"}))
    }

    /// A comment the server writes to its log with the transaction.
    pub fn comment(&mut self, text: &str) -> usize {
        self.push(json!({"op": "comment", "comment": text}))
    }

    /// Fails the transaction unless this client holds `lock`.
    pub fn assert_lock(&mut self, lock: &str) -> usize {
        self.push(json!({"op": "assert", "lock": lock}))
    }

    /// The `params` of the `transact` request.
    pub fn to_params(&self) -> Value {
        let mut params = Vec::with_capacity(self.ops.len() + 1);
        params.push(json!(self.db));
        params.extend(self.ops.iter().cloned());
        Value::Array(params)
    }
}

/// The results of a successful transaction, one per operation.
#[derive(Debug, Clone)]
pub struct TransactionResult {
    results: Vec<Value>,
}

impl TransactionResult {
    /// Checks a `transact` reply: an error in any operation (or an extra trailing error, which
    /// is how the server reports a failed commit) becomes [`Error::Transaction`].
    pub fn from_reply(reply: Value, operations: usize) -> Result<TransactionResult> {
        let Value::Array(results) = reply else {
            return Err(Error::Protocol(format!(
                "transact reply is not an array: {reply:.200}"
            )));
        };
        for (index, result) in results.iter().enumerate() {
            if let Some(error) = result.get("error").and_then(Value::as_str) {
                return Err(Error::Transaction {
                    index,
                    error: error.to_owned(),
                    details: result
                        .get("details")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                });
            }
        }
        if results.len() < operations {
            return Err(Error::Protocol(format!(
                "transact reply has {} results for {operations} operations",
                results.len()
            )));
        }
        Ok(TransactionResult { results })
    }

    /// The UUID of the row inserted by operation `index`.
    pub fn uuid(&self, index: usize) -> Option<Uuid> {
        match self.results.get(index)?.get("uuid")?.as_array()?.as_slice() {
            [_, Value::String(s)] => Uuid::parse_str(s).ok(),
            _ => None,
        }
    }

    /// Rows updated, mutated or deleted by operation `index`.
    pub fn count(&self, index: usize) -> Option<u64> {
        self.results.get(index)?.get("count")?.as_u64()
    }

    /// Rows selected by operation `index`, decoded with the table's schema. Select `_uuid` (or
    /// every column) to have it filled in; otherwise it is nil.
    pub fn rows(&self, index: usize, table: &TableSchema) -> Result<Vec<Row>> {
        let rows = self
            .results
            .get(index)
            .and_then(|r| r.get("rows"))
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Protocol(format!("operation {index} returned no rows")))?;
        rows.iter()
            .map(|r| Row::from_json(row_uuid(r).unwrap_or_else(Uuid::nil), r, table))
            .collect()
    }
}

impl crate::Connection {
    /// Runs a transaction.
    pub async fn transact(&self, transaction: &Transaction) -> Result<TransactionResult> {
        let reply = self.call("transact", transaction.to_params()).await?;
        TransactionResult::from_reply(reply, transaction.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_encode_as_rfc7047() {
        let mut t = Transaction::new("OVN_Northbound");
        let (_, ls) = t.insert_named("Logical_Switch", "ls", [("name", Datum::atom("sw"))]);
        t.mutate(
            "NB_Global",
            &[],
            &[Mutation::insert("nb_cfg", Datum::atom(1i64))],
        );
        t.delete("Logical_Switch", &[Condition::eq("name", "old")]);
        assert_eq!(
            t.to_params(),
            json!(["OVN_Northbound",
                {"op": "insert", "table": "Logical_Switch", "row": {"name": "sw"}, "uuid-name": "ls"},
                {"op": "mutate", "table": "NB_Global", "where": [], "mutations": [["nb_cfg", "insert", 1]]},
                {"op": "delete", "table": "Logical_Switch", "where": [["name", "==", "old"]]}])
        );
        assert_eq!(ls.to_json(), json!(["named-uuid", "ls"]));
    }

    #[test]
    fn failed_operation_and_failed_commit_are_errors() {
        let reply = json!([{"uuid": ["uuid", "0b6b5b2b-7d55-4d7d-8e3a-2b5c3d4e5f60"]},
                           {"error": "constraint violation", "details": "duplicate name"}]);
        match TransactionResult::from_reply(reply, 2) {
            Err(Error::Transaction {
                index,
                error,
                details,
            }) => {
                assert_eq!(index, 1);
                assert_eq!(error, "constraint violation");
                assert_eq!(details.as_deref(), Some("duplicate name"));
            }
            other => panic!("expected a transaction error, got {other:?}"),
        }
        let commit_failed = json!([{}, {"error": "referential integrity violation"}]);
        assert!(matches!(
            TransactionResult::from_reply(commit_failed, 1),
            Err(Error::Transaction { index: 1, .. })
        ));
    }
}
