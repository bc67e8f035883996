//! The incremental compiler: derives the intent-only part of every node once, then on each
//! metric change re-derives only what the change affects.
//!
//! - A new intent: a new [`Compiler`] (everything is derived again).
//! - A link measurement changed: the TE graph, and with it every path, segment list and
//!   selection; the nodes' addresses, underlay routes and SIDs (which follow declared
//!   latencies) stay.
//! - An instance measurement changed: the selections of the services that instance belongs
//!   to, at every ingress serving them; paths stay.
//!
//! Only headend states change after the first compile, and only those are re-assembled.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use cats_common::maps::{AFFINITY_TABLE_SIZE, MAX_INSTANCES, MAX_SERVICES};

use super::{
    CompileError, Compiled, ServiceDecisions, addressing as addr,
    baseline::{self, Selector},
    graph::{Graph, NodeId},
    metrics::Metrics,
    node::{base_state, matches},
    segments::Igp,
    select::{self, Decision, Policy},
    steer::{self, AvoidSet, Route, TeView, Underlays},
};
use crate::{
    intent::{Intent, Role, SteeringPolicy, Underlay},
    state::{HeadendState, HealthCheck, InstanceState, InstanceWeight, NodeState, ServiceState},
};

/// One ingress's steering of one service.
struct Steering {
    ingress: NodeId,
    /// Position of the service in `intent.services`.
    service: usize,
    /// Position of its policy in `intent.policies`, if it has one.
    policy: Option<usize>,
    /// Per instance of the service (intent order): how to reach it, `None` if unreachable
    /// under the constraints. Empty until the first selection with the current TE view.
    routes: Vec<Option<Route>>,
    decisions: Vec<Decision>,
    /// When the weights last changed (`now_ms` of [`Compiler::update`]).
    changed_at_ms: Option<u64>,
    /// Weights held back by the hold-down: when to look again without a metric change.
    revisit_at_ms: Option<u64>,
}

/// The slots of one headend. A flow pinned in the affinity table names its service and its
/// instance by slot, so a slot keeps meaning the same service and instance for as long as
/// both exist, across metric updates and intent changes. New ones take never-used slots
/// first; a freed slot is reused last, oldest first, when pins to it have long expired.
#[derive(Clone, Debug, Default)]
struct Slots {
    services: Table<u16>,
    /// By (CS-ID, instance id).
    instances: Table<(u16, u32)>,
}

#[derive(Clone, Debug, Default)]
struct Table<K> {
    assigned: BTreeMap<K, u32>,
    next: u32,
    freed: std::collections::VecDeque<u32>,
}

impl<K: Ord + Clone> Table<K> {
    fn get(&mut self, key: &K, limit: u32) -> Option<u32> {
        if let Some(slot) = self.assigned.get(key) {
            return Some(*slot);
        }
        let slot = if self.next < limit {
            self.next += 1;
            self.next - 1
        } else {
            self.freed.pop_front()?
        };
        self.assigned.insert(key.clone(), slot);
        Some(slot)
    }

    /// Frees the slots of the keys `keep` says are gone.
    fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        let gone: Vec<K> = self.assigned.keys().filter(|k| !keep(k)).cloned().collect();
        for key in gone {
            if let Some(slot) = self.assigned.remove(&key) {
                self.freed.push_back(slot);
            }
        }
    }
}

/// Keeps the intent-derived state and the last selections between metric updates.
pub struct Compiler {
    intent: Intent,
    default_policy: SteeringPolicy,
    links_by_node: Vec<Vec<usize>>,
    igp: Igp,
    te: Option<TeView>,
    metrics: Metrics,
    /// By (ingress name, CS-ID): the headend's service order.
    steering: BTreeMap<(String, u16), Steering>,
    nodes: BTreeMap<String, NodeState>,
    selector: Selector,
    /// By ingress name.
    slots: BTreeMap<String, Slots>,
}

