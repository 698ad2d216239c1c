//! Starting the controller: reflectors fill the stores; once every store has its initial
//! list, IPAM is rebuilt from the IP objects and NB ports (conflicts reported) and leaks are
//! released, before anything new is allocated; then one kube-runtime Controller per kind runs.

use std::collections::BTreeSet;
use std::sync::Arc;

use api::{IP, Owner, Subnet, SubnetSpec, Vpc, VpcSpec};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, future};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use ovsdb::Client;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::context::{Context, FIELD_MANAGER, Settings, Stores};
use crate::error::Result;
use crate::ipam::{Record, RecordSource};
use crate::metrics::Metrics;
use crate::nb::{NbObserver, NbWriter};
use crate::reconcile::{self, error_policy, measured};
use crate::subnet::validate;
use crate::topology::{self, vpc::router_ops};

type Events<K> = BoxStream<'static, watcher::Result<watcher::Event<K>>>;

/// The watch streams the controller consumes: from the API server in production
/// ([`Inputs::from_cluster`]), from a test fixture in tests.
pub struct Inputs {
    pub pods: Events<Pod>,
    pub namespaces: Events<Namespace>,
    pub nodes: Events<Node>,
    pub subnets: Events<Subnet>,
    pub vpcs: Events<Vpc>,
    pub ips: Events<IP>,
    pub services: Events<Service>,
    pub endpoint_slices: Events<EndpointSlice>,
    pub network_policies: Events<NetworkPolicy>,
    pub vlans: Events<api::Vlan>,
    pub provider_networks: Events<api::ProviderNetwork>,
    /// Only Kube-OVN's `kube-system/ovn-external-gw-config`.
    pub external_gateway: Events<ConfigMap>,
    pub ovn_eips: Events<api::OvnEip>,
    pub ovn_fips: Events<api::OvnFip>,
    pub ovn_snat_rules: Events<api::OvnSnatRule>,
    pub ovn_dnat_rules: Events<api::OvnDnatRule>,
    pub vpc_nat_gateways: Events<api::VpcNatGateway>,
    pub iptables_eips: Events<api::IptablesEIP>,
    pub iptables_fip_rules: Events<api::IptablesFIPRule>,
    pub iptables_snat_rules: Events<api::IptablesSnatRule>,
    pub iptables_dnat_rules: Events<api::IptablesDnatRule>,
}

impl Inputs {
    pub fn from_cluster(client: &kube::Client) -> Inputs {
        fn watch<K>(client: &kube::Client) -> Events<K>
        where
            K: kube::Resource<DynamicType = ()>
                + Clone
                + serde::de::DeserializeOwned
                + std::fmt::Debug
                + Send
                + 'static,
        {
            use kube::runtime::WatchStreamExt;
            watcher(Api::<K>::all(client.clone()), watcher::Config::default())
                .default_backoff()
                .boxed()
        }
        Inputs {
            pods: watch(client),
            namespaces: watch(client),
            nodes: watch(client),
            subnets: watch(client),
            vpcs: watch(client),
            ips: watch(client),
            services: watch(client),
            endpoint_slices: watch(client),
            network_policies: watch(client),
            vlans: watch(client),
            provider_networks: watch(client),
            external_gateway: {
                use kube::runtime::WatchStreamExt;
                watcher(
                    Api::<ConfigMap>::namespaced(
                        client.clone(),
                        api::external_gateway::CONFIG_NAMESPACE,
                    ),
                    watcher::Config::default().fields(&format!(
                        "metadata.name={}",
                        api::external_gateway::CONFIG_MAP
                    )),
                )
                .default_backoff()
                .boxed()
            },
            ovn_eips: watch(client),
            ovn_fips: watch(client),
            ovn_snat_rules: watch(client),
            ovn_dnat_rules: watch(client),
            vpc_nat_gateways: watch(client),
            iptables_eips: watch(client),
            iptables_fip_rules: watch(client),
            iptables_snat_rules: watch(client),
            iptables_dnat_rules: watch(client),
        }
    }
}

