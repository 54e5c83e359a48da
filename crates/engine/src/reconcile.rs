//! One reconciliation pass over an application's monitor tree.
//!
//! Each pass works bottom-up: a group instance first drives its running children, then reads
//! their statuses, applies its termination behaviour to any child that fell from Active to
//! Inactive, and starts the children whose startup-order predecessors are Active.

use std::collections::BTreeMap;

use cairn_model::{
    AppSpec, ClusterSpec, ComponentRef, ComponentSpec, GroupSpec, TerminationBehaviour,
};

use crate::autoscale;
use crate::placement;
use crate::state::{
    AppState, ChildState, ClusterState, GroupInstance, GroupState, Member, MemberStatus, Millis,
    Phase, State, Status,
};
use crate::{
    Action, DependencyEndpoints, EngineConfig, Event, Observation, Output, StartMember, StopMember,
};

/// How long an Active member may go without a usage report before it is faulted.
const SILENCE_MS: u64 = 15_000;
/// How long a stop may go unanswered before it is sent again.
const RESTOP_MS: u64 = 30_000;
/// The first and the longest wait before replacing members that fail to start.
const RETRY_BASE_MS: u64 = 100;
const RETRY_MAX_MS: u64 = 30_000;
/// A member that faults sooner than this after becoming Active has failed to start, and a
/// cluster with no failed start for this long past its last retry forgets the earlier ones.
const STABLE_MS: u64 = 10_000;

pub(crate) struct Ctx<'a> {
    pub now: Millis,
    pub config: &'a EngineConfig,
    pub next_member: &'a mut u64,
    /// The application's [`AppState::group_instance_numbers`], held here while it is reconciled.
    pub group_instance_numbers: BTreeMap<String, u32>,
    pub out: &'a mut Output,
}

impl Ctx<'_> {
    fn event(&mut self, app: &str, subject: String, message: String) {
        self.out.events.push(Event {
            at: self.now,
            application: app.to_string(),
            subject,
            message,
            decision: None,
        });
    }
}

pub(crate) fn new_app(spec: AppSpec, now: Millis) -> AppState {
    let root = GroupState {
        alias: spec.id.clone(),
        phase: Phase::Running,
        status: Status::Created,
        instances: Vec::new(),
        calm_since: None,
    };
    AppState {
        spec,
        status: Status::Created,
        undeploying: false,
        deployed_at: now,
        root,
        burst_level: 0,
        group_instance_numbers: BTreeMap::new(),
    }
}

/// Runs one pass; returns true when an undeploying application has nothing left running.
pub(crate) fn reconcile_app(app: &mut AppState, ctx: &mut Ctx<'_>) -> bool {
    ctx.group_instance_numbers = std::mem::take(&mut app.group_instance_numbers);
    let finished = reconcile_tree(app, ctx);
    app.group_instance_numbers = std::mem::take(&mut ctx.group_instance_numbers);
    finished
}

fn reconcile_tree(app: &mut AppState, ctx: &mut Ctx<'_>) -> bool {
    let app_id = app.spec.id.clone();
    let spec = &app.spec.root;
    if app.undeploying {
        // Every instance is torn down further, not only up to the first one still busy.
        let mut done = true;
        for inst in &mut app.root.instances {
            done &= teardown_instance(&app_id, spec, inst, ctx);
        }
        set_status(
            &app_id,
            "application".into(),
            &mut app.status,
            Status::Terminating,
            ctx,
        );
        return done;
    }
    let groups = app.spec.network_partition_groups.clone();
    let level = app.burst_level.min(groups.len().saturating_sub(1));
    let in_use: Vec<&String> = groups.iter().take(level + 1).flatten().collect();
    for inst in &mut app.root.instances {
        if !in_use.contains(&&inst.network_partition) && !inst.retiring {
            inst.retiring = true;
            ctx.event(
                &app_id,
                format!("group {}", inst.id),
                "retiring: the burst is over".into(),
            );
        }
    }
    for np in &in_use {
        if !app
            .root
            .instances
            .iter()
            .any(|i| &i.network_partition == *np)
        {
            let id = format!("{app_id}-{np}");
            app.root.instances.push(new_instance(id, np, spec));
        }
    }
    app.root
        .instances
        .retain_mut(|inst| !(inst.retiring && teardown_instance(&app_id, spec, inst, ctx)));
    for inst in app.root.instances.iter_mut().filter(|i| !i.retiring) {
        reconcile_instance(&app_id, spec, inst, &[], ctx);
    }
    burst(app, ctx);
    let status = aggregate_instances(
        app.status,
        app.root
            .instances
            .iter()
            .filter(|i| !i.retiring)
            .map(|i| i.status),
    );
    set_status(&app_id, "application".into(), &mut app.status, status, ctx);
    app.root.status = status;
    false
}

/// Expands into the next network partition group when the application is at its max where it
/// runs, and contracts back, last in first out, once the burst's members have had nothing to
/// do for the stabilization window.
fn burst(app: &mut AppState, ctx: &mut Ctx<'_>) {
    let spec = &app.spec.root;
    let groups = &app.spec.network_partition_groups;
    let live: Vec<&GroupInstance> = app.root.instances.iter().filter(|i| !i.retiring).collect();
    if live.is_empty() {
        return;
    }
    let level = app.burst_level;
    let saturated = live.iter().any(|inst| saturated(spec, inst, false));
    let settled = live.iter().all(|inst| inst.status == Status::Active);
    let decision = |from: usize, to: usize| crate::autoscale::Decision {
        from: from as u32,
        to: to as u32,
        reason: crate::autoscale::Reason::Burst,
        estimates: Vec::new(),
    };
    if saturated && settled && level + 1 < groups.len() {
        app.burst_level += 1;
        app.root.calm_since = None;
        let into = groups[level + 1].join(", ");
        ctx.out.events.push(Event {
            at: ctx.now,
            application: app.spec.id.clone(),
            subject: "application".into(),
            message: format!(
                "burst: at its max in {}, expanding into {into}",
                groups[level].join(", ")
            ),
            decision: Some(decision(level + 1, level + 2)),
        });
        return;
    }
    if level == 0 {
        return;
    }
    let burst_partitions = &groups[level];
    let keep = live
        .iter()
        .filter(|i| !burst_partitions.contains(&i.network_partition))
        .count();
    let calm = keep > 0 && fits(spec, &live, keep);
    if !calm {
        app.root.calm_since = None;
        return;
    }
    let since = *app.root.calm_since.get_or_insert(ctx.now);
    if ctx.now.saturating_sub(since) < stabilization(spec) {
        return;
    }
    app.burst_level -= 1;
    app.root.calm_since = None;
    ctx.out.events.push(Event {
        at: ctx.now,
        application: app.spec.id.clone(),
        subject: "application".into(),
        message: format!(
            "burst over: contracting out of {}",
            burst_partitions.join(", ")
        ),
        decision: Some(decision(level + 1, level)),
    });
}

