//! kovn-install as an operator runs it: the pre-flight on this very host (its findings
//! compared with what the system says by other means), the install rendered for a cluster
//! and validated against the Kubernetes schemas, the uninstall's order, and the kubectl
//! steps run one after another (kubectl played by a script that records them: no API server
//! runs here).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::Value;

fn installer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kovn-install"))
}

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("kovn-install runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn finding<'a>(report: &'a Value, check: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no {check} finding in {report}"))
}

#[test]
fn the_preflight_reports_what_this_host_has() {
    // A port kovn needs, held by this test: the pre-flight must name it.
    let listener = match TcpListener::bind("0.0.0.0:10661") {
        Ok(l) => l,
        Err(e) => panic!("port 10661 is taken on this host, the test needs it free: {e}"),
    };
    let out = run(installer().args(["preflight", "--role", "master", "-o", "json"]));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", text(&out.stdout), text(&out.stderr)));
    drop(listener);

    // The kernel, as uname and sysfs say.
    let release = text(&Command::new("uname").arg("-r").output().unwrap().stdout);
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    let kernel = finding(&report, "kernel");
    assert!(
        kernel["found"].as_str().unwrap().contains(release.trim()),
        "{kernel}"
    );
    assert_eq!(report["datapath"] == "ebpf", btf, "{report}");

    // The CNI directory, as listed here.
    let mut others: Vec<String> = std::fs::read_dir("/etc/cni/net.d")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".conf") || n.ends_with(".conflist") || n.ends_with(".json"))
        .filter(|n| n != "01-kube-ovn.conflist")
        .collect();
    others.sort();
    let cni = finding(&report, "cni-config");
    if others.is_empty() {
        assert_eq!(cni["status"], "ok", "{cni}");
    } else {
        assert_eq!(cni["status"], "fail", "{cni}");
        for name in &others {
            assert!(
                cni["found"].as_str().unwrap().contains(name.as_str()),
                "{cni} lacks {name}"
            );
        }
    }

    // The port this test held.
    let port = finding(&report, "port 10661/tcp");
    assert_eq!(port["status"], "fail", "{port}");
    let me = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert!(
        port["found"].as_str().unwrap().contains(me.trim()),
        "{port} does not name this process ({})",
        me.trim()
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed check must fail the command"
    );

    // The text form says what to do for every finding that is not ok.
    let out = run(installer().args(["preflight", "--role", "node"]));
    let shown = text(&out.stdout);
    eprintln!("{shown}");
    for f in report["findings"].as_array().unwrap() {
        if f["status"] != "ok" && f["check"] != "port 10661/tcp" {
            assert!(
                shown.contains(f["fix"].as_str().unwrap()),
                "{f} without its fix"
            );
        }
    }
    assert!(
        !shown.contains("6641/tcp"),
        "a node needs no ovn-central port"
    );
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn validator() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    let path = home.join(".local/share/kovn/venv/bin/kubernetes-validate");
    if path.is_file() {
        return Some(path);
    }
    let message = format!("{} is missing: run `cargo xtask setup`", path.display());
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED the schema validation of the rendered install: {message} !!!!!!!!\n"
    );
    None
}

