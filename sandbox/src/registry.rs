//! Sandbox identities on this machine: unique names so sandboxes run in parallel, and clean-up
//! of sandboxes whose owner died (a test killed half-way must not break the next run).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use crate::error::{Result, io_error};
use crate::netns;

/// Default root of every sandbox directory (override with `KOVN_SANDBOX_DIR`). Kept short:
/// unix socket paths live below it and must fit in 108 bytes.
pub const DEFAULT_ROOT: &str = "/tmp/kovn-sb";

/// Where sandboxes pin BPF objects; one directory per sandbox.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf/kovn-sandbox";

/// Directories of failed runs are kept for inspection this long.
const KEEP_FAILED: Duration = Duration::from_secs(24 * 3600);

pub fn root() -> PathBuf {
    std::env::var_os("KOVN_SANDBOX_DIR").map_or_else(|| PathBuf::from(DEFAULT_ROOT), PathBuf::from)
}

/// Prefix of every network namespace of sandbox `id`.
pub fn netns_prefix(id: &str) -> String {
    format!("ks{id}-")
}

/// A claimed sandbox identity and its directory.
#[derive(Debug)]
pub struct Registration {
    pub id: String,
    pub dir: PathBuf,
}

/// Claims a new id: the directory is created atomically, so two processes never share one.
pub fn register() -> Result<Registration> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let root = root();
    std::fs::create_dir_all(&root).map_err(io_error(&root))?;
    loop {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let seed = u64::from(std::process::id())
            .wrapping_mul(1_000_003)
            .wrapping_add(u64::from(COUNTER.fetch_add(1, Ordering::Relaxed)) * 7919)
            .wrapping_add(u64::from(nanos));
        let id = base36(seed % 36u64.pow(5), 5);
        let dir = root.join(&id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                let owner = dir.join("owner");
                std::fs::write(&owner, owner_stamp(std::process::id()).unwrap_or_default())
                    .map_err(io_error(&owner))?;
                return Ok(Registration { id, dir });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error(&dir)(e)),
        }
    }
}

/// Marks a sandbox directory as finished; `keep` leaves it (logs) for inspection.
pub fn release(reg: &Registration, keep: bool) {
    if keep {
        let _ = std::fs::write(reg.dir.join("failed"), b"");
        let _ = std::fs::remove_file(reg.dir.join("owner"));
    } else {
        let _ = std::fs::remove_dir_all(&reg.dir);
    }
}

/// Tears down every sandbox whose owning process is gone: its namespaces (and the processes in
/// them), its pinned BPF objects, its directory (kept for a day if it failed). Returns the ids
/// it cleaned.
pub fn cleanup_stale() -> Result<Vec<String>> {
    // Tests of one binary start sandboxes in parallel; one of them cleaning is enough.
    static CLEANING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = CLEANING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = root();
    let mut cleaned = Vec::new();
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Ok(cleaned);
    };
    let namespaces = netns::list()?;
    for entry in entries.flatten() {
        let dir = entry.path();
        let Some(id) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if owner_alive(&dir) || just_registered(&dir) {
            continue;
        }
        let prefix = netns_prefix(&id);
        let mut had_anything = false;
        for ns in namespaces.iter().filter(|n| n.starts_with(&prefix)) {
            netns::delete(ns)?;
            had_anything = true;
        }
        let pins = Path::new(BPFFS_ROOT).join(&id);
        if pins.exists() {
            let _ = std::fs::remove_dir_all(&pins);
            had_anything = true;
        }
        let failed = dir.join("failed").exists();
        let old = std::fs::metadata(&dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > KEEP_FAILED);
        if !failed || old {
            let _ = std::fs::remove_dir_all(&dir);
        }
        if had_anything {
            cleaned.push(id);
        }
    }
    Ok(cleaned)
}

/// `register` creates the directory before it writes the owner; do not mistake a sandbox that
/// is being born for a dead one.
fn just_registered(dir: &Path) -> bool {
    !dir.join("owner").exists()
        && !dir.join("failed").exists()
        && std::fs::metadata(dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < Duration::from_secs(10))
}

/// `<pid> <start time>`: the start time tells a live owner from a reused pid.
fn owner_stamp(pid: u32) -> Option<String> {
    Some(format!("{pid} {}", process_start_time(pid)?))
}

fn owner_alive(dir: &Path) -> bool {
    let Ok(stamp) = std::fs::read_to_string(dir.join("owner")) else {
        return false;
    };
    let Some(pid) = stamp
        .split_whitespace()
        .next()
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return false;
    };
    owner_stamp(pid).is_some_and(|now| now == stamp)
}

/// Field 22 of /proc/<pid>/stat (start time in clock ticks since boot).
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn base36(mut n: u64, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_is_fixed_width() {
        assert_eq!(base36(0, 5), "00000");
        assert_eq!(base36(35, 5), "0000z");
        assert_eq!(base36(36, 5), "00010");
    }

    #[test]
    fn own_process_is_alive_and_dead_pid_is_not() {
        let dir = std::env::temp_dir().join(format!("kovn-reg-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("owner"), owner_stamp(std::process::id()).unwrap()).unwrap();
        assert!(owner_alive(&dir));
        // Same pid, different start time: a reused pid is not the owner.
        std::fs::write(dir.join("owner"), format!("{} 1", std::process::id())).unwrap();
        assert!(!owner_alive(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