/// Whether a cluster in this instance is at its max, wants more, and no group scaling can help.
fn saturated(spec: &GroupSpec, inst: &GroupInstance, group_can_grow: bool) -> bool {
    spec.children
        .iter()
        .zip(&inst.children)
        .any(|(child, state)| match (child, state) {
            (ComponentSpec::Cluster(cs), ChildState::Cluster(c)) => {
                !group_can_grow
                    && c.phase == Phase::Running
                    && c.desired >= cs.max
                    && c.wanted.is_some_and(|w| w > cs.max)
                    && !c.scaler.manual
            }
            (ComponentSpec::Group(gs), ChildState::Group(g)) => {
                let live = g.instances.iter().filter(|i| !i.retiring).count() as u32;
                let can_grow = gs.group_scaling_enabled && live < gs.max_instances;
                g.instances
                    .iter()
                    .filter(|i| !i.retiring)
                    .any(|gi| saturated(gs, gi, can_grow))
            }
            _ => false,
        })
}

/// Whether the load of these instances would fit in `keep` of them: for every cluster, the
/// members all its instances want together are no more than `keep` instances hold at their max.
/// Unknown load never fits.
fn fits(spec: &GroupSpec, instances: &[&GroupInstance], keep: usize) -> bool {
    fn collect<'a>(
        spec: &'a GroupSpec,
        inst: &GroupInstance,
        totals: &mut BTreeMap<&'a str, (u64, u64, bool)>,
    ) {
        for (child, state) in spec.children.iter().zip(&inst.children) {
            match (child, state) {
                (ComponentSpec::Cluster(cs), ChildState::Cluster(c)) => {
                    let entry =
                        totals
                            .entry(cs.alias.as_str())
                            .or_insert((0, u64::from(cs.max), true));
                    entry.0 += u64::from(c.wanted.unwrap_or(0));
                    entry.2 &= c.wanted.is_some();
                }
                (ComponentSpec::Group(gs), ChildState::Group(g)) => {
                    for gi in g.instances.iter().filter(|gi| !gi.retiring) {
                        collect(gs, gi, totals);
                    }
                }
                _ => {}
            }
        }
    }
    let mut totals = BTreeMap::new();
    for inst in instances {
        collect(spec, inst, &mut totals);
    }
    totals
        .values()
        .all(|&(wanted, max, known)| known && wanted <= max * keep as u64)
}

/// The longest scale-down stabilization window among the clusters of a group.
fn stabilization(spec: &GroupSpec) -> u64 {
    spec.children
        .iter()
        .map(|child| match child {
            ComponentSpec::Cluster(cs) => cs.autoscaling.timing.scale_down_stabilization_ms,
            ComponentSpec::Group(gs) => stabilization(gs),
        })
        .max()
        .unwrap_or(0)
}

/// A component's need over its min, as scaling dependents compare it.
fn child_factor(state: &ChildState) -> f64 {
    match state {
        ChildState::Cluster(c) if c.phase == Phase::Running => c.factor,
        ChildState::Cluster(_) => 0.0,
        ChildState::Group(g) => g
            .instances
            .iter()
            .flat_map(|gi| gi.children.iter())
            .map(child_factor)
            .fold(0.0, f64::max),
    }
}

fn set_dependency_factor(state: &mut ChildState, factor: f64) {
    match state {
        ChildState::Cluster(c) => c.dependency_factor = Some(factor),
        ChildState::Group(g) => {
            for child in g.instances.iter_mut().flat_map(|gi| gi.children.iter_mut()) {
                set_dependency_factor(child, factor);
            }
        }
    }
}

fn new_instance(id: String, network_partition: &str, spec: &GroupSpec) -> GroupInstance {
    let children = spec
        .children
        .iter()
        .map(|child| match child {
            ComponentSpec::Group(g) => ChildState::Group(GroupState {
                alias: g.alias.clone(),
                phase: Phase::Pending,
                status: Status::Created,
                instances: Vec::new(),
                calm_since: None,
            }),
            ComponentSpec::Cluster(c) => ChildState::Cluster(ClusterState {
                alias: c.alias.clone(),
                phase: Phase::Pending,
                status: Status::Created,
                desired: c.min,
                members: Vec::new(),
                scaler: Default::default(),
                estimates: Vec::new(),
                sampled_at: None,
                wanted: None,
                factor: 0.0,
                dependency_factor: None,
                failed_starts: 0,
                retry_at: None,
            }),
        })
        .collect();
    GroupInstance {
        id,
        network_partition: network_partition.to_string(),
        status: Status::Created,
        children,
        restarting: false,
        retiring: false,
    }
}

/// Startup-order edges among a group's direct children, as (before, after) index pairs.
fn startup_edges(spec: &GroupSpec) -> Vec<(usize, usize)> {
    let index: BTreeMap<ComponentRef, usize> = spec
        .children
        .iter()
        .enumerate()
        .map(|(i, c)| (c.reference(), i))
        .collect();
    let mut edges = Vec::new();
    for order in &spec.startup_orders {
        for pair in order.windows(2) {
            if let (Some(&a), Some(&b)) = (index.get(&pair[0]), index.get(&pair[1])) {
                edges.push((a, b));
            }
        }
    }
    edges
}

