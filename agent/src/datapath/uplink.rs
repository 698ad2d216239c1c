//! The receive side of the cross-node fast path on the node's uplink NIC: the programs, and
//! the split uplink's pairing in [`datapath_common::UPLINKS_MAP`].

use aya::maps::HashMap;
use datapath_common::{UPLINKS_MAP, programs};

use super::pods::{attach_program, ifindex};
use super::{Datapath, DatapathError, MapSourceMut, classifier, map_error};

impl Datapath {
    /// Serves what arrives on `nic` (looked up in the calling thread's namespace) with the
    /// receive fast path. `pair`: the split uplink's end that OVS's port is paired with
    /// (slow-path packets go out of it, OVS's packets come in through it and leave through
    /// `nic`); None when OVS does not read `nic` (slow-path packets go up the node's stack).
    /// The pairing is written first and the pair's program attached before the NIC's, so
    /// nothing is handed to a pair that cannot answer. Links are pinned: the uplink keeps
    /// working while no agent runs.
    pub fn attach_uplink(&mut self, nic: &str, pair: Option<&str>) -> Result<(), DatapathError> {
        let nic_index = ifindex(nic)?;
        let pair_index = pair.map(ifindex).transpose()?;
        self.pair_uplink(nic_index, pair_index)?;
        let pin_dir = self.pin_dir.clone();
        if let Some(pair) = pair {
            let prog = classifier(&mut self.ebpf, programs::UPLINK_RETURN)?;
            attach_program(prog, pin_dir.as_deref(), programs::UPLINK_RETURN, pair)?;
        }
        let prog = classifier(&mut self.ebpf, programs::UPLINK_INGRESS)?;
        attach_program(prog, pin_dir.as_deref(), programs::UPLINK_INGRESS, nic)?;
        Ok(())
    }

    /// Writes the pairing of a split uplink by interface index ([`Self::attach_uplink`] does
    /// this; tests driving the programs with BPF_PROG_TEST_RUN use it directly).
    pub fn pair_uplink(&mut self, nic: u32, pair: Option<u32>) -> Result<(), DatapathError> {
        let mut uplinks: HashMap<_, u32, u32> = self.map_mut_typed(UPLINKS_MAP)?;
        if let Some(pair) = pair {
            uplinks
                .insert(pair, nic, 0)
                .map_err(|e| map_error(UPLINKS_MAP, e))?;
        }
        uplinks
            .insert(nic, pair.unwrap_or(0), 0)
            .map_err(|e| map_error(UPLINKS_MAP, e))
    }

    /// Stops the receive fast path on `nic` (when OVS could not be swapped onto the pair and
    /// still reads the NIC itself): its program then passes every packet on, counted.
    pub fn unpair_uplink(&mut self, nic: &str) -> Result<(), DatapathError> {
        let nic_index = ifindex(nic)?;
        let mut uplinks: HashMap<_, u32, u32> = self.map_mut_typed(UPLINKS_MAP)?;
        let _ = uplinks.remove(&nic_index);
        Ok(())
    }
}