/// The rendered install validates against Kubernetes 1.29's schemas (when setup installed the
/// validator; CI requires it).
fn assert_validates(yaml: &str) {
    let Some(validator) = validator() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kovn.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(validator)
        .args(["--strict", "--quiet", "-k", "1.29.0"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the rendered install does not validate:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn install_renders_the_cluster_into_valid_manifests() {
    let out = run(installer()
        .args(["install", "--dry-run", "--ignore-preflight", "--no-wait"])
        .args(["--masters", "192.0.2.11,192.0.2.12,192.0.2.13"])
        .args(["--ovs-datapath", "netdev"])
        .args(["--kovn-image", "registry.example/kovn/kovn:0.1.0"])
        .arg("--manifests")
        .arg(deploy()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    let docs = documents(&yaml);

    let config = named(&docs, "ConfigMap", "kovn-ovn-config");
    assert_eq!(
        config["data"]["node-ips"],
        "192.0.2.11,192.0.2.12,192.0.2.13"
    );
    assert_eq!(
        config["data"]["nb-remotes"],
        "tcp:192.0.2.11:6641,tcp:192.0.2.12:6641,tcp:192.0.2.13:6641"
    );
    assert_eq!(
        config["data"]["sb-remotes"],
        "tcp:192.0.2.11:6642,tcp:192.0.2.12:6642,tcp:192.0.2.13:6642"
    );
    assert_eq!(
        named(&docs, "Deployment", "ovn-central")["spec"]["replicas"],
        3
    );
    let ovs = &named(&docs, "DaemonSet", "ovs-ovn")["spec"]["template"]["spec"]["containers"][0];
    let datapath = ovs["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "OVS_DATAPATH_TYPE")
        .unwrap();
    assert_eq!(datapath["value"], "netdev");
    let agent = &named(&docs, "DaemonSet", "kovn-agent")["spec"]["template"]["spec"];
    assert_eq!(
        agent["containers"][0]["image"],
        "registry.example/kovn/kovn:0.1.0"
    );
    assert_eq!(
        agent["initContainers"][0]["image"],
        "registry.example/kovn/kovn:0.1.0"
    );
    assert_eq!(
        ovs["image"], "kovn.local/ovn:0.1.0",
        "the ovn image was not asked to change"
    );

    // CRDs first (a Subnet cannot be applied before its CRD), the agent last.
    let first_crd = docs
        .iter()
        .position(|d| d["kind"] == "CustomResourceDefinition")
        .unwrap();
    let first_other = docs
        .iter()
        .position(|d| d["kind"] != "CustomResourceDefinition")
        .unwrap();
    assert!(first_crd < first_other, "the CRDs are not applied first");
    let agent_at = docs
        .iter()
        .position(|d| d["kind"] == "DaemonSet" && d["metadata"]["name"] == "kovn-agent")
        .unwrap();
    let central_at = docs
        .iter()
        .position(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "ovn-central")
        .unwrap();
    assert!(central_at < agent_at);
    // Nothing of the node cleanup is installed.
    assert!(
        docs.iter()
            .all(|d| d["metadata"]["name"] != "kovn-node-cleanup")
    );

    assert_validates(&yaml);
}

#[test]
fn an_even_number_of_masters_is_refused_with_the_reason() {
    let out = run(installer()
        .args(["install", "--dry-run", "--ignore-preflight"])
        .args(["--masters", "192.0.2.11,192.0.2.12"])
        .arg("--manifests")
        .arg(deploy()));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("odd number"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "something was printed to apply: {}",
        text(&out.stdout)
    );
}

/// A kubectl that records each call (arguments, then stdin) and fails the call whose
/// arguments contain $FAIL_ON.
fn fake_kubectl(dir: &Path) -> PathBuf {
    let path = dir.join("kubectl");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"CALL $*\" >> {log}\ncat >> {log}\nif [ -n \"$FAIL_ON\" ] && echo \"$*\" | grep -q -- \"$FAIL_ON\"; then echo refused >&2; exit 1; fi\n",
            log = dir.join("log").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("CALL ").map(str::to_owned))
        .collect()
}

/// `kovn-install install` for one master against the recording kubectl in `dir`, failing
/// the call that names `fail_on`.
fn install_with_fake_kubectl(dir: &Path, fail_on: &str) -> Output {
    let kubectl = fake_kubectl(dir);
    run(installer()
        .args(["install", "--ignore-preflight", "--masters", "192.0.2.11"])
        .arg("--kubectl")
        .arg(&kubectl)
        .arg("--manifests")
        .arg(deploy())
        .env("FAIL_ON", fail_on))
}

#[test]
fn install_applies_then_waits_for_each_component_and_stops_at_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = install_with_fake_kubectl(dir.path(), "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let made = calls(dir.path());
    assert!(made[0].starts_with("apply --server-side"), "{made:?}");
    let waits: Vec<&String> = made
        .iter()
        .filter(|c| c.contains("rollout status"))
        .collect();
    assert_eq!(waits.len(), 4, "{made:?}");
    assert!(waits[0].contains("deployment/ovn-central"));
    assert!(waits[3].contains("daemonset/kovn-agent"));
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(
        log.contains("node-ips: 192.0.2.11"),
        "the rendered manifests were not applied"
    );

    // A rollout that fails stops the install there, and says which step and what to do.
    let dir = tempfile::tempdir().unwrap();
    let out = install_with_fake_kubectl(dir.path(), "daemonset/ovs-ovn");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("wait for daemonset ovs-ovn") && err.contains("run the command again"),
        "{err}"
    );
    let made = calls(dir.path());
    assert!(
        made.last().unwrap().contains("daemonset/ovs-ovn"),
        "steps ran after the failure: {made:?}"
    );
}

#[test]
fn uninstall_stops_the_agents_first_and_cleans_every_node_in_two_phases() {
    let dir = tempfile::tempdir().unwrap();
    let kubectl = fake_kubectl(dir.path());
    let out = run(installer()
        .arg("uninstall")
        .arg("--kubectl")
        .arg(&kubectl)
        .arg("--manifests")
        .arg(deploy()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    // Each call's stdin follows its CALL line.
    let sections: Vec<&str> = log.split("CALL ").skip(1).collect();
    let at = |needle: &str| {
        sections
            .iter()
            .position(|s| s.contains(needle))
            .unwrap_or_else(|| panic!("no call with {needle}: {log}"))
    };
    let agent_deleted = sections
        .iter()
        .position(|s| s.starts_with("delete") && s.contains("name: kovn-agent"))
        .unwrap();
    let phase_agent = at("value: agent");
    let ovs_deleted = sections
        .iter()
        .position(|s| s.starts_with("delete") && s.contains("name: ovs-ovn"))
        .unwrap();
    let phase_ovs = at("value: ovs");
    assert!(
        agent_deleted < phase_agent,
        "the cleanup ran beside a live agent"
    );
    assert!(
        phase_agent < ovs_deleted,
        "OVS was removed before kovn's ports left it"
    );
    assert!(ovs_deleted < phase_ovs);
    assert!(
        !log.contains("kind: CustomResourceDefinition"),
        "the CRDs (and users' Subnets) were deleted without --delete-crds"
    );
    assert!(
        sections
            .iter()
            .filter(|s| s.contains("rollout status daemonset/kovn-node-cleanup"))
            .count()
            == 2
    );
}

#[test]
fn install_with_tls_makes_every_remote_ssl_and_ships_the_certificates_as_a_secret() {
    let tls = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("key", "KEY PEM\n"),
        ("cert", "CERT PEM\n"),
        ("cacert", "CA PEM\n"),
    ] {
        std::fs::write(tls.path().join(name), text).unwrap();
    }
    let out = run(installer()
        .args(["install", "--dry-run", "--ignore-preflight", "--no-wait"])
        .args(["--masters", "192.0.2.11,192.0.2.12,192.0.2.13"])
        .arg("--tls-dir")
        .arg(tls.path())
        .arg("--manifests")
        .arg(deploy()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    let docs = documents(&yaml);
    let config = named(&docs, "ConfigMap", "kovn-ovn-config");
    assert_eq!(config["data"]["enable-ssl"], "true");
    assert_eq!(
        config["data"]["nb-remotes"],
        "ssl:192.0.2.11:6641,ssl:192.0.2.12:6641,ssl:192.0.2.13:6641"
    );
    assert!(
        config["data"]["sb-remotes"]
            .as_str()
            .unwrap()
            .starts_with("ssl:")
    );
    let secret = named(&docs, "Secret", "kovn-ovn-tls");
    assert_eq!(secret["stringData"]["key"], "KEY PEM\n");
    assert_eq!(secret["stringData"]["cacert"], "CA PEM\n");
    // Applied before anything that mounts it.
    let at = |kind: &str, name: &str| {
        docs.iter()
            .position(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap()
    };
    assert!(at("Secret", "kovn-ovn-tls") < at("Deployment", "ovn-central"));
    // Every consumer of the databases mounts it where it reads the certificates.
    for (kind, name) in [
        ("Deployment", "ovn-central"),
        ("DaemonSet", "ovs-ovn"),
        ("Deployment", "kovn-controller"),
    ] {
        let pod = &named(&docs, kind, name)["spec"]["template"]["spec"];
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["secret"]["secretName"] == "kovn-ovn-tls")
            .unwrap_or_else(|| panic!("{name} does not mount kovn-ovn-tls"));
        let mounted = pod["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == volume["name"] && m["mountPath"] == "/var/run/tls");
        assert!(
            mounted,
            "{name} does not mount the certificates at /var/run/tls"
        );
    }
    assert_validates(&yaml);

    // A directory with some of the files only: never completed with a new CA; the error
    // names the missing ones, nothing is printed.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("cacert"), "x").unwrap();
    let out = run(installer()
        .args([
            "install",
            "--dry-run",
            "--ignore-preflight",
            "--masters",
            "192.0.2.11",
        ])
        .arg("--tls-dir")
        .arg(empty.path())
        .arg("--manifests")
        .arg(deploy()));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not key, cert"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

/// `--enable-ssl` without certificates, as Kube-OVN's `ENABLE_SSL=true`: the first install
/// makes a CA and a certificate in `./kovn-ovn-tls` and applies them as the Secret; running it
/// again (every step is idempotent) reuses them, so the running members keep their CA.
#[test]
fn install_with_enable_ssl_makes_certificates_once_and_reuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let kubectl = fake_kubectl(dir.path());
    let install = || {
        run(installer()
            .current_dir(dir.path())
            .args(["install", "--ignore-preflight", "--enable-ssl"])
            .args(["--masters", "192.0.2.11", "--kubectl"])
            .arg(&kubectl)
            .arg("--manifests")
            .arg(deploy())
            .env("FAIL_ON", ""))
    };
    let out = install();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("made a CA"),
        "{}",
        text(&out.stderr)
    );
    let tls = dir.path().join("kovn-ovn-tls");
    let cacert = std::fs::read_to_string(tls.join("cacert")).expect("the CA certificate made");
    let applied = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(applied.contains("enable-ssl: 'true'") || applied.contains("enable-ssl: \"true\""));
    assert!(applied.contains(cacert.lines().nth(1).unwrap()));
    let cakey = std::fs::read_to_string(tls.join("cakey")).unwrap();
    assert!(
        !applied.contains(cakey.lines().nth(1).unwrap()),
        "the CA's key was applied to the cluster"
    );

    let out = install();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("made a CA"));
    assert_eq!(std::fs::read_to_string(tls.join("cacert")).unwrap(), cacert);
}