/// Every child that transitively starts after `start`.
fn dependents_of(start: usize, edges: &[(usize, usize)]) -> Vec<usize> {
    let mut found = Vec::new();
    let mut stack = vec![start];
    while let Some(i) = stack.pop() {
        for &(a, b) in edges {
            if a == i && !found.contains(&b) {
                found.push(b);
                stack.push(b);
            }
        }
    }
    found
}

// Children, their specs and their statuses are parallel vectors walked by index.
#[allow(clippy::needless_range_loop)]
fn reconcile_instance(
    app: &str,
    spec: &GroupSpec,
    inst: &mut GroupInstance,
    inherited: &[DependencyEndpoints],
    ctx: &mut Ctx<'_>,
) {
    let edges = startup_edges(spec);
    let n = spec.children.len();
    // Scaling dependents: each list scales by the largest factor any of its members reports.
    for list in &spec.scaling_dependents {
        let members: Vec<usize> = list
            .iter()
            .filter_map(|r| spec.children.iter().position(|c| c.reference() == *r))
            .collect();
        let factor = members
            .iter()
            .map(|&i| child_factor(&inst.children[i]))
            .fold(0.0, f64::max);
        for &i in &members {
            set_dependency_factor(&mut inst.children[i], factor);
        }
    }
    // Nested groups first, so the statuses read below are current.
    for i in 0..n {
        if matches!(inst.children[i], ChildState::Group(_))
            && inst.children[i].phase() != Phase::Pending
        {
            drive_child(app, spec, inst, i, &edges, inherited, ctx);
        }
    }
    let current: Vec<Status> = (0..n)
        .map(|i| child_status(&spec.children[i], &inst.children[i]))
        .collect();
    // Termination behaviour for children that fell from Active.
    for i in 0..n {
        if inst.children[i].status() != Status::Active || current[i] != Status::Inactive {
            continue;
        }
        let name = spec.children[i].reference();
        let victims = match spec.termination {
            TerminationBehaviour::TerminateNone => continue,
            TerminationBehaviour::TerminateDependents => {
                let victims = dependents_of(i, &edges);
                if !victims.is_empty() {
                    ctx.event(
                        app,
                        format!("group {}", inst.id),
                        format!(
                            "terminate-dependents: {name} is inactive, stopping what depends on it"
                        ),
                    );
                }
                victims
            }
            TerminationBehaviour::TerminateAll => {
                if inst.restarting {
                    continue;
                }
                inst.restarting = true;
                ctx.event(
                    app,
                    format!("group {}", inst.id),
                    format!("terminate-all: {name} is inactive, restarting the group instance"),
                );
                (0..n).collect()
            }
        };
        for j in victims {
            if inst.children[j].phase() == Phase::Running {
                stop_child(
                    &mut inst.children[j],
                    ctx,
                    app,
                    &format!("{:?}: {name} is inactive", spec.termination),
                );
            }
        }
    }
    // Clusters that run, and anything that stops.
    for i in 0..n {
        let phase = inst.children[i].phase();
        let cluster = matches!(inst.children[i], ChildState::Cluster(_));
        if phase == Phase::Stopping || (cluster && phase == Phase::Running) {
            drive_child(app, spec, inst, i, &edges, inherited, ctx);
        }
    }
    if inst.restarting && inst.children.iter().all(|c| c.phase() == Phase::Pending) {
        inst.restarting = false;
        ctx.event(
            app,
            format!("group {}", inst.id),
            "starting again after terminate-all".into(),
        );
    }
    // Start children whose predecessors are Active.
    if !inst.restarting {
        for i in 0..n {
            if inst.children[i].phase() != Phase::Pending {
                continue;
            }
            let ready = edges.iter().filter(|(_, b)| *b == i).all(|&(a, _)| {
                inst.children[a].phase() == Phase::Running && current[a] == Status::Active
            });
            if ready {
                set_phase(&mut inst.children[i], Phase::Running);
                drive_child(app, spec, inst, i, &edges, inherited, ctx);
            }
        }
    }
    for i in 0..spec.children.len() {
        let current = child_status(&spec.children[i], &inst.children[i]);
        let subject = match &spec.children[i] {
            ComponentSpec::Group(g) => format!("group {}", g.alias),
            ComponentSpec::Cluster(c) => format!("cluster {}", c.alias),
        };
        let mut status = inst.children[i].status();
        set_status(app, subject, &mut status, current, ctx);
        set_child_status(&mut inst.children[i], status);
    }
    let status = if inst.restarting {
        Status::Inactive
    } else {
        aggregate(inst.status, inst.children.iter().map(|c| c.status()))
    };
    let mut own = inst.status;
    set_status(app, format!("group {}", inst.id), &mut own, status, ctx);
    inst.status = own;
}

/// The status of a group or application from its instances: an instance still coming up for
/// the first time beside others does not make the whole Inactive, adding capacity is no fault.
fn aggregate_instances(previous: Status, instances: impl Iterator<Item = Status>) -> Status {
    let all: Vec<Status> = instances.collect();
    let settled: Vec<Status> = all
        .iter()
        .copied()
        .filter(|s| *s != Status::Created)
        .collect();
    let counted = if settled.is_empty() { all } else { settled };
    aggregate(previous, counted.into_iter())
}

/// The status of a whole from its parts: Active when all are, Inactive when it was up and is not.
fn aggregate(previous: Status, parts: impl Iterator<Item = Status>) -> Status {
    let mut all_active = true;
    let mut any = false;
    for s in parts {
        any = true;
        if s != Status::Active {
            all_active = false;
        }
    }
    if all_active && any {
        return Status::Active;
    }
    match previous {
        Status::Active | Status::Inactive => Status::Inactive,
        _ => Status::Created,
    }
}

fn set_status(app: &str, subject: String, slot: &mut Status, new: Status, ctx: &mut Ctx<'_>) {
    if *slot != new {
        ctx.event(app, subject, format!("{:?} -> {:?}", *slot, new));
        *slot = new;
    }
}

fn set_child_status(child: &mut ChildState, status: Status) {
    match child {
        ChildState::Group(g) => g.status = status,
        ChildState::Cluster(c) => c.status = status,
    }
}

