//! Typed models generated from the schemas in `ovsdb/schemas/` (copies of the ones Debian's
//! OVN 23.03 and Open vSwitch 3.1 install). Regenerate with `cargo xtask gen-ovsdb-models`.

pub mod open_vswitch;
pub mod ovn_northbound;