impl Compiler {
    /// Derives every node's intent-only state; call [`Compiler::update`] for the headends.
    pub fn new(intent: Intent, generation: u64) -> Result<Compiler, CompileError> {
        let topo = &intent.topology;
        let igp_graph = Graph::new(topo, |i| topo.links[i].latency_ms);
        let mut igp = Igp::new(igp_graph);
        let mut links_by_node = vec![Vec::new(); topo.nodes.len()];
        for (k, link) in topo.links.iter().enumerate() {
            for end in [&link.a, &link.b] {
                let id = igp.graph().node_id(end).expect("validated: link ends exist");
                links_by_node[id as usize].push(k);
            }
        }
        let mut hosted = vec![Vec::new(); topo.nodes.len()];
        for (s, svc) in intent.services.iter().enumerate() {
            for (i, inst) in svc.instances.iter().enumerate() {
                let id = igp.graph().node_id(&inst.node).expect("validated: instance node");
                hosted[id as usize].push((s, i));
            }
        }
        let mut nodes = BTreeMap::new();
        for (id, node) in topo.nodes.iter().enumerate() {
            let tree = (topo.underlay == Underlay::Static).then(|| igp.spt(id as NodeId).clone());
            let graph = igp.graph();
            let state = base_state(
                &intent,
                node,
                &links_by_node[id],
                &hosted[id],
                tree.as_ref().map(|t| (t, graph)),
                generation,
            )?;
            nodes.insert(node.name.clone(), state);
        }

        let default_policy = SteeringPolicy::default();
        let policy_of: std::collections::HashMap<&str, usize> =
            intent.policies.iter().enumerate().map(|(k, p)| (p.service.as_str(), k)).collect();
        let mut steering = BTreeMap::new();
        for (id, node) in topo.nodes.iter().enumerate().filter(|(_, n)| n.has_role(Role::Ingress)) {
            let mut count = 0;
            for (s, svc) in intent.services.iter().enumerate() {
                let policy = policy_of.get(svc.name.as_str()).copied();
                let p = policy.map_or(&default_policy, |p| &intent.policies[p]);
                if !p.ingress.is_empty() && !p.ingress.contains(&node.name) {
                    continue;
                }
                count += 1;
                steering.insert(
                    (node.name.clone(), svc.cs_id),
                    Steering {
                        ingress: id as NodeId,
                        service: s,
                        policy,
                        routes: Vec::new(),
                        decisions: Vec::new(),
                        changed_at_ms: None,
                        revisit_at_ms: None,
                    },
                );
            }
            if count > MAX_SERVICES as usize {
                return Err(CompileError::TooManyServices { node: node.name.clone(), count });
            }
        }
        Ok(Compiler {
            intent,
            default_policy,
            links_by_node,
            igp,
            te: None,
            metrics: Metrics::default(),
            steering,
            nodes,
            selector: Selector::Cats,
            slots: BTreeMap::new(),
        })
    }

    /// Keeps the headend slots `previous` assigned, for the services and instances this
    /// intent still has, so flows pinned before an intent change keep their instance.
    pub fn with_slots_of(mut self, previous: &Compiler) -> Compiler {
        self.slots = previous.slots.clone();
        let intent = &self.intent;
        let service = |cs: &u16| intent.services.iter().any(|s| s.cs_id == *cs);
        let instance = |(cs, id): &(u16, u32)| {
            intent
                .services
                .iter()
                .any(|s| s.cs_id == *cs && s.instances.iter().any(|i| i.id == *id))
        };
        for slots in self.slots.values_mut() {
            slots.services.retain(service);
            slots.instances.retain(instance);
        }
        self
    }

    /// Picks instances with `selector` instead of cats' own (for comparisons).
    pub fn with_selector(mut self, selector: Selector) -> Compiler {
        self.selector = selector;
        self
    }

    pub fn intent(&self) -> &Intent {
        &self.intent
    }

    /// The desired state of every node, as of the last update.
    pub fn nodes(&self) -> &BTreeMap<String, NodeState> {
        &self.nodes
    }

