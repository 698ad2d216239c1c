//! Sandbox lifecycle: two sandboxes run side by side without colliding, and a run killed
//! half-way (its daemons orphaned, its namespaces left) is cleaned up by the next run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sandbox::traffic;
use sandbox::{Sandbox, SandboxConfig, netns, registry, wait_until};

#[test]
fn two_sandboxes_in_parallel_do_not_collide() {
    if !sandbox::privileged("two_sandboxes_in_parallel_do_not_collide") {
        return;
    }
    // Same node count, same pod names, same addresses: only the sandbox ids differ.
    let run = || -> Sandbox {
        let mut sb = Sandbox::start(SandboxConfig::default()).expect("sandbox starts");
        let a = sb.add_pod(0, "a").expect("pod a");
        let b = sb.add_pod(1, "b").expect("pod b");
        let report = traffic::ping(&a, b.ip, 5).expect("ping");
        assert_eq!(report.received, report.transmitted, "{report:?}");
        assert_eq!(report.duplicates, 0, "{report:?}");
        sb
    };
    let (first, second) = std::thread::scope(|s| {
        let first = s.spawn(run);
        let second = s.spawn(run);
        (first.join().expect("first"), second.join().expect("second"))
    });
    assert_ne!(first.id(), second.id());
    for ns in first.namespaces() {
        assert!(!second.namespaces().contains(ns), "shared namespace {ns}");
    }
    // Each central really serves its own database: a switch added to one is not in the other.
    first
        .central()
        .nbctl()
        .run(["ls-add", "only-in-first"])
        .expect("ls-add");
    let other = second.central().nbctl().run(["ls-list"]).expect("ls-list");
    assert!(
        !other.contains("only-in-first"),
        "the sandboxes share a database: {other}"
    );
    first.teardown().expect("teardown first");
    second.teardown().expect("teardown second");
}

/// Environment variable that turns [`stale_helper`] on; without it the helper does nothing.
const HELPER_ENV: &str = "KOVN_SANDBOX_STALE_HELPER";

#[test]
fn a_run_killed_half_way_is_cleaned_up_by_the_next() {
    if !sandbox::privileged("a_run_killed_half_way_is_cleaned_up_by_the_next") {
        return;
    }
    let report = std::env::temp_dir().join(format!("kovn-stale-{}", std::process::id()));
    let _ = std::fs::remove_file(&report);
    // Run the helper in a separate process (this test binary, filtered to the helper), then
    // SIGKILL it: its Drop never runs, its daemons are orphaned, its namespaces stay.
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "stale_helper", "--ignored", "--nocapture"])
        .env(HELPER_ENV, &report)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn helper");
    wait_until("the helper's sandbox", Duration::from_secs(60), || {
        Ok(std::fs::read_to_string(&report).is_ok_and(|s| s.ends_with('\n')))
    })
    .expect("helper started a sandbox");
    child.kill().expect("kill helper");
    child.wait().expect("reap helper");

    let text = std::fs::read_to_string(&report).expect("report");
    let _ = std::fs::remove_file(&report);
    let mut words = text.split_whitespace();
    let id = words.next().expect("id").to_owned();
    let pids: Vec<u32> = words.map(|w| w.parse().expect("pid")).collect();
    let prefix = registry::netns_prefix(&id);
    let pins = Path::new(registry::BPFFS_ROOT).join(&id);
    assert!(
        pids.iter().any(|&p| !sandbox::process_gone(p)),
        "killing the owner should have orphaned its daemons (or the test proves nothing)"
    );

    // The next run cleans up (here directly; `Sandbox::start` calls the same). Tests of one
    // binary start their sandboxes in parallel, so two clean-ups race over the same leftovers:
    // both must succeed (CI once failed on `ip netns del` of a namespace the other had removed).
    std::thread::scope(|s| {
        let racers: Vec<_> = (0..2).map(|_| s.spawn(registry::cleanup_stale)).collect();
        for racer in racers {
            racer.join().expect("cleanup thread").expect("cleanup");
        }
    });

    let left: Vec<String> = netns::list()
        .expect("netns list")
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    for pid in &pids {
        assert!(sandbox::process_gone(*pid), "daemon {pid} still runs");
    }
    assert!(
        !pins.exists(),
        "pinned BPF directory {} left behind",
        pins.display()
    );
    assert!(
        !registry::root().join(&id).exists(),
        "sandbox directory left behind"
    );
}

/// Not a test on its own: started by `a_run_killed_half_way_is_cleaned_up_by_the_next`.
#[test]
#[ignore = "helper process of a_run_killed_half_way_is_cleaned_up_by_the_next"]
fn stale_helper() {
    let Some(report) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let mut sb = Sandbox::start(SandboxConfig {
        nodes: 1,
        ..Default::default()
    })
    .expect("sandbox starts");
    sb.add_pod(0, "p").expect("pod");
    std::fs::create_dir_all(sb.bpffs_dir()).expect("bpffs directory");
    let pids: Vec<String> = sb.daemon_pids().iter().map(u32::to_string).collect();
    std::fs::write(&report, format!("{} {}\n", sb.id(), pids.join(" "))).expect("report");
    // Wait to be killed; never tear down.
    std::thread::sleep(Duration::from_secs(120));
    std::mem::forget(sb);
}
