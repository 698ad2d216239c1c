//! Services in the datapath: the VIPs [`api::service`] derives from each Service and its
//! EndpointSlices, programmed into the service maps (VIP, backends, Maglev tables) by
//! [`ServiceSync`]; [`run`] keeps them in step with the API. TCP and UDP only: SCTP VIPs are
//! left to OVN's load balancers.

pub mod maglev;
mod sync;
mod watch;

pub use sync::{ProgrammedVip, ServiceSync};
pub use watch::run;
