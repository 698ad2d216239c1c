//! OvnFip, OvnSnatRule and OvnDnatRule (and the VPC NAT gateway's IptablesFIPRule,
//! IptablesSnatRule and IptablesDnatRule, whose EIP is an IptablesEIP and whose VPC is their
//! gateway's, translated the same way): each resolves its EIP (ready, with an address), its
//! internal address (given, or its IP object's, or its subnet's CIDR) and its VPC (given, or
//! the internal address's subnet's), checks that the VPC has its port on the EIP's external
//! subnet (`enableExternal`), and then owns exactly its NAT rows (or port forward) on that
//! VPC's router, and, when the internal address is in a `private` subnet, an ACL on that
//! subnet's switch that lets the outside reach what the rule publishes (the VPC's own other
//! subnets stay denied); anything unresolved removes them and says why in the status
//! (`Ready` False with a reason, an event, retried). Removing or changing a translation bumps the NB
//! generation: traffic that used it is revoked, on the fast path too. Deleting a rule removes
//! its rows through the finalizer.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use api::{
    Condition, EIP_TYPE_NAT, IptablesDnatRule, IptablesFIPRule, IptablesRuleStatus,
    IptablesSnatRule, OvnDnatRule, OvnDnatRuleStatus, OvnEip, OvnFip, OvnFipStatus, OvnSnatRule,
    OvnSnatRuleStatus,
};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use ovsdb::models::ovn_northbound::{Acl, LoadBalancerProtocol, LogicalRouterPort, NatType};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::FINALIZER;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::topology::nat::{NatRule, PortForward, external_router_port, nat_ops, port_forward_ops};
use crate::topology::owned::OwnedRow;
use crate::topology::{acl, bump_nb_cfg, find, owned};

/// A rule waiting for its EIP, IP object or VPC is looked at again this often.
const RETRY: Duration = Duration::from_secs(2);
/// And a working one, in case what it resolved changed (an IP object re-made elsewhere).
const REFRESH: Duration = Duration::from_secs(15);

/// Why an object cannot be served (yet): its `Ready` condition's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            message: message.into(),
        }
    }
}

/// `Ready` (False with the refusal, or True), and `Unsupported` naming the fields kovn does
/// not act on.
pub fn conditions(refusal: Option<&Refusal>, unsupported: Vec<String>) -> Vec<Condition> {
    let mut out = vec![match refusal {
        Some(r) => Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: r.reason.into(),
            message: r.message.clone(),
            ..Condition::default()
        },
        None => Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "ReconcileSucceeded".into(),
            ..Condition::default()
        },
    }];
    if !unsupported.is_empty() {
        out.push(Condition {
            type_: "Unsupported".into(),
            status: "True".into(),
            reason: "NotImplemented".into(),
            message: format!("kovn does not implement yet: {}", unsupported.join(", ")),
            ..Condition::default()
        });
    }
    out
}

/// An EIP a rule can use: its address and external subnet.
struct Eip {
    v4: IpAddr,
    subnet: String,
}

fn eip(ctx: &Context, name: &str, for_fip: bool) -> Result<Eip, Refusal> {
    if name.is_empty() {
        return Err(Refusal::new("EipNotFound", "ovnEip is not set"));
    }
    let eip: Arc<OvnEip> = ctx
        .stores
        .ovn_eips
        .get(&ObjectRef::new(name))
        .ok_or_else(|| Refusal::new("EipNotFound", format!("ovn-eip {name} does not exist")))?;
    if for_fip && eip.spec.usage() != EIP_TYPE_NAT {
        return Err(Refusal::new(
            "EipTypeMismatch",
            format!(
                "ovn-eip {name} is of type {}: a FIP needs a nat one",
                eip.spec.usage()
            ),
        ));
    }
    let status = eip.status.clone().unwrap_or_default();
    let v4 = status
        .v4_ip
        .parse()
        .ok()
        .filter(|_| status.ready)
        .ok_or_else(|| Refusal::new("EipNotReady", format!("ovn-eip {name} has no address yet")))?;
    Ok(Eip {
        v4,
        subnet: super::ovn_eip::subnet_of(&eip, ctx),
    })
}

/// An IP object's IPv4 address and subnet.
fn ip_object_address(ctx: &Context, name: &str) -> Result<(IpAddr, String), Refusal> {
    let ip = ctx
        .stores
        .ips
        .get(&ObjectRef::new(name))
        .ok_or_else(|| Refusal::new("IpNotFound", format!("ip {name} does not exist")))?;
    let v4 = ip
        .spec
        .ip_address
        .split(',')
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .find(IpAddr::is_ipv4)
        .ok_or_else(|| Refusal::new("IpNotFound", format!("ip {name} has no IPv4 address")))?;
    Ok((v4, ip.spec.subnet.clone()))
}

