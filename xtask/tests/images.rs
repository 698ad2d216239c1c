//! The images `cargo xtask images` built, run under podman (runc, a podman store of the test's
//! own): the kovn image's programs run, its CNI plugin runs on the host it is copied to, and
//! three ovn-central containers from the ovn image, one per network namespace, form the NB and
//! SB Raft clusters that kovn-controller programs, serve writes through northd, survive the
//! loss of their leader (the controller follows the new one), and take the member back; three
//! more do it over SSL only; and sandbox nodes running ovs-ovn from the ovn image and
//! kovn-agent from the kovn image (its DaemonSet's capabilities only) network pods on one node
//! and across nodes.
//!
//! `cargo xtask test` builds the images before it runs the tests. Run alone, the test needs
//! `cargo xtask images` first; without the archives it fails under CI=true and skips loudly
//! otherwise.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sandbox::Cmd;
use sandbox::netns::ScratchNamespaces;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn archive(image: &str) -> PathBuf {
    workspace().join(format!("target/images/{image}-{VERSION}.oci.tar"))
}

/// The kovn and ovn image archives; without them a CI run fails and any other skips loudly.
fn image_archives(test: &str) -> Option<(PathBuf, PathBuf)> {
    let (kovn, ovn) = (archive("kovn"), archive("ovn"));
    if kovn.is_file() && ovn.is_file() {
        return Some((kovn, ovn));
    }
    let message = format!(
        "{} or {} is missing: run `cargo xtask images` (cargo xtask test does)",
        kovn.display(),
        ovn.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("\n!!!!!!!! SKIPPED {test}: {message} !!!!!!!!\n");
    None
}

/// podman with a store, run directory and settings of its own (one per test: the tests of
/// this file run in parallel), removed on drop.
struct Podman {
    dir: PathBuf,
}

impl Podman {
    fn new(test: &str) -> Podman {
        let dir = std::env::temp_dir().join(format!("kovn-podman-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Here crun cannot set rlimits and cgroups are hybrid: runc, no default ulimits. File
        // locks live in the store's tmpdir: the default shm locks are one /dev/shm/libpod_lock
        // for every store, which two tests' first podman calls race to create (CI saw
        // "failed to create 2048 locks in /libpod_lock: file exists").
        std::fs::write(
            dir.join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nlock_type = \"file\"\n",
        )
        .unwrap();
        Podman { dir }
    }

    fn cmd(&self) -> Cmd {
        Cmd::new("podman")
            .env(
                "CONTAINERS_CONF",
                self.dir.join("containers.conf").to_string_lossy(),
            )
            .args([
                "--root",
                &self.dir.join("storage").to_string_lossy(),
                "--runroot",
                &self.dir.join("run").to_string_lossy(),
                // Libpod's state (default /run/libpod) too: `system reset` of one test's
                // store would otherwise remove it under the others.
                "--tmpdir",
                &self.dir.join("tmp").to_string_lossy(),
            ])
            .timeout(Duration::from_secs(120))
    }

    fn run(&self, args: &[&str]) -> String {
        self.cmd()
            .args(args.iter().copied())
            .run()
            .unwrap_or_else(|e| panic!("podman {}: {e}", args.join(" ")))
    }

    /// `podman run` of a long-running container `name` on a sandbox node's network, in the
    /// foreground; add options, the image and its command.
    fn run_on_node(&self, name: &str, netns: &str) -> Cmd {
        self.cmd().timeout(Duration::from_secs(3600)).args([
            "run".to_owned(),
            "--rm".into(),
            "--replace".into(),
            "--name".into(),
            name.to_owned(),
            format!("--network=ns:/var/run/netns/{netns}"),
        ])
    }

    fn ok(&self, args: &[&str]) -> bool {
        self.cmd()
            .args(args.iter().copied())
            .succeeds()
            .unwrap_or(false)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .args(["rm", "--all", "--force", "--time", "1"])
            .run();
        let _ = self.cmd().args(["system", "reset", "--force"]).run();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    true
}

fn wait_until(what: &str, timeout: Duration, check: impl FnMut() -> bool) {
    assert!(
        wait_for(timeout, check),
        "timed out after {timeout:?}: {what}"
    );
}

/// Three member namespaces and a fabric namespace bridging them: member i gets `<net>.<i+1>/24`
/// on eth0, the fabric `<net>.254` on br0. Returns the namespaces and the members' addresses.
fn member_fabric(names: [&str; 4], net: &str) -> (ScratchNamespaces, [String; 3]) {
    let hosts = ScratchNamespaces::new(&names).unwrap();
    let fabric = hosts.name(3).to_owned();
    for args in [
        vec!["-n", &fabric, "link", "add", "br0", "type", "bridge"],
        vec!["-n", &fabric, "link", "set", "br0", "up"],
        vec![
            "-n",
            &fabric,
            "addr",
            "add",
            &format!("{net}.254/24"),
            "dev",
            "br0",
        ],
    ] {
        Cmd::new("ip").args(args).run().unwrap();
    }
    let member_ips = [1, 2, 3].map(|i| format!("{net}.{i}"));
    for (i, ip) in member_ips.iter().enumerate() {
        let ns = hosts.name(i);
        let port = format!("{}-p", names[i]);
        for args in [
            vec![
                "-n", &fabric, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ],
            vec!["-n", &fabric, "link", "set", &port, "master", "br0", "up"],
            vec!["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            vec!["-n", ns, "link", "set", "eth0", "up"],
            vec!["-n", ns, "link", "set", "lo", "up"],
        ] {
            Cmd::new("ip").args(args).run().unwrap();
        }
    }
    (hosts, member_ips)
}

#[test]
fn images_run_under_podman() {
    if !sandbox::privileged("images_run_under_podman") {
        return;
    }
    let Some((kovn, ovn)) = image_archives("images_run_under_podman") else {
        return;
    };
    let podman = Podman::new("images");
    for (name, path) in [("kovn", &kovn), ("ovn", &ovn)] {
        let loaded = podman.run(&["load", "--quiet", "--input", &path.to_string_lossy()]);
        let reference = format!("kovn.local/{name}:{VERSION}");
        assert!(
            loaded.contains(&reference),
            "{} loaded as {loaded:?}, not {reference}",
            path.display()
        );
        // The digest `cargo xtask images` reported is the image podman runs.
        let digest =
            std::fs::read_to_string(workspace().join(format!("target/images/{name}.digest")))
                .unwrap();
        let inspected = podman.run(&["image", "inspect", "--format", "{{.Digest}}", &reference]);
        assert_eq!(inspected.trim(), digest.trim(), "{reference}'s digest");
    }

    // The kovn image: its programs run; its plugin runs outside it.
    let kovn_image = format!("kovn.local/kovn:{VERSION}");
    let versions = podman.run(&[
        "run",
        "--rm",
        "--network=none",
        &kovn_image,
        "sh",
        "-c",
        "kovn-agent --version && kovn-controller --version && kovn-install --version && nft --version && \
         test -s /usr/lib/kovn/kovn-datapath.o && test -x /usr/lib/cni/portmap",
    ]);
    assert!(
        versions.contains(&format!("kovn-agent {VERSION}")),
        "{versions}"
    );
    let copied = podman.dir.join("kube-ovn");
    let container = podman
        .run(&["create", &kovn_image, "true"])
        .trim()
        .to_owned();
    podman.run(&[
        "cp",
        &format!("{container}:/usr/bin/kube-ovn"),
        &copied.to_string_lossy(),
    ]);
    podman.run(&["rm", &container]);
    // A CNI VERSION request answered on this host: the plugin needs nothing of the image.
    let plugin = Cmd::new(copied.to_string_lossy())
        .env("CNI_COMMAND", "VERSION")
        .run()
        .expect("the kube-ovn plugin copied out of the image runs on the host");
    assert!(plugin.contains("supportedVersions"), "{plugin}");

    // The ovn image: three ovn-central members, one per namespace on a shared bridge.
    let (hosts, member_ips) = member_fabric(["oc1", "oc2", "oc3", "fabric"], "10.93.0");
    let fabric = hosts.name(3).to_owned();
    let ovn_image = format!("kovn.local/ovn:{VERSION}");
    let start_member = |i: usize| {
        let db_dir = podman.dir.join(format!("oc{}", i + 1));
        std::fs::create_dir_all(&db_dir).unwrap();
        podman.run(&[
            "run",
            "--detach",
            "--name",
            &format!("oc{}", i + 1),
            &format!("--network=ns:/var/run/netns/{}", hosts.name(i)),
            "--env",
            &format!("POD_IP={}", member_ips[i]),
            "--env",
            &format!("NODE_IPS={}", member_ips.join(",")),
            "--volume",
            &format!("{}:/etc/ovn", db_dir.display()),
            &ovn_image,
            "/usr/share/kovn/start-ovn-central.sh",
        ]);
    };
    for i in 0..3 {
        start_member(i);
    }
    let ready = |i: usize| {
        podman.ok(&[
            "exec",
            &format!("oc{}", i + 1),
            "/usr/share/kovn/ovn-healthcheck.sh",
            "central",
        ])
    };
    let members_ready = wait_for(Duration::from_secs(60), || (0..3).all(ready));
    if !members_ready {
        for i in 1..=3 {
            let name = format!("oc{i}");
            let logs = podman.cmd().args(["logs", &name]).output();
            eprintln!("==== {name} ====\n{logs:?}");
        }
        panic!("three ovn-central members not ready (Raft members with a leader) in 60 s");
    }
    let nb_status = podman.run(&[
        "exec",
        "oc1",
        "ovn-appctl",
        "-t",
        "/var/run/ovn/ovnnb_db.ctl",
        "cluster/status",
        "OVN_Northbound",
    ]);
    for ip in &member_ips {
        assert!(
            nb_status.contains(&format!("tcp:{ip}:6643")),
            "NB Raft should have a member at {ip}:6643:\n{nb_status}"
        );
    }

    // A client (from the fabric, as the controller would be) writes through whichever member
    // leads; northd turns the switch into a southbound datapath.
    let remotes = |port: u16| {
        member_ips
            .iter()
            .map(|ip| format!("tcp:{ip}:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let nbctl = |args: &[&str]| {
        Cmd::new("ovn-nbctl")
            .netns(&fabric)
            .arg(format!("--db={}", remotes(6641)))
            .args(["--timeout=20"])
            .args(args.iter().copied())
            .run()
    };
    let sb_datapaths = || {
        Cmd::new("ovn-sbctl")
            .netns(&fabric)
            .arg(format!("--db={}", remotes(6642)))
            .args([
                "--timeout=20",
                "--columns=external_ids",
                "list",
                "Datapath_Binding",
            ])
            .run()
            .unwrap_or_default()
    };
    // kovn-controller (this build) on the members, as the Deployment runs it: every NB
    // member given, the leader found by the client.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _in_runtime = runtime.enter();
    let api = sandbox::kube_api::FakeApi::new();
    let (_served, kubeconfig) =
        sandbox::kovn::serve_in(&api, &fabric, &podman.dir).expect("the API stand-in");
    let controller = sandbox::kovn::Process(
        Cmd::new(
            sandbox::kovn::workspace_binary("controller", "kovn-controller")
                .display()
                .to_string(),
        )
        .arg(format!("--ovn-nb-addr={}", remotes(6641)))
        .args(["--leader-election=false", "--metrics-addr=127.0.0.1:0"])
        .env("KUBECONFIG", kubeconfig.display().to_string())
        .env("RUST_LOG", "warn")
        .netns(&fabric)
        .to_command()
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("kovn-controller"),
    );
    wait_until(
        "kovn-controller builds the cluster router and default switch on the Raft NB",
        Duration::from_secs(30),
        || {
            nbctl(&["lr-list"]).is_ok_and(|o| o.contains("ovn-cluster"))
                && nbctl(&["ls-list"]).is_ok_and(|o| o.contains("ovn-default"))
        },
    );
    nbctl(&["ls-add", "probe-a"]).expect("an NB write through the Raft cluster");
    wait_until(
        "northd makes probe-a a southbound datapath",
        Duration::from_secs(20),
        || sb_datapaths().contains("probe-a"),
    );

    // The leader goes away: the other two elect one and go on serving writes.
    let leader = (0..3)
        .find(|&i| {
            podman
                .cmd()
                .args([
                    "exec",
                    &format!("oc{}", i + 1),
                    "ovn-appctl",
                    "-t",
                    "/var/run/ovn/ovnnb_db.ctl",
                    "cluster/status",
                    "OVN_Northbound",
                ])
                .run()
                .is_ok_and(|s| s.contains("Role: leader"))
        })
        .expect("one NB member leads");
    podman.run(&["stop", "--time", "5", &format!("oc{}", leader + 1)]);
    nbctl(&["ls-add", "probe-b"]).expect("an NB write with the leader gone");
    // The controller follows the new leader: a Subnet made now becomes a switch.
    api.put(&api::Subnet::new(
        "after-failover",
        api::SubnetSpec {
            cidr_block: "10.77.0.0/16".into(),
            ..api::SubnetSpec::default()
        },
    ));
    wait_until(
        "kovn-controller writes through the new NB leader",
        Duration::from_secs(30),
        || nbctl(&["ls-list"]).is_ok_and(|o| o.contains("after-failover")),
    );
    drop(controller);
    wait_until(
        "northd (on a surviving member) makes probe-b a southbound datapath",
        Duration::from_secs(30),
        || sb_datapaths().contains("probe-b"),
    );
    // The member comes back with its database and rejoins.
    podman.run(&["start", &format!("oc{}", leader + 1)]);
    wait_until(
        "the stopped member rejoins the clusters",
        Duration::from_secs(60),
        || ready(leader),
    );
    let switches = nbctl(&["ls-list"]).unwrap();
    assert!(
        switches.contains("probe-a") && switches.contains("probe-b"),
        "{switches}"
    );
    // Best effort: the store's reset on drop removes whatever is left.
    for i in 1..=3 {
        podman.ok(&["rm", "--force", "--time", "1", &format!("oc{i}")]);
    }
    ovn_central_over_ssl(&podman, &ovn_image);
}

/// Three members of the ovn image with ENABLE_SSL=true and ovs-pki's certificates where the
/// kovn-ovn-tls Secret is mounted: Raft and clients over SSL only; a client with the CA's
/// certificate writes (ovn-nbctl, and kovn's own OVSDB client as the controller uses it),
/// northd follows over SSL, and plain TCP gets nowhere.
fn ovn_central_over_ssl(podman: &Podman, ovn_image: &str) {
    let (hosts, member_ips) = member_fabric(["os1", "os2", "os3", "sfabric"], "10.94.0");
    let fabric = hosts.name(3).to_owned();
    let pki = sandbox::pki::Pki::new(
        &podman.dir.join("pki"),
        &["ca"],
        &[("ca", "ovn-central"), ("ca", "client")],
    )
    .expect("ovs-pki");
    let secret = podman.dir.join("kovn-ovn-tls");
    pki.files("ovn-central", "ca")
        .install_as_secret(&secret)
        .unwrap();
    for (i, ip) in member_ips.iter().enumerate() {
        let db_dir = podman.dir.join(format!("os{}", i + 1));
        std::fs::create_dir_all(&db_dir).unwrap();
        podman.run(&[
            "run",
            "--detach",
            "--name",
            &format!("os{}", i + 1),
            &format!("--network=ns:/var/run/netns/{}", hosts.name(i)),
            "--env",
            &format!("POD_IP={ip}"),
            "--env",
            &format!("NODE_IPS={}", member_ips.join(",")),
            "--env",
            "ENABLE_SSL=true",
            "--volume",
            &format!("{}:/etc/ovn", db_dir.display()),
            "--volume",
            &format!("{}:/var/run/tls:ro", secret.display()),
            ovn_image,
            "/usr/share/kovn/start-ovn-central.sh",
        ]);
    }
    let ready = |i: usize| {
        podman.ok(&[
            "exec",
            &format!("os{}", i + 1),
            "/usr/share/kovn/ovn-healthcheck.sh",
            "central",
        ])
    };
    if !wait_for(Duration::from_secs(90), || (0..3).all(ready)) {
        for i in 1..=3 {
            let logs = podman.cmd().args(["logs", &format!("os{i}")]).output();
            eprintln!("==== os{i} ====\n{logs:?}");
        }
        panic!("three SSL ovn-central members not ready in 90 s");
    }
    let status = podman.run(&[
        "exec",
        "os1",
        "ovn-appctl",
        "-t",
        "/var/run/ovn/ovnnb_db.ctl",
        "cluster/status",
        "OVN_Northbound",
    ]);
    for ip in &member_ips {
        assert!(
            status.contains(&format!("ssl:{ip}:6643")),
            "NB Raft over SSL should have {ip}:6643:\n{status}"
        );
    }
    let client = pki.files("client", "ca");
    let remotes = |scheme: &str, port: u16| {
        member_ips
            .iter()
            .map(|ip| format!("{scheme}:{ip}:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let ctl = |tool: &str, db: String, args: &[&str]| {
        Cmd::new(tool)
            .netns(&fabric)
            .arg(format!("--db={db}"))
            .arg(format!("--private-key={}", client.private_key.display()))
            .arg(format!("--certificate={}", client.certificate.display()))
            .arg(format!("--ca-cert={}", client.ca_cert.display()))
            .args(["--timeout=20"])
            .args(args.iter().copied())
            .run()
    };
    // The listeners come from the Connection rows the first member writes once it leads.
    wait_until("an SSL NB write", Duration::from_secs(30), || {
        ctl(
            "ovn-nbctl",
            remotes("ssl", 6641),
            &["--may-exist", "ls-add", "tls-a"],
        )
        .is_ok()
    });
    wait_until(
        "northd, over SSL, makes tls-a a southbound datapath",
        Duration::from_secs(30),
        || {
            ctl(
                "ovn-sbctl",
                remotes("ssl", 6642),
                &["--columns=external_ids", "list", "Datapath_Binding"],
            )
            .is_ok_and(|out| out.contains("tls-a"))
        },
    );
    // Plain TCP is not served.
    let plain = Cmd::new("ovn-nbctl")
        .netns(&fabric)
        .arg(format!("--db={}", remotes("tcp", 6641)))
        .args(["--timeout=3", "ls-list"])
        .run();
    assert!(plain.is_err(), "plain TCP was served: {plain:?}");
    // kovn's OVSDB client, as kovn-controller uses it (ssl: remotes, the Secret's files).
    let files = ovsdb::TlsFiles {
        private_key: client.private_key.clone(),
        certificate: client.certificate.clone(),
        ca_cert: client.ca_cert.clone(),
    };
    let nb_remotes = remotes("ssl", 6641);
    let names = sandbox::netns::run_in(&fabric, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                use ovsdb::Model;
                use ovsdb::models::ovn_northbound::LogicalSwitch;
                let list: Vec<&str> = nb_remotes.split(',').collect();
                let config = ovsdb::ClientConfig::new(&list, "OVN_Northbound")
                    .monitor(ovsdb::MonitorRequest::table(LogicalSwitch::TABLE))
                    .tls(&files)
                    .expect("the client's certificates");
                let client = ovsdb::Client::connect(config)
                    .await
                    .expect("kovn's client over SSL to the Raft NB");
                client.read(|c| {
                    c.table(LogicalSwitch::TABLE)
                        .map(|t| {
                            t.typed::<LogicalSwitch>()
                                .into_iter()
                                .map(|s| s.name)
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default()
                })
            })
    })
    .unwrap();
    assert!(names.iter().any(|n| n == "tls-a"), "{names:?}");
    for i in 1..=3 {
        podman.ok(&["rm", "--force", "--time", "1", &format!("os{i}")]);
    }
}

/// `cargo xtask bundle` (which `cargo xtask test` writes after the images): one tarball with
/// the images, the manifests, the source and the docs, and checksums that hold.
#[test]
fn the_offline_bundle_holds_images_manifests_source_and_docs() {
    let bundle = workspace().join(format!("target/kovn-{VERSION}-bundle.tar"));
    if !bundle.is_file() {
        let message = format!(
            "{} is missing: run `cargo xtask bundle` (cargo xtask test writes it)",
            bundle.display()
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message}");
        }
        eprintln!(
            "\n!!!!!!!! SKIPPED the_offline_bundle_holds_images_manifests_source_and_docs: {message} !!!!!!!!\n"
        );
        return;
    }
    let listing = Cmd::new("tar")
        .args(["-tf", &bundle.to_string_lossy()])
        .run()
        .unwrap();
    let top = format!("kovn-{VERSION}");
    for entry in [
        format!("{top}/images/kovn-{VERSION}.oci.tar"),
        format!("{top}/images/ovn-{VERSION}.oci.tar"),
        format!("{top}/images/kovn.packages"),
        format!("{top}/images/ovn.digest"),
        format!("{top}/deploy/agent.yaml"),
        format!("{top}/deploy/ovn-central.yaml"),
        format!("{top}/deploy/crds/subnets.kubeovn.io.yaml"),
        format!("{top}/deploy/uninstall/node-cleanup.yaml"),
        format!("{top}/bin/kovn-install"),
        format!("{top}/source/{top}-src.tar"),
        format!("{top}/source/REVISION"),
        format!("{top}/docs/README.md"),
        format!("{top}/SHA256SUMS"),
    ] {
        assert!(
            listing.lines().any(|l| l == entry),
            "{} lacks {entry}:\n{listing}",
            bundle.display()
        );
    }
    let unpacked = std::env::temp_dir().join(format!("kovn-bundle-{}", std::process::id()));
    std::fs::create_dir_all(&unpacked).unwrap();
    Cmd::new("tar")
        .args([
            "-xf",
            &bundle.to_string_lossy(),
            "-C",
            &unpacked.to_string_lossy(),
        ])
        .run()
        .unwrap();
    let checked = Cmd::new("sh")
        .args([
            "-c",
            &format!(
                "cd {}/{top} && sha256sum --check --quiet SHA256SUMS",
                unpacked.display()
            ),
        ])
        .output()
        .unwrap();
    // The source is the workspace the images were built from, its digest recorded.
    let sources = Cmd::new("tar")
        .args(["-tf"])
        .arg(format!("{}/{top}/source/{top}-src.tar", unpacked.display()))
        .run()
        .unwrap();
    for file in [
        "Cargo.lock",
        "deploy/images/ovn/start-ovs-ovn.sh",
        "agent/src/main.rs",
    ] {
        assert!(
            sources.lines().any(|l| l == format!("{top}/{file}")),
            "the bundle's source lacks {file}"
        );
    }
    let revision =
        std::fs::read_to_string(unpacked.join(format!("{top}/source/REVISION"))).unwrap();
    assert!(revision.contains("sources sha256 "), "REVISION: {revision}");
    // The unpacked bundle installs as it is: its kovn-install renders its deploy/.
    let rendered = std::process::Command::new(unpacked.join(format!("{top}/bin/kovn-install")))
        .current_dir(unpacked.join(&top))
        .args([
            "install",
            "--dry-run",
            "--ignore-preflight",
            "--masters",
            "192.0.2.11",
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&unpacked);
    assert!(checked.success, "SHA256SUMS does not hold: {checked:?}");
    let yaml = String::from_utf8_lossy(&rendered.stdout);
    assert!(
        rendered.status.success() && yaml.contains("nb-remotes: tcp:192.0.2.11:6641"),
        "the bundle's kovn-install did not render its manifests: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
}

/// The capabilities deploy/agent.yaml gives the agent's container (instead of privileged).
fn agent_capabilities() -> Vec<String> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(workspace().join("deploy/agent.yaml")).unwrap();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = serde_json::Value::deserialize(doc).unwrap();
        if v["kind"] == "DaemonSet" && v["metadata"]["name"] == "kovn-agent" {
            let container = v["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "kovn-agent")
                .unwrap()
                .clone();
            let security = &container["securityContext"];
            assert_ne!(
                security["privileged"], true,
                "the agent's container is privileged: {security}"
            );
            return security["capabilities"]["add"]
                .as_array()
                .expect("capabilities.add")
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect();
        }
    }
    panic!("no kovn-agent DaemonSet in deploy/agent.yaml");
}

/// The first container of the DaemonSet in a deploy/ file: its command and arguments, its
/// environment (a value taken from elsewhere reads "false": kovn-ovn-config's enable-ssl,
/// which the installer writes) and its hostPath mounts (mount path, host path).
struct ManifestContainer {
    command: Vec<String>,
    env: Vec<(String, String)>,
    mounts: Vec<(String, String)>,
}

fn daemonset_container(file: &str) -> ManifestContainer {
    use serde::Deserialize;
    let text = std::fs::read_to_string(workspace().join("deploy").join(file)).unwrap();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = serde_json::Value::deserialize(doc).unwrap();
        if v["kind"] != "DaemonSet" {
            continue;
        }
        let pod = &v["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default()
        };
        let env = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let name = e["name"].as_str().unwrap().to_owned();
                let value = e["value"].as_str().unwrap_or("false").to_owned();
                (name, value)
            })
            .collect();
        let host_path = |volume: &str| -> Option<String> {
            pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == volume)
                .and_then(|v| v["hostPath"]["path"].as_str().map(str::to_owned))
        };
        let mounts = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| {
                let host = host_path(m["name"].as_str().unwrap())?;
                Some((m["mountPath"].as_str().unwrap().to_owned(), host))
            })
            .collect();
        let mut command = strings(&container["command"]);
        command.extend(strings(&container["args"]));
        return ManifestContainer {
            command,
            env,
            mounts,
        };
    }
    panic!("no DaemonSet in deploy/{file}");
}

/// Runs a sandbox node's OVS and ovn-controller as deploy/ovs-ovn.yaml runs them on a node:
/// the ovn image's start script, privileged, in the host's PID namespace, on the node's
/// network, each of the DaemonSet's hostPath volumes given the node's own directory. The
/// datapath type is netdev, as `kovn-install --ovs-datapath=netdev` sets it on a host
/// without the openvswitch module (this one).
fn ovs_ovn_launcher(podman: std::sync::Arc<Podman>, image: String) -> sandbox::NodeLauncher {
    let container = daemonset_container("ovs-ovn.yaml");
    std::sync::Arc::new(move |launch: &sandbox::NodeLaunch| {
        let mut cmd = podman
            .run_on_node(&format!("ovs-ovn-{}", launch.node), &launch.netns)
            .args(["--pid=host".to_owned(), "--privileged".into()]);
        for (mount, host) in &container.mounts {
            let source = match host.as_str() {
                // For modprobe with the kernel datapath; this machine has no module tree.
                "/lib/modules" if Path::new(host).is_dir() => PathBuf::from(host),
                "/lib/modules" => continue,
                other => launch.host_path(other),
            };
            std::fs::create_dir_all(&source).unwrap();
            cmd = cmd.arg(format!("--volume={}:{mount}", source.display()));
        }
        for (name, value) in &container.env {
            let value = if name == "OVS_DATAPATH_TYPE" {
                "netdev"
            } else {
                value.as_str()
            };
            cmd = cmd.arg(format!("--env={name}={value}"));
        }
        cmd.arg(&image).args(container.command.iter().cloned())
    })
}

/// Once ovn-controller has bound both ports, `from` reaches `to`; then `count` pings all
/// come back.
fn pings_without_loss(
    from: &sandbox::kovn::RunningPod,
    to: &sandbox::kovn::RunningPod,
    count: u32,
) {
    let ping = |args: &[&str]| {
        Cmd::new("ping")
            .args(args.iter().copied())
            .arg(to.ip.to_string())
            .netns(&from.netns)
    };
    wait_until(
        &format!("{} reaches {}", from.name, to.name),
        Duration::from_secs(20),
        || ping(&["-c", "1", "-W", "1"]).succeeds().unwrap_or(false),
    );
    let report = ping(&["-c", &count.to_string(), "-i", "0.005", "-W", "1", "-q"])
        .run()
        .expect("ping");
    assert!(
        report.contains(" 0% packet loss"),
        "{} to {}: {report}",
        from.name,
        to.name
    );
}

/// Runs one phase of deploy/uninstall/node-cleanup.yaml on a sandbox node as the DaemonSet
/// runs it (its script, privileged, on the node's network, every hostPath the node's own, the
/// node's bpffs at /sys/fs/bpf) until it is ready (done); returns its output.
fn node_cleanup_phase(
    podman: &Podman,
    image: &str,
    node: &sandbox::Node,
    bpffs: &Path,
    phase: &str,
) -> String {
    let container = daemonset_container("uninstall/node-cleanup.yaml");
    let launch = sandbox::NodeLaunch::of(node);
    let name = format!("cleanup-{phase}-{}", node.name);
    let mut cmd = podman.cmd().args([
        "run".to_owned(),
        "--detach".into(),
        "--name".into(),
        name.clone(),
        format!("--network=ns:/var/run/netns/{}", node.netns),
        "--privileged".into(),
        format!("--env=KOVN_CLEANUP_PHASE={phase}"),
    ]);
    for (mount, host) in &container.mounts {
        let source = match host.as_str() {
            "/sys/fs/bpf" => bpffs.to_owned(),
            other => launch.host_path(other),
        };
        std::fs::create_dir_all(&source).unwrap();
        cmd = cmd.arg(format!("--volume={}:{mount}", source.display()));
    }
    cmd.arg(image)
        .args(container.command.iter().cloned())
        .run()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    // Its readiness probe: /tmp/done. A failed cleanup exits instead.
    wait_until(
        &format!("{name} to be done"),
        Duration::from_secs(60),
        || {
            if podman.ok(&["exec", &name, "test", "-f", "/tmp/done"]) {
                return true;
            }
            let running = podman.run(&["inspect", "--format", "{{.State.Running}}", &name]);
            assert!(
                running.trim() == "true",
                "{name} exited: {}",
                podman
                    .cmd()
                    .args(["logs", &name])
                    .output()
                    .map(|o| o.stdout + &o.stderr)
                    .unwrap_or_default()
            );
            false
        },
    );
    let logs = podman.run(&["logs", &name]);
    podman.ok(&["rm", "--force", "--time", "1", &name]);
    logs
}

/// The node cleanup's two phases on node 0 leave nothing of kovn there, checked item by item
/// with the system's tools; what is not kovn's stays.
fn node_cleanup_leaves_nothing(
    podman: &Podman,
    image: &str,
    cluster: &sandbox::kovn::KovnCluster,
    pins: &Path,
    pods: &[&sandbox::kovn::RunningPod],
) {
    let node = cluster.sb.node(0).clone();
    let launch = sandbox::NodeLaunch::of(&node);
    // The node's bpffs, as the cleanup's /sys/fs/bpf: the pins are its kovn/.
    let bpffs = pins.parent().unwrap();
    let in_node = |program: &str, args: &[&str]| {
        Cmd::new(program)
            .args(args.iter().copied())
            .netns(&node.netns)
            .run()
            .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
    };
    let kovn_links = || -> Vec<String> {
        in_node("ip", &["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .filter(|n| agent::uninstall::is_kovn_link_name(n))
            .collect()
    };
    let kovn_ports = || {
        node.vsctl()
            .run([
                "--bare",
                "--columns=name",
                "find",
                "Interface",
                "external_ids:vendor=kovn",
            ])
            .unwrap()
            .trim()
            .to_owned()
    };
    // What the agent DaemonSet's install-cni container puts on a node, and what is not ours.
    let (conf, bin) = (
        launch.host_path("/etc/cni/net.d"),
        launch.host_path("/opt/cni/bin"),
    );
    for dir in [&conf, &bin] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(conf.join("01-kube-ovn.conflist"), "{}").unwrap();
    std::fs::write(conf.join("99-loopback.conf"), "{}").unwrap();
    std::fs::write(bin.join("kube-ovn"), "#!/bin/sh\n").unwrap();
    std::fs::write(bin.join("portmap"), "#!/bin/sh\n").unwrap();
    // Before: each item is there, or the checks after prove nothing.
    assert!(
        kovn_links().iter().any(|l| l == "ovn0"),
        "{:?}",
        kovn_links()
    );
    assert!(!kovn_ports().is_empty());
    assert!(in_node("nft", &["list", "tables"]).contains("table ip kovn"));
    assert!(pins.join("links").read_dir().unwrap().count() > 0);

    let report = node_cleanup_phase(podman, image, &node, bpffs, "agent");
    eprintln!("node cleanup, agent phase:\n{report}");
    assert_eq!(kovn_links(), Vec::<String>::new(), "kovn's links left");
    for pod in pods {
        let inside = Cmd::new("ip")
            .args(["-o", "link", "show"])
            .netns(&pod.netns)
            .run()
            .unwrap();
        assert!(
            !inside.contains("eth0"),
            "{}'s eth0 is still there",
            pod.name
        );
    }
    assert_eq!(kovn_ports(), "", "kovn's OVS ports left");
    let routes = in_node("ip", &["route"]);
    assert!(
        !routes.contains("ovn0"),
        "routes through ovn0 left: {routes}"
    );
    let tables = in_node("nft", &["list", "tables"]);
    assert!(!tables.contains("kovn"), "nft table left: {tables}");
    assert!(!pins.exists(), "pins left in {}", pins.display());
    assert!(!conf.join("01-kube-ovn.conflist").exists());
    assert!(!bin.join("kube-ovn").exists());
    assert!(conf.join("99-loopback.conf").exists() && bin.join("portmap").exists());

    // ovs-ovn's DaemonSet is deleted next: its container stops, then the ovs phase.
    podman.run(&["stop", "--time", "10", &format!("ovs-ovn-{}", node.name)]);
    let foreign = launch.host_path("/etc/origin/other");
    std::fs::create_dir_all(&foreign).unwrap();
    let report = node_cleanup_phase(podman, image, &node, bpffs, "ovs");
    eprintln!("node cleanup, ovs phase:\n{report}");
    for path in [
        "/etc/origin/openvswitch",
        "/run/ovn",
        "/var/log/openvswitch",
        "/var/log/ovn",
    ] {
        assert!(!launch.host_path(path).exists(), "{path} left on the node");
    }
    assert!(foreign.exists(), "the cleanup removed /etc/origin/other");
    let links: Vec<String> = in_node("ip", &["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(str::to_owned))
        .filter(|n| n == "br-int" || n == "ovs-system" || n.starts_with("genev_sys"))
        .collect();
    assert!(links.is_empty(), "OVS's devices left: {links:?}");
}

/// Whether `pid` runs in another mount namespace than this test (a container's process).
fn in_a_container(pid: &str) -> bool {
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).ok();
    let theirs = ns(pid.trim());
    theirs.is_some() && theirs != ns("self")
}

/// A sandbox whose nodes run what the manifests run, from the images: on each of two nodes
/// ovs-ovn (ovsdb-server, ovs-vswitchd, ovn-controller) from the ovn image's start script,
/// and kovn-agent from the kovn image, not privileged but with its DaemonSet's capabilities
/// only (all others dropped), which loads and pins the datapath on the host's bpffs and
/// plumbs the pods through the kubelet's CNI ADD. Two pods on one node talk through the fast
/// path; a pod on the other node is reached through the containers' Geneve tunnel, by ping
/// and by TCP.
#[test]
fn nodes_running_ovs_ovn_and_the_agent_from_their_images_network_pods() {
    if !sandbox::privileged("nodes_running_ovs_ovn_and_the_agent_from_their_images_network_pods") {
        return;
    }
    let Some((kovn, ovn)) =
        image_archives("nodes_running_ovs_ovn_and_the_agent_from_their_images_network_pods")
    else {
        return;
    };
    let podman = std::sync::Arc::new(Podman::new("nodes"));
    for archive in [&kovn, &ovn] {
        podman.run(&["load", "--quiet", "--input", &archive.to_string_lossy()]);
    }
    let capabilities = agent_capabilities();
    let image = format!("kovn.local/kovn:{VERSION}");
    let launcher: sandbox::kovn::AgentLauncher = {
        let (podman, image) = (podman.clone(), image.clone());
        std::sync::Arc::new(move |launch: &sandbox::kovn::AgentLaunch| {
            // What the DaemonSet's privileged node-sysctls init container does.
            Cmd::new("sysctl")
                .args([
                    "-w",
                    "net.ipv4.ip_forward=1",
                    "net.ipv6.conf.all.forwarding=1",
                ])
                .netns(&launch.netns)
                .run()
                .expect("the node's forwarding sysctls");
            let mut cmd = podman
                .run_on_node(&format!("agent-{}", launch.node), &launch.netns)
                .args([
                    "--cap-drop=all".to_owned(),
                    // Kubernetes runs pods without a seccomp profile unless one is asked for.
                    "--security-opt=seccomp=unconfined".into(),
                    "--volume=/sys/fs/bpf:/sys/fs/bpf".into(),
                    // Pods' namespaces appear after the agent started (HostToContainer).
                    "--volume=/var/run/netns:/var/run/netns:rslave".into(),
                ]);
            for cap in &capabilities {
                cmd = cmd.arg(format!("--cap-add={cap}"));
            }
            for path in &launch.paths {
                if path.is_dir() || path.is_file() {
                    cmd = cmd.arg(format!("--volume={0}:{0}", path.display()));
                }
            }
            for (k, v) in &launch.env {
                cmd = cmd.arg(format!("--env={k}={v}"));
            }
            // Pins in `<the node's bpffs>/kovn`, as in /sys/fs/bpf/kovn on a node, where the
            // node cleanup's `kovn-agent uninstall` looks by default.
            let mut args = launch.args.clone();
            if let Some(i) = args.iter().position(|a| a == "--pin-dir") {
                args[i + 1] = format!("{}/kovn", args[i + 1]);
            }
            cmd.arg(&image)
                .arg("/usr/bin/kovn-agent")
                .args(args)
                .to_command()
        })
    };
    let binaries = sandbox::kovn::KovnBinaries {
        controller: sandbox::kovn::workspace_binary("controller", "kovn-controller"),
        agent: PathBuf::from("/usr/bin/kovn-agent"),
        cni_dir: sandbox::kovn::workspace_binary("cni", "kube-ovn")
            .parent()
            .unwrap()
            .to_path_buf(),
    };
    let node_daemons = sandbox::NodeDaemons::Launched(ovs_ovn_launcher(
        podman.clone(),
        format!("kovn.local/ovn:{VERSION}"),
    ));
    let cluster =
        sandbox::kovn::KovnCluster::start_with_launcher(2, binaries, &[], launcher, node_daemons)
            .expect("kovn on a sandbox whose nodes run ovs-ovn and the agent from the images");
    let node = cluster.sb.node(0).clone();
    // The node's switch is the container's, not a host process.
    let vswitchd = std::fs::read_to_string(node.dir.join("ovs-vswitchd.pid")).unwrap();
    assert!(
        in_a_container(&vswitchd),
        "ovs-vswitchd (pid {}) is not the ovs-ovn container's",
        vswitchd.trim()
    );
    let a = cluster
        .start_pod("a", 0)
        .expect("pod a (CNI ADD into the image's agent)");
    let b = cluster.start_pod("b", 0).expect("pod b");
    let c = cluster.start_pod("c", 1).expect("pod c, on the other node");
    pings_without_loss(&a, &b, 200);
    // The datapath the container loaded, read from its pins on the host.
    let pins = cluster.sb.bpffs_dir().join(&node.name).join("kovn");
    let fast = {
        use agent::datapath::{PinnedMaps, ReadMaps};
        PinnedMaps::open(&pins)
            .expect("the container's pins on the host's bpffs")
            .packets_for(datapath_common::Reason::FastHit)
            .unwrap()
    };
    assert!(fast > 100, "only {fast} packets took the fast path");
    let metrics =
        sandbox::kovn::http_get_in(&node.netns, 10665, "/metrics").expect("the agent's metrics");
    assert!(metrics.contains("kovn_datapath_loaded 1"), "{metrics}");

    // Across nodes: Geneve between the two containers' userspace datapaths.
    pings_without_loss(&a, &c, 100);
    let tcp = sandbox::traffic::iperf3(&a.as_pod(&cluster), &c.as_pod(&cluster), 2)
        .expect("TCP from a to c across nodes");
    eprintln!(
        "cross-node TCP through the ovs-ovn containers: {:.2} Gbit/s, {} retransmits",
        tcp.gbit_per_second(),
        tcp.retransmits
    );
    assert!(
        tcp.gbit_per_second() > 0.01,
        "TCP across the containers' tunnel moved {} Gbit/s",
        tcp.gbit_per_second()
    );

    // Uninstall on node 0, with its pods still there: the agent stops (its DaemonSet is
    // deleted first), the node cleanup's agent phase runs; then ovs-ovn stops and the
    // ovs phase runs.
    assert!(
        cluster.stop_agent(0, Duration::from_secs(20)).unwrap(),
        "the agent's container did not stop cleanly"
    );
    node_cleanup_leaves_nothing(&podman, &image, &cluster, &pins, &[&a, &b]);
    drop((a, b, c));
    for n in cluster.sb.nodes() {
        podman.ok(&["rm", "--force", "--time", "1", &format!("agent-{}", n.name)]);
    }
    cluster.teardown().expect("teardown");
}
