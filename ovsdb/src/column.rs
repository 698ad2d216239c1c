//! Typed writes, as libovsdb names them through its models: every column of a generated model
//! is a constant `Model::COLUMN` of type [`Column<Model, T>`], and assignments, mutations and
//! conditions are made from those, never from column-name strings. A misspelt column, a value
//! of the wrong type, or a column of another table is a compile error:
//!
//! ```
//! use ovsdb::models::ovn_northbound::{LogicalSwitch, LogicalSwitchPort};
//! use ovsdb::{Atom, Condition, Transaction, Uuid};
//!
//! let mut t = Transaction::new("OVN_Northbound");
//! let port = t.insert_model_with(
//!     "p1",
//!     &LogicalSwitchPort {
//!         name: "a.default".into(),
//!         addresses: vec!["0a:58:0a:10:00:02 10.16.0.2".into()],
//!         ..LogicalSwitchPort::default()
//!     },
//!     [],
//! );
//! t.mutate_where(
//!     &[Condition::uuid(Uuid::nil())],
//!     [LogicalSwitch::PORTS.insert([port])],
//! );
//! t.update_where(
//!     &[LogicalSwitchPort::NAME.eq("a.default")],
//!     [LogicalSwitchPort::PORT_SECURITY.to(vec![])],
//! );
//! ```
//!
//! A misspelt column does not compile:
//!
//! ```compile_fail
//! use ovsdb::models::ovn_northbound::LogicalSwitchPort;
//! let mut t = ovsdb::Transaction::new("OVN_Northbound");
//! t.update_where(&[], [LogicalSwitchPort::ADRESSES.to(vec![])]);
//! ```
//!
//! nor does a column of another table, or a value of the wrong type:
//!
//! ```compile_fail
//! use ovsdb::models::ovn_northbound::{LogicalRouter, LogicalSwitch};
//! let mut t = ovsdb::Transaction::new("OVN_Northbound");
//! t.mutate_where::<LogicalSwitch>(&[], [LogicalRouter::PORTS.insert([ovsdb::Uuid::nil()])]);
//! ```
//!
//! ```compile_fail
//! use ovsdb::models::ovn_northbound::LogicalSwitchPort;
//! let mut t = ovsdb::Transaction::new("OVN_Northbound");
//! t.update_where(&[], [LogicalSwitchPort::ADDRESSES.to("not a set".to_owned())]);
//! ```

use std::collections::BTreeMap;
use std::marker::PhantomData;

use uuid::Uuid;

use crate::datum::{Atom, Datum};
use crate::model::{AtomValue, Model};
use crate::transact::{Condition, Function, Mutation, Mutator, Transaction};

/// Column `name` of table `M`, holding values of `T` (the model field's type).
pub struct Column<M, T> {
    name: &'static str,
    _marker: PhantomData<fn() -> (M, T)>,
}

impl<M, T> Clone for Column<M, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M, T> Copy for Column<M, T> {}

impl<M, T> std::fmt::Debug for Column<M, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl<M, T> Column<M, T> {
    /// Only the generated models make columns.
    #[doc(hidden)]
    pub const fn new(name: &'static str) -> Self {
        Column {
            name,
            _marker: PhantomData,
        }
    }

    pub const fn name(self) -> &'static str {
        self.name
    }
}

/// The Rust type of a whole column: a scalar, `Option<T>`, `Vec<T>` (a set) or `BTreeMap`.
pub trait ColumnValue {
    fn to_datum(&self) -> Datum;
}

impl<T: AtomValue> ColumnValue for T {
    fn to_datum(&self) -> Datum {
        Datum::atom(self.to_atom())
    }
}

impl<T: AtomValue> ColumnValue for Option<T> {
    fn to_datum(&self) -> Datum {
        Datum::set(self.iter().map(AtomValue::to_atom))
    }
}

impl<T: AtomValue> ColumnValue for Vec<T> {
    fn to_datum(&self) -> Datum {
        Datum::set(self.iter().map(AtomValue::to_atom))
    }
}

impl<K: AtomValue, V: AtomValue> ColumnValue for BTreeMap<K, V> {
    fn to_datum(&self) -> Datum {
        Datum::map(self.iter().map(|(k, v)| (k.to_atom(), v.to_atom())))
    }
}

/// A value that can stand for one element of type `T`: a `T`, a `&str` for a string, and a
/// row reference [`Atom`] (a UUID, or a row inserted earlier in the same transaction) for a
/// reference column.
pub trait Element<T> {
    fn into_atom(self) -> Atom;
}

impl<T: AtomValue> Element<T> for T {
    fn into_atom(self) -> Atom {
        self.to_atom()
    }
}

impl Element<String> for &str {
    fn into_atom(self) -> Atom {
        Atom::String(self.into())
    }
}

impl Element<Uuid> for Atom {
    /// A reference: [`Atom::Uuid`] or [`Atom::NamedUuid`].
    fn into_atom(self) -> Atom {
        self
    }
}

impl Element<Uuid> for &Atom {
    fn into_atom(self) -> Atom {
        self.clone()
    }
}

/// `column := value` in an insert or an update of a row of `M`.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment<M> {
    column: &'static str,
    value: Datum,
    _marker: PhantomData<fn() -> M>,
}

impl<M> Assignment<M> {
    fn new(column: &'static str, value: Datum) -> Self {
        Assignment {
            column,
            value,
            _marker: PhantomData,
        }
    }
}