/// The VPC (router) of a subnet.
fn vpc_of_subnet(ctx: &Context, subnet: &str) -> Result<String, Refusal> {
    let s = ctx
        .stores
        .subnets
        .get(&ObjectRef::new(subnet))
        .ok_or_else(|| Refusal::new("SubnetNotFound", format!("subnet {subnet} does not exist")))?;
    Ok(ctx.settings.names.router_of(&s))
}

/// The VPC a rule names, else the one its internal address is in.
fn choose_vpc(ctx: &Context, given: &str, subnet: Option<&str>) -> Result<String, Refusal> {
    match (given, subnet) {
        ("", Some(subnet)) => vpc_of_subnet(ctx, subnet),
        ("", None) => Err(Refusal::new("VpcNotFound", "no vpc given or derivable")),
        (vpc, _) => Ok(vpc.to_owned()),
    }
}

/// The VPC must have its router port on the EIP's external subnet.
fn check_external(ctx: &Context, vpc: &str, eip: &Eip) -> Result<(), Refusal> {
    let port = external_router_port(vpc, &eip.subnet);
    let present = ctx
        .nb
        .client()
        .read(|c| find::<LogicalRouterPort>(c, &port).is_some());
    if present {
        Ok(())
    } else {
        Err(Refusal::new(
            "VpcNotExternal",
            format!(
                "vpc {vpc} has no port on external subnet {} (enableExternal, and the external gateway enabled)",
                eip.subnet
            ),
        ))
    }
}

/// The owner string of a rule's NB rows.
fn owner_of<K: Resource<DynamicType = ()>>(rule: &K) -> String {
    owned::owner(&K::kind(&()).to_lowercase(), &rule.name_any())
}

/// What a rule writes in NB: NAT rows, or a port forward.
#[derive(Debug, Clone)]
pub enum Translation {
    Nat(Vec<NatRule>),
    Forward(Option<PortForward>),
}

/// A resolved rule: its VPC, what it translates, the ACL that lets the outside reach a
/// private subnet's published address, and the status that says so.
pub struct Resolved<S> {
    vpc: String,
    translation: Translation,
    published: Option<Published>,
    status: S,
}

/// An allow ACL on a private subnet's switch for what a FIP or DNAT rule publishes.
#[derive(Debug, Clone)]
pub struct Published {
    switch: String,
    acl: OwnedRow<Acl>,
}

/// What a FIP (`l4` None) or DNAT rule publishes of `internal`, if its subnet is private.
/// The subnet is the IP object's, else the VPC's subnet whose CIDR holds the address.
fn publish(
    ctx: &Context,
    vpc: &str,
    internal: IpAddr,
    subnet: Option<&str>,
    l4: Option<(&str, u16)>,
) -> Option<Published> {
    let names = &ctx.settings.names;
    let subnets: Vec<Arc<api::Subnet>> = ctx
        .stores
        .subnets
        .state()
        .into_iter()
        .filter(|s| names.router_of(s) == vpc)
        .collect();
    let cidrs = |s: &api::Subnet| -> Vec<ipnet::IpNet> {
        s.spec
            .cidr_block
            .split(',')
            .filter_map(|c| c.trim().parse().ok())
            .collect()
    };
    let own = subnets.iter().find(|s| match subnet {
        Some(name) => s.name_any() == name,
        None => cidrs(s).iter().any(|c| c.contains(&internal)),
    })?;
    if !own.spec.private {
        return None;
    }
    let family = crate::topology::ip_family(internal);
    let mut matches = format!("{family}.dst == {internal}");
    if let Some((protocol, port)) = l4 {
        matches.push_str(&format!(" && {protocol}.dst == {port}"));
    }
    let vpc_cidrs: Vec<ipnet::IpNet> = subnets
        .iter()
        .flat_map(|s| cidrs(s))
        .filter(|c| c.addr().is_ipv4() == internal.is_ipv4())
        .collect();
    Some(Published {
        switch: own.name_any(),
        acl: acl::published_acl(&matches, &vpc_cidrs),
    })
}