    /// The figures behind every weight, by service then ingress.
    pub fn decisions(&self) -> Vec<ServiceDecisions> {
        let mut out: Vec<ServiceDecisions> = self
            .steering
            .iter()
            .map(|((ingress, _), st)| ServiceDecisions {
                service: self.intent.services[st.service].name.clone(),
                ingress: ingress.clone(),
                decisions: st.decisions.clone(),
            })
            .collect();
        out.sort_by(|a, b| (&a.service, &a.ingress).cmp(&(&b.service, &b.ingress)));
        out
    }

    /// Computes the disjoint backup paths of the instances that receive flows and have none
    /// yet, until `budget` is spent, and gives each its segment list: the headend's alternate
    /// path to the same instance. Backups cost a constrained search each (seconds in all at
    /// 10,000 nodes), so the daemon spreads them over its polls instead of delaying the
    /// weights. Returns whether any is still missing, and the nodes whose state changed
    /// (stamped with `generation`).
    #[tracing::instrument(name = "backups", level = "debug", skip_all, fields(generation = generation))]
    pub fn fill_backups(
        &mut self,
        budget: Duration,
        generation: u64,
    ) -> Result<(bool, Vec<String>), CompileError> {
        let start = Instant::now();
        let Some(te) = self.te.as_ref() else { return Ok((false, Vec::new())) };
        let underlays = Underlays {
            intent: &self.intent,
            igp: &mut self.igp,
            links_by_node: &self.links_by_node,
        };
        let mut pending = false;
        let mut touched = BTreeSet::new();
        'all: for st in self.steering.values_mut() {
            let policy = st.policy.map_or(&self.default_policy, |p| &self.intent.policies[p]);
            let svc = &self.intent.services[st.service];
            let mut avoid = None;
            for d in st.decisions.iter_mut().filter(|d| d.weight > 0 && d.backup_path.is_none()) {
                if start.elapsed() >= budget {
                    pending = true;
                    break 'all;
                }
                let Some(i) = svc.instances.iter().position(|i| i.name == d.instance) else {
                    continue;
                };
                let Some(route) = st.routes.get_mut(i).and_then(Option::as_mut) else { continue };
                if route.backup.is_some() {
                    continue; // known to have none
                }
                let avoid = avoid.get_or_insert_with(|| {
                    let key = st.policy.map_or(0, |p| p + 1);
                    AvoidSet::of(&te.graph, &self.intent, policy, key)
                });
                let waypoints: Vec<NodeId> = policy
                    .constraints
                    .waypoints
                    .iter()
                    .filter_map(|w| te.graph.node_id(w))
                    .collect();
                let Some((backup, _)) = route.backup(te, &waypoints, avoid).cloned() else {
                    continue;
                };
                d.backup_path = Some(steer::names(&te.graph, &backup));
                let segments = steer::segments_along(&backup, &waypoints, underlays.igp);
                if steer::fits(&segments) {
                    let inst = &svc.instances[i];
                    route.alternate_sids =
                        Some(steer::segment_list(&underlays, &segments, svc, inst));
                    touched.insert(st.ingress);
                }
            }
        }
        Ok((pending, self.reassemble(touched, generation)?))
    }

    /// Whether some weights were held back by a hold-down that is over at `now_ms`: the
    /// caller should call [`Compiler::update`] then even if no metric changed. (Weights held
    /// by hysteresis stay until a metric moves.)
    pub fn has_held(&self, now_ms: u64) -> bool {
        self.steering.values().any(|st| st.revisit_at_ms.is_some_and(|at| now_ms >= at))
    }

    pub fn compiled(&self) -> Compiled {
        Compiled { nodes: self.nodes.clone(), decisions: self.decisions() }
    }

    /// Applies `metrics`: re-selects what they affect and returns the nodes whose state
    /// changed (stamped with `generation`). `now_ms` is any monotonic clock, for hold-down.
    #[tracing::instrument(name = "compile", level = "debug", skip_all, fields(generation = generation))]
    pub fn update(
        &mut self,
        metrics: &Metrics,
        generation: u64,
        now_ms: u64,
    ) -> Result<Vec<String>, CompileError> {
        let links_changed = self.te.is_none() || metrics.links != self.metrics.links;
        let held =
            self.steering.values().filter(|st| st.revisit_at_ms.is_some_and(|at| now_ms >= at));
        let held: BTreeSet<usize> = held.map(|st| st.service).collect();
        let mut dirty: BTreeSet<usize> = if links_changed {
            self.te = Some(TeView::new(&self.intent, metrics));
            (0..self.intent.services.len()).collect()
        } else {
            self.intent
                .services
                .iter()
                .enumerate()
                .filter(|(_, svc)| {
                    svc.instances.iter().any(|i| {
                        metrics.instances.get(&i.name) != self.metrics.instances.get(&i.name)
                    }) || metrics.ingress_rates.get(&svc.name)
                        != self.metrics.ingress_rates.get(&svc.name)
                        || metrics.unreachable != self.metrics.unreachable
                })
                .map(|(s, _)| s)
                .collect()
        };
        dirty.extend(held);
        self.metrics = metrics.clone();
        let te = self.te.as_mut().expect("built above");
        let mut underlays = Underlays {
            intent: &self.intent,
            igp: &mut self.igp,
            links_by_node: &self.links_by_node,
        };
        let serving: BTreeMap<usize, usize> =
            self.steering.values().fold(BTreeMap::new(), |mut m, st| {
                *m.entry(st.service).or_default() += 1;
                m
            });
        let mut touched = BTreeSet::new();
        // Per service, what the ingresses planned so far send to each instance (req/s).
        let mut ledgers: BTreeMap<usize, BTreeMap<String, f64>> = BTreeMap::new();
        for st in self.steering.values_mut().filter(|st| dirty.contains(&st.service)) {
            let policy = st.policy.map_or(&self.default_policy, |p| &self.intent.policies[p]);
            if links_changed {
                st.routes.clear();
            }
            let ledger = ledgers.entry(st.service).or_default();
            let ingresses = serving[&st.service];
            let round = Round { metrics, now_ms, ingresses, selector: self.selector };
            select_for(te, &mut underlays, st, policy, &round, ledger);
            touched.insert(st.ingress);
        }

        let changed = self.reassemble(touched, generation)?;
        tracing::debug!(services = dirty.len(), links_changed, ?changed, "compiled");
        Ok(changed)
    }

    /// Re-assembles the headends of `ingresses` and returns the nodes whose state changed.
    fn reassemble(
        &mut self,
        ingresses: BTreeSet<NodeId>,
        generation: u64,
    ) -> Result<Vec<String>, CompileError> {
        let mut changed = Vec::new();
        for ingress in ingresses {
            let name = self.intent.topology.nodes[ingress as usize].name.clone();
            let mut slots = self.slots.remove(&name).unwrap_or_default();
            let headend = self.headend(ingress, &mut slots);
            self.slots.insert(name.clone(), slots);
            let headend = headend?;
            let state = self.nodes.get_mut(&name).expect("every node has a state");
            if state.headend.as_ref() != Some(&headend) {
                state.headend = Some(headend);
                state.generation = generation;
                changed.push(name);
            }
        }
        Ok(changed)
    }

    /// Assembles the headend of `ingress` from its steerings: services in CS-ID order,
    /// instances in intent order, each in its stable slot (see [`Slots`]). Every instance is
    /// there, so flows pinned to one keep reaching it; one without a path meeting the
    /// constraints gets weight 0 and just its compute SID, which the underlay routes.
    fn headend(&self, ingress: NodeId, slots: &mut Slots) -> Result<HeadendState, CompileError> {
        let topo = &self.intent.topology;
        let node = &topo.nodes[ingress as usize];
        let mut state = HeadendState {
            interfaces: node.headend_interfaces.clone(),
            encap_source: addr::router_address(topo, node.index),
            services: Vec::new(),
            instances: Vec::new(),
            affinity_table_size: node.affinity_table_size.unwrap_or(AFFINITY_TABLE_SIZE),
        };
        let full = |count: usize| CompileError::TooManyInstances { node: node.name.clone(), count };
        let mine = (node.name.clone(), 0)..=(node.name.clone(), u16::MAX);
        for ((_, cs_id), st) in self.steering.range(mine) {
            let svc = &self.intent.services[st.service];
            let policy = st.policy.map_or(&self.default_policy, |p| &self.intent.policies[p]);
            let mut instance_slots = Vec::new();
            for inst in &svc.instances {
                let count = state.instances.len() + instance_slots.len() + 1;
                let slot =
                    slots.instances.get(&(*cs_id, inst.id), MAX_INSTANCES).ok_or(full(count))?;
                instance_slots.push(slot);
            }
            let mut weights = Vec::new();
            for (k, inst) in svc.instances.iter().enumerate() {
                let route =
                    st.routes.get(k).and_then(Option::as_ref).filter(|r| steer::fits(&r.segments));
                let weight =
                    st.decisions.iter().find(|d| d.instance == inst.name).map_or(0, |d| d.weight);
                let segments = match route {
                    Some(route) => route.sids.clone(),
                    None => {
                        let egress = self.intent.node(&inst.node).expect("validated: node");
                        vec![addr::compute_sid(topo, egress.index, false, svc.cs_id, inst.id)]
                    }
                };
                let slot = instance_slots[k];
                weights.push(InstanceWeight { slot, weight });
                state.instances.push(InstanceState {
                    name: inst.name.clone(),
                    slot,
                    service: svc.name.clone(),
                    cs_id: svc.cs_id,
                    instance_id: inst.id,
                    segments,
                    alternate_segments: route
                        .and_then(|r| r.alternate_sids.clone())
                        .unwrap_or_default(),
                    backup_slot: self.backup_of(st, k, &node.name).map(|j| instance_slots[j]),
                });
            }
            let count = state.services.len() + 1;
            let slot = slots
                .services
                .get(cs_id, MAX_SERVICES)
                .ok_or(CompileError::TooManyServices { node: node.name.clone(), count })?;
            state.services.push(ServiceState {
                name: svc.name.clone(),
                slot,
                cs_id: svc.cs_id,
                matches: matches(svc, &policy.affinity),
                flow: policy.affinity.flow,
                affinity_timeout_ms: policy.affinity.timeout_seconds * 1000,
                weights,
                health: HealthCheck {
                    enabled: policy.health.enabled,
                    interval_ms: policy.health.interval_ms,
                    multiplier: policy.health.multiplier,
                    port: policy.health.port.or(svc.ports.first().map(|p| p.port)).unwrap_or(7000),
                },
            });
        }
        state.instances.sort_by_key(|i| i.slot);
        Ok(state)
    }
}