/// Feeds a store from `events` in a task of `tasks`; returns the store, a stream of changed
/// objects (the controller's trigger) and, if asked, a channel of deleted objects.
fn spawn_reflector<K>(
    tasks: &mut JoinSet<()>,
    events: Events<K>,
    deletions: Option<mpsc::UnboundedSender<K>>,
) -> (
    Store<K>,
    impl Stream<Item = watcher::Result<K>> + Send + 'static,
)
where
    K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let (tx, rx) = mpsc::unbounded_channel::<K>();
    tasks.spawn(async move {
        let mut stream = std::pin::pin!(reflector::reflector(writer, events));
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    let _ = tx.send(o);
                }
                Ok(watcher::Event::Delete(o)) => {
                    if let Some(d) = &deletions {
                        let _ = d.send(o);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "watch error"),
            }
        }
    });
    let trigger =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|o| (Ok(o), rx)) },
        );
    (reader, trigger)
}

/// Two streams of what `source` yields: the first of the objects themselves (a policy trigger
/// maps them), the second as the controller trigger that `source` was.
fn fan_out<K: Clone + Send + 'static>(
    source: impl Stream<Item = watcher::Result<K>> + Send + 'static,
) -> (
    impl Stream<Item = K> + Send + 'static,
    impl Stream<Item = watcher::Result<K>> + Send + 'static,
) {
    let (copies, rx) = mpsc::unbounded_channel::<K>();
    let trigger = source.inspect(move |item| {
        if let Ok(o) = item {
            let _ = copies.send(o.clone());
        }
    });
    let copies =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|o| (o, rx)) });
    (copies, trigger)
}

struct MetricsObserver(Arc<Metrics>);

impl NbObserver for MetricsObserver {
    fn batch(&self, _jobs: usize) {
        self.0.nb_batches.inc();
    }
}