/// A mutation of a row of `M`.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedMutation<M> {
    mutation: Mutation,
    _marker: PhantomData<fn() -> M>,
}

impl<M> TypedMutation<M> {
    fn new(column: &'static str, mutator: Mutator, value: Datum) -> Self {
        TypedMutation {
            mutation: Mutation::new(column, mutator, value),
            _marker: PhantomData,
        }
    }
}

impl<M, T: ColumnValue> Column<M, T> {
    /// `column := value`.
    pub fn to(self, value: T) -> Assignment<M> {
        Assignment::new(self.name, value.to_datum())
    }
}

impl<M, T: AtomValue> Column<M, T> {
    /// `column == value` (a scalar column).
    pub fn eq(self, value: impl Element<T>) -> Condition {
        Condition::new(self.name, Function::Eq, Datum::atom(value.into_atom()))
    }
}

impl<M, T: AtomValue> Column<M, Vec<T>> {
    /// `column := {elements}`: a set, references to rows of this transaction allowed.
    pub fn to_elements<E: Element<T>>(
        self,
        elements: impl IntoIterator<Item = E>,
    ) -> Assignment<M> {
        Assignment::new(
            self.name,
            Datum::set(elements.into_iter().map(E::into_atom)),
        )
    }

    /// Adds elements to the set.
    pub fn insert<E: Element<T>>(self, elements: impl IntoIterator<Item = E>) -> TypedMutation<M> {
        TypedMutation::new(
            self.name,
            Mutator::Insert,
            Datum::set(elements.into_iter().map(E::into_atom)),
        )
    }

    /// Removes elements from the set.
    pub fn delete<E: Element<T>>(self, elements: impl IntoIterator<Item = E>) -> TypedMutation<M> {
        TypedMutation::new(
            self.name,
            Mutator::Delete,
            Datum::set(elements.into_iter().map(E::into_atom)),
        )
    }
}

impl<M, K: AtomValue, V: AtomValue> Column<M, BTreeMap<K, V>> {
    /// Adds pairs whose keys are absent (to replace a key, delete it first in the same
    /// mutation list).
    pub fn insert<EK: Element<K>, EV: Element<V>>(
        self,
        pairs: impl IntoIterator<Item = (EK, EV)>,
    ) -> TypedMutation<M> {
        TypedMutation::new(
            self.name,
            Mutator::Insert,
            Datum::map(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.into_atom(), v.into_atom())),
            ),
        )
    }

    /// Removes the keys, whatever their values.
    pub fn delete_keys<EK: Element<K>>(
        self,
        keys: impl IntoIterator<Item = EK>,
    ) -> TypedMutation<M> {
        TypedMutation::new(
            self.name,
            Mutator::Delete,
            Datum::set(keys.into_iter().map(EK::into_atom)),
        )
    }
}

impl<M> Column<M, i64> {
    /// `column += n`.
    pub fn increment_by(self, n: i64) -> TypedMutation<M> {
        TypedMutation::new(self.name, Mutator::Add, Datum::atom(n))
    }
}

impl Condition {
    /// The row a reference names: a UUID, or a row inserted earlier in this transaction.
    pub fn row(reference: &Atom) -> Condition {
        Condition::new("_uuid", Function::Eq, Datum::atom(reference.clone()))
    }
}

/// Whether a datum is OVSDB's default for an optional, set or map column (left out of an
/// insert: the server fills it in).
fn is_empty_collection(datum: &Datum) -> bool {
    datum.as_set().is_some_and(|s| s.is_empty()) || datum.as_map().is_some_and(|m| m.is_empty())
}

impl Transaction {
    /// Inserts `row`, with `also` overriding its columns (references to rows inserted earlier
    /// in this transaction, which a model's `Uuid` fields cannot hold). Returns the named
    /// reference later operations use. Empty sets and maps are left to the server's default.
    pub fn insert_model_with<M: Model>(
        &mut self,
        uuid_name: &str,
        row: &M,
        also: impl IntoIterator<Item = Assignment<M>>,
    ) -> Atom {
        let mut columns: BTreeMap<&'static str, Datum> = row
            .to_columns()
            .into_iter()
            .filter(|(_, d)| !is_empty_collection(d))
            .collect();
        for a in also {
            columns.insert(a.column, a.value);
        }
        self.insert_named(M::TABLE, uuid_name, columns).1
    }

    /// Updates the named columns of the rows of `M` matching `conditions`.
    pub fn update_where<M: Model>(
        &mut self,
        conditions: &[Condition],
        assignments: impl IntoIterator<Item = Assignment<M>>,
    ) -> usize {
        self.update(
            M::TABLE,
            conditions,
            assignments.into_iter().map(|a| (a.column, a.value)),
        )
    }

    /// Mutates the rows of `M` matching `conditions`.
    pub fn mutate_where<M: Model>(
        &mut self,
        conditions: &[Condition],
        mutations: impl IntoIterator<Item = TypedMutation<M>>,
    ) -> usize {
        let mutations: Vec<Mutation> = mutations.into_iter().map(|m| m.mutation).collect();
        self.mutate(M::TABLE, conditions, &mutations)
    }

    /// Deletes the rows of `M` matching `conditions`.
    pub fn delete_where<M: Model>(&mut self, conditions: &[Condition]) -> usize {
        self.delete(M::TABLE, conditions)
    }
}
