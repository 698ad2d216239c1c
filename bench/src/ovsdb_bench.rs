//! OVSDB: kovn's client against ovn-nbctl on the same standalone OVN_Northbound server, in one
//! run. Each tool inserts N Logical_Switch_Ports into one switch (as Kube-OVN writes them:
//! addresses, port_security, external_ids), updates each one, then deletes them.
//!
//! - `ovn-nbctl` per command: one process per operation, timed on a sample of each phase (a
//!   full 10,000-operation loop takes minutes and its rate does not change with N).
//! - `ovn-nbctl` batched: many commands joined by `--` in one invocation.
//! - kovn's client: the same operations batched into transactions.
//!
//! Then the cache's memory for many rows, against the compacted database file.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ovsdb::models::ovn_northbound::{LogicalSwitch, LogicalSwitchPort};
use ovsdb::{
    Client, ClientConfig, Condition, Datum, Model, MonitorRequest, Mutation, Transaction, Uuid,
};
use sandbox::{Cmd, StandaloneDb};
use serde_json::{Value, json};

const NB_SCHEMA: &str = "/usr/share/ovn/ovn-nb.ovsschema";
const NB: &str = "OVN_Northbound";

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Logical_Switch_Ports per phase.
    #[arg(long, default_value_t = 10_000)]
    ports: usize,
    /// Operations per transaction (kovn) and commands per invocation (ovn-nbctl batched).
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Operations the ovn-nbctl per-command loop is timed on, per phase.
    #[arg(long, default_value_t = 300)]
    loop_sample: usize,
    /// Rows for the cache memory measurement.
    #[arg(long, default_value_t = 100_000)]
    cache_rows: usize,
}

/// Operations per second of one tool in each phase.
#[derive(Debug, Clone, Copy)]
struct Rates {
    insert: f64,
    update: f64,
    delete: f64,
}

impl Rates {
    fn json(&self) -> Value {
        json!({"insert_ops_s": self.insert, "update_ops_s": self.update, "delete_ops_s": self.delete})
    }
}

fn port_name(i: usize) -> String {
    format!("pod{i}.default")
}

fn port(i: usize) -> LogicalSwitchPort {
    let ip = format!("10.16.{}.{}", (i >> 8) & 0xff, i & 0xff);
    let mac = format!("0a:58:0a:10:{:02x}:{:02x}", (i >> 8) & 0xff, i & 0xff);
    LogicalSwitchPort {
        name: port_name(i),
        addresses: vec![format!("{mac} {ip}")],
        port_security: vec![format!("{mac} {ip}")],
        external_ids: BTreeMap::from([
            ("pod".into(), format!("default/pod{i}")),
            ("ls".into(), "ovn-default".into()),
            ("vendor".into(), "kube-ovn".into()),
        ]),
        ..Default::default()
    }
}

fn rate(ops: usize, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64()
}

fn progress(what: &str) {
    println!("    {what}");
}

fn nbctl(db: &StandaloneDb) -> Cmd {
    Cmd::new("ovn-nbctl")
        .arg(format!("--db={}", db.remote()))
        .arg("--no-leader-only")
        .timeout(Duration::from_secs(600))
}

fn create_switch(db: &StandaloneDb) -> Result<()> {
    nbctl(db).args(["ls-add", "ovn-default"]).run()?;
    Ok(())
}

/// ovn-nbctl, one process per operation, on the first `sample` ports.
fn nbctl_per_command(db: &StandaloneDb, sample: usize) -> Result<Rates> {
    create_switch(db)?;
    let time = |f: &dyn Fn(usize) -> Result<()>| -> Result<f64> {
        let started = Instant::now();
        for i in 0..sample {
            f(i)?;
        }
        Ok(rate(sample, started.elapsed()))
    };
    let insert = time(&|i| {
        let p = port(i);
        nbctl(db)
            .args([
                "lsp-add",
                "ovn-default",
                &p.name,
                "--",
                "lsp-set-addresses",
                &p.name,
            ])
            .arg(&p.addresses[0])
            .args(["--", "lsp-set-port-security", &p.name])
            .arg(&p.port_security[0])
            .args(["--", "set", "Logical_Switch_Port", &p.name])
            .args(
                p.external_ids
                    .iter()
                    .map(|(k, v)| format!("external_ids:{k}=\"{v}\"")),
            )
            .run()?;
        Ok(())
    })?;
    let update = time(&|i| {
        nbctl(db)
            .args([
                "set",
                "Logical_Switch_Port",
                &port_name(i),
                "external_ids:routed=true",
            ])
            .run()?;
        Ok(())
    })?;
    let delete = time(&|i| {
        nbctl(db).args(["lsp-del", &port_name(i)]).run()?;
        Ok(())
    })?;
    Ok(Rates {
        insert,
        update,
        delete,
    })
}