/// Runs the controller until a stream ends or an error stops it.
pub async fn run(
    kube: kube::Client,
    nb: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    inputs: Inputs,
    concurrency: u16,
) -> anyhow::Result<()> {
    let (pod_deletions, mut deleted_pods) = mpsc::unbounded_channel();
    let (node_deletions, mut deleted_nodes) = mpsc::unbounded_channel();
    let (policy_deletions, mut deleted_policies) = mpsc::unbounded_channel();
    // Policies to look at again once a deleted pod's addresses are released.
    let (policy_requeue, requeued_policies) = mpsc::unbounded_channel();
    // The reflectors live as long as this future: a controller that stops (or is dropped, as
    // a test or the benchmark does to "kill" it) leaves no watch or store behind.
    let mut tasks = JoinSet::new();
    let t = &mut tasks;
    let (pods, pod_trigger) = spawn_reflector(t, inputs.pods, Some(pod_deletions));
    let (namespaces, ns_trigger) = spawn_reflector(t, inputs.namespaces, None);
    let (nodes, node_trigger) = spawn_reflector(t, inputs.nodes, Some(node_deletions));
    let (subnets, subnet_trigger) = spawn_reflector(t, inputs.subnets, None);
    let (vpcs, vpc_trigger) = spawn_reflector(t, inputs.vpcs, None);
    let (ips, _ip_trigger) = spawn_reflector(t, inputs.ips, None);
    let (network_policies, policy_trigger) =
        spawn_reflector(t, inputs.network_policies, Some(policy_deletions));
    // A Vlan made after the Subnet naming it: the subnet retries (VlanNotFound).
    let (vlans, _vlan_trigger) = spawn_reflector(t, inputs.vlans, None);
    let (provider_networks, provider_network_trigger) =
        spawn_reflector(t, inputs.provider_networks, None);
    let (external_gateway, external_gateway_trigger) =
        spawn_reflector(t, inputs.external_gateway, None);
    let (ovn_eips, ovn_eip_trigger) = spawn_reflector(t, inputs.ovn_eips, None);
    let (ovn_fips, ovn_fip_trigger) = spawn_reflector(t, inputs.ovn_fips, None);
    let (ovn_snat_rules, ovn_snat_trigger) = spawn_reflector(t, inputs.ovn_snat_rules, None);
    let (ovn_dnat_rules, ovn_dnat_trigger) = spawn_reflector(t, inputs.ovn_dnat_rules, None);
    let (vpc_nat_gateways, vpc_nat_gateway_trigger) =
        spawn_reflector(t, inputs.vpc_nat_gateways, None);
    let (iptables_eips, iptables_eip_trigger) = spawn_reflector(t, inputs.iptables_eips, None);
    let (iptables_fip_rules, iptables_fip_trigger) =
        spawn_reflector(t, inputs.iptables_fip_rules, None);
    let (iptables_snat_rules, iptables_snat_trigger) =
        spawn_reflector(t, inputs.iptables_snat_rules, None);
    let (iptables_dnat_rules, iptables_dnat_trigger) =
        spawn_reflector(t, inputs.iptables_dnat_rules, None);
    let stores = Stores {
        pods,
        namespaces,
        nodes,
        subnets,
        vpcs,
        ips,
        network_policies,
        vlans,
        provider_networks,
        external_gateway,
        ovn_eips,
        ovn_fips,
        ovn_snat_rules,
        ovn_dnat_rules,
        vpc_nat_gateways,
        iptables_eips,
        iptables_fip_rules,
        iptables_snat_rules,
        iptables_dnat_rules,
    };
    tracing::info!("waiting for the initial lists");
    stores.pods.wait_until_ready().await?;
    stores.namespaces.wait_until_ready().await?;
    stores.nodes.wait_until_ready().await?;
    stores.subnets.wait_until_ready().await?;
    stores.vpcs.wait_until_ready().await?;
    stores.ips.wait_until_ready().await?;
    stores.network_policies.wait_until_ready().await?;
    stores.vlans.wait_until_ready().await?;
    stores.provider_networks.wait_until_ready().await?;
    stores.external_gateway.wait_until_ready().await?;
    stores.ovn_eips.wait_until_ready().await?;
    stores.ovn_fips.wait_until_ready().await?;
    stores.ovn_snat_rules.wait_until_ready().await?;
    stores.ovn_dnat_rules.wait_until_ready().await?;
    stores.vpc_nat_gateways.wait_until_ready().await?;
    stores.iptables_eips.wait_until_ready().await?;
    stores.iptables_fip_rules.wait_until_ready().await?;
    stores.iptables_snat_rules.wait_until_ready().await?;
    stores.iptables_dnat_rules.wait_until_ready().await?;

    let writer = NbWriter::start(nb, Arc::new(MetricsObserver(metrics.clone())));
    let ctx = Arc::new(Context::new(
        kube,
        writer,
        settings,
        stores,
        metrics.clone(),
    ));
    ensure_defaults(&ctx).await?;
    restore(&ctx).await?;
    if ctx.settings.enable_np {
        let stale = reconcile::network_policy::collect_stale(&ctx).await?;
        tracing::info!(stale, "rows of deleted NetworkPolicies removed");
    }
    metrics.set_ready(true);
    tracing::info!("IPAM restored; reconciling");

    let config = ControllerConfig::default().concurrency(concurrency);
    let s = ctx.stores.clone();
    // A gateway node that went down or came back: its subnets are reconciled again.
    let (gateway_requeue, requeued_subnets) = mpsc::unbounded_channel();
    let gateway_checker = crate::centralized_gateway::Checker {
        ctx: ctx.clone(),
        requeue: gateway_requeue,
    }
    .run();
    let subnet_ctl = Controller::for_stream(subnet_trigger, s.subnets.clone())
        .with_config(config.clone())
        .reconcile_on(futures::stream::unfold(
            requeued_subnets,
            |mut rx| async move { rx.recv().await.map(|o| (o, rx)) },
        ))
        .run(
            |o, c| measured(o, c, reconcile::subnet::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| future::ready(()));
    // A VPC's external port follows the external gateway ConfigMap (gateway nodes, the
    // external subnet) and its router port's EIP.
    let (eip_changes, ovn_eip_trigger) = fan_out(ovn_eip_trigger);
    let (nat_gateway_changes, vpc_nat_gateway_trigger) = fan_out(vpc_nat_gateway_trigger);
    let vpc_ctl = Controller::for_stream(vpc_trigger, s.vpcs.clone())
        .with_config(config.clone())
        .reconcile_all_on(external_gateway_trigger.map(|_| ()))
        .reconcile_all_on(eip_changes.map(|_| ()))
        .reconcile_all_on(nat_gateway_changes.map(|_| ()))
        .run(
            |o, c| measured(o, c, reconcile::vpc::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| future::ready(()));
    // A node's labels say where provider networks are ready: every ProviderNetwork's status
    // is looked at again on node changes.
    let (node_changes, node_trigger) = fan_out(node_trigger);
    let provider_network_ctl =
        Controller::for_stream(provider_network_trigger, s.provider_networks.clone())
            .with_config(config.clone())
            .reconcile_all_on(node_changes.map(|_| ()))
            .run(
                |o, c| measured(o, c, reconcile::provider_network::reconcile),
                error_policy,
                ctx.clone(),
            )
            .for_each(|_| future::ready(()));
    let ovn_eip_ctl = Controller::for_stream(ovn_eip_trigger, s.ovn_eips.clone())
        .with_config(config.clone())
        .run(
            |o, c| measured(o, c, reconcile::ovn_eip::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| future::ready(()));
    let ovn_fip_ctl = Controller::for_stream(ovn_fip_trigger, s.ovn_fips.clone())
        .with_config(config.clone())
        .run(
            |o, c| measured(o, c, reconcile::ovn_nat::reconcile::<api::OvnFip>),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| future::ready(()));
    let ovn_snat_ctl = Controller::for_stream(ovn_snat_trigger, s.ovn_snat_rules.clone())
        .with_config(config.clone())
        .run(
            |o, c| measured(o, c, reconcile::ovn_nat::reconcile::<api::OvnSnatRule>),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| future::ready(()));
    let ovn_dnat_ctl = Controller::for_stream(ovn_dnat_trigger, s.ovn_dnat_rules.clone())
        .with_config(config.clone())
        .run(
            |o, c| measured(o, c, reconcile::ovn_nat::reconcile::<api::OvnDnatRule>),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| future::ready(()));
    let vpc_nat_gateway_ctl =
        Controller::for_stream(vpc_nat_gateway_trigger, s.vpc_nat_gateways.clone())
            .with_config(config.clone())
            .run(
                |o, c| measured(o, c, reconcile::vpc_nat_gateway::reconcile_gateway),
                error_policy,
                ctx.clone(),
            )
            .for_each(|_| future::ready(()));
    let iptables_eip_ctl = Controller::for_stream(iptables_eip_trigger, s.iptables_eips.clone())
        .with_config(config.clone())
        .run(
            |o, c| measured(o, c, reconcile::vpc_nat_gateway::reconcile_eip),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| future::ready(()));
    let iptables_fip_ctl =
        Controller::for_stream(iptables_fip_trigger, s.iptables_fip_rules.clone())
            .with_config(config.clone())
            .run(
                |o, c| measured(o, c, reconcile::ovn_nat::reconcile::<api::IptablesFIPRule>),
                error_policy,
                ctx.clone(),
            )
            .for_each(|_| future::ready(()));
    let iptables_snat_ctl =
        Controller::for_stream(iptables_snat_trigger, s.iptables_snat_rules.clone())
            .with_config(config.clone())
            .run(
                |o, c| measured(o, c, reconcile::ovn_nat::reconcile::<api::IptablesSnatRule>),
                error_policy,
                ctx.clone(),
            )
            .for_each(|_| future::ready(()));
    let iptables_dnat_ctl =
        Controller::for_stream(iptables_dnat_trigger, s.iptables_dnat_rules.clone())
            .with_config(config.clone())
            .run(
                |o, c| measured(o, c, reconcile::ovn_nat::reconcile::<api::IptablesDnatRule>),
                error_policy,
                ctx.clone(),
            )
            .for_each(|_| future::ready(()));
    let node_ctl = Controller::for_stream(node_trigger, s.nodes.clone())
        .with_config(config.clone())
        .run(
            |o, c| measured(o, c, reconcile::node::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| future::ready(()));
    // Pod and namespace changes requeue the policies they can affect. The pod trigger is
    // shared: the pod controller and the policy controller each see every change.
    let (pod_changes, pod_trigger) = fan_out(pod_trigger);
    let policy_on_pods = {
        let ctx = ctx.clone();
        pod_changes.flat_map(move |pod: Pod| {
            let ns = pod.namespace().unwrap_or_default();
            futures::stream::iter(reconcile::network_policy::affected_by_pod(&ctx, &ns))
        })
    };
    let policy_on_namespaces = {
        let ctx = ctx.clone();
        ns_trigger.flat_map(move |_| {
            futures::stream::iter(reconcile::network_policy::affected_by_namespace(&ctx))
        })
    };
    let policy_ctl = Controller::for_stream(policy_trigger, s.network_policies.clone())
        .with_config(config.clone())
        .reconcile_on(policy_on_pods)
        .reconcile_on(policy_on_namespaces)
        .reconcile_on(futures::stream::unfold(
            requeued_policies,
            |mut rx| async move { rx.recv().await.map(|o| (o, rx)) },
        ))
        .run(
            |o, c| measured(o, c, reconcile::network_policy::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| future::ready(()));
    let pod_ctl = Controller::for_stream(pod_trigger, s.pods.clone())
        .with_config(config)
        .run(
            |o, c| measured(o, c, pod_with_events),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| future::ready(()));
    let deletions = {
        let ctx = ctx.clone();
        async move {
            loop {
                tokio::select! {
                    Some(pod) = deleted_pods.recv() => {
                        let pod: Pod = pod;
                        let owner = Owner::of_pod(&pod);
                        if let Err(e) = reconcile::pod::release_pod(&ctx, &owner).await {
                            tracing::warn!(%owner, error = %e, "releasing a deleted pod failed");
                        }
                        let ns = pod.namespace().unwrap_or_default();
                        for policy in reconcile::network_policy::affected_by_pod(&ctx, &ns) {
                            let _ = policy_requeue.send(policy);
                        }
                    }
                    Some(policy) = deleted_policies.recv() => {
                        let policy: NetworkPolicy = policy;
                        let key = crate::network_policy::PolicyKey::of(&policy);
                        if let Err(e) = reconcile::network_policy::release(&ctx, key.clone()).await {
                            tracing::warn!(policy = %key, error = %e, "removing a deleted NetworkPolicy failed");
                        }
                    }
                    Some(node) = deleted_nodes.recv() => {
                        let node: Node = node;
                        if let Err(e) = reconcile::node::release(&ctx, &node.name_any()).await {
                            tracing::warn!(node = %node.name_any(), error = %e, "releasing a deleted node failed");
                        }
                    }
                    else => break,
                }
            }
        }
    };
    let services = reconcile::service::run(ctx.clone(), inputs.services, inputs.endpoint_slices);
    tokio::join!(
        subnet_ctl,
        vpc_ctl,
        node_ctl,
        pod_ctl,
        policy_ctl,
        deletions,
        services,
        gateway_checker,
        provider_network_ctl,
        ovn_eip_ctl,
        ovn_fip_ctl,
        ovn_snat_ctl,
        ovn_dnat_ctl,
        vpc_nat_gateway_ctl,
        iptables_eip_ctl,
        iptables_fip_ctl,
        iptables_snat_ctl,
        iptables_dnat_ctl
    );
    drop(tasks);
    Ok(())
}

/// Pod reconcile that tells the user (an event on the pod) when its own request cannot be met.
async fn pod_with_events(
    pod: Arc<Pod>,
    ctx: Arc<Context>,
) -> Result<kube::runtime::controller::Action> {
    let result = reconcile::pod::reconcile(pod.clone(), ctx.clone()).await;
    if let Err(e) = &result
        && reconcile::pod::is_user_error(e)
    {
        ctx.event(&*pod, true, "AllocationFailed", e.to_string())
            .await;
    }
    result
}

/// The default subnet and the join subnet, as the flags describe them.
fn default_subnets(s: &Settings) -> [(String, SubnetSpec); 2] {
    [
        (
            s.names.default_subnet.clone(),
            SubnetSpec {
                default: true,
                cidr_block: s.default_cidr.clone(),
                gateway: s.default_gateway.clone(),
                exclude_ips: s
                    .default_exclude_ips
                    .split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect(),
                nat_outgoing: true,
                ..SubnetSpec::default()
            },
        ),
        (
            s.names.join_subnet.clone(),
            SubnetSpec {
                cidr_block: s.node_switch_cidr.clone(),
                gateway: s.node_switch_gateway.clone(),
                ..SubnetSpec::default()
            },
        ),
    ]
}

/// Kube-OVN creates the default VPC, the default subnet and the join subnet from its flags.
async fn ensure_defaults(ctx: &Context) -> Result<()> {
    let s = &ctx.settings;
    let router = s.names.cluster_router.clone();
    ctx.nb
        .apply(move |cache, t| {
            router_ops(cache, t, &router);
            Ok(())
        })
        .await?;
    let params = PatchParams::apply(FIELD_MANAGER);
    let subnets: Api<Subnet> = Api::all(ctx.kube.clone());
    for (name, spec) in default_subnets(s) {
        if ctx
            .stores
            .subnets
            .get(&reflector::ObjectRef::new(&name))
            .is_none()
        {
            subnets
                .patch(&name, &params, &Patch::Apply(&Subnet::new(&name, spec)))
                .await?;
        }
    }
    if ctx
        .stores
        .vpcs
        .get(&reflector::ObjectRef::new(&s.names.cluster_router))
        .is_none()
    {
        let vpcs: Api<Vpc> = Api::all(ctx.kube.clone());
        vpcs.patch(
            &s.names.cluster_router,
            &params,
            &Patch::Apply(&Vpc::new(&s.names.cluster_router, VpcSpec::default())),
        )
        .await?;
    }
    Ok(())
}

/// Rebuilds IPAM before the first allocation: every valid subnet's pool (the defaults from the
/// settings if their objects are not listed yet), then the IP objects and EIPs, then the NB
/// ports; a record that cannot be honoured is reported. Then releases what no pod, node or
/// EIP holds any more (deleted while the controller was down).
async fn restore(ctx: &Context) -> Result<()> {
    let mut subnets: Vec<Subnet> = ctx
        .stores
        .subnets
        .state()
        .iter()
        .map(|s| (**s).clone())
        .collect();
    for (name, spec) in default_subnets(&ctx.settings) {
        if !subnets.iter().any(|x| x.name_any() == name) {
            subnets.push(Subnet::new(&name, spec));
        }
    }
    subnets.sort_by_key(|x| (x.metadata.creation_timestamp.clone(), x.name_any()));
    let mut accepted: Vec<Subnet> = Vec::new();
    let mut records = Vec::new();
    {
        let mut ipam = ctx.ipam();
        for subnet in subnets {
            if let Ok(valid) = validate(&subnet, &accepted, &ctx.settings.names) {
                ipam.add_subnet(valid.allocator);
                accepted.push(subnet);
            }
        }
        for ip in ctx.stores.ips.state() {
            // The owner is what the object records, never a guess from its name; the name
            // only tells the pod's own record from its secondary attachments'.
            let Some(owner) = Owner::of_ip_object(&ip) else {
                tracing::warn!(ip = %ip.name_any(), "an IP object without podName: not restored");
                ctx.metrics.ipam_conflicts.inc();
                continue;
            };
            // An attachment of a network kovn has no subnet for (another plugin's, or one
            // not defined yet) is left as it is: not a conflict, never released.
            if matches!(owner, Owner::Attachment { .. }) && ipam.subnet(&ip.spec.subnet).is_none() {
                tracing::debug!(ip = %ip.name_any(), subnet = %ip.spec.subnet, "an attachment's IP object of a subnet kovn does not have: left as it is");
                continue;
            }
            records.push(Record {
                source: RecordSource::IpObject,
                owner,
                subnet: ip.spec.subnet.clone(),
                ips: ip
                    .spec
                    .ip_address
                    .split(',')
                    .filter_map(|a| a.trim().parse().ok())
                    .collect(),
                mac: Some(ip.spec.mac_address.clone()).filter(|m| !m.is_empty()),
            });
        }
        // An OvnEip's status records its address (it has no IP object or switch port).
        for eip in ctx.stores.ovn_eips.state() {
            let Some(status) = eip.status.as_ref().filter(|s| !s.v4_ip.is_empty()) else {
                continue;
            };
            records.push(Record {
                source: RecordSource::IpObject,
                owner: Owner::eip(eip.name_any()),
                subnet: reconcile::ovn_eip::subnet_of(&eip, ctx),
                ips: status.v4_ip.parse().into_iter().collect(),
                mac: Some(status.mac_address.clone()).filter(|m| !m.is_empty()),
            });
        }
        for eip in ctx.stores.iptables_eips.state() {
            let Some(status) = eip.status.as_ref().filter(|s| !s.ip.is_empty()) else {
                continue;
            };
            records.push(Record {
                source: RecordSource::IpObject,
                owner: Owner::iptables_eip(eip.name_any()),
                subnet: reconcile::vpc_nat_gateway::subnet_of(&eip, ctx),
                ips: status.ip.parse().into_iter().collect(),
                mac: Some(eip.spec.mac_address.clone()).filter(|m| !m.is_empty()),
            });
        }
        let ports = ctx.nb.client().read(topology::owned_ports);
        for port in ports.into_values() {
            let (Some(ls), Some(owner)) =
                (port.external_ids.get("ls"), topology::port_owner(&port))
            else {
                continue;
            };
            let mut words = port
                .addresses
                .first()
                .map(|a| a.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter();
            let mac = words.next();
            records.push(Record {
                source: RecordSource::NbPort,
                owner,
                subnet: ls.clone(),
                ips: words.filter_map(|a| a.parse().ok()).collect(),
                mac,
            });
        }
        let conflicts = ipam.restore(records);
        for c in &conflicts {
            tracing::warn!(owner = %c.record.owner, source = ?c.record.source, reason = %c.reason, "IPAM restore conflict");
            ctx.metrics.ipam_conflicts.inc();
        }
    }

    // Leaks: holders whose pod or node is gone.
    let alive: BTreeSet<Owner> = ctx
        .stores
        .pods
        .state()
        .iter()
        .map(|p| Owner::of_pod(p))
        .chain(
            ctx.stores
                .nodes
                .state()
                .iter()
                .map(|n| Owner::node(n.name_any())),
        )
        .chain(
            ctx.stores
                .ovn_eips
                .state()
                .iter()
                .map(|e| Owner::eip(e.name_any())),
        )
        .chain(
            ctx.stores
                .iptables_eips
                .state()
                .iter()
                .map(|e| Owner::iptables_eip(e.name_any())),
        )
        .collect();
    let holders: Vec<Owner> = ctx
        .ipam()
        .allocations()
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    let mut leaked = 0;
    // An attachment lives as long as its pod.
    let is_alive = |o: &Owner| alive.contains(&o.pod_of().unwrap_or_else(|| o.clone()));
    for owner in holders.into_iter().filter(|o| !is_alive(o)) {
        leaked += 1;
        match &owner {
            Owner::Node { name } => reconcile::node::release(ctx, name).await?,
            Owner::Pod { .. } | Owner::Attachment { .. } => {
                reconcile::pod::release(ctx, &owner).await?
            }
            Owner::Eip { .. } | Owner::IptablesEip { .. } => ctx.ipam().release(&owner),
        }
    }
    tracing::info!(leaked, "leaked allocations released");
    Ok(())
}