fn set_phase(child: &mut ChildState, phase: Phase) {
    match child {
        ChildState::Group(g) => g.phase = phase,
        ChildState::Cluster(c) => c.phase = phase,
    }
}

fn child_status(spec: &ComponentSpec, state: &ChildState) -> Status {
    match (spec, state) {
        (ComponentSpec::Cluster(cs), ChildState::Cluster(c)) => match c.phase {
            Phase::Stopping => Status::Terminating,
            Phase::Pending if c.status == Status::Terminating => Status::Terminated,
            Phase::Pending => {
                if c.status == Status::Terminated {
                    Status::Terminated
                } else {
                    Status::Created
                }
            }
            Phase::Running => {
                let active = c
                    .members
                    .iter()
                    .filter(|m| m.status == MemberStatus::Active)
                    .count();
                if active as u32 >= cs.min {
                    Status::Active
                } else {
                    match c.status {
                        Status::Active | Status::Inactive => Status::Inactive,
                        _ => Status::Created,
                    }
                }
            }
        },
        (ComponentSpec::Group(gs), ChildState::Group(g)) => match g.phase {
            Phase::Stopping => Status::Terminating,
            Phase::Pending if matches!(g.status, Status::Terminating | Status::Terminated) => {
                Status::Terminated
            }
            Phase::Pending => Status::Created,
            Phase::Running => {
                if (g.instances.iter().filter(|gi| !gi.retiring).count() as u32) < gs.min_instances
                {
                    return match g.status {
                        Status::Active | Status::Inactive => Status::Inactive,
                        _ => Status::Created,
                    };
                }
                aggregate_instances(
                    g.status,
                    g.instances.iter().filter(|i| !i.retiring).map(|i| i.status),
                )
            }
        },
        _ => Status::Inactive,
    }
}

/// Moves a child towards its phase: keeps a running one at size, tears down a stopping one.
fn drive_child(
    app: &str,
    spec: &GroupSpec,
    inst: &mut GroupInstance,
    i: usize,
    edges: &[(usize, usize)],
    inherited: &[DependencyEndpoints],
    ctx: &mut Ctx<'_>,
) {
    let np = inst.network_partition.clone();
    let mut deps = inherited.to_vec();
    for &(a, b) in edges {
        if b == i {
            endpoints_of(&spec.children[a], &inst.children[a], &mut deps);
        }
    }
    match (&spec.children[i], &mut inst.children[i]) {
        (ComponentSpec::Cluster(cs), ChildState::Cluster(c)) => {
            housekeep_cluster(app, cs, c, ctx);
            match c.phase {
                Phase::Running => {
                    autoscale_cluster(app, cs, c, ctx);
                    size_cluster(app, cs, c, &np, &deps, ctx)
                }
                Phase::Stopping => {
                    stop_members(app, c, ctx, "stopping cluster");
                    if c.members.is_empty() {
                        c.phase = Phase::Pending;
                    }
                }
                Phase::Pending => {}
            }
        }
        (ComponentSpec::Group(gs), ChildState::Group(g)) => match g.phase {
            Phase::Running => {
                while (g.instances.iter().filter(|gi| !gi.retiring).count() as u32)
                    < gs.min_instances.max(1)
                {
                    add_group_instance(app, gs, g, &np, ctx);
                }
                g.instances
                    .retain_mut(|gi| !(gi.retiring && teardown_instance(app, gs, gi, ctx)));
                for gi in g.instances.iter_mut().filter(|gi| !gi.retiring) {
                    reconcile_instance(app, gs, gi, &deps, ctx);
                }
                if gs.group_scaling_enabled {
                    scale_group(app, gs, g, &np, ctx);
                }
            }
            Phase::Stopping => {
                g.instances
                    .retain_mut(|gi| !teardown_instance(app, gs, gi, ctx));
                if g.instances.is_empty() {
                    g.phase = Phase::Pending;
                }
            }
            Phase::Pending => {}
        },
        _ => {}
    }
}

/// Raises each alias's instance number to the highest in use, for state stored before the
/// numbers were, so no new instance takes the id of a live one.
pub(crate) fn recount_group_instances(app: &mut AppState) {
    fn walk(instances: &[GroupInstance], numbers: &mut BTreeMap<String, u32>) {
        let groups = instances
            .iter()
            .flat_map(|instance| &instance.children)
            .filter_map(|child| match child {
                ChildState::Group(group) => Some(group),
                ChildState::Cluster(_) => None,
            });
        for group in groups {
            let prefix = format!("{}-", group.alias);
            for instance in &group.instances {
                if let Some(number) = instance
                    .id
                    .strip_prefix(&prefix)
                    .and_then(|n| n.parse::<u32>().ok())
                {
                    let highest = numbers.entry(group.alias.clone()).or_default();
                    *highest = (*highest).max(number);
                }
            }
            walk(&group.instances, numbers);
        }
    }
    walk(&app.root.instances, &mut app.group_instance_numbers);
}

fn add_group_instance(
    app: &str,
    spec: &GroupSpec,
    g: &mut GroupState,
    np: &str,
    ctx: &mut Ctx<'_>,
) -> String {
    let number = ctx
        .group_instance_numbers
        .entry(g.alias.clone())
        .or_default();
    *number += 1;
    let id = format!("{}-{number}", g.alias);
    ctx.event(app, format!("group {id}"), "instance created".into());
    g.instances.push(new_instance(id.clone(), np, spec));
    id
}