/// ovn-nbctl with `batch` commands joined by `--` per invocation.
fn nbctl_batched(db: &StandaloneDb, ports: usize, batch: usize) -> Result<Rates> {
    create_switch(db)?;
    let run = |args_for: &dyn Fn(usize) -> Vec<String>| -> Result<f64> {
        let started = Instant::now();
        for chunk in (0..ports).collect::<Vec<_>>().chunks(batch) {
            let mut cmd = nbctl(db);
            for (n, &i) in chunk.iter().enumerate() {
                if n > 0 {
                    cmd = cmd.arg("--");
                }
                cmd = cmd.args(args_for(i));
            }
            cmd.run()?;
        }
        Ok(rate(ports, started.elapsed()))
    };
    let insert = run(&|i| {
        let p = port(i);
        let mut args = vec![
            "lsp-add".into(),
            "ovn-default".into(),
            p.name.clone(),
            "--".into(),
            "lsp-set-addresses".into(),
            p.name.clone(),
            p.addresses[0].clone(),
            "--".into(),
            "lsp-set-port-security".into(),
            p.name.clone(),
            p.port_security[0].clone(),
            "--".into(),
            "set".into(),
            "Logical_Switch_Port".into(),
            p.name.clone(),
        ];
        args.extend(
            p.external_ids
                .iter()
                .map(|(k, v)| format!("external_ids:{k}=\"{v}\"")),
        );
        args
    })?;
    let update = run(&|i| {
        vec![
            "set".into(),
            "Logical_Switch_Port".into(),
            port_name(i),
            "external_ids:routed=true".into(),
        ]
    })?;
    let delete = run(&|i| vec!["lsp-del".into(), port_name(i)])?;
    Ok(Rates {
        insert,
        update,
        delete,
    })
}

/// kovn's client: the same operations in transactions of `batch` operations.
async fn kovn_client(db: &StandaloneDb, ports: usize, batch: usize) -> Result<Rates> {
    let client = Client::connect(ClientConfig::new(&[&db.remote()], NB)).await?;
    let mut t = Transaction::new(NB);
    t.insert_model(&LogicalSwitch {
        name: "ovn-default".into(),
        ..Default::default()
    });
    client.transact(&t).await?;
    let switch = [Condition::eq("name", "ovn-default")];

    let started = Instant::now();
    let mut uuids: Vec<Uuid> = Vec::with_capacity(ports);
    for chunk in (0..ports).collect::<Vec<_>>().chunks(batch) {
        let mut t = Transaction::new(NB);
        let mut refs = Vec::new();
        let mut indexes = Vec::new();
        for &i in chunk {
            let (index, named) = t.insert_model_named(&format!("p{i}"), &port(i));
            refs.push(named);
            indexes.push(index);
        }
        t.mutate(
            LogicalSwitch::TABLE,
            &switch,
            &[Mutation::insert("ports", Datum::set(refs))],
        );
        let result = client.transact(&t).await?;
        uuids.extend(indexes.iter().filter_map(|&i| result.uuid(i)));
    }
    let insert = rate(ports, started.elapsed());
    if uuids.len() != ports {
        bail!("inserted {} ports, expected {ports}", uuids.len());
    }

    let started = Instant::now();
    for chunk in uuids.chunks(batch) {
        let mut t = Transaction::new(NB);
        for uuid in chunk {
            t.mutate(
                LogicalSwitchPort::TABLE,
                &[Condition::uuid(*uuid)],
                &[Mutation::insert(
                    "external_ids",
                    Datum::map([("routed", "true")]),
                )],
            );
        }
        client.transact(&t).await?;
    }
    let update = rate(ports, started.elapsed());

    let started = Instant::now();
    for chunk in uuids.chunks(batch) {
        // Removing the references deletes the ports (they are not a root table), as
        // `lsp-del` does.
        let mut t = Transaction::new(NB);
        t.mutate(
            LogicalSwitch::TABLE,
            &switch,
            &[Mutation::delete("ports", Datum::set(chunk.iter().copied()))],
        );
        client.transact(&t).await?;
    }
    let delete = rate(ports, started.elapsed());
    Ok(Rates {
        insert,
        update,
        delete,
    })
}

