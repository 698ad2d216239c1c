//! Services in the datapath: the VIPs [`api::service`] derives from each Service and its
//! EndpointSlices, programmed into the service maps (VIP, backends, Maglev tables) by
//! [`ServiceSync`]; [`run`] keeps them in step with the API. TCP and UDP only: SCTP VIPs are
//! left to OVN's load balancers.

pub mod maglev;
mod sync;
mod watch;

pub use sync::{ProgrammedVip, ServiceScope, ServiceSummary, ServiceSync};
pub use watch::{BackgroundPriority, run};

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use api::service::Vip;

/// `services` made-up TCP Services (`default/svc-N`, VIPs from 10.96.0.1, port 80) of
/// `endpoints` backends each (distinct addresses from 10.16.0.0, port 8080): the load of the
/// scale test and of the benchmark's programming-time measurement.
pub fn synthetic_vips(services: usize, endpoints: usize) -> Vec<(String, Vip)> {
    (0..services)
        .map(|s| {
            let backends = (0..endpoints)
                .map(|e| {
                    let n = s * endpoints + e;
                    let ip = Ipv4Addr::new(10, 16 + (n >> 16) as u8, (n >> 8) as u8, n as u8);
                    SocketAddr::new(IpAddr::V4(ip), 8080)
                })
                .collect();
            let vip = Ipv4Addr::new(10, 96, (s / 250) as u8, (s % 250) as u8 + 1);
            let vip = Vip {
                ip: IpAddr::V4(vip),
                port: 80,
                proto: 6,
                affinity_timeout_s: None,
                backends,
            };
            (format!("default/svc-{s}"), vip)
        })
        .collect()
}