impl Compiler {
    /// The instance (by position in the service) that takes instance `k`'s flows at this
    /// ingress while `k` is unreachable: one that may take flows at all (a path, not
    /// draining, answering probes, on an allowed site), preferably on another node (a node
    /// failure takes both otherwise), with weight, and with the lowest predicted completion.
    ///
    /// The backup it had stays while it is still usable and no worse placed (another site
    /// when one is to be had): a backup that followed every metric wobble would rewrite the
    /// headend for nothing.
    fn backup_of(&self, st: &Steering, k: usize, node: &str) -> Option<usize> {
        let svc = &self.intent.services[st.service];
        let had = || -> Option<usize> {
            let old = self.nodes.get(node)?.headend.as_ref()?;
            let me = old
                .instances
                .iter()
                .find(|i| i.service == svc.name && i.name == svc.instances[k].name)?;
            let slot = me.backup_slot?;
            let backup = old.instances.iter().find(|i| i.slot == slot)?;
            svc.instances.iter().position(|i| i.name == backup.name)
        };
        let policy = st.policy.map_or(&self.default_policy, |p| &self.intent.policies[p]);
        let ingress = &self.intent.topology.nodes[st.ingress as usize].name;
        let usable = |j: usize| {
            let inst = &svc.instances[j];
            st.routes.get(j).and_then(Option::as_ref).is_some_and(|r| steer::fits(&r.segments))
                && steer::site_excluded(policy, inst).is_none()
                && !inst.drain
                && !self.metrics.is_unreachable(ingress, &inst.name)
        };
        let rank = |j: usize| {
            let inst = &svc.instances[j];
            let d = st.decisions.iter().find(|d| d.instance == inst.name);
            let weight = d.map_or(0, |d| d.weight);
            let predicted = d.map_or(f64::MAX, |d| {
                if d.predicted_ms > 0.0 { d.predicted_ms } else { d.network_ms }
            });
            (inst.node == svc.instances[k].node, weight == 0, predicted)
        };
        let best = (0..svc.instances.len()).filter(|&j| j != k && usable(j)).min_by(|&a, &b| {
            let (ra, rb) = (rank(a), rank(b));
            (ra.0, ra.1).cmp(&(rb.0, rb.1)).then(ra.2.total_cmp(&rb.2))
        })?;
        match had() {
            Some(j) if j != k && usable(j) && rank(j).0 <= rank(best).0 => Some(j),
            _ => Some(best),
        }
    }
}