/// Loads `rows` ports into a server, then measures the heap the monitoring client keeps after
/// loading them (live bytes from the counting allocator, so transient buffers such as the
/// parsed monitor reply do not count), against the compacted database file.
async fn cache_memory(rows: usize, batch: usize) -> Result<(u64, u64, f64)> {
    let db = StandaloneDb::start(NB_SCHEMA)?;
    {
        let writer = Client::connect(ClientConfig::new(&[&db.remote()], NB)).await?;
        let mut t = Transaction::new(NB);
        t.insert_model(&LogicalSwitch {
            name: "ovn-default".into(),
            ..Default::default()
        });
        writer.transact(&t).await?;
        for chunk in (0..rows).collect::<Vec<_>>().chunks(batch * 5) {
            let mut t = Transaction::new(NB);
            let mut refs = Vec::new();
            for &i in chunk {
                refs.push(t.insert_model_named(&format!("p{i}"), &port(i)).1);
            }
            t.mutate(
                LogicalSwitch::TABLE,
                &[Condition::eq("name", "ovn-default")],
                &[Mutation::insert("ports", Datum::set(refs))],
            );
            writer.transact(&t).await?;
        }
    }
    Cmd::new("ovs-appctl")
        .arg(format!("--target={}", db.dir().join("db.ctl").display()))
        .arg("ovsdb-server/compact")
        .run()?;
    let file_bytes = std::fs::metadata(db.file())?.len();
    let before = crate::alloc_counter::live_bytes();
    let client = Client::connect(
        ClientConfig::new(&[&db.remote()], NB)
            .monitor(MonitorRequest::table(LogicalSwitchPort::TABLE)),
    )
    .await?;
    let cached = client.read(|c| c.row_count());
    if cached != rows {
        bail!("cache holds {cached} rows, expected {rows}");
    }
    let cache_bytes = crate::alloc_counter::live_bytes().saturating_sub(before) as u64;
    drop(client);
    Ok((
        cache_bytes,
        file_bytes,
        cache_bytes as f64 / file_bytes as f64,
    ))
}

pub async fn run(options: &Options) -> Result<Value> {
    let Options {
        ports,
        batch,
        loop_sample,
        cache_rows,
    } = options.clone();
    println!(
        "==> OVSDB: {ports} Logical_Switch_Ports per phase, batches of {batch}; each tool on a fresh standalone NB"
    );

    progress(&format!(
        "ovn-nbctl, one invocation per operation ({loop_sample} per phase) …"
    ));
    let db = StandaloneDb::start(NB_SCHEMA)?;
    let per_command = nbctl_per_command(&db, loop_sample)?;
    drop(db);

    progress(&format!(
        "ovn-nbctl, {batch} commands per invocation ({ports} per phase) …"
    ));
    let db = StandaloneDb::start(NB_SCHEMA)?;
    let batched = nbctl_batched(&db, ports, batch)?;
    drop(db);

    progress(&format!(
        "kovn ovsdb client, {batch} operations per transaction ({ports} per phase) …"
    ));
    let db = StandaloneDb::start(NB_SCHEMA)?;
    let kovn = kovn_client(&db, ports, batch).await?;
    drop(db);

    progress(&format!("cache memory for {cache_rows} rows …"));
    let (cache_bytes, file_bytes, ratio) = cache_memory(cache_rows, batch).await?;

    println!();
    println!("| ops/s ({ports} Logical_Switch_Ports) | insert | update | delete |");
    println!("|---|---:|---:|---:|");
    for (name, r) in [
        (
            format!("ovn-nbctl per command (sample of {loop_sample})"),
            per_command,
        ),
        (
            format!("ovn-nbctl batched ({batch} per invocation)"),
            batched,
        ),
        (format!("kovn client ({batch} per transaction)"), kovn),
    ] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} |",
            r.insert, r.update, r.delete
        );
    }
    let vs = |a: f64, b: f64| a / b;
    println!(
        "| kovn ÷ per command | {:.1}× | {:.1}× | {:.1}× |",
        vs(kovn.insert, per_command.insert),
        vs(kovn.update, per_command.update),
        vs(kovn.delete, per_command.delete)
    );
    println!(
        "| kovn ÷ batched | {:.2}× | {:.2}× | {:.2}× |",
        vs(kovn.insert, batched.insert),
        vs(kovn.update, batched.update),
        vs(kovn.delete, batched.delete)
    );
    println!();
    println!(
        "cache: {cache_rows} Logical_Switch_Ports hold {:.1} MiB of heap; compacted database file {:.1} MiB; ratio {ratio:.2} (target ≤ 2)",
        cache_bytes as f64 / 1048576.0,
        file_bytes as f64 / 1048576.0
    );
    Ok(json!({
        "ovsdb": {
            "ports": ports, "batch": batch, "loop_sample": loop_sample,
            "nbctl_per_command": per_command.json(),
            "nbctl_batched": batched.json(),
            "kovn_client": kovn.json(),
            "cache": {"rows": cache_rows, "heap_bytes": cache_bytes, "db_file_bytes": file_bytes, "ratio": ratio},
        }
    }))
}