/// Group scaling: a new instance when a cluster of the group is at its max and needs more; the
/// newest instance retires once all its clusters need no more than their min for a while.
fn scale_group(app: &str, spec: &GroupSpec, g: &mut GroupState, np: &str, ctx: &mut Ctx<'_>) {
    let live: Vec<&GroupInstance> = g.instances.iter().filter(|gi| !gi.retiring).collect();
    let count = live.len() as u32;
    let pressed = live.iter().any(|gi| {
        spec.children
            .iter()
            .zip(&gi.children)
            .any(|(child, state)| match (child, state) {
                (ComponentSpec::Cluster(cs), ChildState::Cluster(c)) => {
                    // A size held by hand is the operator's call, not a shortage.
                    c.desired >= cs.max && c.wanted.is_some_and(|w| w > cs.max) && !c.scaler.manual
                }
                _ => false,
            })
    });
    let settled = live.iter().all(|gi| gi.status == Status::Active);
    let decision = |from: u32, to: u32| crate::autoscale::Decision {
        from,
        to,
        reason: crate::autoscale::Reason::Group,
        estimates: Vec::new(),
    };
    if pressed && settled && count < spec.max_instances {
        g.calm_since = None;
        let id = add_group_instance(app, spec, g, np, ctx);
        ctx.out.events.push(Event {
            at: ctx.now,
            application: app.to_string(),
            subject: format!("group {}", spec.alias),
            message: format!("group scaling {count} -> {}: a cluster is at its max and needs more; new instance {id}", count + 1),
            decision: Some(decision(count, count + 1)),
        });
        return;
    }
    let shrinkable = count > spec.min_instances.max(1) && fits(spec, &live, live.len() - 1);
    if !shrinkable {
        g.calm_since = None;
        return;
    }
    let since = *g.calm_since.get_or_insert(ctx.now);
    if ctx.now.saturating_sub(since) < stabilization(spec) {
        return;
    }
    g.calm_since = None;
    if let Some(gi) = g.instances.iter_mut().rev().find(|gi| !gi.retiring) {
        gi.retiring = true;
        ctx.out.events.push(Event {
            at: ctx.now,
            application: app.to_string(),
            subject: format!("group {}", spec.alias),
            message: format!(
                "group scaling {count} -> {}: instance {} has had nothing to do",
                count - 1,
                gi.id
            ),
            decision: Some(decision(count, count - 1)),
        });
    }
}

fn stop_child(child: &mut ChildState, ctx: &mut Ctx<'_>, app: &str, reason: &str) {
    match child {
        ChildState::Cluster(c) => {
            c.phase = Phase::Stopping;
            stop_members(app, c, ctx, reason);
        }
        ChildState::Group(g) => g.phase = Phase::Stopping,
    }
}

/// Tears an instance down in reverse startup order; true once nothing of it runs.
fn teardown_instance(
    app: &str,
    spec: &GroupSpec,
    inst: &mut GroupInstance,
    ctx: &mut Ctx<'_>,
) -> bool {
    let edges = startup_edges(spec);
    for i in (0..spec.children.len()).rev() {
        let dependents_gone = edges
            .iter()
            .filter(|(a, _)| *a == i)
            .all(|&(_, b)| is_down(&inst.children[b]));
        if !dependents_gone {
            continue;
        }
        match (&spec.children[i], &mut inst.children[i]) {
            (ComponentSpec::Cluster(cs), ChildState::Cluster(c)) => {
                housekeep_cluster(app, cs, c, ctx);
                if !c.members.is_empty() {
                    c.phase = Phase::Stopping;
                    stop_members(app, c, ctx, "undeploy");
                }
                if c.members.is_empty() {
                    c.phase = Phase::Pending;
                }
            }
            (ComponentSpec::Group(gs), ChildState::Group(g)) => {
                g.instances
                    .retain_mut(|gi| !teardown_instance(app, gs, gi, ctx));
                g.phase = if g.instances.is_empty() {
                    Phase::Pending
                } else {
                    Phase::Stopping
                };
            }
            _ => {}
        }
    }
    let done = inst.children.iter().all(is_down);
    for (i, child) in inst.children.iter_mut().enumerate() {
        let status = if is_down(child) {
            Status::Terminated
        } else {
            Status::Terminating
        };
        let mut slot = child.status();
        let subject = match &spec.children[i] {
            ComponentSpec::Group(g) => format!("group {}", g.alias),
            ComponentSpec::Cluster(c) => format!("cluster {}", c.alias),
        };
        set_status(app, subject, &mut slot, status, ctx);
        set_child_status(child, slot);
    }
    let mut own = inst.status;
    let status = if done {
        Status::Terminated
    } else {
        Status::Terminating
    };
    set_status(app, format!("group {}", inst.id), &mut own, status, ctx);
    inst.status = own;
    done
}

fn is_down(child: &ChildState) -> bool {
    match child {
        ChildState::Cluster(c) => c.members.is_empty(),
        ChildState::Group(g) => g.instances.is_empty(),
    }
}

fn endpoints_of(spec: &ComponentSpec, state: &ChildState, into: &mut Vec<DependencyEndpoints>) {
    match (spec, state) {
        (ComponentSpec::Cluster(cs), ChildState::Cluster(c)) => {
            let mut ports: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for m in c
                .members
                .iter()
                .filter(|m| m.status == MemberStatus::Active)
            {
                for (name, addr) in &m.ports {
                    ports.entry(name.clone()).or_default().push(addr.clone());
                }
            }
            let proxy_ports = cs
                .cartridge
                .port_mappings
                .iter()
                .filter_map(|p| p.proxy_port.map(|pp| (p.name.clone(), pp)))
                .collect();
            into.push(DependencyEndpoints {
                alias: cs.alias.clone(),
                ports,
                proxy_ports,
            });
        }
        (ComponentSpec::Group(gs), ChildState::Group(g)) => {
            for gi in &g.instances {
                for (cspec, cstate) in gs.children.iter().zip(&gi.children) {
                    endpoints_of(cspec, cstate, into);
                }
            }
        }
        _ => {}
    }
}

/// Whether a member that ended failed to start: it never became Active (whatever ended it,
/// the kernel's OOM killer included), or its program failed soon after it did.
fn failed_to_start(m: &Member) -> bool {
    match m.active_at {
        None => true,
        Some(active) => !m.killed && m.since.saturating_sub(active) < STABLE_MS,
    }
}

