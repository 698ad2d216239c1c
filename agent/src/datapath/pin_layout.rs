//! The pinned layout under `--pin-dir`, versioned, and how a starting agent takes over what an
//! earlier agent (perhaps an older release) pinned there.
//!
//! ```text
//! <pin-dir>/layout-v<N>     an empty directory: the layout's version (bpffs holds no files)
//! <pin-dir>/<map name>      every map of PINNED_MAPS
//! <pin-dir>/links/<if>.<program>   the TCX links
//! ```
//!
//! Version 0 is the layout without a marker (kovn 0.1.0 before versioning): the same maps and
//! links. Before the object is loaded (which adopts every pinned map by name, as aya does,
//! without looking at it), each pinned map is compared with the object's definition of it:
//! a map whose type, key size, value size, entry count or flags differ is never reused; its
//! pin is removed, so the load creates it anew, empty. Maps whose meaning changed without a
//! change of size are listed per layout version in [`CHANGED_IN`] and rebuilt when coming
//! from an older layout. Nothing is dropped meanwhile: the pinned links keep the old programs
//! (with their old maps) running until the new programs replace them in the same links, and
//! a rebuilt map only means flows are learned again from what OVS delivers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aya::maps::MapInfo;

/// The layout this agent writes.
pub const LAYOUT_VERSION: u32 = 2;

/// Maps whose contents an agent of layout version N reads differently from an agent of an
/// earlier version although their sizes match: (N, maps rebuilt when coming from below N).
pub const CHANGED_IN: &[(u32, &[&str])] = &[];

const MARKER_PREFIX: &str = "layout-v";

/// How a map is made, as the kernel reports it and as the object defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapShape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl std::fmt::Display for MapShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "type {} key {} B value {} B entries {} flags {:#x}",
            self.map_type, self.key_size, self.value_size, self.max_entries, self.flags
        )
    }
}

/// What the takeover did, for the log and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Takeover {
    /// The layout found: None for an empty pin directory.
    pub found_version: Option<u32>,
    /// Maps reused as they were.
    pub adopted: Vec<String>,
    /// Maps whose pins were removed, with why.
    pub rebuilt: Vec<(String, String)>,
}

/// The layout version a pin directory holds: None when it holds no maps and no marker.
pub fn found_version(dir: &Path, maps: &[&str]) -> Option<u32> {
    let marked = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix(MARKER_PREFIX)?
                .parse::<u32>()
                .ok()
        })
        .max();
    marked.or_else(|| maps.iter().any(|m| dir.join(m).exists()).then_some(0))
}

/// The object's definitions of `maps`, with the agent's overrides of entry counts.
pub fn object_shapes(
    object: &[u8],
    maps: &[&str],
    max_entries: &BTreeMap<&str, u32>,
) -> Result<BTreeMap<String, MapShape>, String> {
    let parsed = aya_obj::Object::parse(object).map_err(|e| format!("parsing the object: {e}"))?;
    let mut out = BTreeMap::new();
    for name in maps {
        let map = parsed
            .maps
            .get(*name)
            .ok_or_else(|| format!("the object defines no map {name}"))?;
        out.insert(
            (*name).to_owned(),
            MapShape {
                map_type: map.map_type(),
                key_size: map.key_size(),
                value_size: map.value_size(),
                max_entries: max_entries
                    .get(name)
                    .copied()
                    .unwrap_or_else(|| map.max_entries()),
                flags: map.map_flags(),
            },
        );
    }
    Ok(out)
}

/// The pinned map's shape, as the kernel reports it.
pub fn pinned_shape(path: &Path) -> Result<MapShape, String> {
    let info = MapInfo::from_pin(path).map_err(|e| e.to_string())?;
    Ok(MapShape {
        map_type: info.map_type().map_err(|e| e.to_string())? as u32,
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
        flags: info.map_flags(),
    })
}

/// Makes `dir` safe for the object to adopt: every pinned map either matches the object's
/// definition (and, coming from an older layout, has not changed meaning) or is unpinned so
/// the load creates it anew; then marks the directory with this agent's layout version.
pub fn take_over(
    dir: &Path,
    expected: &BTreeMap<String, MapShape>,
) -> Result<Takeover, std::io::Error> {
    let names: Vec<&str> = expected.keys().map(String::as_str).collect();
    let found = found_version(dir, &names);
    let mut takeover = Takeover {
        found_version: found,
        ..Takeover::default()
    };
    let changed: Vec<&str> = CHANGED_IN
        .iter()
        .filter(|(version, _)| found.is_some_and(|f| f < *version))
        .flat_map(|(_, maps)| maps.iter().copied())
        .collect();
    for (name, want) in expected {
        let pin = dir.join(name);
        if !pin.exists() {
            continue;
        }
        let why = match pinned_shape(&pin) {
            Err(e) => Some(format!("unreadable: {e}")),
            Ok(have) if have != *want => {
                Some(format!("pinned as {have}, this object wants {want}"))
            }
            Ok(_) if changed.contains(&name.as_str()) => Some(format!(
                "its contents changed meaning in layout v{LAYOUT_VERSION}"
            )),
            Ok(_) => None,
        };
        match why {
            None => takeover.adopted.push(name.clone()),
            Some(why) => {
                std::fs::remove_file(&pin)?;
                takeover.rebuilt.push((name.clone(), why));
            }
        }
    }
    mark(dir)?;
    Ok(takeover)
}

/// Leaves exactly one marker: this agent's version.
fn mark(dir: &Path) -> Result<(), std::io::Error> {
    std::fs::create_dir_all(dir)?;
    let own = marker(dir);
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(MARKER_PREFIX) && entry.path() != own {
            std::fs::remove_dir(entry.path())?;
        }
    }
    match std::fs::create_dir(&own) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// This agent's marker in `dir`.
pub fn marker(dir: &Path) -> PathBuf {
    dir.join(format!("{MARKER_PREFIX}{LAYOUT_VERSION}"))
}
