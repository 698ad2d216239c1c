//! What every reconciler shares: the clients, the IPAM state, the reflector stores, settings,
//! metrics and the event recorder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::external_gateway::{self, ExternalGatewayConfig};
use api::{IP, Subnet, Vpc};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};

use crate::ipam::Ipam;
use crate::metrics::Metrics;
use crate::nb::NbWriter;

/// The name kovn's writes are recorded under (server-side apply field manager, events).
pub const FIELD_MANAGER: &str = "kovn-controller";

/// Cluster-wide settings, with Kube-OVN's flag names and defaults.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// The default VPC's router, the default subnet and the join subnet (the agent takes the
    /// same flags).
    #[command(flatten)]
    pub names: api::TopologyNames,
    #[arg(long, default_value = "10.16.0.0/16")]
    pub default_cidr: String,
    #[arg(long, default_value = "10.16.0.1")]
    pub default_gateway: String,
    #[arg(long, default_value = "")]
    pub default_exclude_ips: String,
    #[arg(long, default_value = "100.64.0.0/16")]
    pub node_switch_cidr: String,
    #[arg(long, default_value = "100.64.0.1")]
    pub node_switch_gateway: String,
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,
    /// Enforce NetworkPolicies (Kube-OVN's `--enable-np`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_np: bool,
}

impl Default for Settings {
    /// The flag defaults (one place for them: the `#[arg]` attributes above).
    fn default() -> Self {
        use clap::{Args, FromArgMatches};
        let matches = Settings::augment_args(clap::Command::new("kovn-controller"))
            .get_matches_from(["kovn-controller"]);
        Settings::from_arg_matches(&matches).expect("the flag defaults parse")
    }
}

/// Read views of the cluster, kept by reflectors.
#[derive(Clone)]
pub struct Stores {
    pub pods: Store<Pod>,
    pub namespaces: Store<Namespace>,
    pub nodes: Store<Node>,
    pub subnets: Store<Subnet>,
    pub vpcs: Store<Vpc>,
    pub ips: Store<IP>,
    pub network_policies: Store<NetworkPolicy>,
    /// Underlay subnets' VLANs (their tag and provider network).
    pub vlans: Store<api::Vlan>,
    pub provider_networks: Store<api::ProviderNetwork>,
    /// Kube-OVN's `kube-system/ovn-external-gw-config` (the only ConfigMap watched).
    pub external_gateway: Store<ConfigMap>,
    pub ovn_eips: Store<api::OvnEip>,
    pub ovn_fips: Store<api::OvnFip>,
    pub ovn_snat_rules: Store<api::OvnSnatRule>,
    pub ovn_dnat_rules: Store<api::OvnDnatRule>,
    pub vpc_nat_gateways: Store<api::VpcNatGateway>,
    pub iptables_eips: Store<api::IptablesEIP>,
    pub iptables_fip_rules: Store<api::IptablesFIPRule>,
    pub iptables_snat_rules: Store<api::IptablesSnatRule>,
    pub iptables_dnat_rules: Store<api::IptablesDnatRule>,
}

impl Stores {
    /// What the external gateway ConfigMap asks (disabled when there is none).
    pub fn external_gateway(&self) -> ExternalGatewayConfig {
        self.external_gateway
            .state()
            .iter()
            .find(|cm| {
                cm.metadata.name.as_deref() == Some(external_gateway::CONFIG_MAP)
                    && cm.metadata.namespace.as_deref() == Some(external_gateway::CONFIG_NAMESPACE)
            })
            .map(|cm| ExternalGatewayConfig::from_config_map(cm))
            .unwrap_or_else(|| ExternalGatewayConfig {
                switch: external_gateway::DEFAULT_SWITCH.to_owned(),
                ..ExternalGatewayConfig::default()
            })
    }
}

pub struct Context {
    pub kube: kube::Client,
    pub nb: NbWriter,
    pub ipam: Mutex<Ipam>,
    pub settings: Settings,
    pub stores: Stores,
    pub metrics: Arc<Metrics>,
    /// Centralized gateways' liveness, kept by [`crate::centralized_gateway::Checker`].
    pub gateway_health: crate::centralized_gateway::GatewayHealth,
    recorder: Recorder,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        kube: kube::Client,
        nb: NbWriter,
        settings: Settings,
        stores: Stores,
        metrics: Arc<Metrics>,
    ) -> Context {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(kube.clone(), reporter),
            kube,
            nb,
            ipam: Mutex::new(Ipam::new()),
            settings,
            stores,
            metrics,
            gateway_health: Default::default(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub fn ipam(&self) -> std::sync::MutexGuard<'_, Ipam> {
        self.ipam.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A Kubernetes event on `object` (best effort: a failed event is logged, not retried).
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::debug!(object = %object.name_any(), error = %e, "event not recorded");
        }
    }

    /// The delay before retrying `key` after its `n`-th consecutive failure: 0.5 s doubling to
    /// 2 min.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        let delay = Duration::from_millis(500).saturating_mul(1 << (*n - 1).min(8));
        delay.min(Duration::from_secs(120))
    }

    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}