/// Drops terminated members and faults members that took too long to start.
fn housekeep_cluster(app: &str, spec: &ClusterSpec, c: &mut ClusterState, ctx: &mut Ctx<'_>) {
    // Members that failed before they served for long back off their replacements: a command
    // that cannot start, or exits as soon as it has, must not be respawned in a tight loop.
    let failed = c
        .members
        .iter()
        .any(|m| m.status == MemberStatus::Terminated && m.faulted && failed_to_start(m));
    if c.retry_at
        .is_some_and(|t| ctx.now.saturating_sub(t) >= STABLE_MS)
    {
        c.failed_starts = 0;
        c.retry_at = None;
    }
    // Members failing together are one failure: a cluster whose members all crash at once
    // is replaced at once the first time.
    if failed {
        c.failed_starts = c.failed_starts.saturating_add(1);
        // A single failure is replaced at once, so a killed member heals without delay.
        let delay = match c.failed_starts {
            0 | 1 => 0,
            n => (RETRY_BASE_MS << (n - 2).min(16)).min(RETRY_MAX_MS),
        };
        c.retry_at = Some(Millis(ctx.now.0.saturating_add(delay)));
        ctx.event(
            app,
            format!("cluster {}", spec.alias),
            format!(
                "{} failed start{} in a row: next member in {} ms",
                c.failed_starts,
                if c.failed_starts == 1 { "" } else { "s" },
                delay
            ),
        );
    }
    c.members.retain(|m| m.status != MemberStatus::Terminated);
    let timeout = ctx.config.start_timeout_ms;
    for m in &mut c.members {
        // A stop that got no answer is sent again, lest the member wait forever.
        let stuck = m.status == MemberStatus::ReadyToShutDown
            && m.stop_at.is_none()
            && ctx.now.saturating_sub(m.since) > RESTOP_MS;
        if stuck {
            m.since = ctx.now;
            ctx.out.actions.push(stop_action(
                app,
                &spec.alias,
                &m.id,
                "no exit seen after the stop: stopping again",
            ));
            continue;
        }
        if let Some(stop_at) = m.stop_at {
            let idle = m
                .load
                .in_flight
                .is_some_and(|(t, v)| t > m.since && v == 0.0);
            if ctx.now >= stop_at || idle {
                m.stop_at = None;
                ctx.out
                    .actions
                    .push(stop_action(app, &spec.alias, &m.id, "drained"));
            }
            continue;
        }
        // A member whose agent reported its usage and then went quiet is not to be trusted.
        let quiet = m
            .load
            .memory_percent
            .is_some_and(|(t, _)| ctx.now.saturating_sub(t) > SILENCE_MS);
        if m.status == MemberStatus::Active && quiet {
            let reason = format!("no usage reported for {} s", SILENCE_MS / 1000);
            m.faulted = true;
            ctx.event(
                app,
                format!("member {}", m.id),
                format!("faulted: {reason}"),
            );
            stop_member(app, &spec.alias, m, ctx, &reason);
            continue;
        }
        let starting = matches!(m.status, MemberStatus::Created | MemberStatus::Starting);
        if starting && ctx.now.saturating_sub(m.since) > timeout {
            let reason = format!("not active {timeout} ms after its start");
            m.faulted = true;
            ctx.event(
                app,
                format!("member {}", m.id),
                format!("faulted: {reason}"),
            );
            stop_member(app, &spec.alias, m, ctx, &reason);
        }
    }
}

fn size_cluster(
    app: &str,
    spec: &ClusterSpec,
    c: &mut ClusterState,
    network_partition: &str,
    deps: &[DependencyEndpoints],
    ctx: &mut Ctx<'_>,
) {
    c.desired = c.desired.clamp(spec.min, spec.max.max(spec.min));
    let live = c.members.iter().filter(|m| m.status.is_live()).count() as u32;
    let backing_off = c.retry_at.is_some_and(|t| ctx.now < t);
    for _ in live..c.desired {
        if backing_off {
            break;
        }
        let Some(placement) = spec.placements.iter().find(|p| p.id == network_partition) else {
            ctx.event(
                app,
                format!("cluster {}", spec.alias),
                format!("no placement for network partition {network_partition}"),
            );
            return;
        };
        let Some(partition) = placement::choose(placement, &c.members) else {
            ctx.event(
                app,
                format!("cluster {}", spec.alias),
                format!("every partition of {network_partition} is at its partitionMax"),
            );
            return;
        };
        *ctx.next_member += 1;
        let id = format!("{app}.{}.{}", spec.alias, *ctx.next_member);
        c.members.push(Member {
            id: id.clone(),
            status: MemberStatus::Created,
            network_partition: network_partition.to_string(),
            partition: partition.clone(),
            host: None,
            ports: BTreeMap::new(),
            pid: None,
            created_at: ctx.now,
            active_at: None,
            since: ctx.now,
            load: Default::default(),
            stop_at: None,
            faulted: false,
            killed: false,
        });
        ctx.event(
            app,
            format!("member {id}"),
            format!("created in {network_partition}/{partition}"),
        );
        ctx.out
            .actions
            .push(Action::StartMember(Box::new(StartMember {
                member_id: id,
                application: app.to_string(),
                cluster: spec.alias.clone(),
                cartridge: spec.cartridge.clone(),
                network_partition: network_partition.to_string(),
                partition,
                dependencies: deps.to_vec(),
            })));
    }
    let mut extra = live.saturating_sub(c.desired);
    if extra == 0 {
        return;
    }
    // Members not yet serving go first (newest first), then the least loaded Active ones.
    let mut order: Vec<usize> = (0..c.members.len())
        .filter(|&i| c.members[i].status.is_live())
        .collect();
    order.sort_by(|&a, &b| {
        let (ma, mb) = (&c.members[a], &c.members[b]);
        let key = |m: &Member| (m.status == MemberStatus::Active, in_flight(m));
        let (ka, kb) = (key(ma), key(mb));
        ka.0.cmp(&kb.0)
            .then(ka.1.total_cmp(&kb.1))
            .then(mb.created_at.cmp(&ma.created_at))
    });
    let drain_ms = spec.autoscaling.timing.drain_ms;
    for i in order {
        if extra == 0 {
            break;
        }
        extra -= 1;
        let m = &mut c.members[i];
        if m.status == MemberStatus::Active && drain_ms > 0 {
            // Out of the route table now; stopped once its requests finished.
            m.status = MemberStatus::ReadyToShutDown;
            m.since = ctx.now;
            m.stop_at = Some(Millis(ctx.now.0.saturating_add(drain_ms)));
            ctx.event(
                app,
                format!("member {}", m.id),
                "draining: above desired size".into(),
            );
        } else {
            stop_member(app, &spec.alias, m, ctx, "above desired size");
        }
    }
}

