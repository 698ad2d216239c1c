//! OVSDB values (RFC 7047 §5.1): atoms, and data that are sets of atoms or maps between atoms,
//! with their JSON forms. Decoding needs the column type: `1` is an integer in an integer
//! column and a real in a real column, and a one-element set is sent as its bare element.
//!
//! The representation is compact because the monitor cache holds every row of a database:
//! one atom is stored inline, larger sets and maps as sorted boxed slices, strings as
//! `Box<str>`.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::schema::{AtomicType, BaseType, ColumnType};

/// One atomic value.
#[derive(Debug, Clone)]
pub enum Atom {
    Integer(i64),
    Real(f64),
    Boolean(bool),
    String(Box<str>),
    Uuid(Uuid),
    /// A row inserted earlier in the same transaction, by its `uuid-name`.
    NamedUuid(Box<str>),
}

impl Atom {
    fn rank(&self) -> u8 {
        match self {
            Atom::Integer(_) => 0,
            Atom::Real(_) => 1,
            Atom::Boolean(_) => 2,
            Atom::String(_) => 3,
            Atom::Uuid(_) => 4,
            Atom::NamedUuid(_) => 5,
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Atom::Integer(i) => json!(i),
            Atom::Real(r) => json!(r),
            Atom::Boolean(b) => json!(b),
            Atom::String(s) => json!(s),
            Atom::Uuid(u) => json!(["uuid", u.to_string()]),
            Atom::NamedUuid(n) => json!(["named-uuid", n]),
        }
    }

    pub fn from_json(value: &Value, ty: &BaseType) -> Result<Atom, String> {
        let bad = || format!("{value} is not a valid {:?}", ty.atomic);
        Ok(match ty.atomic {
            AtomicType::Integer => Atom::Integer(value.as_i64().ok_or_else(bad)?),
            AtomicType::Real => Atom::Real(value.as_f64().ok_or_else(bad)?),
            AtomicType::Boolean => Atom::Boolean(value.as_bool().ok_or_else(bad)?),
            AtomicType::String => Atom::String(value.as_str().ok_or_else(bad)?.into()),
            AtomicType::Uuid => match value.as_array().map(Vec::as_slice) {
                Some([tag, Value::String(s)]) if tag == "uuid" => {
                    Atom::Uuid(Uuid::parse_str(s).map_err(|_| bad())?)
                }
                Some([tag, Value::String(s)]) if tag == "named-uuid" => {
                    Atom::NamedUuid(s.as_str().into())
                }
                _ => return Err(bad()),
            },
        })
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Atom::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Atom::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_uuid(&self) -> Option<Uuid> {
        match self {
            Atom::Uuid(u) => Some(*u),
            _ => None,
        }
    }
}

// Total order (reals by `total_cmp`) so atoms can be sorted, deduplicated and be map keys.
impl Ord for Atom {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Atom::Integer(a), Atom::Integer(b)) => a.cmp(b),
            (Atom::Real(a), Atom::Real(b)) => a.total_cmp(b),
            (Atom::Boolean(a), Atom::Boolean(b)) => a.cmp(b),
            (Atom::String(a), Atom::String(b)) => a.cmp(b),
            (Atom::Uuid(a), Atom::Uuid(b)) => a.cmp(b),
            (Atom::NamedUuid(a), Atom::NamedUuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Atom {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Atom {}

impl Hash for Atom {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Atom::Integer(i) => i.hash(state),
            Atom::Real(r) => r.to_bits().hash(state),
            Atom::Boolean(b) => b.hash(state),
            Atom::String(s) | Atom::NamedUuid(s) => s.hash(state),
            Atom::Uuid(u) => u.hash(state),
        }
    }
}

impl From<&str> for Atom {
    fn from(s: &str) -> Atom {
        Atom::String(s.into())
    }
}

impl From<String> for Atom {
    fn from(s: String) -> Atom {
        Atom::String(s.into_boxed_str())
    }
}

impl From<i64> for Atom {
    fn from(i: i64) -> Atom {
        Atom::Integer(i)
    }
}

impl From<bool> for Atom {
    fn from(b: bool) -> Atom {
        Atom::Boolean(b)
    }
}

impl From<f64> for Atom {
    fn from(r: f64) -> Atom {
        Atom::Real(r)
    }
}

impl From<Uuid> for Atom {
    fn from(u: Uuid) -> Atom {
        Atom::Uuid(u)
    }
}

/// The value of a column: a set of atoms (a scalar is a set of one, an optional value a set of
/// zero or one) or a map. Sets are sorted without duplicates, maps sorted by unique key, so
/// equal values are equal structurally.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Datum(Repr);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Repr {
    /// A set of exactly one atom (no allocation beyond the atom's own).
    One(Atom),
    /// A set of zero or at least two atoms.
    Set(Box<[Atom]>),
    Map(Box<[(Atom, Atom)]>),
}

