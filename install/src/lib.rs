//! kovn-install: what an operator runs to put kovn on a cluster and take it off again.
//! `preflight` judges this host (`preflight`, reading it through `host`); `install` renders
//! kovn's manifests for the cluster (`manifests`) and applies them with kubectl (`plan`);
//! with `--enable-ssl` it makes the databases' certificates when none are given (`pki`);
//! `uninstall` removes kovn from the cluster and, through a node cleanup DaemonSet running
//! `kovn-agent uninstall`, from every node.

pub mod host;
pub mod manifests;
pub mod pki;
pub mod plan;
pub mod preflight;