fn in_flight(m: &Member) -> f64 {
    m.load.in_flight.map_or(0.0, |(_, v)| v)
}

/// Samples the cluster's load once a second and lets the autoscaler move its desired size.
fn autoscale_cluster(app: &str, spec: &ClusterSpec, c: &mut ClusterState, ctx: &mut Ctx<'_>) {
    let now = ctx.now;
    // Once a second, with slack for the caller's tick not landing exactly on it.
    if c.sampled_at.is_some_and(|t| now.saturating_sub(t) < 900) {
        return;
    }
    let policy = &spec.autoscaling;
    // A figure older than this is missing, not zero.
    let fresh = |v: Option<(Millis, f64)>| {
        v.filter(|(t, _)| now.saturating_sub(*t) <= 5_000)
            .map(|(_, v)| v)
    };
    let active = || {
        c.members
            .iter()
            .filter(|m| m.status == MemberStatus::Active)
    };
    let mut any = false;
    for factor in autoscale::Factor::ALL {
        let (sum, count) = active()
            .filter_map(|m| {
                fresh(match factor {
                    autoscale::Factor::RequestsInFlight => m.load.in_flight,
                    autoscale::Factor::MemoryConsumption => m.load.memory_percent,
                    autoscale::Factor::LoadAverage => m.load.cpu_percent,
                })
            })
            .fold((0.0, 0u32), |(sum, count), v| (sum + v, count + 1));
        if count == 0 {
            continue;
        }
        any = true;
        let value = match factor {
            autoscale::Factor::RequestsInFlight => sum,
            _ => sum / f64::from(count),
        };
        c.scaler.record(factor, now, value, &policy.timing);
    }
    let active_count = active().count() as u32;
    if !any {
        // Missing figures are missing: no need is known, and none is passed on to dependents.
        c.wanted = None;
        c.factor = 0.0;
        return;
    }
    c.sampled_at = Some(now);
    let sizes = autoscale::Sizes {
        active: active_count,
        pending: c
            .members
            .iter()
            .filter(|m| matches!(m.status, MemberStatus::Created | MemberStatus::Starting))
            .count() as u32,
        desired: c.desired,
        min: spec.min,
        max: spec.max,
    };
    let estimates = autoscale::estimates(&c.scaler, policy, sizes);
    let mut need = autoscale::need(&estimates, sizes);
    c.wanted = estimates.iter().map(|e| e.wanted).max();
    c.factor = f64::from(need.0) / f64::from(spec.min.max(1));
    if let Some(factor) = c.dependency_factor {
        let along = ((factor * f64::from(spec.min.max(1))).ceil() as u32).clamp(spec.min, spec.max);
        if along > need.0 {
            need = (along, autoscale::Reason::Dependency);
        }
    }

    let decision = autoscale::decide(&mut c.scaler, &policy.timing, now, sizes, need, &estimates);
    c.estimates = estimates;
    let Some(decision) = decision else {
        return;
    };
    c.desired = decision.to;
    ctx.out.events.push(Event {
        at: now,
        application: app.to_string(),
        subject: format!("cluster {}", spec.alias),
        message: explain(&decision),
        decision: Some(decision),
    });
}

/// One line an operator can read: sizes, reason, and each factor's figures.
pub(crate) fn explain(decision: &autoscale::Decision) -> String {
    let mut text = format!(
        "scale {} -> {}: {}",
        decision.from,
        decision.to,
        decision.reason.name()
    );
    for e in &decision.estimates {
        text.push_str(&format!(
            "; {} average {:.1} predicted {:.1} threshold {:.0} needs {}",
            e.factor.name(),
            e.average,
            e.predicted,
            e.threshold,
            e.required
        ));
    }
    text
}

fn stop_members(app: &str, c: &mut ClusterState, ctx: &mut Ctx<'_>, reason: &str) {
    for m in &mut c.members {
        stop_member(app, &c.alias, m, ctx, reason);
    }
}

fn stop_action(application: &str, cluster: &str, member_id: &str, reason: &str) -> Action {
    Action::StopMember(StopMember {
        member_id: member_id.to_string(),
        application: application.to_string(),
        cluster: cluster.to_string(),
        reason: reason.to_string(),
    })
}

fn stop_member(app: &str, cluster: &str, m: &mut Member, ctx: &mut Ctx<'_>, reason: &str) {
    // A draining member is stopped now rather than when its drain ends.
    let draining = m.stop_at.take().is_some();
    if !m.status.is_live() && !draining {
        return;
    }
    if m.status.is_live() {
        m.status = MemberStatus::ReadyToShutDown;
        m.since = ctx.now;
    }
    ctx.out
        .actions
        .push(stop_action(app, cluster, &m.id, reason));
}

/// Applies an observation to the member it names; returns the member's application.
pub(crate) fn apply_observation(
    state: &mut State,
    observation: &Observation,
    now: Millis,
    out: &mut Output,
) -> Option<String> {
    let wanted = observation.member_id();
    for (app_id, app) in &mut state.apps {
        let Some((cluster, member)) = find_member(&mut app.root, wanted) else {
            continue;
        };
        apply_to_member(app_id, &cluster, member, observation, now, out);
        return Some(app_id.clone());
    }
    None
}

/// Applies many observations with one walk over the members.
pub(crate) fn apply_observations(
    state: &mut State,
    observations: Vec<Observation>,
    now: Millis,
    out: &mut Output,
) {
    // Sorted by member, so each member finds its own with a binary search and nothing is copied.
    let mut sorted: Vec<&Observation> = observations.iter().collect();
    sorted.sort_by(|a, b| a.member_id().cmp(b.member_id()));
    for (app_id, app) in &mut state.apps {
        visit_members_mut(&mut app.root, &mut |cluster, member| {
            let start = sorted.partition_point(|o| o.member_id() < member.id.as_str());
            let end = start
                + sorted[start..]
                    .iter()
                    .take_while(|o| o.member_id() == member.id)
                    .count();
            for observation in &sorted[start..end] {
                apply_to_member(app_id, cluster, member, observation, now, out);
            }
        });
    }
}

