//! The role decisions as a state machine: arbitrary sequences of VRRP transitions
//! (their hooks run at once or late, out of order), lost leases, SQL errors and
//! timeouts, replication and peer states, and lease grants and refusals. After
//! every step the node must not be writable unless it holds the VIP of an `rw`
//! instance (and, with a guard, that instance's write lease), except right after a
//! demotion that said it failed (keepalived and the guard then see the exit status).
//!
//! `PROPTEST_CASES=100000 cargo test -p mmvip-role properties` for a long run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use mmvip_sdk::lease::Answer as LeaseAnswer;
use mmvip_sdk::peer::PeerStatus;
use mmvip_sdk::sql::{
    ClientConnection, Error as SqlError, EventInfo, IoState, ReplicaStatus, SqlState,
};
use mmvip_sdk::{Call, InstanceRole, Transition, VrrpInstance, VrrpState};
use proptest::prelude::*;

use super::{Scripted, connection, peer, replica};
use crate::{Node, demote_on, promote_on};

/// Cases per property in the normal test run; `PROPTEST_CASES` overrides it.
const SHORT_RUN_CASES: u32 = 1000;

pub(crate) fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = SHORT_RUN_CASES;
    }
    // A failing case is kept as a plain unit test instead (see the regressions below).
    config.failure_persistence = None;
    config
}

const VIPS: [&str; 2] = ["10.0.1.100", "10.0.1.101"];
const NAMES: [&str; 2] = ["VI_1", "VI_2"];

/// SQL operations a fault can hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    ReadVariable,
    SetVariable,
    Replicas,
    Connections,
    Kill,
    WaitGtid,
    Peer,
    Privileged,
    VipCheck,
}

#[derive(Debug, Clone)]
enum Fault {
    /// The operation fails with this error.
    Fails(SqlError),
    /// `SET GLOBAL` takes effect on the server but the client times out.
    SetAppliedThenTimesOut,
}

#[derive(Debug, Clone)]
enum Step {
    /// keepalived moves an instance: MASTER adds its VIP, the others remove it; then
    /// its hook runs, now or later (after other steps), with keepalived's `notify`
    /// words or a `notify_*` line's `--instance`.
    Vrrp {
        instance: usize,
        state: VrrpState,
        notify_words: bool,
        late: bool,
        locked: bool,
    },
    /// One late hook runs now.
    Deliver(usize),
    /// The guard lost an instance's lease and fences the node at once.
    LeaseLost(usize),
    /// Whether the guard grants leases from now on.
    Granting(bool),
    Fault(Op, Option<Fault>),
    Replication(Vec<ReplicaStatus>),
    Peer(Result<PeerStatus, SqlError>),
    /// The applier reaches the waited-for position, or never does.
    WaitReaches(bool),
    /// A client session holds `read_only=ON` up until it is killed.
    Blocker(bool),
    BinlogState(String),
    /// keepalived takes an instance's VIP away while the next hook runs, after that
    /// many calls into the node, and queues its BACKUP hook.
    VipGoesDuringNextHook {
        instance: usize,
        after_calls: u32,
    },
}

/// One queued hook run.
#[derive(Debug, Clone)]
struct Hook {
    instance: usize,
    state: VrrpState,
    notify_words: bool,
    locked: bool,
}

/// The scripted node with the guard, keepalived's VIPs and injected faults around it.
struct Model {
    node: Scripted,
    roles: [InstanceRole; 2],
    lease_used: bool,
    granting: bool,
    leases: BTreeSet<String>,
    faults: BTreeMap<Op, Fault>,
    /// `read_only=OFF` set while the node was not entitled to it.
    violations: Vec<String>,
    /// Hooks keepalived queued that have not run yet.
    late: Vec<Hook>,
    /// See [`Step::VipGoesDuringNextHook`].
    vip_goes: Option<(usize, u32)>,
    /// Calls into the node so far, and the call that last checked a VIP and the
    /// one that took a VIP away during a hook.
    calls: u64,
    last_vip_check: u64,
    vip_taken_at: Option<u64>,
}

impl Model {
    fn new(roles: [InstanceRole; 2], lease_used: bool) -> Model {
        let mut node = Scripted::new();
        node.vips.clear();
        node.variables
            .insert("gtid_binlog_state".into(), "1-1-10,2-2-7".into());
        node.connections = vec![
            connection(31, "app", "Sleep"),
            connection(32, "app", "Query"),
            connection(33, "repl", "Binlog Dump GTID"),
        ];
        Model {
            node,
            roles,
            lease_used,
            granting: true,
            leases: BTreeSet::new(),
            faults: BTreeMap::new(),
            violations: Vec::new(),
            late: Vec::new(),
            vip_goes: None,
            calls: 0,
            last_vip_check: 0,
            vip_taken_at: None,
        }
    }

