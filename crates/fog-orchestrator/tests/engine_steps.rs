//! Engine tests on **simulated** parts: every step of every operation type, crashed and
//! failed, against `fog_engine::sim::SimAgent` (a simulated agent: an in-memory model of
//! PostgreSQL servers) and `fog_store::MemoryStore`. Nothing here runs PostgreSQL: these
//! tests prove the step machines (ordering, idempotence, compensation, resumption), never
//! the servers. The end-to-end claims stay with the tests on real PostgreSQL 15 in
//! `crates/fogd/tests`.
//!
//! The world is built through the orchestrator's public API (request bodies parsed by
//! fog-model, as fog-api does): `mi-east` (eastus) with database `appdb`, `mi-west`
//! (westus, DNS-zone partner of `mi-east`), `mi-solo` (eastus) with `solodb`, and the
//! failover group `fog-sim` (`mi-east` primary). Then, for every operation type and every
//! step name from `fog_orchestrator::steps::step_names` (never typed here), one case per
//! [`Mode`]: crash before the step, crash after it (before it is persisted; the resumed run
//! repeats it), a failed agent call in it, and an agent call that acts but loses its reply.
//! After each case: nothing is busy and the sweep finds nothing to fix, the world is
//! consistent at once, and — after health rounds and supervisor passes — converges.

use fog_engine::sim::{Calls, Fault, Role, SimAgent, SimServer};
use fog_engine::{EngineError, InstanceAgent, ReplicationSource, ServerSpec};
use fog_model::api_version::LATEST_STABLE as API;
use fog_model::failover_group::{GroupBody, GroupSpec, ReadOnlyPolicy, ReplicationState};
use fog_model::instance::{InstanceBody, InstanceSpec};
use fog_model::{
    Action, DatabaseRecord, DatabaseStatus, FailoverGroupRecord, InstanceRecord, ManagedInstanceId,
    OperationRecord, OperationStatus, ProvisioningState,
};
use fog_orchestrator::failpoint::{HookAction, StepHook};
use fog_orchestrator::secrets::SecretCipher;
use fog_orchestrator::steps::step_names;
use fog_orchestrator::{catalog, DatabaseCreate, GroupAddress, Orchestrator, OrchestratorConfig};
use fog_store::typed::list;
use fog_store::{MemoryStore, Precondition, Record, Store, StoreError, Watcher, Write, WriteOp};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SUB: &str = "00000000-1111-2222-3333-444444444444";
const PASSWORD: &str = "S0me-Str0ng-Pass!";
const GROUP: &str = "fog-sim";
/// WAL the isolated old primary writes before the forced failover of the rejoin scenario.
const LOST_BYTES: u64 = 8192;

fn mi(name: &str) -> ManagedInstanceId {
    ManagedInstanceId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Sql/managedInstances/{name}"
    ))
    .expect("instance id")
}

fn config() -> OrchestratorConfig {
    OrchestratorConfig {
        servers_dir: "/sim/instances".into(),
        step_attempts: 1,
        min_grace_minutes: 1,
        planned_failover_timeout: Duration::from_millis(300),
        probe_interval: Duration::from_millis(10),
        probe_timeout: Duration::from_millis(50),
        grace_period_unit: Duration::from_millis(10),
        rejoin_retry_interval: Duration::from_millis(10),
        restart_backoff: Duration::from_millis(10),
        ..Default::default()
    }
}

fn instance_spec(location: &str, partner: Option<&ManagedInstanceId>) -> InstanceSpec {
    let mut props = serde_json::json!({
        "administratorLogin": "fogadmin", "administratorLoginPassword": PASSWORD,
    });
    if let Some(p) = partner {
        props["dnsZonePartner"] = p.to_string().into();
    }
    let body = serde_json::json!({ "location": location, "properties": props });
    fog_model::body::parse::<InstanceBody>(body.to_string().as_bytes())
        .and_then(InstanceBody::into_create_spec)
        .expect("instance body")
}

fn group_spec(read_only: &str) -> GroupSpec {
    let body = serde_json::json!({ "properties": {
        "readWriteEndpoint": { "failoverPolicy": "Manual" },
        "readOnlyEndpoint": { "failoverPolicy": read_only },
        "partnerRegions": [{ "location": "westus" }],
        "managedInstancePairs": [{
            "primaryManagedInstanceId": mi("mi-east").to_string(),
            "partnerManagedInstanceId": mi("mi-west").to_string(),
        }],
    }});
    fog_model::body::parse::<GroupBody>(body.to_string().as_bytes())
        .and_then(|b| b.into_spec(1))
        .expect("group body")
}

fn at(location: &str) -> GroupAddress {
    GroupAddress {
        scope: mi("mi-east").scope,
        location: location.into(),
    }
}

// ---------------------------------------------------------------------------------------
// Operation types, scenarios and the plan of cases.

/// How the harness starts one operation type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Scenario {
    CreateInstance,
    UpdateInstance,
    DeleteInstance,
    CreateDatabase,
    UpdateDatabase,
    DeleteDatabase,
    CreateGroup,
    UpdateGroup,
    DeleteGroup,
    PlannedFailover,
    ForcedFailover,
    Rejoin,
}

const SCENARIOS: [Scenario; 12] = [
    Scenario::CreateInstance,
    Scenario::UpdateInstance,
    Scenario::DeleteInstance,
    Scenario::CreateDatabase,
    Scenario::UpdateDatabase,
    Scenario::DeleteDatabase,
    Scenario::CreateGroup,
    Scenario::UpdateGroup,
    Scenario::DeleteGroup,
    Scenario::PlannedFailover,
    Scenario::ForcedFailover,
    Scenario::Rejoin,
];

/// The scenario that drives an operation. No `_` arm: a new [`Action`] variant does not
/// compile until it is mapped to a scenario that starts it (and `sample` gives one).
fn scenario_of(action: &Action) -> Scenario {
    match action {
        Action::CreateInstance { .. } => Scenario::CreateInstance,
        Action::UpdateInstance { .. } => Scenario::UpdateInstance,
        Action::DeleteInstance { .. } => Scenario::DeleteInstance,
        Action::CreateDatabase { .. } => Scenario::CreateDatabase,
        Action::UpdateDatabase { .. } => Scenario::UpdateDatabase,
        Action::DeleteDatabase { .. } => Scenario::DeleteDatabase,
        Action::CreateFailoverGroup { .. } => Scenario::CreateGroup,
        Action::UpdateFailoverGroup { .. } => Scenario::UpdateGroup,
        Action::DeleteFailoverGroup { .. } => Scenario::DeleteGroup,
        Action::FailoverGroup { planned: true, .. } => Scenario::PlannedFailover,
        Action::FailoverGroup { planned: false, .. } => Scenario::ForcedFailover,
        // `reseed` changes how `rejoin.rewind` works, not the steps.
        Action::RejoinGroup { .. } => Scenario::Rejoin,
    }
}

/// A sample action of each scenario: its step list is the one the cases walk.
fn sample(s: Scenario) -> Action {
    let instance = mi("mi-east");
    let name = GROUP.to_string();
    let uid = "sample".to_string();
    match s {
        Scenario::CreateInstance => Action::CreateInstance {
            instance,
            admin_password_verifier: String::new(),
        },
        Scenario::UpdateInstance => Action::UpdateInstance {
            target: Box::new(sample_record(&instance)),
            instance,
            admin_password_verifier: None,
        },
        Scenario::DeleteInstance => Action::DeleteInstance { instance },
        Scenario::CreateDatabase => Action::CreateDatabase {
            instance,
            database: "d".into(),
        },
        Scenario::UpdateDatabase => Action::UpdateDatabase {
            instance,
            database: "d".into(),
            tags: Default::default(),
        },
        Scenario::DeleteDatabase => Action::DeleteDatabase {
            instance,
            database: "d".into(),
        },
        Scenario::CreateGroup => Action::CreateFailoverGroup { name, uid },
        Scenario::UpdateGroup => Action::UpdateFailoverGroup {
            name,
            uid,
            policies: group_spec("Disabled").policies,
        },
        Scenario::DeleteGroup => Action::DeleteFailoverGroup { name, uid },
        Scenario::PlannedFailover | Scenario::ForcedFailover => Action::FailoverGroup {
            name,
            uid,
            planned: s == Scenario::PlannedFailover,
            automatic: None,
        },
        Scenario::Rejoin => Action::RejoinGroup {
            name,
            uid,
            reseed: false,
        },
    }
}

fn sample_record(id: &ManagedInstanceId) -> InstanceRecord {
    InstanceRecord {
        uid: "sample".into(),
        id: id.clone(),
        location: "eastus".into(),
        tags: Default::default(),
        sku: fog_model::instance::Sku::from_name("GP_Gen5", 8),
        administrator_login: "fogadmin".into(),
        storage_size_in_gb: 32,
        dns_zone: "zone".into(),
        database_format: "SQLServer2022".into(),
        license_type: "LicenseIncluded".into(),
        collation: "SQL_Latin1_General_CP1_CI_AS".into(),
        provisioning_state: ProvisioningState::Succeeded,
        endpoint: fog_model::ServerEndpoint {
            host: "127.0.0.1".into(),
            port: 1,
        },
        create_time: time::OffsetDateTime::UNIX_EPOCH,
        active_operation: None,
        generation: 1,
        failover_group: None,
    }
}