/// What one update knows besides the steering itself.
#[derive(Clone, Copy)]
struct Round<'m> {
    metrics: &'m Metrics,
    now_ms: u64,
    /// Ingresses that steer the service (its demand is shared among them).
    ingresses: usize,
    selector: Selector,
}

/// Routes (when missing), candidates, and selection with hysteresis and hold-down. `ledger`
/// holds what the ingresses of the service planned before this one send to each instance;
/// this one's plan is added to it.
fn select_for(
    te: &mut TeView,
    underlays: &mut Underlays<'_>,
    st: &mut Steering,
    policy: &SteeringPolicy,
    round: &Round<'_>,
    ledger: &mut BTreeMap<String, f64>,
) {
    let Round { metrics, now_ms, ingresses, selector } = *round;
    let intent = underlays.intent;
    let svc = &intent.services[st.service];
    let waypoints: Vec<NodeId> = policy
        .constraints
        .waypoints
        .iter()
        .map(|w| te.graph.node_id(w).expect("validated: waypoint exists"))
        .collect();
    let avoid = AvoidSet::of(&te.graph, intent, policy, st.policy.map_or(0, |p| p + 1));
    if st.routes.is_empty() {
        st.routes = svc
            .instances
            .iter()
            .map(|inst| {
                let target = te.graph.node_id(&inst.node).expect("validated: instance node");
                let mut route =
                    steer::route(te, underlays, st.ingress, &waypoints, target, &avoid)?;
                route.sids = steer::segment_list(underlays, &route.segments, svc, inst);
                Some(route)
            })
            .collect();
    }

    let mut candidates = Vec::new();
    let mut unusable = Vec::new();
    let ingress = &intent.topology.nodes[st.ingress as usize].name;
    // With every instance unreachable by the probes, the probes are as likely wrong (echoes
    // blocked) as everything dead: leaving the instances in does not make it worse.
    let any_reachable = svc.instances.iter().any(|i| !metrics.is_unreachable(ingress, &i.name));
    for (inst, route) in svc.instances.iter().zip(&st.routes) {
        // The first that applies, the most basic first: where, whether a path, then state.
        let reason = match (steer::site_excluded(policy, inst), route) {
            (Some(why), _) => Some(why),
            (None, None) => Some("no path meets the constraints".to_string()),
            (None, Some(r)) if !steer::fits(&r.segments) => Some(format!(
                "needs {} segments, a segment list holds {}",
                r.segments.len() + 1,
                cats_common::maps::MAX_SEGMENTS
            )),
            _ if inst.drain => Some("draining".to_string()),
            _ if any_reachable && metrics.is_unreachable(ingress, &inst.name) => {
                Some(format!("not answering health probes from {ingress}"))
            }
            (None, Some(_)) => None,
        };
        match (reason, route) {
            (None, Some(route)) => {
                let mut c = steer::candidate(policy, svc, inst, route, metrics);
                c.planned_elsewhere_rps = ledger.get(&inst.name).copied().unwrap_or(0.0);
                candidates.push(c);
            }
            (reason, _) => unusable.push(Decision {
                instance: inst.name.clone(),
                site: inst.node.clone(),
                group: policy.group_of(&inst.node),
                excluded: reason,
                ..Default::default()
            }),
        }
    }
    // This service's demand (what its instances receive), this ingress's share of it by its
    // headend's packet counters, or an even share before any was counted.
    let total: f64 = candidates.iter().map(|c| c.request_rate).sum();
    let counted = metrics.ingress_rates.get(&svc.name);
    let all: f64 = counted.map_or(0.0, |r| r.values().sum());
    let share = match counted.and_then(|r| r.get(ingress)) {
        Some(mine) if all > 0.0 => mine / all,
        _ => 1.0 / ingresses as f64,
    };
    let demand = total * share;
    let selection = Policy {
        objective: policy.objective,
        max_network_ms: policy.constraints.max_latency_ms,
        min_free_tops: policy.constraints.min_free_tops,
        slack: policy.slack,
        hysteresis: policy.dampening.hysteresis,
        demand_rps: demand,
        scoring: policy.scoring.clone(),
    };
    let previous = (!st.decisions.is_empty()).then_some(st.decisions.as_slice());
    let mut decisions = match selector {
        Selector::Cats => {
            let mut ds = select::decide(&candidates, &selection, previous);
            st.revisit_at_ms = hold_down(&mut ds, previous, st.changed_at_ms, policy, now_ms);
            ds
        }
        other => baseline::decide(other, &candidates),
    };
    if previous.is_none_or(|p| weights_differ(p, &decisions)) {
        st.changed_at_ms = Some(now_ms);
    }
    let total: u32 = decisions.iter().map(|d| d.weight).sum();
    for d in decisions.iter().filter(|d| d.weight > 0) {
        *ledger.entry(d.instance.clone()).or_default() +=
            demand * f64::from(d.weight) / f64::from(total);
    }

    for d in &mut decisions {
        let i = svc.instances.iter().position(|i| i.name == d.instance).expect("a candidate");
        let route = st.routes[i].as_mut().expect("candidates have routes");
        d.path = steer::names(&te.graph, &route.path);
        d.segments = steer::describe(&te.graph, &route.segments, &svc.instances[i].node);
        // A backup already computed for this TE view is shown; missing ones come from
        // `fill_backups`, outside the path that publishes weights.
        if let Some(Some((backup, _))) = &route.backup {
            d.backup_path = Some(steer::names(&te.graph, backup));
        }
    }
    decisions.extend(unusable);
    let order = |d: &Decision| svc.instances.iter().position(|i| i.name == d.instance);
    decisions.sort_by_key(order);
    st.decisions = decisions;
}