    fn instances(&self) -> Vec<VrrpInstance> {
        (0..2)
            .map(|i| VrrpInstance {
                name: NAMES[i].into(),
                vip: VIPS[i].into(),
                role: self.roles[i],
            })
            .collect()
    }

    fn writable(&self) -> bool {
        !self.node.read_only()
    }

    /// Some `rw` instance whose VIP is here (and whose lease this node holds, with a
    /// guard): what entitles the node to be writable.
    fn entitled(&self) -> Option<&'static str> {
        (0..2)
            .filter(|i| self.roles[*i] == InstanceRole::ReadWrite)
            .filter(|i| self.node.vips.contains(VIPS[*i]))
            .find(|i| !self.lease_used || self.leases.contains(NAMES[*i]))
            .map(|i| NAMES[i])
    }

    /// Every call into the node is a moment where keepalived may take a VIP away.
    fn tick(&mut self) {
        self.calls += 1;
        let Some((instance, calls_left)) = self.vip_goes else {
            return;
        };
        if calls_left > 0 {
            self.vip_goes = Some((instance, calls_left - 1));
            return;
        }
        self.vip_goes = None;
        if self.node.vips.remove(VIPS[instance]) {
            self.vip_taken_at = Some(self.calls);
            self.late.push(Hook {
                instance,
                state: VrrpState::Backup,
                notify_words: true,
                locked: true,
            });
        }
    }

    fn fault(&mut self, op: Op) -> Result<(), SqlError> {
        self.tick();
        match self.faults.get(&op) {
            Some(Fault::Fails(error)) => Err(error.clone()),
            _ => Ok(()),
        }
    }

    fn run(&mut self, hook: &Hook, settings: &str) -> Result<String, String> {
        let name = NAMES[hook.instance];
        let instance_arg = format!("--instance={name}");
        let (args, event) = if hook.notify_words {
            let event = Transition {
                group: false,
                name: name.into(),
                state: hook.state,
                priority: 100,
            };
            (Vec::new(), Some(event))
        } else {
            (vec![instance_arg.as_str()], None)
        };
        let call = Call::new(&args, settings, Duration::from_secs(30)).with_event(
            event,
            self.instances(),
            hook.locked,
        );
        let outcome = if hook.state == VrrpState::Master {
            promote_on(self, &call)
        } else {
            demote_on(self, &call, hook.state)
        };
        outcome.map_err(|e| e.to_string())
    }

    /// Whether `hook` answers for read_only: a demotion of an `rw` instance (an `ro`
    /// instance's leaves it alone, whatever it is).
    fn demotes(&self, hook: &Hook) -> bool {
        hook.state != VrrpState::Master && self.roles[hook.instance] == InstanceRole::ReadWrite
    }

    fn fence(&mut self, settings: &str) -> Result<String, String> {
        let call = Call::new(&["--fence"], settings, Duration::from_secs(30)).with_event(
            None,
            self.instances(),
            true,
        );
        demote_on(self, &call, VrrpState::Fault).map_err(|e| e.to_string())
    }
}

impl Node for Model {
    fn global_variable(&mut self, name: &str) -> Result<Option<String>, SqlError> {
        self.fault(Op::ReadVariable)?;
        self.node.global_variable(name)
    }

    fn set_global_variable(
        &mut self,
        name: &str,
        value: &str,
        within: Duration,
    ) -> Result<bool, SqlError> {
        self.fault(Op::SetVariable)?;
        // A VIP can go between the last check and the SET (keepalived then runs
        // the demotion): that window must be as short as it can be, with nothing
        // but the lease request between the check and the SET.
        let unavoidable = self.vip_taken_at.is_some_and(|taken| {
            taken > self.last_vip_check && self.calls <= self.last_vip_check + 2
        });
        if value == "OFF" && self.entitled().is_none() && !unavoidable {
            self.violations.push(format!(
                "SET {name}=OFF with VIPs {:?} and leases {:?}",
                self.node.vips, self.leases
            ));
        }
        let took = self.node.set_global_variable(name, value, within)?;
        if let Some(Fault::SetAppliedThenTimesOut) = self.faults.get(&Op::SetVariable) {
            return Err(SqlError::Timeout("read timed out".into()));
        }
        Ok(took)
    }

    fn replicas(&mut self) -> Result<Vec<ReplicaStatus>, SqlError> {
        self.fault(Op::Replicas)?;
        self.node.replicas()
    }