/// Every variant name of [`Action`], as serde knows them (from the error an unknown tag
/// gets): what the coverage check compares the samples with at run time.
fn action_variants() -> BTreeSet<String> {
    let err = serde_json::from_value::<Action>(serde_json::json!({ "type": "NoSuchAction" }))
        .expect_err("unknown tag");
    let text = err.to_string();
    let list = text
        .split("expected one of ")
        .nth(1)
        .unwrap_or_else(|| panic!("serde error without a variant list: {text}"));
    list.split(',')
        .map(|v| v.trim().trim_matches('`').to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn variant_name(a: &Action) -> String {
    serde_json::to_value(a).expect("action json")["type"]
        .as_str()
        .expect("tag")
        .to_string()
}

/// What a case does at its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Mode {
    /// The runner dies before the step; a fresh orchestrator resumes.
    CrashBefore,
    /// The step ran, the runner dies before persisting it; the resumed run repeats it.
    CrashAfter,
    /// The step's n-th agent call (of any kind) fails before reaching the server.
    Fail(usize),
    /// The step's n-th state-changing agent call acts, then reports an error.
    LoseReply(usize),
    /// From the step on, every state-changing agent call fails until the operation
    /// ended (its compensation included); then the agent recovers.
    Outage,
}

type Case = (Scenario, &'static str, Mode);

/// Every step of every scenario's operation type, from `step_names`.
fn steps() -> Vec<(Scenario, &'static str)> {
    SCENARIOS
        .iter()
        .flat_map(|s| step_names(&sample(*s)).iter().map(move |step| (*s, *step)))
        .collect()
}

/// Agent calls per step in an undisturbed run: (any, state-changing).
type Census = HashMap<(Scenario, &'static str), (usize, usize)>;

/// Every case: each step crashed before and after, and each of its agent calls failed
/// (and, if it changes state, acting with its reply lost) in turn. A step that makes no
/// agent call still gets one fault case (nothing to fail: it must simply succeed).
fn plan(census: &Census) -> Vec<Case> {
    let mut cases = Vec::new();
    for (s, step) in steps() {
        let (any, changes) = census.get(&(s, step)).copied().unwrap_or_default();
        cases.push((s, step, Mode::CrashBefore));
        cases.push((s, step, Mode::CrashAfter));
        cases.extend((0..any.max(1)).map(|n| (s, step, Mode::Fail(n))));
        cases.extend((0..changes).map(|n| (s, step, Mode::LoseReply(n))));
        if changes > 0 {
            cases.push((s, step, Mode::Outage));
        }
    }
    cases
}

// ---------------------------------------------------------------------------------------
// The step hook: crash or inject faults at one step of one operation.

struct Target {
    case: Case,
    /// Bound to the first operation that reaches the step.
    op: Option<String>,
}

struct Hook {
    sim: Arc<SimAgent>,
    target: Mutex<Option<Target>>,
    reached: AtomicBool,
    crashed: AtomicBool,
    /// In a fault mode: the step succeeded although its fault fired (tolerated).
    tolerated: AtomicBool,
    /// In a fault mode: the step succeeded without making the faulted kind of call.
    unfaulted: AtomicBool,
    /// Extra action before the target step (wedge tests).
    before_extra: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    /// Every step run, with where the agent's call log stood around it.
    windows: Mutex<Vec<Window>>,
}

/// One run of one step: the agent's calls `from..to` were made by it.
struct Window {
    op: String,
    step: String,
    from: usize,
    to: Option<usize>,
}

impl Hook {
    fn new(sim: Arc<SimAgent>) -> Self {
        Self {
            sim,
            target: Mutex::new(None),
            reached: AtomicBool::new(false),
            crashed: AtomicBool::new(false),
            tolerated: AtomicBool::new(false),
            unfaulted: AtomicBool::new(false),
            before_extra: Mutex::new(None),
            windows: Mutex::new(Vec::new()),
        }
    }

    fn window(&self, op: &OperationRecord, before: bool) {
        let at = self.sim.call_count();
        let mut windows = self.windows.lock().expect("hook");
        if before {
            windows.push(Window {
                op: op.id.clone(),
                step: op.step.clone(),
                from: at,
                to: None,
            });
        } else if let Some(w) = windows
            .iter_mut()
            .rev()
            .find(|w| w.op == op.id && w.step == op.step)
        {
            w.to = Some(at);
        }
    }

    fn arm(&self, case: Case) {
        *self.target.lock().expect("hook") = Some(Target { case, op: None });
    }

    fn disarm(&self) {
        *self.target.lock().expect("hook") = None;
    }

    fn at_target(&self, op: &OperationRecord) -> Option<Mode> {
        let mut t = self.target.lock().expect("hook");
        let target = t.as_mut()?;
        let (scenario, step, mode) = target.case;
        let ours = scenario_of(&op.action) == scenario
            && op.step == step
            && target.op.as_deref().is_none_or(|id| id == op.id);
        if !ours {
            return None;
        }
        target.op = Some(op.id.clone());
        Some(mode)
    }
}

impl StepHook for Hook {
    fn before(&self, op: &OperationRecord) -> HookAction {
        self.window(op, true);
        let Some(mode) = self.at_target(op) else {
            return HookAction::Continue;
        };
        self.reached.store(true, Ordering::SeqCst);
        if let Some(extra) = self.before_extra.lock().expect("hook").as_ref() {
            extra();
        }
        match mode {
            Mode::CrashBefore => {
                self.disarm();
                self.crashed.store(true, Ordering::SeqCst);
                return HookAction::Crash;
            }
            Mode::CrashAfter => {}
            Mode::Fail(n) => self.sim.inject_after(Calls::Any, None, n, 1, Fault::Fail),
            Mode::LoseReply(n) => {
                self.sim
                    .inject_after(Calls::Changes, None, n, 1, Fault::LoseReply)
            }
            Mode::Outage => self.sim.fail(Calls::Changes, None, usize::MAX),
        }
        HookAction::Continue
    }

    fn after(&self, op: &OperationRecord) -> HookAction {
        self.window(op, false);
        let Some(mode) = self.at_target(op) else {
            return HookAction::Continue;
        };
        self.disarm();
        match mode {
            Mode::CrashAfter => {
                self.crashed.store(true, Ordering::SeqCst);
                HookAction::Crash
            }
            Mode::CrashBefore => HookAction::Continue,
            Mode::Fail(_) | Mode::LoseReply(_) | Mode::Outage => {
                let fired = if mode == Mode::Outage {
                    self.sim
                        .calls()
                        .iter()
                        .any(|c| matches!(&c.outcome, Some(Err(e)) if e.contains("injected")))
                } else {
                    self.sim.armed_faults() == 0
                };
                self.sim.clear_faults();
                if fired {
                    self.tolerated.store(true, Ordering::SeqCst);
                } else {
                    self.unfaulted.store(true, Ordering::SeqCst);
                }
                HookAction::Continue
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A simulated store fault: MemoryStore behind a wrapper that refuses chosen reads and
// commits (for the wedge tests; without rules it passes everything through).

type BatchFilter = Box<dyn Fn(&[Write]) -> bool + Send + Sync>;

enum Rule {
    /// Reads of `key` fail with a backend error after `skip` reads went through.
    Get {
        key: String,
        skip: usize,
        left: usize,
    },
    /// Batches `matching` fail: a conflict, or a backend error.
    Commit {
        matching: BatchFilter,
        conflict: bool,
        left: usize,
    },
}

#[derive(Default)]
struct FaultyStore {
    inner: MemoryStore,
    rules: Mutex<Vec<Rule>>,
}

impl FaultyStore {
    fn add(&self, rule: Rule) {
        self.rules.lock().expect("rules").push(rule);
    }

    /// Failures still to come.
    fn left(&self) -> usize {
        self.rules
            .lock()
            .expect("rules")
            .iter()
            .map(|r| match r {
                Rule::Get { left, .. } | Rule::Commit { left, .. } => *left,
            })
            .sum()
    }
}

#[async_trait::async_trait]
impl Store for FaultyStore {
    async fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        for rule in self.rules.lock().expect("rules").iter_mut() {
            if let Rule::Get { key: k, skip, left } = rule {
                if k == key && *left > 0 {
                    if *skip > 0 {
                        *skip -= 1;
                    } else {
                        *left -= 1;
                        return Err(StoreError::Backend("injected read failure".into()));
                    }
                }
            }
        }
        self.inner.get(key).await
    }

    async fn range(&self, prefix: &str) -> Result<Vec<Record>, StoreError> {
        self.inner.range(prefix).await
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<u64, StoreError> {
        for rule in self.rules.lock().expect("rules").iter_mut() {
            if let Rule::Commit {
                matching,
                conflict,
                left,
            } = rule
            {
                if *left > 0 && matching(&writes) {
                    *left -= 1;
                    return Err(if *conflict {
                        StoreError::Conflict {
                            key: writes[0].key.clone(),
                        }
                    } else {
                        StoreError::Backend("injected commit failure".into())
                    });
                }
            }
        }
        self.inner.commit(writes).await
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        self.inner.revision().await
    }

    fn watch(&self, prefix: &str) -> Watcher {
        self.inner.watch(prefix)
    }
}

/// A batch that writes `key` and rewrites an existing operation record: a compensation or
/// a finish (an accepting batch creates its operation record instead).
fn rewrites_op_and(key: String) -> BatchFilter {
    Box::new(move |writes: &[Write]| {
        writes
            .iter()
            .any(|w| w.key == key && w.op != WriteOp::Check)
            && writes.iter().any(|w| {
                w.key.starts_with("operations/")
                    && matches!(w.precondition, Precondition::Revision(_))
            })
    })
}

// ---------------------------------------------------------------------------------------
// The world.

struct World {
    store: Arc<FaultyStore>,
    sim: Arc<SimAgent>,
    hook: Arc<Hook>,
    key: [u8; 32],
    o: Orchestrator,
}

/// How much of the world [`World::check`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    /// The records alone: nothing busy, memberships and database records that agree,
    /// generations that never went back.
    Records,
    /// And the servers as the records say (right after an operation).
    Servers,
    /// And what health rounds and supervisor passes restore: the secondary streams from
    /// the primary and is linked.
    Healed,
}

/// Generations before a case.
#[derive(Default)]
struct Snapshot {
    instances: HashMap<String, u64>,
    group: Option<u64>,
}

impl World {
    async fn build(with_group: bool) -> World {
        let store = Arc::new(FaultyStore::default());
        let sim = Arc::new(SimAgent::new());
        let hook = Arc::new(Hook::new(sim.clone()));
        let key = [7u8; 32];
        let o = Orchestrator::new(
            store.clone(),
            sim.clone(),
            SecretCipher::from_key(key),
            config(),
        )
        .with_step_hook(hook.clone());
        let w = World {
            store,
            sim,
            hook,
            key,
            o,
        };
        for (name, location, partner) in [
            ("mi-east", "eastus", None),
            ("mi-west", "westus", Some(mi("mi-east"))),
            ("mi-solo", "eastus", None),
        ] {
            let op =
                w.o.create_instance(mi(name), instance_spec(location, partner.as_ref()), API)
                    .await
                    .expect("create instance");
            w.succeeded(&op.id).await;
        }
        for (instance, db) in [("mi-east", "appdb"), ("mi-solo", "solodb")] {
            w.create_database(instance, db).await;
        }
        if with_group {
            let op =
                w.o.put_failover_group(&at("eastus"), GROUP, group_spec("Disabled"), API)
                    .await
                    .expect("create group");
            w.succeeded(&op.id).await;
        }
        w
    }

    /// An independent copy of this world (records, servers), with its own orchestrator.
    async fn fork(&self) -> World {
        let store = Arc::new(FaultyStore::default());
        let writes: Vec<Write> = self
            .st()
            .range("")
            .await
            .expect("records")
            .into_iter()
            .map(|r| Write::put(r.key, r.value, Precondition::Absent))
            .collect();
        store.commit(writes).await.expect("copy records");
        let sim = Arc::new(self.sim.fork());
        let hook = Arc::new(Hook::new(sim.clone()));
        let o = Orchestrator::new(
            store.clone(),
            sim.clone(),
            SecretCipher::from_key(self.key),
            config(),
        )
        .with_step_hook(hook.clone());
        World {
            store,
            sim,
            hook,
            key: self.key,
            o,
        }
    }

    fn st(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// A fresh orchestrator on the same store and servers, as after a restart of fogd.
    async fn restart(&mut self) {
        self.o = Orchestrator::new(
            self.store.clone(),
            self.sim.clone(),
            SecretCipher::from_key(self.key),
            config(),
        );
        self.o.reconcile().await.expect("reconcile");
    }

    async fn create_database(&self, instance: &str, db: &str) {
        let spec = fog_model::database::DatabaseBody::default()
            .into_create_spec("eastus")
            .expect("database body");
        match self.o.create_database(&mi(instance), db, spec, API).await {
            Ok(DatabaseCreate::Started(op)) => self.succeeded(&op.id).await,
            other => panic!("create database {db}: {other:?}"),
        }
    }

    async fn op(&self, id: &str) -> OperationRecord {
        catalog::operation(self.st(), id)
            .await
            .expect("read operation")
            .expect("operation exists")
            .value
    }

    async fn wait_op(&self, id: &str) -> OperationRecord {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let op = self.op(id).await;
            if op.status.is_terminal() {
                return op;
            }
            assert!(
                Instant::now() < deadline,
                "operation never finished (wedged at step {}): {op:?}\n{}",
                op.step,
                self.dump().await
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn succeeded(&self, id: &str) {
        let op = self.wait_op(id).await;
        assert_eq!(op.status, OperationStatus::Succeeded, "{op:?}");
    }

    async fn instance(&self, name: &str) -> Option<InstanceRecord> {
        catalog::instance(self.st(), &mi(name))
            .await
            .expect("read instance")
            .map(|v| v.value)
    }

    async fn uid(&self, name: &str) -> String {
        self.instance(name).await.expect("instance").uid
    }

    /// The group `fog-sim` addressed at its first primary's location (either member's
    /// address finds it).
    async fn group(&self) -> Option<FailoverGroupRecord> {
        catalog::group_at(self.st(), SUB, "rg", "eastus", GROUP)
            .await
            .expect("read group")
            .map(|(v, _)| v.value)
    }

    async fn database(&self, instance: &str, db: &str) -> Option<DatabaseRecord> {
        catalog::database(self.st(), &mi(instance), db)
            .await
            .expect("read database")
            .map(|v| v.value)
    }

    async fn ops(&self) -> Vec<OperationRecord> {
        list::<OperationRecord>(self.st(), "operations/")
            .await
            .expect("operations")
            .into_iter()
            .map(|(_, v)| v.value)
            .collect()
    }

    async fn snapshot(&self) -> Snapshot {
        Snapshot {
            instances: catalog::all_instances(self.st())
                .await
                .expect("instances")
                .into_iter()
                .map(|i| (i.value.uid, i.value.generation))
                .collect(),
            group: self.group().await.map(|g| g.generation),
        }
    }

    /// Puts the world where the scenario's operation can start.
    async fn prepare(&self, s: Scenario) {
        if s != Scenario::Rejoin {
            return;
        }
        // A forced failover while mi-east is cut off (after writes that never reached
        // mi-west): mi-east cannot be re-attached yet and keeps running writable.
        let east = self.uid("mi-east").await;
        self.sim.set_isolated(&east, true);
        assert!(self.sim.write(&east, LOST_BYTES));
        let op = self
            .o
            .failover_group(&at("westus"), GROUP, false, API)
            .await
            .expect("forced failover");
        self.succeeded(&op.id).await;
        let g = self.group().await.expect("group");
        assert!(g.secondary_needs_rejoin && g.primary.instance.name == "mi-west");
        self.sim.set_isolated(&east, false);
    }

    /// Starts the scenario's operation through the public API.
    async fn start(&self, s: Scenario) -> OperationRecord {
        let o = &self.o;
        let started = match s {
            Scenario::CreateInstance => {
                o.create_instance(mi("mi-new"), instance_spec("eastus", None), API)
                    .await
            }
            Scenario::UpdateInstance => {
                let existing = self.instance("mi-east").await.expect("mi-east");
                let body = serde_json::json!({
                    "tags": { "case": "updated" },
                    "properties": { "administratorLoginPassword": "An0ther-Str0ng-Pass!" },
                });
                let changes = fog_model::body::parse::<InstanceBody>(body.to_string().as_bytes())
                    .and_then(|b| b.into_changes(&existing))
                    .expect("changes");
                o.update_instance(&mi("mi-east"), changes, API).await
            }
            Scenario::DeleteInstance => o
                .delete_instance(&mi("mi-solo"), API)
                .await
                .map(|op| op.expect("exists")),
            Scenario::CreateDatabase => {
                let spec = fog_model::database::DatabaseBody::default()
                    .into_create_spec("eastus")
                    .expect("database body");
                match o.create_database(&mi("mi-east"), "newdb", spec, API).await {
                    Ok(DatabaseCreate::Started(op)) => Ok(*op),
                    other => panic!("create database: {other:?}"),
                }
            }
            Scenario::UpdateDatabase => {
                let changes = fog_model::database::DatabaseChanges {
                    tags: Some([("case".to_string(), "updated".to_string())].into()),
                };
                o.update_database(&mi("mi-east"), "appdb", changes, API)
                    .await
            }
            Scenario::DeleteDatabase => o
                .delete_database(&mi("mi-east"), "appdb", API)
                .await
                .map(|op| op.expect("exists")),
            Scenario::CreateGroup => {
                o.put_failover_group(&at("eastus"), GROUP, group_spec("Disabled"), API)
                    .await
            }
            Scenario::UpdateGroup => {
                o.put_failover_group(&at("eastus"), GROUP, group_spec("Enabled"), API)
                    .await
            }
            Scenario::DeleteGroup => o
                .delete_failover_group(&at("eastus"), GROUP, API)
                .await
                .map(|op| op.expect("exists")),
            Scenario::PlannedFailover | Scenario::ForcedFailover => {
                o.failover_group(&at("westus"), GROUP, s == Scenario::PlannedFailover, API)
                    .await
            }
            Scenario::Rejoin => return self.health_starts_rejoin().await,
        };
        started.unwrap_or_else(|e| panic!("{s:?} not accepted: {e:?}"))
    }

    /// Health rounds until the monitor starts a rejoin.
    async fn health_starts_rejoin(&self) -> OperationRecord {
        for _ in 0..100 {
            self.o.observe_groups().await;
            let rejoin = self
                .ops()
                .await
                .into_iter()
                .find(|op| matches!(op.action, Action::RejoinGroup { .. }) && op.attempts <= 1);
            if let Some(op) = rejoin {
                return op;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the health monitor never started a rejoin\n{}",
            self.dump().await
        )
    }

    /// Waits until no operation is in progress.
    async fn quiesce(&self) {
        for op in self.ops().await {
            if !op.status.is_terminal() {
                self.wait_op(&op.id).await;
            }
        }
    }

    /// Health rounds and supervisor passes until the world is whole again.
    async fn heal(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.quiesce().await;
            if self
                .check(&Snapshot::default(), Level::Healed)
                .await
                .is_empty()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the world never healed: {:?}\n{}",
                self.check(&Snapshot::default(), Level::Healed).await,
                self.dump().await
            );
            self.o.supervise(false).await;
            self.o.observe_groups().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// What is wrong with the world at `level` (empty: consistent).
    async fn check(&self, before: &Snapshot, level: Level) -> Vec<String> {
        let servers_too = level >= Level::Servers;
        let mut bad = Vec::new();
        let st = self.st();
        let instances: Vec<InstanceRecord> = catalog::all_instances(st)
            .await
            .expect("instances")
            .into_iter()
            .map(|v| v.value)
            .collect();
        let groups: Vec<FailoverGroupRecord> = catalog::groups(st)
            .await
            .expect("groups")
            .into_iter()
            .map(|v| v.value)
            .collect();
        let dbs: Vec<DatabaseRecord> = list::<DatabaseRecord>(st, "databases/")
            .await
            .expect("databases")
            .into_iter()
            .map(|(_, v)| v.value)
            .collect();
        let servers: HashMap<String, SimServer> = self
            .sim
            .servers()
            .into_iter()
            .map(|s| (s.uid.clone(), s))
            .collect();

        // Nothing busy, nothing unfinished.
        for op in self.ops().await {
            if !op.status.is_terminal() {
                bad.push(format!("operation {} unfinished at {}", op.id, op.step));
            }
        }
        for i in &instances {
            if let Some(op) = &i.active_operation {
                bad.push(format!("{} busy with {op}", i.id.name));
            }
        }
        for d in &dbs {
            if let Some(op) = &d.active_operation {
                bad.push(format!("database {} busy with {op}", d.name));
            }
        }
        for g in &groups {
            if let Some(op) = &g.active_operation {
                bad.push(format!("group busy with {op}"));
            }
        }
        // Every group has its index keys (both addresses, its DNS record), and every index
        // key names a group that has it.
        let mut index = HashMap::new();
        for prefix in ["failover-group-at/", "failover-group-dns/"] {
            for r in st.range(prefix).await.expect("index") {
                let v: serde_json::Value = serde_json::from_slice(&r.value).expect("index json");
                let uid = v["data"]["uid"].as_str().unwrap_or_default().to_string();
                index.insert(r.key, uid);
            }
        }
        let mut expected = HashMap::new();
        for g in &groups {
            for k in catalog::group_index_keys(g) {
                expected.insert(k, g.uid.clone());
            }
        }
        if index != expected {
            bad.push(format!("group index {index:?}, expected {expected:?}"));
        }

        // Instances and their servers; generations.
        let by_uid: HashMap<&str, &InstanceRecord> =
            instances.iter().map(|i| (i.uid.as_str(), i)).collect();
        for i in &instances {
            let name = &i.id.name;
            match servers.get(&i.uid) {
                _ if !servers_too => {}
                Some(s) if s.initialized => {
                    if s.fence > i.generation {
                        bad.push(format!(
                            "{name}: server fence {} ahead of record generation {}: its commands would be refused",
                            s.fence, i.generation
                        ));
                    }
                }
                // A failed delete may have removed the server; the record says Failed.
                _ if i.provisioning_state == ProvisioningState::Failed => {}
                _ => bad.push(format!("{name}: no initialised server")),
            }
            if let Some(b) = before.instances.get(&i.uid) {
                if i.generation < *b {
                    bad.push(format!(
                        "{name}: generation went back {b} → {}",
                        i.generation
                    ));
                }
            }
            if i.provisioning_state != ProvisioningState::Succeeded
                && i.provisioning_state != ProvisioningState::Failed
            {
                bad.push(format!("{name}: left {:?}", i.provisioning_state));
            }
            if let Some(guid) = &i.failover_group {
                let member = groups.iter().any(|g| {
                    &g.uid == guid && (g.primary.uid == i.uid || g.secondary.uid == i.uid)
                });
                if !member {
                    bad.push(format!("{name} names group {guid}, which lacks it"));
                }
            }
        }
        for uid in servers.keys() {
            if servers_too && !by_uid.contains_key(uid.as_str()) {
                bad.push(format!("server {uid} has no instance record (orphan)"));
            }
        }

        // Groups: one writable primary, the record's; the secondary follows it.
        let mut secondaries = HashSet::new();
        for g in &groups {
            secondaries.insert(g.secondary.uid.clone());
            if let Some(b) = before.group.filter(|b| g.generation < *b) {
                bad.push(format!("group generation went back {b} → {}", g.generation));
            }
            let (Some(p), Some(s)) = (servers.get(&g.primary.uid), servers.get(&g.secondary.uid))
            else {
                bad.push("a group member has no server".into());
                continue;
            };
            for (m, uid) in [
                (&g.primary, &g.primary.uid),
                (&g.secondary, &g.secondary.uid),
            ] {
                if by_uid
                    .get(uid.as_str())
                    .is_none_or(|i| i.failover_group.as_deref() != Some(&g.uid))
                {
                    bad.push(format!(
                        "{} is a member but its record says otherwise",
                        m.instance.name
                    ));
                }
            }
            if !servers_too {
                continue;
            }
            if !(p.running && p.is_primary()) {
                bad.push(format!(
                    "group primary {} is not a writable server (running {}, {:?})",
                    g.primary.instance.name, p.running, p.role
                ));
            }
            if s.running && s.is_primary() && !g.secondary_needs_rejoin {
                bad.push(format!(
                    "two writable primaries: {} runs writable and is not known to need a rejoin",
                    g.secondary.instance.name
                ));
            }
            if level == Level::Healed {
                let app = format!("fogd_{}", g.secondary.uid);
                let follows =
                    matches!(&s.role, Role::Standby { source_port, .. } if *source_port == p.port);
                if g.secondary_needs_rejoin || !(s.running && follows && s.streaming) {
                    bad.push(format!(
                        "secondary {} does not stream from the primary (needs rejoin {}, running {}, {:?}, streaming {})",
                        g.secondary.instance.name, g.secondary_needs_rejoin, s.running, s.role, s.streaming
                    ));
                }
                if p.sync_standby.as_deref() != Some(app.as_str()) {
                    bad.push(format!(
                        "primary's sync standby is {:?}, not {app}",
                        p.sync_standby
                    ));
                }
                for db in &p.databases {
                    if p.geo_links.get(db) != Some(&app) {
                        bad.push(format!("database {db} is not geo-linked to {app}"));
                    }
                }
            }
        }

        // Databases: every record exists on its instance's server, and a group's live with
        // its primary; a primary has no database without a record.
        let mut recorded: HashMap<&str, BTreeSet<&str>> = HashMap::new();
        for d in &dbs {
            let Some(i) = by_uid.get(d.instance_uid.as_str()) else {
                bad.push(format!("database {} of a missing instance", d.name));
                continue;
            };
            if i.id.key() != d.instance.key() {
                bad.push(format!("database {} names two instances", d.name));
            }
            recorded.entry(i.uid.as_str()).or_default().insert(&d.name);
            if secondaries.contains(&i.uid) {
                bad.push(format!(
                    "database record {} lives on a group secondary",
                    d.name
                ));
            }
            if d.status != DatabaseStatus::Online {
                bad.push(format!("database {} left {:?}", d.name, d.status));
            }
            if i.provisioning_state == ProvisioningState::Failed || !servers_too {
                continue;
            }
            if !servers
                .get(&i.uid)
                .is_some_and(|s| s.databases.contains(&d.name))
            {
                bad.push(format!(
                    "database {} is not on {}'s server",
                    d.name, i.id.name
                ));
            }
        }
        for i in &instances {
            if secondaries.contains(&i.uid) || !servers_too {
                continue;
            }
            let Some(s) = servers.get(&i.uid).filter(|s| s.is_primary()) else {
                continue;
            };
            let have = recorded.get(i.uid.as_str()).cloned().unwrap_or_default();
            for db in &s.databases {
                if !have.contains(db.as_str()) {
                    bad.push(format!(
                        "database {db} on {}'s server has no record",
                        i.id.name
                    ));
                }
            }
        }
        bad
    }

    /// The records and servers, with `ENGINE_STEPS_DUMP` set (failure messages stay short
    /// otherwise).
    async fn dump(&self) -> String {
        if std::env::var_os("ENGINE_STEPS_DUMP").is_none() {
            return "(set ENGINE_STEPS_DUMP=1 for the records and servers)".into();
        }
        let mut out = String::from("--- records\n");
        for r in self.st().range("").await.unwrap_or_default() {
            if r.key.starts_with("secrets/") || r.key.starts_with("events/") {
                continue;
            }
            out.push_str(&format!(
                "{} = {}\n",
                r.key,
                String::from_utf8_lossy(&r.value)
            ));
        }
        out.push_str("--- servers\n");
        for s in self.sim.servers() {
            out.push_str(&format!("{s:?}\n"));
        }
        out
    }

    /// What the scenario's operation must have done (or left undone).
    async fn expect_effect(&self, s: Scenario, status: OperationStatus, end_of_old: Option<u64>) {
        let ok = status == OperationStatus::Succeeded;
        let server = |uid: &str| self.sim.server(uid);
        match s {
            Scenario::CreateInstance => match self.instance("mi-new").await {
                Some(rec) if ok => {
                    let srv = server(&rec.uid).expect("server");
                    assert!(srv.running && srv.logins.contains("fogadmin"), "{srv:?}");
                }
                // A failed create removes its server and record — or, when the server
                // could not be removed, keeps the record, Failed, for a DELETE to finish.
                Some(rec) => {
                    assert_eq!(rec.provisioning_state, ProvisioningState::Failed);
                    let op = self.o.delete_instance(&rec.id, API).await.expect("delete");
                    self.succeeded(&op.expect("exists").id).await;
                    assert!(server(&rec.uid).is_none(), "the DELETE removed the server");
                }
                None => assert!(!ok, "created, yet no record"),
            },
            Scenario::UpdateInstance => {
                let rec = self.instance("mi-east").await.expect("mi-east");
                assert_eq!(rec.tags.contains_key("case"), ok, "{rec:?}");
                assert_eq!(rec.provisioning_state, ProvisioningState::Succeeded);
            }
            Scenario::DeleteInstance => {
                let rec = self.instance("mi-solo").await;
                if ok {
                    assert!(rec.is_none(), "{rec:?}");
                    assert!(self.database("mi-solo", "solodb").await.is_none());
                } else {
                    let rec = rec.expect("a failed delete keeps the record");
                    assert_eq!(rec.provisioning_state, ProvisioningState::Failed);
                }
            }
            Scenario::CreateDatabase => {
                let rec = self.database("mi-east", "newdb").await;
                assert_eq!(rec.is_some(), ok, "{rec:?}");
            }
            Scenario::UpdateDatabase => {
                let rec = self.database("mi-east", "appdb").await.expect("appdb");
                assert_eq!(rec.tags.contains_key("case"), ok, "{rec:?}");
            }
            Scenario::DeleteDatabase => {
                let rec = self.database("mi-east", "appdb").await;
                let east = server(&self.uid("mi-east").await).expect("east");
                if ok {
                    assert!(rec.is_none(), "{rec:?}");
                } else {
                    // A failed delete keeps the record, unless the drop did happen.
                    assert_eq!(rec.is_some(), east.databases.contains("appdb"), "{rec:?}");
                }
            }
            Scenario::CreateGroup => {
                let g = self.group().await;
                assert_eq!(g.is_some(), ok, "{g:?}");
                if !ok {
                    for name in ["mi-east", "mi-west"] {
                        let rec = self.instance(name).await.expect("member");
                        assert_eq!(rec.failover_group, None, "{name}");
                        let srv = server(&rec.uid).expect("server");
                        assert!(srv.is_primary(), "{name} stands alone: {srv:?}");
                    }
                }
            }
            Scenario::UpdateGroup => {
                let g = self.group().await.expect("group");
                assert_eq!(
                    g.policies.read_only == ReadOnlyPolicy::Enabled,
                    ok,
                    "{:?}",
                    g.policies
                );
            }
            Scenario::DeleteGroup => {
                let g = self.group().await;
                assert_eq!(g.is_none(), ok, "{g:?}");
                if ok {
                    for name in ["mi-east", "mi-west"] {
                        let rec = self.instance(name).await.expect("member");
                        assert!(self.database(name, "appdb").await.is_some(), "{name}");
                        assert!(server(&rec.uid).expect("server").is_primary(), "{name}");
                    }
                }
            }
            Scenario::PlannedFailover | Scenario::ForcedFailover => {
                let g = self.group().await.expect("group");
                let switched = g.primary.instance.name == "mi-west";
                if ok {
                    assert!(switched, "a successful failover switches roles");
                    let r = g.last_failover.as_ref().expect("report");
                    assert_eq!(r.planned, s == Scenario::PlannedFailover);
                }
                if switched && s == Scenario::PlannedFailover {
                    // No data loss: the new primary's history forked at or after the end
                    // of the old primary's WAL.
                    let west = server(&g.primary.uid).expect("west");
                    let fork = west.history.last().map(|(_, end)| *end).unwrap_or(0);
                    let end = end_of_old.expect("the old primary stopped cleanly");
                    assert!(
                        fork >= end,
                        "planned failover lost WAL: fork {fork:X} < end {end:X}"
                    );
                    if let Some(r) = &g.last_failover {
                        assert_eq!(r.data_loss, None, "{r:?}");
                    }
                }
            }
            Scenario::Rejoin => {
                let g = self.group().await.expect("group");
                assert_eq!(g.primary.instance.name, "mi-west");
                if ok {
                    assert!(!g.secondary_needs_rejoin);
                }
            }
        }
    }
}

/// What one case found.
#[derive(Debug)]
struct Outcome {
    case: Case,
    status: OperationStatus,
    /// Fault modes: the step went on despite the fault (or made no such call).
    tolerated: bool,
    unfaulted: bool,
    took: Duration,
}

/// The worlds cases start from (each case runs on its own fork).
struct Bases {
    without_group: World,
    with_group: World,
    after_forced_failover: World,
}

impl Bases {
    async fn build() -> Bases {
        let (without_group, with_group, after_forced_failover) =
            tokio::join!(World::build(false), World::build(true), World::build(true));
        after_forced_failover.prepare(Scenario::Rejoin).await;
        Bases {
            without_group,
            with_group,
            after_forced_failover,
        }
    }

    async fn world_for(&self, s: Scenario) -> World {
        match s {
            Scenario::CreateGroup => self.without_group.fork().await,
            Scenario::Rejoin => self.after_forced_failover.fork().await,
            _ => self.with_group.fork().await,
        }
    }
}

/// Runs every scenario's operation once, undisturbed, and counts each step's agent calls.
async fn census(bases: &Bases) -> Census {
    let mut census = Census::new();
    for s in SCENARIOS {
        let w = bases.world_for(s).await;
        let op = w.start(s).await;
        w.succeeded(&op.id).await;
        let calls = w.sim.calls();
        for win in w.hook.windows.lock().expect("hook").iter() {
            let (Some(to), true) = (win.to, win.op == op.id) else {
                continue;
            };
            let names = step_names(&op.action);
            let Some(step) = names.iter().find(|n| **n == win.step.as_str()) else {
                continue;
            };
            let window = &calls[win.from..to];
            let changes = window.iter().filter(|c| c.generation.is_some()).count();
            census.insert((s, *step), (window.len(), changes));
        }
    }
    census
}

async fn run_case(case: Case, bases: Arc<Bases>) -> Outcome {
    let started = Instant::now();
    let (scenario, step, mode) = case;
    let mut w = bases.world_for(scenario).await;
    let before = w.snapshot().await;
    w.hook.arm(case);
    let op = w.start(scenario).await;
    assert_eq!(
        step_names(&op.action),
        step_names(&sample(scenario)),
        "the sample has the operation's steps"
    );
    let done = match mode {
        Mode::CrashBefore | Mode::CrashAfter => {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !w.hook.crashed.load(Ordering::SeqCst) {
                let now = w.op(&op.id).await;
                assert!(
                    !now.status.is_terminal() && Instant::now() < deadline,
                    "never crashed at {step}: {now:?}\n{}",
                    w.dump().await
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            let left = w.op(&op.id).await;
            assert_eq!(left.status, OperationStatus::InProgress);
            assert_eq!(left.step, step, "the crash left the operation at its step");
            w.restart().await;
            let done = w.wait_op(&op.id).await;
            assert_eq!(
                done.status,
                OperationStatus::Succeeded,
                "resumed after a crash {mode:?} {step}: {done:?}\n{}",
                w.dump().await
            );
            done
        }
        Mode::Fail(_) | Mode::LoseReply(_) | Mode::Outage => {
            let done = w.wait_op(&op.id).await;
            w.hook.disarm();
            w.sim.clear_faults();
            assert!(
                w.hook.reached.load(Ordering::SeqCst),
                "never reached {step}"
            );
            done
        }
    };
    w.hook.disarm();
    // Nothing left for the sweep to fix: no operation undriven, no marker stale.
    let sweep = w.o.sweep_operations().await.expect("sweep");
    assert!(
        sweep.resumed.is_empty() && sweep.released.is_empty(),
        "{sweep:?}"
    );
    // After an outage that outlasted the operation, the servers may still be as the
    // outage left them (an old primary its compensation could not restart): the records
    // must be right at once, the servers once healed.
    let level = if mode == Mode::Outage {
        Level::Records
    } else {
        Level::Servers
    };
    let problems = w.check(&before, level).await;
    assert!(
        problems.is_empty(),
        "inconsistent right after the operation ({:?}: {:?}): {problems:#?}\n{}",
        done.status,
        done.error,
        w.dump().await
    );
    let east_end = match w.instance("mi-east").await {
        Some(east) => w.sim.server(&east.uid).and_then(|s| s.shutdown_end),
        None => None,
    };
    w.expect_effect(scenario, done.status, east_end).await;
    w.heal().await;
    let problems = w.check(&before, Level::Healed).await;
    assert!(problems.is_empty(), "after healing: {problems:#?}");
    if scenario == Scenario::Rejoin {
        // The late rejoin completes the forced failover's report with what mi-east lost.
        let g = w.group().await.expect("group");
        let lost = g.last_failover.and_then(|r| r.data_loss).map(|l| l.bytes);
        // Also when the rewind happened but its reply was lost: the agent kept its report
        // and gives it again to the retry of the same generation.
        assert_eq!(lost, Some(LOST_BYTES), "loss reported by the rejoin");
    }
    Outcome {
        case,
        status: done.status,
        tolerated: w.hook.tolerated.load(Ordering::SeqCst),
        unfaulted: w.hook.unfaulted.load(Ordering::SeqCst),
        took: started.elapsed(),
    }
}

// ---------------------------------------------------------------------------------------
// The tests.

/// A new operation type is covered without writing its step list here: every `Action`
/// variant serde knows has a scenario whose sample is of that variant, and the plan walks
/// every step `step_names` gives for it, in every mode.
#[test]
fn every_operation_type_has_a_scenario_and_every_step_a_case() {
    let variants = action_variants();
    assert!(
        variants.contains("CreateInstance") && variants.len() >= 10,
        "{variants:?}"
    );
    let sampled: BTreeSet<String> = SCENARIOS
        .iter()
        .map(|s| variant_name(&sample(*s)))
        .collect();
    assert_eq!(
        sampled, variants,
        "every Action variant has a sample scenario"
    );
    for s in SCENARIOS {
        assert_eq!(scenario_of(&sample(s)), s, "{s:?} samples its own action");
    }
    let walked: HashSet<(Scenario, &str)> = steps().into_iter().collect();
    let cases: HashSet<Case> = plan(&Census::new()).into_iter().collect();
    for s in SCENARIOS {
        let names = step_names(&sample(s));
        assert!(!names.is_empty(), "{s:?} has steps");
        for step in names {
            assert!(walked.contains(&(s, *step)), "{s:?} {step}");
            for m in [Mode::CrashBefore, Mode::CrashAfter, Mode::Fail(0)] {
                assert!(cases.contains(&(s, step, m)), "{s:?} {step} {m:?}");
            }
        }
    }
}

/// Every case of the plan, run concurrently; each must reach its step, end, leave nothing
/// busy and the world consistent, and converge. Set `ENGINE_STEPS_ONLY=Rejoin` (a scenario
/// name) to run one scenario's cases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_of_every_operation_crashes_and_fails_cleanly() {
    let only = std::env::var("ENGINE_STEPS_ONLY").ok();
    let started = Instant::now();
    let bases = Arc::new(Bases::build().await);
    let census = census(&bases).await;
    let cases: Vec<Case> = plan(&census)
        .into_iter()
        .filter(|(s, _, _)| only.as_deref().is_none_or(|o| format!("{s:?}") == o))
        .collect();
    let gate = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = tokio::task::JoinSet::new();
    let mut labels = HashMap::new();
    for case in cases.clone() {
        let (gate, bases) = (gate.clone(), bases.clone());
        let handle = tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("gate");
            tokio::time::timeout(Duration::from_secs(60), run_case(case, bases))
                .await
                .unwrap_or_else(|_| panic!("case timed out"))
        });
        labels.insert(handle.id(), case);
    }
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next_with_id().await {
        match joined {
            Ok((_, outcome)) => outcomes.push(outcome),
            Err(e) => {
                let case = labels.get(&e.id()).copied();
                let message = match e.try_into_panic() {
                    Ok(p) => p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default(),
                    Err(e) => e.to_string(),
                };
                failures.push(format!("{case:?}: {message}"));
            }
        }
    }
    outcomes.sort_by_key(|o| o.case);
    let mut by_scenario: HashMap<Scenario, (usize, usize, usize, usize, Duration)> = HashMap::new();
    for o in &outcomes {
        let e = by_scenario.entry(o.case.0).or_default();
        e.0 += 1;
        if o.status == OperationStatus::Failed {
            e.1 += 1;
        }
        if o.tolerated {
            e.2 += 1;
        }
        if o.unfaulted {
            e.3 += 1;
        }
        e.4 = e.4.max(o.took);
    }
    eprintln!("scenario: cases, failed, fault tolerated, step without such call, slowest");
    for s in SCENARIOS {
        if let Some((n, failed, tolerated, unfaulted, slowest)) = by_scenario.get(&s) {
            eprintln!("{s:?}: {n}, {failed}, {tolerated}, {unfaulted}, {slowest:?}");
        }
    }
    let kinds = |f: fn(&Mode) -> bool| cases.iter().filter(|c| f(&c.2)).count();
    eprintln!(
        "modes: {} crash before, {} crash after, {} failed call, {} lost reply, {} outage",
        kinds(|m| *m == Mode::CrashBefore),
        kinds(|m| *m == Mode::CrashAfter),
        kinds(|m| matches!(m, Mode::Fail(_))),
        kinds(|m| matches!(m, Mode::LoseReply(_))),
        kinds(|m| *m == Mode::Outage),
    );
    eprintln!(
        "{} cases in {:?} ({} failed)",
        cases.len(),
        started.elapsed(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    // Every planned case ran and reached its step (`run_case` asserts the step was
    // reached or crashed at), so every step of every operation type was exercised.
    let ran: HashSet<Case> = outcomes.iter().map(|o| o.case).collect();
    assert_eq!(ran, cases.iter().copied().collect::<HashSet<_>>());
    if only.is_none() {
        let exercised: HashSet<(Scenario, &str)> = ran.iter().map(|(s, n, _)| (*s, *n)).collect();
        assert_eq!(
            exercised,
            steps().into_iter().collect(),
            "every step exercised"
        );
    }
}

fn spec_of(s: &SimServer) -> ServerSpec {
    ServerSpec {
        uid: s.uid.clone(),
        region: "eastus".into(),
        dir: format!("/sim/instances/{}", s.uid).into(),
        host: "127.0.0.1".into(),
        port: s.port,
        superuser_password: String::new(),
    }
}

/// Mirrors the LocalAgent test on the simulated agent: once a generation was accepted,
/// every state-changing command of an older one is refused and changes nothing; and after
/// a failover, the pre-failover generation no longer reaches the old primary.
#[tokio::test]
async fn older_generations_are_refused() {
    let w = World::build(true).await;
    let east = w.sim.server(&w.uid("mi-east").await).expect("east");
    let west = w.sim.server(&w.uid("mi-west").await).expect("west");
    let (spec, other) = (spec_of(&east), spec_of(&west));
    let source = ReplicationSource {
        host: "127.0.0.1".into(),
        port: west.port,
        password: String::new(),
        slot: "fogd_late".into(),
        application_name: "fogd_late".into(),
    };
    w.sim.ensure_running(&spec, 5).await.expect("generation 5");
    let before = w.sim.server(&east.uid).expect("east");
    let a = w.sim.as_ref();
    let g = 4;
    let results: Vec<(&str, Result<(), EngineError>)> = vec![
        ("ensure_initialized", a.ensure_initialized(&spec, g).await),
        ("ensure_running", a.ensure_running(&spec, g).await),
        ("stop", a.stop(&spec, g).await),
        ("destroy", a.destroy(&spec, g).await),
        ("ensure_login", a.ensure_login(&spec, "x", "v", g).await),
        ("create_database", a.create_database(&spec, "late", g).await),
        ("drop_database", a.drop_database(&spec, "appdb", g).await),
        (
            "ensure_replication_role",
            a.ensure_replication_role(&spec, "v", g).await,
        ),
        ("ensure_slot", a.ensure_slot(&spec, "fogd_late", g).await),
        ("drop_slot", a.drop_slot(&spec, "fogd_late", g).await),
        (
            "seed_standby",
            a.seed_standby(&spec, &source, &|_| {}, g).await,
        ),
        ("promote", a.promote(&spec, g).await),
        (
            "install_geo_link",
            a.install_geo_link(&spec, "appdb", "p", "z", "x", g).await,
        ),
        ("clear_geo_link", a.clear_geo_link(&spec, "appdb", g).await),
        (
            "set_sync_standby",
            a.set_sync_standby(&spec, Some("x"), g).await,
        ),
        (
            "stop_and_inspect",
            a.stop_and_inspect(&spec, g).await.map(|_| ()),
        ),
        ("kill", a.kill(&spec, g).await),
        ("reseed_standby", a.reseed_standby(&spec, &source, g).await),
        ("follow", a.follow(&spec, &source, g).await),
        (
            "rewind_and_follow",
            a.rewind_and_follow(&spec, &other, &source, g)
                .await
                .map(|_| ()),
        ),
    ];
    for (what, r) in results {
        assert!(
            matches!(
                r,
                Err(EngineError::StaleGeneration {
                    got: 4,
                    current: 5,
                    ..
                })
            ),
            "{what} under generation 4: {r:?}"
        );
    }
    let after = w.sim.server(&east.uid).expect("east");
    assert_eq!(
        (
            after.running,
            &after.databases,
            &after.slots,
            &after.role,
            after.fence
        ),
        (
            before.running,
            &before.databases,
            &before.slots,
            &before.role,
            5
        ),
        "stale commands changed nothing"
    );

    // A planned failover fences both servers: the generation the orchestrator used before
    // it no longer reaches mi-east.
    let w = World::build(true).await;
    let gen = w.instance("mi-east").await.expect("east").generation;
    let op =
        w.o.failover_group(&at("westus"), GROUP, true, API)
            .await
            .expect("failover");
    w.succeeded(&op.id).await;
    let east = spec_of(&w.sim.server(&w.uid("mi-east").await).expect("east"));
    let r = w.sim.set_sync_standby(&east, None, gen).await;
    assert!(
        matches!(r, Err(EngineError::StaleGeneration { .. })),
        "{r:?}"
    );
}

/// Wedge (a): the compensation's writes conflict, so the runner records only the failed
/// operation and the instance stays marked busy; the sweep releases it.
#[tokio::test]
async fn a_conflicting_compensation_is_unwedged_by_the_sweep() {
    let w = World::build(false).await;
    let key = catalog::instance_key(&mi("mi-solo"));
    w.sim.fail("ensure_login", None, 1);
    w.store.add(Rule::Commit {
        matching: rewrites_op_and(key.clone()),
        conflict: true,
        left: 1,
    });
    let op = update_solo(&w, true).await;
    let done = w.wait_op(&op.id).await;
    assert_eq!(done.status, OperationStatus::Failed);
    assert_eq!(w.store.left(), 0, "the compensation conflicted");
    let rec = w.instance("mi-solo").await.expect("solo");
    assert_eq!(
        rec.active_operation.as_deref(),
        Some(op.id.as_str()),
        "left busy"
    );
    // The sweep runs the failed operation's undo again (the update's undo: the record as
    // it was, not busy).
    let sweep = w.o.sweep_operations().await.expect("sweep");
    assert_eq!(sweep.undone, vec![op.id.clone()], "{sweep:?}");
    assert!(sweep.released.is_empty(), "{sweep:?} ({key})");
    let rec = w.instance("mi-solo").await.expect("solo");
    assert_eq!(rec.active_operation, None);
    assert_eq!(rec.provisioning_state, ProvisioningState::Succeeded);
    let problems = w.check(&Snapshot::default(), Level::Servers).await;
    assert!(problems.is_empty(), "{problems:?}");
}

/// Wedge (b): the store fails inside compensation. Reading the instance fails: the
/// compensation writes nothing but the failed operation, and the sweep releases the
/// marker. Committing fails (the fallback too): the runner stops, the operation stays
/// in progress, and the sweep resumes it to success.
#[tokio::test]
async fn a_store_error_inside_compensation_is_unwedged_by_the_sweep() {
    let w = World::build(false).await;
    let key = catalog::instance_key(&mi("mi-solo"));
    // `update_instance.apply`: its second agent call (ensure_login) fails; the step's own
    // read of the instance goes through, the compensation's fails.
    let (store, k) = (w.store.clone(), key.clone());
    *w.hook.before_extra.lock().expect("hook") = Some(Box::new(move || {
        store.add(Rule::Get {
            key: k.clone(),
            skip: 1,
            left: 1,
        })
    }));
    w.hook.arm((
        Scenario::UpdateInstance,
        "update_instance.apply",
        Mode::Fail(1),
    ));
    let op = update_solo(&w, true).await;
    let done = w.wait_op(&op.id).await;
    w.hook.disarm();
    assert_eq!(done.status, OperationStatus::Failed, "{done:?}");
    assert_eq!(w.store.left(), 0, "the compensation's read failed");
    let sweep = w.o.sweep_operations().await.expect("sweep");
    assert_eq!(sweep.undone, vec![op.id.clone()], "{sweep:?}");
    assert_eq!(
        w.instance("mi-solo").await.expect("solo").active_operation,
        None
    );
    assert!(w
        .check(&Snapshot::default(), Level::Servers)
        .await
        .is_empty());

    // The commit of the compensation fails, and so does its fallback.
    let w = World::build(false).await;
    w.sim.fail("ensure_login", None, 1);
    w.store.add(Rule::Commit {
        matching: rewrites_op_and(key.clone()),
        conflict: false,
        left: 1,
    });
    w.store.add(Rule::Commit {
        matching: Box::new(|writes: &[Write]| {
            writes.len() == 1
                && writes[0].key.starts_with("operations/")
                && writes[0].precondition == Precondition::Any
        }),
        conflict: false,
        left: 1,
    });
    let op = update_solo(&w, true).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while w.store.left() > 0 {
        assert!(
            Instant::now() < deadline,
            "the compensation never committed"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(w.op(&op.id).await.status, OperationStatus::InProgress);
    let sweep = w.o.sweep_operations().await.expect("sweep");
    assert_eq!(sweep.resumed, vec![op.id.clone()]);
    w.succeeded(&op.id).await;
    assert!(w
        .check(&Snapshot::default(), Level::Servers)
        .await
        .is_empty());
}

/// Wedge (c): a finish that keeps conflicting. The runner gives up after its retries and
/// leaves the operation in progress; the sweep resumes it.
#[tokio::test]
async fn a_finish_that_keeps_conflicting_is_resumed_by_the_sweep() {
    let w = World::build(false).await;
    let key = catalog::instance_key(&mi("mi-solo"));
    w.store.add(Rule::Commit {
        matching: rewrites_op_and(key),
        conflict: true,
        left: 51,
    });
    let op = update_solo(&w, false).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while w.store.left() > 0 {
        assert!(
            Instant::now() < deadline,
            "the runner stopped retrying early"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let left = w.op(&op.id).await;
    assert_eq!(
        left.status,
        OperationStatus::InProgress,
        "given up, not failed"
    );
    let sweep = w.o.sweep_operations().await.expect("sweep");
    assert_eq!(sweep.resumed, vec![op.id.clone()]);
    w.succeeded(&op.id).await;
    assert_eq!(
        w.instance("mi-solo")
            .await
            .expect("solo")
            .tags
            .get("case")
            .map(String::as_str),
        Some("updated")
    );
    assert!(w
        .check(&Snapshot::default(), Level::Servers)
        .await
        .is_empty());
}

async fn update_solo(w: &World, password: bool) -> OperationRecord {
    let existing = w.instance("mi-solo").await.expect("solo");
    let mut body = serde_json::json!({ "tags": { "case": "updated" } });
    if password {
        body["properties"] =
            serde_json::json!({ "administratorLoginPassword": "An0ther-Str0ng-Pass!" });
    }
    let changes = fog_model::body::parse::<InstanceBody>(body.to_string().as_bytes())
        .and_then(|b| b.into_changes(&existing))
        .expect("changes");
    w.o.update_instance(&mi("mi-solo"), changes, API)
        .await
        .expect("update")
}

/// A planned failover whose secondary cannot catch up (replay paused) times out before
/// the point of no return: the group is unchanged, mi-east writable again under a newer
/// generation; once replay resumes, the world heals.
#[tokio::test]
async fn a_planned_failover_to_a_lagging_secondary_times_out_and_undoes() {
    let w = World::build(true).await;
    let (east, west) = (w.uid("mi-east").await, w.uid("mi-west").await);
    let gen = w.group().await.expect("group").generation;
    w.sim.set_paused(&west, true);
    assert!(w.sim.write(&east, 1000));
    let op =
        w.o.failover_group(&at("westus"), GROUP, true, API)
            .await
            .expect("failover");
    let done = w.wait_op(&op.id).await;
    assert_eq!(done.status, OperationStatus::Failed);
    assert_eq!(
        done.error.map(|e| e.code).as_deref(),
        Some("PlannedFailoverTimedOut")
    );
    let g = w.group().await.expect("group");
    assert_eq!(g.primary.uid, east);
    assert_eq!(g.generation, gen + 2, "fence, then undo");
    assert!(w.sim.server(&east).expect("east").running);
    assert!(w
        .check(&Snapshot::default(), Level::Servers)
        .await
        .is_empty());
    w.sim.set_paused(&west, false);
    w.heal().await;
}

/// A planned failover whose old primary never answers the shutdown gives up in time and
/// leaves the group as it was.
#[tokio::test]
async fn a_planned_failover_gives_up_on_a_hung_shutdown() {
    let w = World::build(true).await;
    let east = w.uid("mi-east").await;
    w.sim.hang("stop_and_inspect", Some(&east), 1);
    let op =
        w.o.failover_group(&at("westus"), GROUP, true, API)
            .await
            .expect("failover");
    let done = w.wait_op(&op.id).await;
    assert_eq!(
        done.error.map(|e| e.code).as_deref(),
        Some("PlannedFailoverTimedOut")
    );
    assert_eq!(w.group().await.expect("group").primary.uid, east);
    assert!(w
        .check(&Snapshot::default(), Level::Servers)
        .await
        .is_empty());
    w.heal().await;
}

/// A forced failover away from a primary the secondary lagged behind reports exactly the
/// WAL the old primary loses.
#[tokio::test]
async fn a_forced_failover_reports_exactly_the_lost_wal() {
    let w = World::build(true).await;
    let (east, west) = (w.uid("mi-east").await, w.uid("mi-west").await);
    w.sim.set_paused(&west, true);
    assert!(w.sim.write(&east, 5000));
    let op =
        w.o.failover_group(&at("westus"), GROUP, false, API)
            .await
            .expect("failover");
    w.succeeded(&op.id).await;
    w.sim.set_paused(&west, false);
    let g = w.group().await.expect("group");
    let loss = g.last_failover.expect("report").data_loss.expect("loss");
    assert_eq!(loss.bytes, 5000);
    assert_eq!(g.replication_state, ReplicationState::CatchUp);
    w.heal().await;
}

/// A group deleted after failovers and created again on the same instances starts at a
/// generation above what their servers accepted, so its first failover is not refused as
/// stale (found by the fault campaign: `PlannedFailoverTimedOut` after a re-create).
#[tokio::test]
async fn a_group_created_again_after_failovers_can_fail_over() {
    let w = World::build(true).await;
    for location in ["westus", "eastus"] {
        let op =
            w.o.failover_group(&at(location), GROUP, true, API)
                .await
                .expect("failover");
        w.succeeded(&op.id).await;
    }
    let fenced = w.instance("mi-east").await.expect("east").generation;
    assert!(fenced > 1, "two failovers fenced the servers: {fenced}");
    let op =
        w.o.delete_failover_group(&at("eastus"), GROUP, API)
            .await
            .expect("delete")
            .expect("an operation");
    w.succeeded(&op.id).await;
    // The former secondary keeps copies of the databases as its own: empty it again.
    if let Some(op) =
        w.o.delete_database(&mi("mi-west"), "appdb", API)
            .await
            .expect("drop the copy")
    {
        w.succeeded(&op.id).await;
    }
    let op =
        w.o.put_failover_group(&at("eastus"), GROUP, group_spec("Disabled"), API)
            .await
            .expect("create again");
    w.succeeded(&op.id).await;
    assert!(w.group().await.expect("group").generation >= fenced);
    let op =
        w.o.failover_group(&at("westus"), GROUP, true, API)
            .await
            .expect("failover");
    w.succeeded(&op.id).await;
    assert_eq!(
        w.group().await.expect("group").primary.uid,
        w.uid("mi-west").await
    );
}

/// A database update is an operation of its own (`UpdateDatabase`), run like any other: the
/// database is busy until its step ran (a delete meanwhile is refused), a crash before the
/// step leaves it to the next fogd, which finishes it with the new tags.
#[tokio::test]
async fn a_database_update_is_its_own_operation_and_survives_a_crash() {
    let mut w = World::build(false).await;
    w.hook.arm((
        Scenario::UpdateDatabase,
        "update_database.finish",
        Mode::CrashBefore,
    ));
    let changes = fog_model::database::DatabaseChanges {
        tags: Some([("case".to_string(), "updated".to_string())].into()),
    };
    let op =
        w.o.update_database(&mi("mi-solo"), "solodb", changes, API)
            .await
            .expect("update accepted");
    assert!(
        matches!(&op.action, Action::UpdateDatabase { database, tags, .. }
            if database == "solodb" && tags.get("case").map(String::as_str) == Some("updated")),
        "{:?}",
        op.action
    );
    assert_eq!(op.step, "update_database.finish");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !w.hook.crashed.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "never reached its step");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let left = w.op(&op.id).await;
    assert_eq!(left.status, OperationStatus::InProgress);
    let db = w.database("mi-solo", "solodb").await.expect("solodb");
    assert_eq!(db.active_operation.as_deref(), Some(op.id.as_str()), "busy");
    assert!(db.tags.is_empty(), "not applied before its step: {db:?}");
    let refused = w.o.delete_database(&mi("mi-solo"), "solodb", API).await;
    assert_eq!(refused.map(|_| ()).map_err(|e| e.status), Err(409));

    w.restart().await;
    w.succeeded(&op.id).await;
    let db = w.database("mi-solo", "solodb").await.expect("solodb");
    assert_eq!(db.tags.get("case").map(String::as_str), Some("updated"));
    assert_eq!(db.active_operation, None);
    assert!(w
        .check(&Snapshot::default(), Level::Servers)
        .await
        .is_empty());
}

/// Records written by the fogd before `UpdateDatabase` existed: an update was recorded as
/// a `CreateDatabase` that had already succeeded (at `create_database.finish`), and a
/// creation in progress looks as it always did. Both still read; the one in progress
/// resumes and finishes.
#[tokio::test]
async fn database_operation_records_of_an_earlier_fogd_still_read_and_resume() {
    let mut w = World::build(false).await;
    let id = mi("mi-solo");
    let scope = serde_json::json!({ "subscription": SUB, "resource_group": "rg" });
    let instance = serde_json::json!({ "scope": scope, "name": "mi-solo" });
    let record = |op: &str, db: &str, status: &str, step: &str| {
        serde_json::json!({ "format": 1, "data": {
            "id": op, "kind": "ManagedDatabase", "scope": scope, "location": "eastus",
            "api_version": API,
            "action": { "type": "CreateDatabase", "instance": instance, "database": db },
            "status": status, "step": step, "percent_complete": 0,
            "start_time": "2026-11-29T12:00:00Z", "end_time": null, "error": null,
            "attempts": 1,
        }})
        .to_string()
        .into_bytes()
    };
    // An update accepted by the earlier fogd: finished when it was written.
    let old_update = "00000000-0000-0000-0000-00000000aaaa";
    // A creation that fogd was running when it stopped.
    let old_create = "00000000-0000-0000-0000-00000000bbbb";
    let solo = w.instance("mi-solo").await.expect("solo");
    let creating = DatabaseRecord {
        instance: id.clone(),
        instance_uid: solo.uid.clone(),
        name: "olddb".into(),
        location: "eastus".into(),
        tags: Default::default(),
        collation: "SQL_Latin1_General_CP1_CI_AS".into(),
        status: DatabaseStatus::Creating,
        creation_date: time::OffsetDateTime::now_utc(),
        active_operation: Some(old_create.into()),
    };
    w.st()
        .commit(vec![
            Write::put(
                catalog::operation_key(old_update),
                record(old_update, "solodb", "Succeeded", "create_database.finish"),
                Precondition::Absent,
            ),
            Write::put(
                catalog::operation_key(old_create),
                record(old_create, "olddb", "InProgress", "create_database.create"),
                Precondition::Absent,
            ),
            fog_store::typed::put(
                catalog::database_key(&id, "olddb"),
                &creating,
                Precondition::Absent,
            ),
        ])
        .await
        .expect("write the old records");
    let update = w.op(old_update).await;
    assert_eq!(update.status, OperationStatus::Succeeded);
    assert!(matches!(update.action, Action::CreateDatabase { .. }));

    w.restart().await;
    w.succeeded(old_create).await;
    let db = w.database("mi-solo", "olddb").await.expect("olddb");
    assert_eq!(
        (db.status, db.active_operation),
        (DatabaseStatus::Online, None)
    );
    assert!(w
        .sim
        .server(&solo.uid)
        .expect("server")
        .databases
        .contains("olddb"));
    assert_eq!(w.op(old_update).await.status, OperationStatus::Succeeded);
    let sweep = w.o.sweep_operations().await.expect("sweep");
    assert!(
        sweep.resumed.is_empty() && sweep.released.is_empty(),
        "{sweep:?}"
    );
    assert!(w
        .check(&Snapshot::default(), Level::Servers)
        .await
        .is_empty());
}

/// fogd dies while the agent rewinds the old primary (the agent acted; its reply never
/// arrived). The next fogd resumes `rejoin.rewind` under the same generation, the agent
/// answers with the report it kept, and the forced failover's `dataLoss` is reported.
#[tokio::test]
async fn a_rewind_whose_reply_died_with_fogd_still_reports_the_loss() {
    let mut w = World::build(true).await;
    w.prepare(Scenario::Rejoin).await;
    let east = w.uid("mi-east").await;
    // Calls from here on (the forced failover already tried to rewind mi-east, cut off).
    let from = w.sim.call_count();
    let rewinds = |w: &World| {
        w.sim.calls()[from..]
            .iter()
            .filter(|c| c.method == "rewind_and_follow")
            .map(|c| c.generation)
            .collect::<Vec<_>>()
    };
    w.sim
        .inject("rewind_and_follow", Some(&east), 1, Fault::ActThenHang);
    let op = w.health_starts_rejoin().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !w
        .sim
        .calls()
        .iter()
        .any(|c| c.method == "rewind_and_follow")
    {
        assert!(Instant::now() < deadline, "the rejoin never rewound");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The agent acted: mi-east follows mi-west; fogd never learnt what was lost.
    let srv = w.sim.server(&east).expect("east");
    assert!(!srv.is_primary(), "{srv:?}");
    let left = w.op(&op.id).await;
    assert_eq!(
        (left.status, left.step.as_str()),
        (OperationStatus::InProgress, "rejoin.rewind")
    );
    assert_eq!(
        w.group()
            .await
            .expect("group")
            .last_failover
            .and_then(|r| r.data_loss),
        None
    );

    w.restart().await;
    w.succeeded(&op.id).await;
    let asked = rewinds(&w);
    assert_eq!(asked.len(), 2, "the resumed step asked again: {asked:?}");
    assert_eq!(asked[0], asked[1], "under the same generation");
    let g = w.group().await.expect("group");
    let loss = g
        .last_failover
        .and_then(|r| r.data_loss)
        .expect("dataLoss reported");
    assert_eq!(loss.bytes, LOST_BYTES);
    // Announced once, as an event.
    let events = catalog::events(w.st(), &g.uid).await.expect("events");
    let announced: Vec<_> = events
        .iter()
        .filter(|e| e.kind == fog_model::health::EventKind::DataLoss)
        .filter(|e| e.message.contains(&format!("{LOST_BYTES} bytes")))
        .collect();
    assert_eq!(announced.len(), 1, "{events:?}");
    w.heal().await;
    assert!(w
        .check(&Snapshot::default(), Level::Healed)
        .await
        .is_empty());
}

/// Rewrites the store into the layout a fogd before group uids wrote: each group under
/// `failover-groups/{name}` (format 1, no uid), its members naming it, its observation,
/// events and listener ports keyed by name, no index keys.
async fn downgrade_to_name_keys(st: &dyn Store) {
    let envelope = |format: u32, data: &serde_json::Value| {
        serde_json::to_vec(&serde_json::json!({ "format": format, "data": data })).expect("json")
    };
    let data = |r: &Record| -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&r.value).expect("json")["data"].clone()
    };
    let mut writes = Vec::new();
    for r in st.range(catalog::GROUPS_PREFIX).await.expect("groups") {
        let mut g = data(&r);
        let uid = g["uid"].as_str().expect("uid").to_string();
        let name = g["name"].as_str().expect("name").to_string();
        let zone = g["dns_zone"].as_str().expect("zone").to_string();
        g.as_object_mut().expect("object").remove("uid");
        writes.push(Write::delete(r.key.clone(), Precondition::Any));
        writes.push(Write::put(
            format!("failover-groups/{name}"),
            envelope(1, &g),
            Precondition::Any,
        ));
        for prefix in ["failover-group-at/", "failover-group-dns/"] {
            for k in st.range(prefix).await.expect("index") {
                writes.push(Write::delete(k.key, Precondition::Any));
            }
        }
        for i in st.range("instances/").await.expect("instances") {
            let mut rec = data(&i);
            if rec["failover_group"] == uid.as_str() {
                rec["failover_group"] = name.clone().into();
                writes.push(Write::put(i.key, envelope(1, &rec), Precondition::Any));
            }
        }
        if let Some(o) = st
            .get(&catalog::observed_key(&uid))
            .await
            .expect("observed")
        {
            writes.push(Write::delete(o.key, Precondition::Any));
            writes.push(Write::put(
                format!("observed/failover-groups/{name}"),
                o.value,
                Precondition::Any,
            ));
        }
        for e in st
            .range(&catalog::events_prefix(&uid))
            .await
            .expect("events")
        {
            let suffix = e.key.rsplit('/').next().expect("suffix").to_string();
            writes.push(Write::delete(e.key, Precondition::Any));
            writes.push(Write::put(
                format!("events/{name}/{suffix}"),
                e.value,
                Precondition::Any,
            ));
        }
        let ports = catalog::listener_ports_key(&zone, &name);
        if let Some(p) = st.get(&ports).await.expect("ports") {
            writes.push(Write::delete(p.key, Precondition::Any));
            writes.push(Write::put(
                format!("listener-ports/{name}"),
                p.value,
                Precondition::Any,
            ));
        }
    }
    st.commit(writes).await.expect("downgrade");
}

/// A store written by a fogd before group uids (groups keyed by name, members naming their
/// group, observation, events and listener ports by name) is migrated at start-up, and an
/// operation it left unfinished — a planned failover whose payload names the group only —
/// resumes on the migrated group and finishes; a second migration changes nothing.
#[tokio::test]
async fn a_store_of_an_older_fogd_is_migrated_and_its_unfinished_failover_resumes() {
    let mut w = World::build(true).await;
    w.heal().await;
    w.o.observe_groups().await;
    assert!(
        catalog::observed(w.st(), &w.group().await.expect("group").uid)
            .await
            .expect("observed")
            .is_some()
    );
    let events_before = catalog::events(w.st(), &w.group().await.expect("group").uid)
        .await
        .expect("events")
        .len();
    assert!(events_before > 0);
    downgrade_to_name_keys(w.st()).await;
    // The older fogd had accepted a planned failover and died before its first step.
    let old_group = w
        .st()
        .get(&format!("failover-groups/{GROUP}"))
        .await
        .expect("read")
        .expect("old group");
    let mut g: serde_json::Value = serde_json::from_slice(&old_group.value).expect("json");
    let op_id = "00000000-0000-0000-0000-00000000f00d";
    g["data"]["active_operation"] = op_id.into();
    let op = serde_json::json!({"format": 1, "data": {
        "id": op_id, "kind": "InstanceFailoverGroup",
        "scope": {"subscription": SUB, "resource_group": "rg"}, "location": "westus",
        "api_version": API,
        "action": {"type": "FailoverGroup", "name": GROUP, "planned": true, "automatic": null},
        "status": "InProgress", "step": "failover.fence", "percent_complete": 0,
        "start_time": "2026-01-01T00:00:00Z", "end_time": null, "error": null, "attempts": 1
    }});
    w.st()
        .commit(vec![
            Write::put(
                old_group.key.clone(),
                serde_json::to_vec(&g).expect("json"),
                Precondition::Any,
            ),
            Write::put(
                catalog::operation_key(op_id),
                serde_json::to_vec(&op).expect("json"),
                Precondition::Absent,
            ),
        ])
        .await
        .expect("old operation");
    assert!(w.group().await.is_none(), "the old layout has no index");

    let report = fog_orchestrator::migrate::run(w.st())
        .await
        .expect("migrate");
    assert_eq!(report.groups, vec![GROUP.to_string()]);
    assert_eq!(report.events, events_before);
    let legacy = fog_model::failover_group::legacy_uid(GROUP);
    assert!(w
        .st()
        .get(&format!("failover-groups/{GROUP}"))
        .await
        .expect("read")
        .is_none());
    let g = w.group().await.expect("the group, found by its address");
    assert_eq!(g.uid, legacy);
    for name in ["mi-east", "mi-west"] {
        assert_eq!(
            w.instance(name)
                .await
                .expect("member")
                .failover_group
                .as_deref(),
            Some(legacy.as_str()),
            "{name}"
        );
    }
    assert!(catalog::observed(w.st(), &legacy)
        .await
        .expect("observed")
        .is_some());
    assert_eq!(
        catalog::events(w.st(), &legacy)
            .await
            .expect("events")
            .len(),
        events_before
    );
    assert!(w
        .st()
        .range(&format!("events/{GROUP}/"))
        .await
        .expect("old")
        .is_empty());
    assert!(catalog::listener_reservation(w.st(), &g.dns_zone, GROUP)
        .await
        .expect("ports")
        .is_some());
    assert_eq!(
        fog_orchestrator::migrate::run(w.st()).await.expect("again"),
        Default::default(),
        "a second migration changes nothing"
    );

    // A restarted orchestrator resumes the old operation on the migrated group.
    w.restart().await;
    w.succeeded(op_id).await;
    let g = w.group().await.expect("group");
    assert_eq!(
        g.primary.uid,
        w.uid("mi-west").await,
        "the failover happened"
    );
    assert_eq!(g.active_operation, None);
    w.heal().await;
    // And the group works as any other: a failover back through the API.
    let op =
        w.o.failover_group(&at("eastus"), GROUP, true, API)
            .await
            .expect("failover back");
    w.succeeded(&op.id).await;
    assert_eq!(
        w.group().await.expect("group").primary.uid,
        w.uid("mi-east").await
    );
}
