//! `kube-ovn`: the CNI plugin the kubelet (through the container runtime) runs for every pod
//! sandbox. It forwards to kovn-agent and prints the CNI result, or a CNI error JSON whose
//! message says what to do.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use cni::agent_client::{AgentClient, Reply};
use cni::error::{CniError, Code};
use cni::invocation::{Command, Invocation};
use cni::netconf::{NetConf, SUPPORTED_VERSIONS};
use cni::result::add_result;
use cni::wire::{Attachment, CniRequest, CniResponse, GcRequest};

/// ADD waits for the controller's annotations in the agent (which bounds that wait itself).
const DEFAULT_ADD_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    match run(&stdin, |k| std::env::var(k).ok()) {
        Ok(Some(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            let version = serde_json::from_slice::<serde_json::Value>(&stdin)
                .ok()
                .and_then(|v| v["cniVersion"].as_str().map(str::to_owned))
                .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
                .unwrap_or_else(|| "1.1.0".into());
            println!("{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}

fn run(stdin: &[u8], env: impl Fn(&str) -> Option<String>) -> Result<Option<String>, CniError> {
    let invocation = Invocation::from_env(env)?;
    if invocation.command == Command::Version {
        let asked = serde_json::from_slice::<serde_json::Value>(stdin)
            .ok()
            .and_then(|v| v["cniVersion"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "1.1.0".into());
        return Ok(Some(
            serde_json::json!({"cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS})
                .to_string(),
        ));
    }
    let conf = NetConf::parse(stdin)?;
    let add_timeout = conf
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_ADD_TIMEOUT);
    let socket = Path::new(&conf.server_socket);
    let agent = |timeout| AgentClient::new(socket, timeout);
    let other_timeout = add_timeout / 6;
    match invocation.command {
        Command::Add | Command::Del | Command::Check => {
            let (pod_name, pod_namespace) = invocation.pod()?;
            let request = CniRequest {
                cni_type: conf.type_.clone(),
                pod_name,
                pod_namespace,
                container_id: invocation.container_id.clone(),
                net_ns: invocation.netns.clone(),
                if_name: invocation.if_name.clone(),
                provider: conf.provider(),
                routes: conf.routes.clone(),
                dns: conf.dns.clone().unwrap_or_default(),
            };
            let body = serde_json::to_vec(&request).unwrap_or_default();
            match invocation.command {
                Command::Add => {
                    let reply = agent(add_timeout).call("POST", "/api/v1/add", Some(&body))?;
                    let response: CniResponse = expect(reply, 200, "ADD").and_then(|r| {
                        serde_json::from_slice(&r.body).map_err(|e| {
                            CniError::new(
                                Code::Decoding,
                                "cannot decode kovn-agent's ADD reply",
                                e.to_string(),
                            )
                        })
                    })?;
                    let result = add_result(
                        &conf.cni_version,
                        &response,
                        &invocation.netns,
                        conf.ipam_only(),
                    );
                    Ok(Some(result.to_string()))
                }
                Command::Del => {
                    let reply = agent(other_timeout).call("POST", "/api/v1/del", Some(&body))?;
                    expect(reply, 204, "DEL").map(|_| None)
                }
                _ => {
                    let reply = agent(other_timeout).call("POST", "/api/v1/check", Some(&body))?;
                    expect(reply, 200, "CHECK").map(|_| None)
                }
            }
        }
        Command::Status => {
            let reply = agent(other_timeout)
                .call("GET", "/api/v1/status", None)
                .map_err(|e| CniError::new(Code::NotAvailable, e.msg, e.details))?;
            if reply.status == 200 {
                Ok(None)
            } else {
                Err(CniError::new(
                    Code::NotAvailable,
                    "kovn-agent is not ready for new pods",
                    reply.error_message(),
                ))
            }
        }
        Command::Gc => {
            let valid_attachments = conf
                .valid_attachments
                .unwrap_or_default()
                .into_iter()
                .map(|a| Attachment {
                    container_id: a.container_id,
                    if_name: a.if_name,
                })
                .collect();
            let body = serde_json::to_vec(&GcRequest { valid_attachments }).unwrap_or_default();
            let reply = agent(other_timeout).call("POST", "/api/v1/gc", Some(&body))?;
            expect(reply, 204, "GC").map(|_| None)
        }
        Command::Version => Ok(None),
    }
}

/// The reply if it has the expected status, else the agent's error as a CNI error: a request
/// the agent calls bad is a configuration error, an unknown pod or container is code 3, and
/// anything else is worth retrying.
fn expect(reply: Reply, status: u16, verb: &str) -> Result<Reply, CniError> {
    if reply.status == status || (status == 204 && reply.status == 200) {
        return Ok(reply);
    }
    let message = reply.error_message();
    let code = match reply.status {
        400 => Code::InvalidNetworkConfig,
        404 => Code::UnknownContainer,
        _ => Code::TryAgainLater,
    };
    Err(CniError::new(
        code,
        format!("kovn-agent refused {verb} ({})", reply.status),
        message,
    ))
}