    fn start_replica_io(&mut self, connection_name: &str) -> Result<(), SqlError> {
        self.fault(Op::SetVariable)?;
        self.node.start_replica_io(connection_name)
    }

    fn stop_replica_io(&mut self, connection_name: &str) -> Result<(), SqlError> {
        self.fault(Op::SetVariable)?;
        self.node.stop_replica_io(connection_name)
    }

    fn connections(&mut self) -> Result<Vec<ClientConnection>, SqlError> {
        self.fault(Op::Connections)?;
        self.node.connections()
    }

    fn privileged_users(&mut self) -> Result<Vec<String>, SqlError> {
        self.fault(Op::Privileged)?;
        self.node.privileged_users()
    }

    fn kill_connection(&mut self, id: u64) -> Result<bool, SqlError> {
        self.fault(Op::Kill)?;
        self.node.kill_connection(id)
    }

    fn wait_for_gtid(&mut self, position: &str, timeout: Duration) -> Result<bool, SqlError> {
        self.fault(Op::WaitGtid)?;
        self.node.wait_for_gtid(position, timeout)
    }

    fn events(&mut self) -> Result<Vec<EventInfo>, SqlError> {
        self.fault(Op::ReadVariable)?;
        self.node.events()
    }

    fn set_event_enabled(
        &mut self,
        schema: &str,
        name: &str,
        enabled: bool,
        comment: &str,
    ) -> Result<(), SqlError> {
        self.fault(Op::SetVariable)?;
        self.node.set_event_enabled(schema, name, enabled, comment)
    }

    fn peer_status(&mut self) -> Result<PeerStatus, SqlError> {
        self.fault(Op::Peer)?;
        self.node.peer_status()
    }

    fn acquire_lease(&mut self, instance: &str, _timeout: Duration) -> LeaseAnswer {
        self.tick();
        if !self.lease_used {
            return LeaseAnswer::NotUsed;
        }
        if self.granting {
            self.leases.insert(instance.into());
            LeaseAnswer::Held(2000)
        } else {
            LeaseAnswer::Refused("the peer's vote is with node1".into())
        }
    }

    fn release_lease(&mut self, instance: &str) -> LeaseAnswer {
        self.tick();
        if !self.lease_used {
            return LeaseAnswer::NotUsed;
        }
        self.leases.remove(instance);
        LeaseAnswer::Held(0)
    }

    fn peer_guard_answers(&mut self) -> bool {
        self.tick();
        self.lease_used && self.granting
    }

    fn holds_vip(&mut self, address: &str) -> Result<bool, String> {
        self.tick();
        self.last_vip_check = self.calls;
        if self.faults.contains_key(&Op::VipCheck) {
            return Err("cannot read /proc/net/fib_trie".into());
        }
        self.node.holds_vip(address)
    }

    fn vip_clients(&mut self, address: &str) -> Result<Vec<String>, String> {
        self.tick();
        if self.faults.contains_key(&Op::VipCheck) {
            return Err("cannot read /proc/net/tcp".into());
        }
        self.node.vip_clients(address)
    }

    fn remember(&mut self, key: &str, value: &str) {
        self.node.remember(key, value)
    }

    fn recall(&mut self, key: &str) -> Option<String> {
        self.node.recall(key)
    }

    fn forget(&mut self, key: &str) {
        self.node.forget(key)
    }

    fn warn(&mut self, _message: &str) {}

    fn error(&mut self, _message: &str) {}

    fn now(&self) -> Instant {
        self.node.now()
    }

    fn pause(&mut self, duration: Duration) {
        self.tick();
        self.node.pause(duration)
    }

    fn unix_time(&self) -> u64 {
        self.node.unix_time()
    }
}