fn weights_differ(a: &[Decision], b: &[Decision]) -> bool {
    let weight = |ds: &[Decision], name: &str| {
        ds.iter().find(|d| d.instance == name).map_or(0, |d| d.weight)
    };
    a.iter().chain(b).any(|d| weight(a, &d.instance) != weight(b, &d.instance))
}

/// Within `holdDownSeconds` of the last change, keeps the previous weights unless an
/// instance that had flows must lose them (draining is never delayed). Returns when the
/// hold-down ends if it held anything back.
fn hold_down(
    decisions: &mut [Decision],
    previous: Option<&[Decision]>,
    changed_at_ms: Option<u64>,
    policy: &SteeringPolicy,
    now_ms: u64,
) -> Option<u64> {
    let (Some(previous), Some(at)) = (previous, changed_at_ms) else { return None };
    let until = at + policy.dampening.hold_down_seconds * 1000;
    if now_ms >= until {
        return None;
    }
    let before = |name: &str| previous.iter().find(|p| p.instance == name).map(|p| p.weight);
    let drains = decisions.iter().any(|d| d.weight == 0 && before(&d.instance).unwrap_or(0) > 0);
    let same_candidates = decisions.iter().all(|d| before(&d.instance).is_some());
    if drains || !same_candidates || !weights_differ(previous, decisions) {
        return None;
    }
    for d in decisions.iter_mut() {
        let w = before(&d.instance).unwrap_or(0);
        if w != d.weight {
            d.held = true;
            d.weight = w;
            if w > 0 {
                d.excluded = None;
            }
        }
    }
    Some(until)
}
