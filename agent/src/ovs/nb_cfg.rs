//! What ovn-controller reports it has installed: `Bridge br-int external_ids:ovn-nb-cfg`, the
//! NB configuration generation the fast path's invalidation follows.

use ovsdb::Client;
use ovsdb::models::open_vswitch::Bridge;

use super::by_name;

/// The integration bridge whose external_ids carry ovn-controller's progress.
pub const INTEGRATION_BRIDGE: &str = "br-int";

/// The `ovn-nb-cfg` ovn-controller last reported on br-int, from the client's cache.
pub fn installed_nb_cfg(client: &Client) -> Option<i64> {
    client.read(|cache| {
        by_name::<Bridge>(cache, INTEGRATION_BRIDGE)?
            .external_ids
            .get("ovn-nb-cfg")?
            .parse()
            .ok()
    })
}