/// Plays `steps` and returns the first broken invariant, with the history so far.
fn play(
    roles: [InstanceRole; 2],
    lease_used: bool,
    settings: &str,
    steps: &[Step],
) -> Result<(), String> {
    let mut model = Model::new(roles, lease_used);
    let mut history: Vec<String> = Vec::new();
    // A demotion or fence that returned an error and left the node writable: its
    // exit status tells keepalived and the guard, so the invariant waits for the
    // next demotion that succeeds.
    let mut failed_demotion = false;
    for step in steps {
        let outcome = match step {
            Step::Vrrp {
                instance,
                state,
                notify_words,
                late: is_late,
                locked,
            } => {
                if *state == VrrpState::Master {
                    model.node.vips.insert(VIPS[*instance].into());
                } else {
                    model.node.vips.remove(VIPS[*instance]);
                }
                let hook = Hook {
                    instance: *instance,
                    state: *state,
                    notify_words: *notify_words,
                    locked: *locked,
                };
                if *is_late {
                    model.late.push(hook);
                    None
                } else {
                    Some((model.demotes(&hook), model.run(&hook, settings)))
                }
            }
            Step::Deliver(index) if !model.late.is_empty() => {
                let hook = model.late.remove(index % model.late.len());
                Some((model.demotes(&hook), model.run(&hook, settings)))
            }
            Step::Deliver(_) => None,
            Step::LeaseLost(instance) => {
                if model.leases.remove(NAMES[*instance]) {
                    Some((true, model.fence(settings)))
                } else {
                    None
                }
            }
            Step::Granting(granting) => {
                model.granting = *granting;
                None
            }
            Step::Fault(op, fault) => {
                match fault {
                    Some(fault) => model.faults.insert(*op, fault.clone()),
                    None => model.faults.remove(op),
                };
                None
            }
            Step::Replication(replicas) => {
                model.node.replicas = replicas.clone();
                None
            }
            Step::Peer(answer) => {
                model.node.peer = vec![answer.clone()];
                None
            }
            Step::WaitReaches(reaches) => {
                model.node.wait_reaches = *reaches;
                None
            }
            Step::Blocker(on) => {
                if *on {
                    model.node.connections.push(connection(40, "app", "Sleep"));
                    model.node.blocked_by.insert(40);
                } else {
                    model.node.blocked_by.clear();
                }
                None
            }
            Step::VipGoesDuringNextHook {
                instance,
                after_calls,
            } => {
                model.vip_goes = Some((*instance, *after_calls));
                None
            }
            Step::BinlogState(state) => {
                model
                    .node
                    .variables
                    .insert("gtid_binlog_state".into(), state.clone());
                None
            }
        };
        history.push(match &outcome {
            Some((demotion, outcome)) => {
                if *demotion {
                    failed_demotion = outcome.is_err() && model.writable();
                }
                format!("{step:?} -> {outcome:?}")
            }
            None => format!("{step:?}"),
        });
        if let Some(violation) = model.violations.first() {
            return Err(format!("{violation}\nafter:\n{}", history.join("\n")));
        }
        // Late demotions may still be on their way; the node is judged once none is.
        if model.late.is_empty()
            && model.writable()
            && !failed_demotion
            && model.entitled().is_none()
        {
            return Err(format!(
                "writable with VIPs {:?} and leases {:?}\nafter:\n{}",
                model.node.vips,
                model.leases,
                history.join("\n")
            ));
        }
    }
    Ok(())
}

fn sql_error() -> impl Strategy<Value = SqlError> {
    prop_oneof![
        Just(SqlError::Unreachable("socket: refused".into())),
        Just(SqlError::Timeout("read timed out".into())),
        Just(SqlError::Server {
            code: 1205,
            message: "Lock wait timeout exceeded".into()
        }),
        Just(SqlError::Refused("not granted".into())),
    ]
}

fn gtid_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1-1-10,2-2-7".to_string()),
        Just("1-1-12,2-2-7".to_string()),
        Just("1-1-15".to_string()),
        Just(String::new()),
        Just("1-1".to_string()),
        "[0-9,-]{0,12}",
    ]
}

fn replica_status() -> impl Strategy<Value = ReplicaStatus> {
    (
        prop_oneof![
            Just(IoState::Running),
            Just(IoState::Connecting),
            Just(IoState::Preparing),
            Just(IoState::Stopped)
        ],
        prop_oneof![3 => Just(SqlState::Running), 1 => Just(SqlState::Stopped)],
        gtid_text(),
        prop_oneof![
            Just(String::new()),
            Just("Got fatal error 1236".to_string())
        ],
    )
        .prop_map(|(io, sql, pos, io_error)| {
            let mut status = replica(io, &pos);
            status.sql_state = sql;
            status.last_io_error = io_error;
            status
        })
}