/// One of the three rule kinds: how it resolves, and where its status keeps conditions.
pub trait NatRuleKind:
    Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    type Status: Default + PartialEq + Serialize + Send;

    fn resolve(&self, ctx: &Context) -> Result<Resolved<Self::Status>, Refusal>;
    /// What NB holds for the rule when it translates nothing.
    fn nothing() -> Translation;
    fn status(&self) -> Option<&Self::Status>;
    fn with_conditions(status: Self::Status, conditions: Vec<Condition>) -> Self::Status;
    fn unsupported_fields(&self) -> Vec<String>;
}

/// The parts of [`NatRuleKind`] every kind has alike: what it writes when it translates
/// nothing, its status with conditions, its spec's unsupported fields.
macro_rules! accessors {
    ($status:ident, $nothing:expr) => {
        fn nothing() -> Translation {
            $nothing
        }

        fn status(&self) -> Option<&$status> {
            self.status.as_ref()
        }

        fn with_conditions(status: $status, conditions: Vec<Condition>) -> $status {
            $status {
                conditions,
                ..status
            }
        }

        fn unsupported_fields(&self) -> Vec<String> {
            self.spec.unsupported_fields()
        }
    };
}

/// Writes `translation` for `rule` on `vpc`'s router (and nowhere else); removing or changing
/// a translation bumps the NB generation.
async fn write<K: NatRuleKind>(
    ctx: &Context,
    rule: &K,
    vpc: String,
    translation: Translation,
    published: Option<Published>,
) -> Result<()> {
    let owner = owner_of(rule);
    let load_balancer = dnat_load_balancer(rule);
    ctx.nb
        .apply(move |cache, t| {
            let mut revoked = match &translation {
                Translation::Nat(rules) => nat_ops(cache, t, &vpc, &owner, rules).removed,
                Translation::Forward(forward) => {
                    port_forward_ops(cache, t, &vpc, &load_balancer, &owner, forward.as_ref())
                }
            };
            revoked |= acl::owned_acl_ops(
                cache,
                t,
                published.as_ref().map(|p| p.switch.as_str()),
                &owner,
                published.iter().map(|p| p.acl.clone()).collect(),
            );
            if revoked {
                bump_nb_cfg(t);
            }
            Ok(())
        })
        .await?;
    Ok(())
}