impl Datum {
    pub fn empty_set() -> Datum {
        Datum(Repr::Set(Box::new([])))
    }

    pub fn empty_map() -> Datum {
        Datum(Repr::Map(Box::new([])))
    }

    /// A scalar (a set of exactly one atom).
    pub fn atom(atom: impl Into<Atom>) -> Datum {
        Datum(Repr::One(atom.into()))
    }

    pub fn set<A: Into<Atom>>(atoms: impl IntoIterator<Item = A>) -> Datum {
        Datum::from_atoms(atoms.into_iter().map(Into::into).collect())
    }

    fn from_atoms(mut atoms: Vec<Atom>) -> Datum {
        atoms.sort();
        atoms.dedup();
        if atoms.len() == 1 {
            return Datum(Repr::One(atoms.remove(0)));
        }
        Datum(Repr::Set(atoms.into_boxed_slice()))
    }

    pub fn map<K: Into<Atom>, V: Into<Atom>>(pairs: impl IntoIterator<Item = (K, V)>) -> Datum {
        Datum::from_pairs(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    fn from_pairs(mut pairs: Vec<(Atom, Atom)>) -> Datum {
        // Stable sort, then keep the last value of a repeated key (as a map insert would).
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Atom, Atom)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match out.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => out.push(pair),
            }
        }
        Datum(Repr::Map(out.into_boxed_slice()))
    }

    pub fn is_map(&self) -> bool {
        matches!(self.0, Repr::Map(_))
    }

    /// Elements (of a set) or pairs (of a map).
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::One(_) => 1,
            Repr::Set(s) => s.len(),
            Repr::Map(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The single atom of a scalar or of a one-element set.
    pub fn as_atom(&self) -> Option<&Atom> {
        match &self.0 {
            Repr::One(a) => Some(a),
            _ => None,
        }
    }

    /// The elements of a set, sorted.
    pub fn as_set(&self) -> Option<&[Atom]> {
        match &self.0 {
            Repr::One(a) => Some(std::slice::from_ref(a)),
            Repr::Set(s) => Some(s),
            Repr::Map(_) => None,
        }
    }

    /// The pairs of a map, sorted by key.
    pub fn as_map(&self) -> Option<&[(Atom, Atom)]> {
        match &self.0 {
            Repr::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value of `key` in a map.
    pub fn map_get(&self, key: &Atom) -> Option<&Atom> {
        let map = self.as_map()?;
        map.binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| &map[i].1)
    }

    pub fn to_json(&self) -> Value {
        match &self.0 {
            Repr::One(a) => a.to_json(),
            Repr::Set(s) => json!(["set", s.iter().map(Atom::to_json).collect::<Vec<_>>()]),
            Repr::Map(m) => json!([
                "map",
                m.iter()
                    .map(|(k, v)| json!([k.to_json(), v.to_json()]))
                    .collect::<Vec<_>>()
            ]),
        }
    }

    pub fn from_json(value: &Value, ty: &ColumnType) -> Result<Datum, String> {
        if let Some(value_type) = &ty.value {
            let pairs = match value.as_array().map(Vec::as_slice) {
                Some([tag, Value::Array(pairs)]) if tag == "map" => pairs,
                _ => return Err(format!("{value} is not a map")),
            };
            let mut out = Vec::with_capacity(pairs.len());
            for pair in pairs {
                let Some([k, v]) = pair.as_array().map(Vec::as_slice) else {
                    return Err(format!("{pair} is not a [key, value] pair"));
                };
                out.push((
                    Atom::from_json(k, &ty.key)?,
                    Atom::from_json(v, value_type)?,
                ));
            }
            return Ok(Datum::from_pairs(out));
        }
        match value.as_array().map(Vec::as_slice) {
            Some([tag, Value::Array(atoms)]) if tag == "set" => atoms
                .iter()
                .map(|a| Atom::from_json(a, &ty.key))
                .collect::<Result<Vec<_>, _>>()
                .map(Datum::from_atoms),
            _ => Ok(Datum::atom(Atom::from_json(value, &ty.key)?)),
        }
    }

    /// Applies an `update2` "modify" diff (ovsdb-server(7)): a scalar is replaced; a set
    /// toggles each element of the diff; a map adds absent keys, removes keys whose value is
    /// the same, and replaces keys whose value differs.
    pub fn apply_diff(&mut self, diff: Datum, ty: &ColumnType) {
        if ty.is_scalar() {
            *self = diff;
            return;
        }
        match (self.as_set(), diff.as_set(), self.as_map(), diff.as_map()) {
            (Some(current), Some(toggles), _, _) => {
                let mut atoms: Vec<Atom> = current.to_vec();
                for atom in toggles {
                    match atoms.binary_search(atom) {
                        Ok(i) => {
                            atoms.remove(i);
                        }
                        Err(i) => atoms.insert(i, atom.clone()),
                    }
                }
                *self = Datum::from_atoms(atoms);
            }
            (_, _, Some(current), Some(changes)) => {
                let mut pairs: Vec<(Atom, Atom)> = current.to_vec();
                for (key, value) in changes {
                    match pairs.binary_search_by(|(k, _)| k.cmp(key)) {
                        Ok(i) if pairs[i].1 == *value => {
                            pairs.remove(i);
                        }
                        Ok(i) => pairs[i].1 = value.clone(),
                        Err(i) => pairs.insert(i, (key.clone(), value.clone())),
                    }
                }
                *self = Datum(Repr::Map(pairs.into_boxed_slice()));
            }
            _ => *self = diff,
        }
    }

    /// The value a column holds in a row that does not set it (RFC 7047 §5.1).
    pub fn default_for(ty: &ColumnType) -> Datum {
        if ty.is_map() {
            return Datum::empty_map();
        }
        if ty.min == 0 {
            return Datum::empty_set();
        }
        Datum::atom(match ty.key.atomic {
            AtomicType::Integer => Atom::Integer(0),
            AtomicType::Real => Atom::Real(0.0),
            AtomicType::Boolean => Atom::Boolean(false),
            AtomicType::String => Atom::String("".into()),
            AtomicType::Uuid => Atom::Uuid(Uuid::nil()),
        })
    }

    /// Whether this is the column's default value (the cache does not store those).
    pub fn is_default_for(&self, ty: &ColumnType) -> bool {
        if ty.is_map() || ty.min == 0 {
            return self.is_empty();
        }
        *self == Datum::default_for(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(atomic: AtomicType) -> BaseType {
        BaseType {
            atomic,
            enum_values: None,
            ref_table: None,
            ref_strong: true,
        }
    }

    fn ty(key: AtomicType, value: Option<AtomicType>, min: u64, max: Option<u64>) -> ColumnType {
        ColumnType {
            key: base(key),
            value: value.map(base),
            min,
            max,
        }
    }

    #[test]
    fn json_round_trips_for_every_kind() {
        let u = Uuid::new_v4();
        let cases = [
            (Datum::atom(7i64), ty(AtomicType::Integer, None, 1, Some(1))),
            (Datum::atom(1.5), ty(AtomicType::Real, None, 1, Some(1))),
            (Datum::atom(true), ty(AtomicType::Boolean, None, 1, Some(1))),
            (Datum::atom("x"), ty(AtomicType::String, None, 1, Some(1))),
            (Datum::atom(u), ty(AtomicType::Uuid, None, 1, Some(1))),
            (Datum::empty_set(), ty(AtomicType::String, None, 0, Some(1))),
            (
                Datum::set(["a", "b"]),
                ty(AtomicType::String, None, 0, None),
            ),
            (
                Datum::map([("k", "v"), ("a", "b")]),
                ty(AtomicType::String, Some(AtomicType::String), 0, None),
            ),
            (
                Datum::map([(1i64, u)]),
                ty(AtomicType::Integer, Some(AtomicType::Uuid), 0, None),
            ),
        ];
        for (datum, ty) in cases {
            assert_eq!(Datum::from_json(&datum.to_json(), &ty).unwrap(), datum);
        }
    }

    #[test]
    fn integer_json_in_a_real_column_is_a_real() {
        let d = Datum::from_json(&json!(2), &ty(AtomicType::Real, None, 1, Some(1))).unwrap();
        assert_eq!(d, Datum::atom(2.0));
    }

    #[test]
    fn diffs_toggle_sets_and_update_maps() {
        let set_ty = ty(AtomicType::String, None, 0, None);
        let mut set = Datum::set(["a", "b"]);
        set.apply_diff(Datum::set(["b", "c"]), &set_ty);
        assert_eq!(set, Datum::set(["a", "c"]));

        let map_ty = ty(AtomicType::String, Some(AtomicType::String), 0, None);
        let mut map = Datum::map([("keep", "1"), ("drop", "2"), ("change", "3")]);
        map.apply_diff(
            Datum::map([("drop", "2"), ("change", "4"), ("new", "5")]),
            &map_ty,
        );
        assert_eq!(
            map,
            Datum::map([("keep", "1"), ("change", "4"), ("new", "5")])
        );

        let optional = ty(AtomicType::String, None, 0, Some(1));
        let mut value = Datum::atom("old");
        value.apply_diff(Datum::set(["old", "new"]), &optional);
        assert_eq!(value, Datum::atom("new"));
    }

    #[test]
    fn equal_values_are_equal_however_they_were_built() {
        assert_eq!(Datum::set(["b", "a", "b"]), Datum::set(["a", "b"]));
        assert_eq!(Datum::set(["a"]), Datum::atom("a"));
        assert_eq!(
            Datum::map([("k", "old"), ("a", "1"), ("k", "new")]),
            Datum::map([("a", "1"), ("k", "new")])
        );
        assert_eq!(
            Datum::map([("a", "1")]).map_get(&Atom::from("a")),
            Some(&Atom::from("1"))
        );
    }

    #[test]
    fn defaults_are_recognised() {
        assert!(Datum::empty_set().is_default_for(&ty(AtomicType::String, None, 0, None)));
        assert!(Datum::atom(0i64).is_default_for(&ty(AtomicType::Integer, None, 1, Some(1))));
        assert!(!Datum::atom(1i64).is_default_for(&ty(AtomicType::Integer, None, 1, Some(1))));
    }

    #[test]
    fn malformed_values_are_errors() {
        let map_ty = ty(AtomicType::String, Some(AtomicType::String), 0, None);
        assert!(Datum::from_json(&json!(["map", [["k"]]]), &map_ty).is_err());
        assert!(Datum::from_json(&json!("x"), &map_ty).is_err());
        let uuid_ty = ty(AtomicType::Uuid, None, 1, Some(1));
        assert!(Datum::from_json(&json!(["uuid", "not-a-uuid"]), &uuid_ty).is_err());
        let int_ty = ty(AtomicType::Integer, None, 1, Some(1));
        assert!(Datum::from_json(&json!("1"), &int_ty).is_err());
    }
}