/// Gives every member still starting a fresh start window from `now`.
pub(crate) fn restart_start_clocks(app: &mut AppState, now: Millis) {
    visit_members_mut(&mut app.root, &mut |_, member| {
        if matches!(
            member.status,
            MemberStatus::Created | MemberStatus::Starting
        ) {
            member.since = member.since.max(now);
        }
    });
}

fn visit_members_mut(group: &mut GroupState, f: &mut impl FnMut(&str, &mut Member)) {
    for inst in &mut group.instances {
        for child in &mut inst.children {
            match child {
                ChildState::Cluster(c) => {
                    for m in &mut c.members {
                        f(&c.alias, m);
                    }
                }
                ChildState::Group(g) => visit_members_mut(g, f),
            }
        }
    }
}

fn apply_to_member(
    app_id: &str,
    cluster: &str,
    member: &mut Member,
    observation: &Observation,
    now: Millis,
    out: &mut Output,
) {
    // Load figures come every second for every member: no allocation on their way in.
    if let Observation::Load {
        in_flight,
        cpu_percent,
        memory_percent,
        ..
    } = observation
    {
        let load = &mut member.load;
        for (slot, value) in [
            (&mut load.in_flight, in_flight),
            (&mut load.cpu_percent, cpu_percent),
            (&mut load.memory_percent, memory_percent),
        ] {
            if let Some(v) = value {
                *slot = Some((now, *v));
            }
        }
        return;
    }
    let wanted = member.id.clone();
    let mut ctx_event = |message: String| {
        out.events.push(Event {
            at: now,
            application: app_id.to_string(),
            subject: format!("member {wanted}"),
            message,
            decision: None,
        })
    };
    match observation {
        Observation::Started {
            pid, host, ports, ..
        } => {
            member.pid = Some(*pid);
            member.host = Some(host.clone());
            member.ports = ports.clone();
            if member.status == MemberStatus::ReadyToShutDown && member.stop_at.is_none() {
                // Stopped before its start was through: the stop may have found nothing yet.
                out.actions.push(stop_action(
                    app_id,
                    cluster,
                    &wanted,
                    "stopped while it was starting",
                ));
            }
            if member.status == MemberStatus::Created {
                member.status = MemberStatus::Starting;
                member.since = now;
                ctx_event(format!("starting as pid {pid}"));
            }
        }
        Observation::Healthy { .. } => {
            if matches!(
                member.status,
                MemberStatus::Created | MemberStatus::Starting
            ) {
                member.status = MemberStatus::Active;
                member.active_at = Some(now);
                member.since = now;
                ctx_event("active".into());
            }
        }
        Observation::Unhealthy { reason, .. } => {
            if member.status.is_live() {
                ctx_event(format!("faulted: {reason}"));
                member.status = MemberStatus::ReadyToShutDown;
                member.since = now;
                out.actions
                    .push(stop_action(app_id, cluster, &wanted, reason));
            }
        }
        // Taken before the match, without the allocations lifecycle news needs.
        Observation::Load { .. } => {}
        Observation::Exited { reason, killed, .. } => {
            if member.status.is_live() {
                member.faulted = true;
                member.killed = *killed;
                ctx_event(format!("faulted: {reason}"));
            } else if member.status != MemberStatus::Terminated {
                ctx_event("terminated".into());
            }
            member.status = MemberStatus::Terminated;
            member.since = now;
        }
    }
}

fn find_member<'a>(group: &'a mut GroupState, id: &str) -> Option<(String, &'a mut Member)> {
    for inst in &mut group.instances {
        for child in &mut inst.children {
            let found = match child {
                ChildState::Cluster(c) => {
                    let alias = &c.alias;
                    c.members
                        .iter_mut()
                        .find(|m| m.id == id)
                        .map(|m| (alias.clone(), m))
                }
                ChildState::Group(g) => find_member(g, id),
            };
            if found.is_some() {
                return found;
            }
        }
    }
    None
}

/// A cluster's [min, max], found by alias anywhere in the application.
pub(crate) fn cluster_bounds(spec: &GroupSpec, alias: &str) -> Option<(u32, u32)> {
    spec.children.iter().find_map(|child| match child {
        ComponentSpec::Cluster(c) if c.alias == alias => Some((c.min, c.max)),
        ComponentSpec::Cluster(_) => None,
        ComponentSpec::Group(g) => cluster_bounds(g, alias),
    })
}

/// Fixes every instance of a cluster at `size`, or hands it back to the autoscaler.
pub(crate) fn set_manual(
    app: &mut AppState,
    alias: &str,
    size: Option<u32>,
    now: Millis,
    out: &mut Output,
) {
    fn walk(group: &mut GroupState, alias: &str, size: Option<u32>, changed: &mut Vec<(u32, u32)>) {
        for inst in &mut group.instances {
            for child in &mut inst.children {
                match child {
                    ChildState::Cluster(c) if c.alias == alias => {
                        c.scaler.manual = size.is_some();
                        if let Some(n) = size {
                            changed.push((c.desired, n));
                            c.desired = n;
                        }
                    }
                    ChildState::Cluster(_) => {}
                    ChildState::Group(g) => walk(g, alias, size, changed),
                }
            }
        }
    }
    let mut changed = Vec::new();
    walk(&mut app.root, alias, size, &mut changed);
    let message = match size {
        Some(n) => {
            let from = changed.first().map_or(n, |c| c.0);
            format!("scale {from} -> {n}: Manual; autoscaling suspended")
        }
        None => "autoscaling resumed".to_string(),
    };
    let decision = size.map(|n| autoscale::Decision {
        from: changed.first().map_or(n, |c| c.0),
        to: n,
        reason: autoscale::Reason::Manual,
        estimates: Vec::new(),
    });
    out.events.push(Event {
        at: now,
        application: app.spec.id.clone(),
        subject: format!("cluster {alias}"),
        message,
        decision,
    });
}