/// Any of the three kinds' lifecycle: applied while it exists, its translation removed
/// through the finalizer.
pub async fn reconcile<K: NatRuleKind>(rule: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    let api: Api<K> = Api::all(ctx.kube.clone());
    finalizer(&api, FINALIZER, rule, |event| async {
        match event {
            Finalizer::Apply(rule) => apply(&*rule, &ctx).await,
            Finalizer::Cleanup(rule) => {
                write(&ctx, &*rule, String::new(), K::nothing(), None).await?;
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn apply<K: NatRuleKind>(rule: &K, ctx: &Context) -> Result<Action> {
    let resolved = rule.resolve(ctx);
    let (vpc, translation, published, status, refusal) = match resolved {
        Ok(r) => (r.vpc, r.translation, r.published, r.status, None),
        Err(r) => {
            ctx.event(rule, true, r.reason, r.message.clone()).await;
            (
                String::new(),
                K::nothing(),
                None,
                K::Status::default(),
                Some(r),
            )
        }
    };
    write(ctx, rule, vpc, translation, published).await?;
    let status = K::with_conditions(
        status,
        conditions(refusal.as_ref(), rule.unsupported_fields()),
    );
    super::write_status(ctx, rule, rule.status(), &status).await?;
    Ok(Action::requeue(if refusal.is_some() {
        RETRY
    } else {
        REFRESH
    }))
}

/// The one-to-one translation of a FIP rule.
fn fip_translation(eip: &Eip, internal: IpAddr) -> Translation {
    Translation::Nat(vec![NatRule {
        kind: NatType::DnatAndSnat,
        external_ip: eip.v4.to_string(),
        logical_ip: internal.to_string(),
    }])
}

/// The egress translation of an SNAT rule, for `internal` (checked: an IPv4 CIDR or address;
/// a refusal has `reason` and names `field`).
fn snat_translation(
    eip: &Eip,
    internal: &str,
    reason: &'static str,
    field: &str,
) -> Result<Translation, Refusal> {
    let valid = internal.parse::<ipnet::Ipv4Net>().is_ok()
        || internal.parse::<std::net::Ipv4Addr>().is_ok();
    if !valid {
        return Err(Refusal::new(
            reason,
            format!("{field} {internal:?} is not an IPv4 CIDR or address"),
        ));
    }
    Ok(Translation::Nat(vec![NatRule {
        kind: NatType::Snat,
        external_ip: eip.v4.to_string(),
        logical_ip: internal.to_owned(),
    }]))
}

/// A DNAT rule's ports and protocol, checked.
fn forward_ports(
    external: &str,
    internal: &str,
    protocol: &str,
) -> Result<(u16, u16, LoadBalancerProtocol), Refusal> {
    let port = |what: &str, value: &str| {
        value
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                Refusal::new(
                    "InvalidPort",
                    format!("{what} {value:?} is not a port number"),
                )
            })
    };
    let protocol = match protocol {
        "tcp" => LoadBalancerProtocol::Tcp,
        "udp" => LoadBalancerProtocol::Udp,
        other => {
            return Err(Refusal::new(
                "InvalidProtocol",
                format!("protocol {other:?} is not tcp or udp"),
            ));
        }
    };
    Ok((
        port("externalPort", external)?,
        port("internalPort", internal)?,
        protocol,
    ))
}

/// The oldest of `rules` other than `rule` that uses `eip` as its FIP already, if any.
fn fip_holder<K: Resource<DynamicType = ()>>(
    rules: &[Arc<K>],
    rule: &K,
    eip_of: impl Fn(&K) -> &str,
) -> Option<String> {
    let age = |f: &K| (f.meta().creation_timestamp.clone(), f.name_any());
    rules
        .iter()
        .find(|f| {
            eip_of(f) == eip_of(rule) && f.name_any() != rule.name_any() && age(f) < age(rule)
        })
        .map(|f| f.name_any())
}

/// The internal address a FIP or DNAT rule names: `v4Ip`, else its IP object's (with that
/// object's subnet, from which its VPC follows).
fn internal_address(
    ctx: &Context,
    v4_ip: &str,
    ip_name: &str,
) -> Result<(IpAddr, Option<String>), Refusal> {
    match (v4_ip, ip_name) {
        ("", "") => Err(Refusal::new("IpNotFound", "neither v4Ip nor ipName is set")),
        ("", ip_name) => {
            let (ip, subnet) = ip_object_address(ctx, ip_name)?;
            Ok((ip, Some(subnet)))
        }
        (v4, _) => Ok((
            v4.parse()
                .map_err(|e| Refusal::new("InvalidV4Ip", format!("v4Ip {v4:?}: {e}")))?,
            None,
        )),
    }
}

// ---- OvnFip: dnat_and_snat ----

impl NatRuleKind for OvnFip {
    type Status = OvnFipStatus;

    fn resolve(&self, ctx: &Context) -> Result<Resolved<OvnFipStatus>, Refusal> {
        let eip = eip(ctx, &self.spec.ovn_eip, true)?;
        // One EIP, one FIP: the oldest keeps it.
        if let Some(other) = fip_holder(&ctx.stores.ovn_fips.state(), self, |f| &f.spec.ovn_eip) {
            return Err(Refusal::new(
                "EipInUse",
                format!(
                    "ovn-eip {} is the FIP of {other} already",
                    self.spec.ovn_eip
                ),
            ));
        }
        let (internal, subnet) = internal_address(ctx, &self.spec.v4_ip, &self.spec.ip_name)?;
        let vpc = choose_vpc(ctx, &self.spec.vpc, subnet.as_deref())?;
        check_external(ctx, &vpc, &eip)?;
        Ok(Resolved {
            published: publish(ctx, &vpc, internal, subnet.as_deref(), None),
            translation: fip_translation(&eip, internal),
            status: OvnFipStatus {
                vpc: vpc.clone(),
                v4_eip: eip.v4.to_string(),
                v4_ip: internal.to_string(),
                ready: true,
                ..OvnFipStatus::default()
            },
            vpc,
        })
    }

    accessors!(OvnFipStatus, Translation::Nat(Vec::new()));
}

// ---- OvnSnatRule: snat ----

/// The IPv4 CIDR of a subnet (its `cidrBlock` may be dual-stack).
fn subnet_v4_cidr(ctx: &Context, name: &str) -> Result<String, Refusal> {
    let s = ctx
        .stores
        .subnets
        .get(&ObjectRef::new(name))
        .ok_or_else(|| Refusal::new("SubnetNotFound", format!("subnet {name} does not exist")))?;
    s.spec
        .cidr_block
        .split(',')
        .map(str::trim)
        .find(|c| c.parse::<ipnet::Ipv4Net>().is_ok())
        .map(str::to_owned)
        .ok_or_else(|| Refusal::new("SubnetNotFound", format!("subnet {name} has no IPv4 CIDR")))
}

impl NatRuleKind for OvnSnatRule {
    type Status = OvnSnatRuleStatus;

    fn resolve(&self, ctx: &Context) -> Result<Resolved<OvnSnatRuleStatus>, Refusal> {
        let eip = eip(ctx, &self.spec.ovn_eip, false)?;
        let spec = &self.spec;
        let (internal, subnet) = if !spec.v4_ip_cidr.is_empty() {
            (spec.v4_ip_cidr.clone(), None)
        } else if !spec.vpc_subnet.is_empty() {
            (
                subnet_v4_cidr(ctx, &spec.vpc_subnet)?,
                Some(spec.vpc_subnet.clone()),
            )
        } else if !spec.ip_name.is_empty() {
            let (ip, subnet) = ip_object_address(ctx, &spec.ip_name)?;
            (ip.to_string(), Some(subnet))
        } else {
            return Err(Refusal::new(
                "IpNotFound",
                "none of v4IpCidr, vpcSubnet and ipName is set",
            ));
        };
        let translation = snat_translation(&eip, &internal, "InvalidV4IpCidr", "v4IpCidr")?;
        let vpc = choose_vpc(ctx, &spec.vpc, subnet.as_deref())?;
        check_external(ctx, &vpc, &eip)?;
        Ok(Resolved {
            // Egress: the replies it gets are allowed by conntrack, nothing is published.
            published: None,
            translation,
            status: OvnSnatRuleStatus {
                vpc: vpc.clone(),
                v4_eip: eip.v4.to_string(),
                v4_ip_cidr: internal,
                ready: true,
                ..OvnSnatRuleStatus::default()
            },
            vpc,
        })
    }

    accessors!(OvnSnatRuleStatus, Translation::Nat(Vec::new()));
}

// ---- OvnDnatRule: a port forward (a load balancer on the router) ----

/// The load balancer of a DNAT rule, `<kind>-<name>` (prefixed: it shares the table with
/// Services' ones, and both DNAT kinds may use one name).
fn dnat_load_balancer<K: Resource<DynamicType = ()>>(rule: &K) -> String {
    format!("{}-{}", K::kind(&()).to_lowercase(), rule.name_any())
}

impl NatRuleKind for OvnDnatRule {
    type Status = OvnDnatRuleStatus;

    fn resolve(&self, ctx: &Context) -> Result<Resolved<OvnDnatRuleStatus>, Refusal> {
        let eip = eip(ctx, &self.spec.ovn_eip, false)?;
        let spec = &self.spec;
        let port = |what: &str, value: &str| {
            value
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    Refusal::new(
                        "InvalidPort",
                        format!("{what} {value:?} is not a port number"),
                    )
                })
        };
        let external = port("externalPort", &spec.external_port)?;
        let internal_port = port("internalPort", &spec.internal_port)?;
        let protocol = match spec.protocol() {
            "tcp" => LoadBalancerProtocol::Tcp,
            "udp" => LoadBalancerProtocol::Udp,
            other => {
                return Err(Refusal::new(
                    "InvalidProtocol",
                    format!("protocol {other:?} is not tcp or udp"),
                ));
            }
        };
        let (internal, subnet) = internal_address(ctx, &spec.v4_ip, &spec.ip_name)?;
        let vpc = choose_vpc(ctx, &spec.vpc, subnet.as_deref())?;
        check_external(ctx, &vpc, &eip)?;
        Ok(Resolved {
            published: publish(
                ctx,
                &vpc,
                internal,
                subnet.as_deref(),
                Some((spec.protocol(), internal_port)),
            ),
            translation: Translation::Forward(Some(PortForward {
                vip: format!("{}:{external}", eip.v4),
                backend: format!("{internal}:{internal_port}"),
                protocol,
            })),
            status: OvnDnatRuleStatus {
                vpc: vpc.clone(),
                v4_eip: eip.v4.to_string(),
                external_port: spec.external_port.clone(),
                v4_ip: internal.to_string(),
                internal_port: spec.internal_port.clone(),
                protocol: spec.protocol().to_owned(),
                ip_name: spec.ip_name.clone(),
                ready: true,
                ..OvnDnatRuleStatus::default()
            },
            vpc,
        })
    }

    accessors!(OvnDnatRuleStatus, Translation::Forward(None));
}

// ---- The VPC NAT gateway's rules: the same translations, their EIP an IptablesEIP ----

/// An IptablesEIP a rule can use, and the VPC of its gateway.
fn iptables_eip(ctx: &Context, name: &str) -> Result<(Eip, String, String), Refusal> {
    let eip = ctx
        .stores
        .iptables_eips
        .get(&ObjectRef::new(name))
        .ok_or_else(|| {
            Refusal::new(
                "EipNotFound",
                format!("iptables-eip {name:?} does not exist"),
            )
        })?;
    let status = eip.status.clone().unwrap_or_default();
    let v4 = status
        .ip
        .parse()
        .ok()
        .filter(|_| status.ready)
        .ok_or_else(|| {
            Refusal::new(
                "EipNotReady",
                format!("iptables-eip {name} has no address yet"),
            )
        })?;
    let vpc = super::vpc_nat_gateway::vpc_of(&eip, ctx)?;
    let eip_ = Eip {
        v4,
        subnet: super::vpc_nat_gateway::subnet_of(&eip, ctx),
    };
    check_external(ctx, &vpc, &eip_)?;
    Ok((eip_, vpc, eip.spec.nat_gw_dp.clone()))
}

fn ready_status(eip: &Eip, gateway: String) -> IptablesRuleStatus {
    IptablesRuleStatus {
        ready: true,
        v4ip: eip.v4.to_string(),
        nat_gw_dp: gateway,
        ..IptablesRuleStatus::default()
    }
}

impl NatRuleKind for IptablesFIPRule {
    type Status = IptablesRuleStatus;

    fn resolve(&self, ctx: &Context) -> Result<Resolved<IptablesRuleStatus>, Refusal> {
        let (eip, vpc, gateway) = iptables_eip(ctx, &self.spec.eip)?;
        if let Some(other) = fip_holder(&ctx.stores.iptables_fip_rules.state(), self, |f| {
            &f.spec.eip
        }) {
            return Err(Refusal::new(
                "EipInUse",
                format!(
                    "iptables-eip {} is the FIP of {other} already",
                    self.spec.eip
                ),
            ));
        }
        let (internal, _) = internal_address(ctx, &self.spec.internal_ip, "")?;
        Ok(Resolved {
            published: publish(ctx, &vpc, internal, None, None),
            translation: fip_translation(&eip, internal),
            status: IptablesRuleStatus {
                internal_ip: internal.to_string(),
                ..ready_status(&eip, gateway)
            },
            vpc,
        })
    }

    accessors!(IptablesRuleStatus, Translation::Nat(Vec::new()));
}

impl NatRuleKind for IptablesSnatRule {
    type Status = IptablesRuleStatus;

    fn resolve(&self, ctx: &Context) -> Result<Resolved<IptablesRuleStatus>, Refusal> {
        let (eip, vpc, gateway) = iptables_eip(ctx, &self.spec.eip)?;
        let cidr = self.spec.internal_cidr.trim();
        Ok(Resolved {
            published: None,
            translation: snat_translation(&eip, cidr, "InvalidInternalCIDR", "internalCIDR")?,
            status: IptablesRuleStatus {
                internal_cidr: cidr.to_owned(),
                ..ready_status(&eip, gateway)
            },
            vpc,
        })
    }

    accessors!(IptablesRuleStatus, Translation::Nat(Vec::new()));
}

impl NatRuleKind for IptablesDnatRule {
    type Status = IptablesRuleStatus;

    fn resolve(&self, ctx: &Context) -> Result<Resolved<IptablesRuleStatus>, Refusal> {
        let spec = &self.spec;
        let (eip, vpc, gateway) = iptables_eip(ctx, &spec.eip)?;
        let protocol = spec.protocol();
        let (external, internal_port, lb_protocol) =
            forward_ports(&spec.external_port, &spec.internal_port, &protocol)?;
        let (internal, _) = internal_address(ctx, &spec.internal_ip, "")?;
        Ok(Resolved {
            published: publish(ctx, &vpc, internal, None, Some((&protocol, internal_port))),
            translation: Translation::Forward(Some(PortForward {
                vip: format!("{}:{external}", eip.v4),
                backend: format!("{internal}:{internal_port}"),
                protocol: lb_protocol,
            })),
            status: IptablesRuleStatus {
                internal_ip: internal.to_string(),
                protocol,
                internal_port: spec.internal_port.clone(),
                external_port: spec.external_port.clone(),
                ..ready_status(&eip, gateway)
            },
            vpc,
        })
    }

    accessors!(IptablesRuleStatus, Translation::Forward(None));
}
