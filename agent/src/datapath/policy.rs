//! Policy generations and runtime settings. Bumping the generation turns every learned flow
//! into a miss at once (O(1)), so the next packet of each flow is judged by OVS again.

use aya::maps::Array;
use datapath_common::{CONFIG_MAP, DatapathConfig, GENERATION_MAP};

use super::{Datapath, DatapathError, ReadMaps, map_error};

impl Datapath {
    /// Moves to the next generation; returns it.
    pub fn bump_generation(&mut self) -> Result<u64, DatapathError> {
        let next = self.generation()?.wrapping_add(1);
        let mut array: Array<_, u64> = self.map_mut_typed(GENERATION_MAP)?;
        array
            .set(0, next, 0)
            .map_err(|e| map_error(GENERATION_MAP, e))?;
        Ok(next)
    }

    pub fn set_config(&mut self, config: &DatapathConfig) -> Result<(), DatapathError> {
        let mut array: Array<_, DatapathConfig> = self.map_mut_typed(CONFIG_MAP)?;
        array
            .set(0, *config, 0)
            .map_err(|e| map_error(CONFIG_MAP, e))
    }
}