fn vrrp_state() -> impl Strategy<Value = VrrpState> {
    prop_oneof![
        4 => Just(VrrpState::Master),
        3 => Just(VrrpState::Backup),
        1 => Just(VrrpState::Fault),
        1 => Just(VrrpState::Stop),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::ReadVariable),
        Just(Op::SetVariable),
        Just(Op::Replicas),
        Just(Op::Connections),
        Just(Op::Kill),
        Just(Op::WaitGtid),
        Just(Op::Peer),
        Just(Op::Privileged),
        Just(Op::VipCheck),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..2usize, vrrp_state(), any::<bool>(), prop::bool::weighted(0.3), prop::bool::weighted(0.95))
            .prop_map(|(instance, state, notify_words, late, locked)| Step::Vrrp {
                instance, state, notify_words, late, locked
            }),
        3 => any::<usize>().prop_map(Step::Deliver),
        1 => (0..2usize).prop_map(Step::LeaseLost),
        1 => any::<bool>().prop_map(Step::Granting),
        2 => (op(), prop::option::weighted(
                0.5,
                prop_oneof![
                    4 => sql_error().prop_map(Fault::Fails),
                    1 => Just(Fault::SetAppliedThenTimesOut),
                ],
            )).prop_map(|(op, fault)| Step::Fault(op, fault)),
        1 => prop::collection::vec(replica_status(), 0..3).prop_map(Step::Replication),
        1 => prop_oneof![
            sql_error().prop_map(Err),
            (any::<bool>(), gtid_text(), gtid_text())
                .prop_map(|(ro, pos, state)| peer(ro, &pos, &state)),
        ].prop_map(Step::Peer),
        1 => any::<bool>().prop_map(Step::WaitReaches),
        1 => any::<bool>().prop_map(Step::Blocker),
        1 => gtid_text().prop_map(Step::BinlogState),
        2 => (0..2usize, 0..12u32).prop_map(|(instance, after_calls)| Step::VipGoesDuringNextHook {
            instance, after_calls
        }),
    ]
}

fn settings() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("{}"),
        // Without flap damping (every promotion is tried) and with the most eager.
        Just(r#"{"flap_limit": 0}"#),
        Just(r#"{"flap_limit": 1}"#),
        Just(r#"{"wait": false}"#),
        Just(r#"{"on_catchup_timeout": "go-writable"}"#),
        Just(r#"{"kill": false, "handle_events": true}"#),
        Just(r#"{"catchup_timeout": "2s", "peer_read_only_timeout": "1s"}"#),
    ]
}

fn roles() -> impl Strategy<Value = [InstanceRole; 2]> {
    prop_oneof![
        3 => Just([InstanceRole::ReadWrite, InstanceRole::ReadWrite]),
        1 => Just([InstanceRole::ReadWrite, InstanceRole::ReadOnly]),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_node_is_writable_only_with_an_rw_vip_and_its_lease(
        roles in roles(),
        lease_used in any::<bool>(),
        settings in settings(),
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let mut steps = steps;
        // Every late hook is delivered in the end (a VIP lost during a hook adds one).
        steps.extend((0..2 * steps.len()).map(|_| Step::Deliver(0)));
        if let Err(why) = play(roles, lease_used, settings, &steps) {
            prop_assert!(false, "{}", why);
        }
    }
}

// Cases the property found, kept as plain tests.

fn vrrp(instance: usize, state: VrrpState, locked: bool) -> Step {
    Step::Vrrp {
        instance,
        state,
        notify_words: false,
        late: false,
        locked,
    }
}

/// VI_2's VIP came but its promotion did not run (the node lock was busy), so its
/// lease was never taken; VI_1's demotion kept the node writable on VI_2's VIP alone.
#[test]
fn a_demotion_keeps_the_node_writable_only_with_the_kept_instances_lease() {
    let rw = [InstanceRole::ReadWrite, InstanceRole::ReadWrite];
    let steps = [
        vrrp(0, VrrpState::Master, true),
        vrrp(1, VrrpState::Master, false),
        Step::Granting(false),
        vrrp(0, VrrpState::Backup, false),
    ];
    play(rw, true, "{}", &steps).unwrap();
}

/// The guard lost VI_1's lease and its fence failed (connections could not be
/// listed past a session holding read_only up); a late BACKUP then found the VIP
/// back and took itself for stale, leaving the node writable without the lease.
#[test]
fn a_stale_demotion_leaves_the_node_writable_only_with_the_lease() {
    let rw = [InstanceRole::ReadWrite, InstanceRole::ReadWrite];
    let unreachable = SqlError::Unreachable("socket: refused".into());
    let steps = [
        vrrp(0, VrrpState::Master, true),
        Step::Fault(Op::Connections, Some(Fault::Fails(unreachable))),
        Step::Blocker(true),
        Step::Vrrp {
            instance: 0,
            state: VrrpState::Backup,
            notify_words: false,
            late: true,
            locked: true,
        },
        Step::LeaseLost(0),
        Step::Granting(false),
        Step::Fault(Op::Connections, None),
        vrrp(0, VrrpState::Master, false),
        Step::Deliver(0),
    ];
    play(rw, true, "{}", &steps).unwrap();
}
