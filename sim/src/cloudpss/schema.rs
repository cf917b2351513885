//! The GraphQL schema of the simulated CloudPSS platform: types named and shaped as in the
//! vendor's schema reference, resolvers backed by [`Store`].

use super::{Caller, Failure, Issued, OTHER_USER, POLICIES, Policy, SimJob, Store};
use crate::{Lifecycle, SimState};
use async_graphql::{
    Context, EmptySubscription, Enum, ErrorExtensions, ID, InputObject, Interface, Object, Schema,
    SimpleObject, scalar,
};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The executable schema type.
pub type CloudpssSchema = Schema<Query, Mutation, EmptySubscription>;

/// Builds the schema with the shared simulator state and the CloudPSS store.
pub(crate) fn build_schema(state: Arc<SimState>, store: Arc<Store>) -> CloudpssSchema {
    Schema::build(Query, Mutation, EmptySubscription)
        .data(state)
        .data(store)
        .finish()
}

/// Arbitrary JSON object.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonObject(pub Map<String, Value>);
scalar!(JsonObject, "JSONObject", "An arbitrary JSON object.");

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);
scalar!(Timestamp, "Timestamp", "Milliseconds since the Unix epoch.");

/// An RFC 3339 date and time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DateTime(pub String);
scalar!(DateTime, "DateTime", "An RFC 3339 date and time.");

/// A resource id, `type/owner/key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResourceId(pub String);
scalar!(ResourceId, "ResourceId", "A resource id: type/owner/key.");

/// A signed token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonWebToken(pub String);
scalar!(JsonWebToken, "JsonWebToken", "A JSON Web Token.");

/// A query condition: a value, or `["or", value, …]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FindCondition(pub Value);
scalar!(
    FindCondition,
    "FindCondition",
    "Query condition field: a value, or [\"or\", value, ...]."
);

fn err(code: &'static str, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code))
}

fn count(ctx: &Context<'_>, field: &str) -> Result<Arc<Store>, async_graphql::Error> {
    let store = ctx.data::<Arc<Store>>()?.clone();
    *store.lock().ops.entry(field.to_string()).or_default() += 1;
    Ok(store)
}

fn config(ctx: &Context<'_>) -> Result<Arc<SimState>, async_graphql::Error> {
    Ok(ctx.data::<Arc<SimState>>()?.clone())
}

/// Looks a token up; `Err` is the UNAUTHENTICATED answer.
fn check_token(store: &Store, token: &str) -> Result<Issued, async_graphql::Error> {
    let inner = store.lock();
    match inner.tokens.get(token) {
        None => Err(err("UNAUTHENTICATED", "invalid token: please log in again")),
        Some(t) if t.expires <= Instant::now() => {
            Err(err("UNAUTHENTICATED", "token expired: please log in again"))
        }
        Some(t) => Ok(t.clone()),
    }
}

/// The calling user, from the bearer token.
fn caller(ctx: &Context<'_>, store: &Store) -> Result<Issued, async_graphql::Error> {
    match ctx.data_opt::<Caller>().and_then(|c| c.0.clone()) {
        None => Err(err(
            "UNAUTHENTICATED",
            "authentication required: send Authorization: Bearer <token>",
        )),
        Some(t) => check_token(store, &t),
    }
}

/// Parses a FindCondition into the accepted values (`None` = no condition).
fn condition(
    field: &str,
    c: &Option<FindCondition>,
) -> Result<Option<Vec<String>>, async_graphql::Error> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match c.as_ref().map(|c| &c.0) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) if items.first().and_then(Value::as_str) == Some("or") => items
            [1..]
            .iter()
            .map(|v| {
                scalar(v).ok_or_else(|| {
                    err(
                        "BAD_USER_INPUT",
                        format!("{field}: [\"or\", …] takes plain values"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(v) => match scalar(v) {
            Some(s) => Ok(Some(vec![s])),
            None => Err(err(
                "BAD_USER_INPUT",
                format!("{field}: unsupported condition {v}; use a value or [\"or\", value, …]"),
            )),
        },
    }
}

fn matches(cond: &Option<Vec<String>>, value: &str) -> bool {
    cond.as_ref()
        .is_none_or(|vals| vals.iter().any(|v| v == value))
}

/// Sort direction from an `orderBy` entry such as `createTime<`.
fn order(order_by: &[String], allowed: &[&str]) -> Result<bool, async_graphql::Error> {
    let Some(first) = order_by.first() else {
        return Err(err(
            "BAD_USER_INPUT",
            "orderBy must name at least one field",
        ));
    };
    let (field, descending) = match first.strip_suffix('<') {
        Some(f) => (f, true),
        None => (first.strip_suffix('>').unwrap_or(first), false),
    };
    if !allowed.contains(&field) {
        return Err(err(
            "BAD_USER_INPUT",
            format!(
                "cannot order by '{field}' (supported: {})",
                allowed.join(", ")
            ),
        ));
    }
    Ok(descending)
}

/// Most items one page carries, whatever `limit` asks for: the platform caps its pages, and a
/// client that takes a short page for the last one misses jobs.
pub const MAX_PAGE: usize = 50;

fn page_limit(limit: Option<i32>) -> Result<usize, async_graphql::Error> {
    match limit {
        None => Ok(20),
        Some(l) if l < 1 => Err(err(
            "BAD_USER_INPUT",
            format!("limit must be positive, got {l}"),
        )),
        Some(l) => Ok((l as usize).min(MAX_PAGE)),
    }
}

/// Parses a cursor `[createTime, seq?]` into a comparable key.
fn cursor_key(
    cursor: &Option<Vec<String>>,
) -> Result<Option<(i64, Option<u64>)>, async_graphql::Error> {
    let Some(c) = cursor.as_ref().filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let bad = || err("BAD_USER_INPUT", format!("invalid cursor {c:?}"));
    let ms = c[0].parse::<i64>().map_err(|_| bad())?;
    let seq = match c.get(1) {
        Some(s) => Some(s.parse::<u64>().map_err(|_| bad())?),
        None => None,
    };
    Ok(Some((ms, seq)))
}

/// The kind of account.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountType {
    /// A person.
    User,
    /// An organisation.
    Organization,
}

/// Ways to answer an account challenge.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountChallengeType {
    /// Password.
    Password,
    /// E-mail code.
    Email,
    /// SMS code.
    Sms,
    /// One-time password.
    Totp,
    /// WeChat.
    Wechat,
    /// WebAuthn.
    Webauthn,
}

/// Status of a job.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting in the queue.
    Waiting,
    /// Running.
    Running,
    /// Exceeded its maximum duration.
    TimedOut,
    /// Failed.
    Failed,
    /// Completed.
    Completed,
    /// Abort requested.
    Aborting,
    /// Aborted while running.
    Aborted,
    /// Killed.
    Killed,
    /// Canceled before it started.
    Canceled,
}

impl JobStatus {
    fn from_native(s: &str) -> Self {
        match s {
            "WAITING" => JobStatus::Waiting,
            "RUNNING" => JobStatus::Running,
            "TIMED_OUT" => JobStatus::TimedOut,
            "FAILED" => JobStatus::Failed,
            "COMPLETED" => JobStatus::Completed,
            "ABORTING" => JobStatus::Aborting,
            "ABORTED" => JobStatus::Aborted,
            "KILLED" => JobStatus::Killed,
            _ => JobStatus::Canceled,
        }
    }
}

/// A user account.
#[derive(SimpleObject, Debug, Clone)]
pub struct AccountUser {
    /// Login name.
    pub name: String,
    /// Display name.
    pub display_name: String,
    /// Account type.
    #[graphql(name = "type")]
    pub kind: AccountType,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Biography.
    pub bio: Option<String>,
    /// Company.
    pub company: Option<String>,
}

impl AccountUser {
    fn named(name: &str) -> Self {
        AccountUser {
            name: name.to_string(),
            display_name: if name == OTHER_USER {
                "CloudPSS".into()
            } else {
                format!("{name} (jobctl-sim)")
            },
            kind: AccountType::User,
            email: Some(format!("{name}@example.invalid")),
            phone: None,
            bio: None,
            company: Some("jobctl-sim".into()),
        }
    }
}

/// Any account.
// The derive's repeated `field(…)` entries look like duplicated attributes to clippy.
#[allow(clippy::duplicated_attributes)]
#[derive(Interface, Debug, Clone)]
#[graphql(
    field(name = "name", ty = "&String"),
    field(name = "display_name", ty = "&String"),
    field(name = "type", method = "kind", ty = "&AccountType")
)]
pub enum Account {
    /// A user.
    AccountUser(AccountUser),
}

/// System information.
#[derive(SimpleObject, Debug, Clone)]
pub struct SystemInfo {
    /// Identifier of the server installation.
    pub machine_id: String,
}

/// One way to answer a challenge.
#[derive(SimpleObject, Debug, Clone)]
pub struct AccountChallengeItem {
    /// Item id, echoed in the answer.
    pub id: ID,
    /// Kind of answer expected.
    #[graphql(name = "type")]
    pub kind: AccountChallengeType,
    /// Item-specific data.
    pub data: JsonObject,
}

/// A group of items of which `required` must be answered.
#[derive(SimpleObject, Debug, Clone)]
pub struct AccountChallengeGroup {
    /// How many items must be answered.
    pub required: i32,
    /// The items.
    pub items: Vec<AccountChallengeItem>,
}

/// A login challenge.
#[derive(SimpleObject, Debug, Clone)]
pub struct AccountChallenge {
    /// Challenge id.
    pub id: ID,
    /// The account, when the platform reveals it.
    pub user: Option<AccountUser>,
    /// Groups of ways to answer.
    pub groups: Vec<AccountChallengeGroup>,
}

/// An issued token.
#[derive(SimpleObject, Debug, Clone)]
pub struct AccountToken {
    /// The token.
    pub token: JsonWebToken,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Roles granted.
    pub roles: Vec<String>,
    /// When it expires.
    pub expiration_time: DateTime,
    /// Key that verifies the token's signature.
    pub public_key: String,
    /// The account.
    pub user: AccountUser,
}

/// An application resource.
#[derive(SimpleObject, Debug, Clone)]
pub struct Application {
    /// Resource id.
    pub rid: ResourceId,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Owner.
    pub owner: String,
    /// Last update.
    pub updated_at: Timestamp,
    /// Tags.
    pub tags: Vec<String>,
}

/// A page of applications.
#[derive(SimpleObject, Debug, Clone)]
pub struct Applications {
    /// Items of this page.
    pub items: Vec<Application>,
    /// Position of the last item.
    pub cursor: Vec<String>,
    /// Items in this page.
    pub count: i32,
    /// Items remaining, this page included.
    pub total: i32,
}

/// Resources of a job.
#[derive(SimpleObject, Debug, Clone)]
pub struct JobTres {
    /// CPUs.
    pub cpu: i32,
    /// Equivalent CPUs.
    pub ecpu: f64,
    /// Memory in MB.
    pub mem: f64,
}

/// The policy a job ran under.
#[derive(SimpleObject, Debug, Clone)]
pub struct JobPolicySnapshot {
    /// Policy name.
    pub name: String,
    /// Queue id.
    pub queue: String,
    /// Resources.
    pub tres: JobTres,
    /// Priority.
    pub priority: f64,
    /// Maximum duration in seconds.
    pub max_duration: f64,
}

/// The machine a job runs on.
#[derive(SimpleObject, Debug, Clone)]
pub struct JobMachine {
    /// Machine id.
    pub id: ID,
    /// Machine name.
    pub name: String,
    /// Its resources.
    pub tres: JobTres,
    /// Whether it is usable.
    pub valid: bool,
}

/// A job.
#[derive(SimpleObject, Debug, Clone)]
pub struct Job {
    /// Job id.
    pub id: ID,
    /// Execution arguments.
    pub args: JsonObject,
    /// Creation time.
    pub create_time: Timestamp,
    /// Start time.
    pub start_time: Option<Timestamp>,
    /// End time.
    pub end_time: Option<Timestamp>,
    /// Status.
    pub status: JobStatus,
    /// Context resources; the first is the function executed.
    pub context: Vec<ResourceId>,
    /// Executing user.
    pub user: String,
    /// Priority.
    pub priority: f64,
    /// Policy snapshot.
    pub policy: Option<JobPolicySnapshot>,
    /// Machine.
    pub machine: Option<JobMachine>,
    /// Input stream token.
    pub input: ID,
    /// Output stream id.
    pub output: ID,
    /// Debug arguments.
    pub debug: Option<JsonObject>,
    /// Position in the queue while waiting.
    pub position: Option<i32>,
}

fn machine(tres: (i32, f64, f64)) -> JobMachine {
    JobMachine {
        id: ID::from("sim-node-1"),
        name: "jobctl-sim node 1".into(),
        tres: JobTres {
            cpu: tres.0.max(64),
            ecpu: tres.1,
            mem: tres.2.max(262144.0),
        },
        valid: true,
    }
}

fn view(job: &SimJob, all: &[SimJob], now: Instant) -> Job {
    let status = job.status(now);
    let position = (status == "WAITING").then(|| {
        let ahead = all
            .iter()
            .filter(|o| o.queue == job.queue && o.seq < job.seq && o.status(now) == "WAITING")
            .count();
        ahead as i32 + 1
    });
    let start = job.start_ms();
    Job {
        id: ID::from(job.id.clone()),
        args: JsonObject(job.args.clone()),
        create_time: Timestamp(job.create_ms()),
        start_time: start.map(Timestamp),
        end_time: job.end_ms().map(Timestamp),
        status: JobStatus::from_native(status),
        context: job.context.iter().cloned().map(ResourceId).collect(),
        user: job.user.clone(),
        priority: job.priority,
        policy: Some(JobPolicySnapshot {
            name: job.policy_name.clone(),
            queue: job.queue.to_string(),
            tres: JobTres {
                cpu: job.tres.0,
                ecpu: job.tres.1,
                mem: job.tres.2,
            },
            priority: job.priority,
            max_duration: job.max_duration,
        }),
        machine: start.map(|_| machine(job.tres)),
        input: ID::from(job.input.clone()),
        output: ID::from(job.output.clone()),
        debug: job.debug.clone().map(JsonObject),
        position,
    }
}

/// A page of jobs.
#[derive(SimpleObject, Debug, Clone)]
pub struct Jobs {
    /// Items of this page.
    pub items: Vec<Job>,
    /// Position of the last item; pass it back as `input.cursor` for the next page.
    pub cursor: Vec<String>,
    /// Items in this page.
    pub count: i32,
    /// Items remaining, this page included.
    pub total: i32,
}

/// A queue.
#[derive(SimpleObject, Debug, Clone)]
pub struct JobQueue {
    /// Queue id.
    pub id: i32,
    /// Name.
    pub name: String,
    /// Scheduler settings.
    pub scheduler: JsonObject,
    /// Machines.
    pub machines: Vec<JobMachine>,
    /// Creation time.
    pub create_time: Timestamp,
    /// Last update.
    pub update_time: Timestamp,
    /// Current load.
    pub load: f64,
}

/// A policy: who may run what, where, with which resources.
#[derive(SimpleObject, Debug, Clone)]
pub struct JobPolicy {
    /// Policy id.
    pub id: i32,
    /// Name.
    pub name: String,
    /// Users allowed (empty: everyone).
    pub users: Vec<String>,
    /// Functions allowed (empty: all).
    pub functions: Vec<String>,
    /// Resource limits.
    pub tres: Vec<JobTres>,
    /// Lowest priority.
    pub min_priority: f64,
    /// Highest priority.
    pub max_priority: f64,
    /// Maximum duration in seconds.
    pub max_duration: f64,
    /// Creation time.
    pub create_time: Timestamp,
    /// Last update.
    pub update_time: Timestamp,
    /// Visibility.
    pub visibility: String,
    /// The queue.
    pub queue: JobQueue,
}

/// A page of policies.
#[derive(SimpleObject, Debug, Clone)]
pub struct JobPolicies {
    /// Items of this page.
    pub items: Vec<JobPolicy>,
    /// Position of the last item.
    pub cursor: Vec<String>,
    /// Items in this page.
    pub count: i32,
    /// Items remaining, this page included.
    pub total: i32,
}

/// Input of `accountChallenge`.
#[derive(InputObject, Debug)]
pub struct AccountChallengeInput {
    /// Account name.
    pub name: String,
    /// Scopes the token should have.
    pub scopes: Option<Vec<String>>,
}

/// One answer to a challenge item.
#[derive(InputObject, Debug)]
pub struct AccountChallengeAnswerInput {
    /// Item id.
    pub id: ID,
    /// The answer; `{password}` for a PASSWORD item.
    pub answer: JsonObject,
}

/// Input of `createAccountToken`.
#[derive(InputObject, Debug)]
pub struct CreateAccountTokenInput {
    /// Challenge id.
    pub id: ID,
    /// Answers.
    pub answers: Vec<AccountChallengeAnswerInput>,
    /// Requested expiry.
    pub expiration_time: Option<DateTime>,
}

/// Input of `accountToken`.
#[derive(InputObject, Debug)]
pub struct AccountTokenInput {
    /// Token to inspect (default: the caller's).
    pub token: Option<String>,
    /// Signature (unused by the simulator).
    pub sign: Option<String>,
}

/// Input of `account`.
#[derive(InputObject, Debug)]
pub struct AccountInput {
    /// Account name.
    pub name: String,
    /// Account type.
    #[graphql(name = "type")]
    pub kind: Option<AccountType>,
}

/// Input of `applications`.
#[derive(InputObject, Debug)]
pub struct ApplicationsInput {
    /// Ordering, e.g. `["updatedAt>"]`.
    pub order_by: Vec<String>,
    /// Cursor from the previous page.
    pub cursor: Option<Vec<String>>,
    /// Page size.
    pub limit: Option<i32>,
    /// Owner condition.
    pub owner: Option<FindCondition>,
}

/// Input of `job`.
#[derive(InputObject, Debug)]
pub struct JobInput {
    /// Job id.
    pub id: ID,
}

/// Input of `jobs`.
#[derive(InputObject, Debug)]
pub struct JobsInput {
    /// Ordering, e.g. `["createTime<"]` (required).
    pub order_by: Vec<String>,
    /// Cursor from the previous page.
    pub cursor: Option<Vec<String>>,
    /// Page size (default 20, at most 100).
    pub limit: Option<i32>,
    /// Context condition.
    pub context: Option<FindCondition>,
    /// User condition.
    pub user: Option<FindCondition>,
    /// Status condition.
    pub status: Option<FindCondition>,
    /// Id condition.
    pub id: Option<FindCondition>,
    /// Creation time condition.
    pub create_time: Option<FindCondition>,
}

/// Resources requested.
#[derive(InputObject, Debug)]
pub struct JobTresInput {
    /// CPUs.
    pub cpu: i32,
    /// Equivalent CPUs.
    pub ecpu: f64,
    /// Memory in MB.
    pub mem: f64,
}

/// Execution policy requested.
#[derive(InputObject, Debug)]
pub struct JobExecutionPolicyInput {
    /// Queue id.
    pub queue: i32,
    /// Resources.
    pub tres: Option<JobTresInput>,
    /// Priority.
    pub priority: f64,
}

/// Input of `createJob`.
#[derive(InputObject, Debug)]
pub struct CreateJobInput {
    /// Context resources; the first is the function to execute.
    pub context: Vec<ResourceId>,
    /// Arguments.
    pub args: JsonObject,
    /// Execution policy.
    pub policy: Option<JobExecutionPolicyInput>,
    /// Debug arguments.
    pub debug: Option<JsonObject>,
}

/// Input of `abortJob`.
#[derive(InputObject, Debug)]
pub struct AbortJobInput {
    /// Job id.
    pub id: ID,
    /// Seconds to wait for the job to stop.
    pub timeout: f64,
}

/// Input of `jobPolicies`.
#[derive(InputObject, Debug)]
pub struct JobPoliciesInput {
    /// Ordering (required).
    pub order_by: Vec<String>,
    /// Cursor.
    pub cursor: Option<Vec<String>>,
    /// Page size.
    pub limit: Option<i32>,
    /// User condition.
    pub user: Option<FindCondition>,
    /// Function condition.
    pub function: Option<FindCondition>,
    /// Queue condition.
    pub queue: Option<FindCondition>,
}

fn boot_ms() -> i64 {
    // A fixed, plausible creation time for the static catalogue.
    1_735_689_600_000
}

fn applications_catalogue() -> Vec<Application> {
    [
        ("application/CloudPSS/hello-app", "Hello", "Says hello."),
        (
            "application/CloudPSS/powerflow",
            "Power flow",
            "Runs a power flow study.",
        ),
        (
            "application/CloudPSS/emtp",
            "EMT simulation",
            "Runs an electromagnetic transient study.",
        ),
    ]
    .iter()
    .enumerate()
    .map(|(i, (rid, name, desc))| Application {
        rid: ResourceId(rid.to_string()),
        name: name.to_string(),
        description: desc.to_string(),
        owner: OTHER_USER.into(),
        updated_at: Timestamp(boot_ms() + i as i64 * 60_000),
        tags: vec!["demo".into()],
    })
    .collect()
}

fn policy_view(p: &Policy) -> JobPolicy {
    JobPolicy {
        id: p.id,
        name: p.name.into(),
        users: vec![],
        functions: vec![],
        tres: vec![JobTres {
            cpu: p.max_cpu,
            ecpu: p.max_cpu as f64,
            mem: p.max_mem,
        }],
        min_priority: p.min_priority,
        max_priority: p.max_priority,
        max_duration: p.max_duration,
        create_time: Timestamp(boot_ms()),
        update_time: Timestamp(boot_ms()),
        visibility: "public".into(),
        queue: JobQueue {
            id: p.id,
            name: p.name.into(),
            scheduler: JsonObject(Map::new()),
            machines: vec![machine((p.max_cpu, 0.0, p.max_mem))],
            create_time: Timestamp(boot_ms()),
            update_time: Timestamp(boot_ms()),
            load: 0.0,
        },
    }
}

/// A JWT-shaped token: the payload carries `sub` and `exp`, like the platform's.
pub(crate) fn issue_token(user: &str, exp: chrono::DateTime<chrono::Utc>) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64.encode(
        serde_json::json!({"sub": user, "exp": exp.timestamp(), "iss": "jobctl-sim"}).to_string(),
    );
    let sig = b64.encode(uuid::Uuid::new_v4().as_bytes());
    format!("{header}.{payload}.{sig}")
}

fn token_view(token: &str, issued: &Issued) -> AccountToken {
    AccountToken {
        token: JsonWebToken(token.to_string()),
        scopes: vec!["*".into()],
        roles: vec!["user".into()],
        expiration_time: DateTime(
            issued
                .expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ),
        public_key: "jobctl-sim-public-key".into(),
        user: AccountUser::named(&issued.user),
    }
}

/// Root queries.
pub struct Query;

#[Object]
impl Query {
    /// Information about the server; needs no authentication.
    async fn system_info(&self, ctx: &Context<'_>) -> async_graphql::Result<SystemInfo> {
        count(ctx, "systemInfo")?;
        Ok(SystemInfo {
            machine_id: "jobctl-sim".into(),
        })
    }

    /// Starts a login: the ways the account may prove who it is.
    async fn account_challenge(
        &self,
        ctx: &Context<'_>,
        input: AccountChallengeInput,
    ) -> async_graphql::Result<AccountChallenge> {
        let store = count(ctx, "accountChallenge")?;
        let state = config(ctx)?;
        let id = uuid::Uuid::new_v4().to_string();
        let item = uuid::Uuid::new_v4().simple().to_string();
        store
            .lock()
            .challenges
            .insert(id.clone(), (input.name.clone(), item.clone()));
        // Unknown names get a challenge too, so the answer does not reveal which accounts exist.
        let known = input.name == state.config.username;
        Ok(AccountChallenge {
            id: ID::from(id),
            user: known.then(|| AccountUser::named(&input.name)),
            groups: vec![AccountChallengeGroup {
                required: 1,
                items: vec![AccountChallengeItem {
                    id: ID::from(item),
                    kind: AccountChallengeType::Password,
                    data: JsonObject(Map::new()),
                }],
            }],
        })
    }

    /// Describes a token (default: the caller's).
    async fn account_token(
        &self,
        ctx: &Context<'_>,
        input: AccountTokenInput,
    ) -> async_graphql::Result<AccountToken> {
        let store = count(ctx, "accountToken")?;
        let token = input
            .token
            .or_else(|| ctx.data_opt::<Caller>().and_then(|c| c.0.clone()))
            .ok_or_else(|| err("UNAUTHENTICATED", "authentication required"))?;
        let issued = check_token(&store, &token)?;
        Ok(token_view(&token, &issued))
    }

    /// An account by name.
    async fn account(
        &self,
        ctx: &Context<'_>,
        input: AccountInput,
    ) -> async_graphql::Result<Option<Account>> {
        let store = count(ctx, "account")?;
        caller(ctx, &store)?;
        let state = config(ctx)?;
        if input.kind.is_some_and(|k| k != AccountType::User) {
            return Ok(None);
        }
        let known = input.name == state.config.username || input.name == OTHER_USER;
        Ok(known.then(|| Account::AccountUser(AccountUser::named(&input.name))))
    }

    /// Applications visible to the caller.
    async fn applications(
        &self,
        ctx: &Context<'_>,
        input: ApplicationsInput,
    ) -> async_graphql::Result<Applications> {
        let store = count(ctx, "applications")?;
        caller(ctx, &store)?;
        let descending = order(&input.order_by, &["updatedAt", "name"])?;
        let owner = condition("owner", &input.owner)?;
        let limit = page_limit(input.limit)?;
        let mut all: Vec<Application> = applications_catalogue()
            .into_iter()
            .filter(|a| matches(&owner, &a.owner))
            .collect();
        if descending {
            all.reverse();
        }
        let start = input
            .cursor
            .as_ref()
            .and_then(|c| c.first())
            .and_then(|c| c.parse::<usize>().ok())
            .unwrap_or(0)
            .min(all.len());
        let remaining = &all[start..];
        let items: Vec<Application> = remaining.iter().take(limit).cloned().collect();
        Ok(Applications {
            cursor: vec![(start + items.len()).to_string()],
            count: items.len() as i32,
            total: remaining.len() as i32,
            items,
        })
    }

    /// One job, or null when there is no such job.
    async fn job(&self, ctx: &Context<'_>, input: JobInput) -> async_graphql::Result<Option<Job>> {
        let store = count(ctx, "job")?;
        caller(ctx, &store)?;
        let inner = store.lock();
        let now = Instant::now();
        Ok(inner
            .jobs
            .iter()
            .find(|j| j.id == input.id.as_str())
            .map(|j| view(j, &inner.jobs, now)))
    }

    /// A page of jobs matching the conditions.
    async fn jobs(&self, ctx: &Context<'_>, input: JobsInput) -> async_graphql::Result<Jobs> {
        let store = count(ctx, "jobs")?;
        caller(ctx, &store)?;
        let descending = order(&input.order_by, &["createTime"])?;
        let limit = config(ctx)?.config.page_cap(page_limit(input.limit)?);
        let after = cursor_key(&input.cursor)?;
        let user = condition("user", &input.user)?;
        let id = condition("id", &input.id)?;
        let status = condition("status", &input.status)?;
        let context = condition("context", &input.context)?;
        let created = condition("createTime", &input.create_time)?;
        let inner = store.lock();
        let now = Instant::now();
        let mut hits: Vec<&SimJob> = inner
            .jobs
            .iter()
            .filter(|j| {
                matches(&user, &j.user)
                    && matches(&id, &j.id)
                    && matches(&status, j.status(now))
                    && matches(&created, &j.create_ms().to_string())
                    && context
                        .as_ref()
                        .is_none_or(|c| j.context.iter().any(|r| c.contains(r)))
            })
            .collect();
        hits.sort_by_key(|j| (j.create_ms(), j.seq));
        if descending {
            hits.reverse();
        }
        if let Some((ms, seq)) = after {
            // Keep what sorts strictly after the cursor.
            hits.retain(|j| {
                let key = (j.create_ms(), j.seq);
                let c = (ms, seq.unwrap_or(if descending { 0 } else { u64::MAX }));
                if seq.is_none() {
                    if descending { key.0 < ms } else { key.0 > ms }
                } else if descending {
                    key < c
                } else {
                    key > c
                }
            });
        }
        let total = hits.len();
        let page: Vec<&SimJob> = hits.into_iter().take(limit).collect();
        let cursor = match page.last() {
            Some(j) => vec![j.create_ms().to_string(), j.seq.to_string()],
            None => input.cursor.clone().unwrap_or_default(),
        };
        Ok(Jobs {
            items: page.iter().map(|j| view(j, &inner.jobs, now)).collect(),
            cursor,
            count: page.len() as i32,
            total: total as i32,
        })
    }

    /// Policies (queues and limits) the caller may submit to.
    async fn job_policies(
        &self,
        ctx: &Context<'_>,
        input: JobPoliciesInput,
    ) -> async_graphql::Result<JobPolicies> {
        let store = count(ctx, "jobPolicies")?;
        caller(ctx, &store)?;
        let descending = order(&input.order_by, &["id", "name", "createTime"])?;
        let queue = condition("queue", &input.queue)?;
        condition("user", &input.user)?;
        condition("function", &input.function)?;
        let limit = page_limit(input.limit)?;
        let mut items: Vec<JobPolicy> = POLICIES
            .iter()
            .filter(|p| matches(&queue, &p.id.to_string()))
            .map(policy_view)
            .collect();
        if descending {
            items.reverse();
        }
        let start = input
            .cursor
            .as_ref()
            .and_then(|c| c.first())
            .and_then(|c| c.parse::<usize>().ok())
            .unwrap_or(0)
            .min(items.len());
        let total = items.len() - start;
        let page: Vec<JobPolicy> = items.into_iter().skip(start).take(limit).collect();
        Ok(JobPolicies {
            cursor: vec![(start + page.len()).to_string()],
            count: page.len() as i32,
            total: total as i32,
            items: page,
        })
    }
}

/// Root mutations.
pub struct Mutation;

#[Object]
impl Mutation {
    /// Answers a challenge and issues a token.
    async fn create_account_token(
        &self,
        ctx: &Context<'_>,
        input: CreateAccountTokenInput,
    ) -> async_graphql::Result<AccountToken> {
        let store = count(ctx, "createAccountToken")?;
        let state = config(ctx)?;
        let challenge = store.lock().challenges.get(input.id.as_str()).cloned();
        let Some((name, item)) = challenge else {
            return Err(err(
                "FORBIDDEN",
                "unknown or expired challenge; start the login again",
            ));
        };
        let password = input
            .answers
            .iter()
            .find(|a| a.id.as_str() == item)
            .and_then(|a| a.answer.0.get("password"))
            .and_then(Value::as_str);
        if name != state.config.username || password != Some(state.config.password.as_str()) {
            return Err(err("FORBIDDEN", "invalid user name or password"));
        }
        let ttl = chrono::Duration::from_std(state.config.token_ttl)
            .unwrap_or_else(|_| chrono::Duration::hours(1));
        let mut expires_at = chrono::Utc::now() + ttl;
        if let Some(requested) = input
            .expiration_time
            .as_ref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t.0).ok())
        {
            expires_at = expires_at.min(requested.with_timezone(&chrono::Utc));
        }
        let left = (expires_at - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        let issued = Issued {
            user: name.clone(),
            expires: Instant::now() + left,
            expires_at,
        };
        let token = issue_token(&name, expires_at);
        store.lock().tokens.insert(token.clone(), issued.clone());
        Ok(token_view(&token, &issued))
    }

    /// Submits a job running the function named first in `context`.
    async fn create_job(
        &self,
        ctx: &Context<'_>,
        input: CreateJobInput,
    ) -> async_graphql::Result<Job> {
        let store = count(ctx, "createJob")?;
        let user = caller(ctx, &store)?;
        let state = config(ctx)?;
        let function = input
            .context
            .first()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let parts: Vec<&str> = function.split('/').collect();
        if parts.len() != 3 || parts[0] != "function" || parts.iter().any(|p| p.is_empty()) {
            return Err(err(
                "BAD_USER_INPUT",
                format!(
                    "context[0] must be the resource id of a function (function/OWNER/KEY), got '{function}'"
                ),
            ));
        }
        let (queue, tres, priority) = match &input.policy {
            None => (1, (1, 0.0, 0.0), 0.0),
            Some(p) => (
                p.queue,
                p.tres
                    .as_ref()
                    .map_or((1, 0.0, 0.0), |t| (t.cpu, t.ecpu, t.mem)),
                p.priority,
            ),
        };
        let Some(policy) = POLICIES.iter().find(|p| p.id == queue) else {
            return Err(err(
                "BAD_USER_INPUT",
                format!("queue {queue} does not exist"),
            ));
        };
        if tres.0 < 0 || tres.1 < 0.0 || tres.2 < 0.0 {
            return Err(err("BAD_USER_INPUT", "tres values must not be negative"));
        }
        if !(policy.min_priority..=policy.max_priority).contains(&priority) {
            return Err(err(
                "BAD_USER_INPUT",
                format!(
                    "priority {priority} is outside [{}, {}] of queue {queue}",
                    policy.min_priority, policy.max_priority
                ),
            ));
        }
        if tres.0 > policy.max_cpu || tres.2 > policy.max_mem {
            return Err(err(
                "QUOTA_EXCEEDED",
                format!(
                    "queue {queue} ({}) allows at most {} cpu and {} MB; requested {} cpu and {} MB",
                    policy.name, policy.max_cpu, policy.max_mem, tres.0, tres.2
                ),
            ));
        }
        let mut plan = state.plan(&input.args.0);
        let failure = match input.args.0.get("sim_outcome").and_then(Value::as_str) {
            Some("timeout" | "timed_out" | "TIMED_OUT") => Failure::TimedOut,
            Some("killed" | "kill" | "KILLED") => Failure::Killed,
            _ => Failure::Failed,
        };
        if failure != Failure::Failed {
            plan.succeed = false;
        }
        state.record_job(
            "cloudpss",
            &serde_json::to_string(&input.args.0).unwrap_or_default(),
        );
        let mut inner = store.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let job = SimJob {
            seq,
            id: uuid::Uuid::new_v4().to_string(),
            user: user.user,
            context: input.context.into_iter().map(|r| r.0).collect(),
            args: input.args.0,
            queue,
            policy_name: policy.name.into(),
            tres,
            priority,
            max_duration: policy.max_duration,
            debug: input.debug.map(|d| d.0),
            life: Lifecycle::new(plan),
            failure,
            input: uuid::Uuid::new_v4().to_string(),
            output: uuid::Uuid::new_v4().to_string(),
        };
        inner.jobs.push(job);
        let now = Instant::now();
        let job = &inner.jobs[inner.jobs.len() - 1];
        Ok(view(job, &inner.jobs, now))
    }

    /// Asks a job to stop: ABORTING for up to `timeout` seconds, then ABORTED (CANCELED when
    /// it had not started). A job that already ended is returned unchanged.
    async fn abort_job(
        &self,
        ctx: &Context<'_>,
        input: AbortJobInput,
    ) -> async_graphql::Result<Option<Job>> {
        let store = count(ctx, "abortJob")?;
        let user = caller(ctx, &store)?;
        if !input.timeout.is_finite() || input.timeout < 0.0 {
            return Err(err(
                "BAD_USER_INPUT",
                format!(
                    "timeout must be a non-negative number of seconds, got {}",
                    input.timeout
                ),
            ));
        }
        let mut inner = store.lock();
        let now = Instant::now();
        let Some(idx) = inner.jobs.iter().position(|j| j.id == input.id.as_str()) else {
            return Err(err(
                "NOT_FOUND",
                format!("job {} not found", input.id.as_str()),
            ));
        };
        let job = &mut inner.jobs[idx];
        if job.user != user.user {
            return Err(err(
                "FORBIDDEN",
                format!(
                    "job {} belongs to {}; you may not abort it",
                    job.id, job.user
                ),
            ));
        }
        if job.status(now) == "WAITING" {
            // Nothing runs yet: cancellation is immediate.
            job.life.cancel_delay = Duration::ZERO;
        } else {
            job.life.cancel_delay =
                Duration::from_secs_f64(input.timeout).min(Duration::from_millis(300));
        }
        job.life.cancel();
        Ok(Some(view(&inner.jobs[idx], &inner.jobs, now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimConfig;

    fn schema() -> CloudpssSchema {
        let state = SimState::new(SimConfig::default());
        let store = Arc::new(Store::new());
        build_schema(state, store)
    }

    #[test]
    fn find_conditions_accept_or_lists_and_values() {
        let c = |v: Value| condition("f", &Some(FindCondition(v)));
        assert_eq!(
            c(serde_json::json!(["or", "a", 1])).unwrap(),
            Some(vec!["a".to_string(), "1".to_string()])
        );
        assert_eq!(
            c(serde_json::json!("x")).unwrap(),
            Some(vec!["x".to_string()])
        );
        assert!(c(serde_json::json!({"$gt": 1})).is_err());
        assert_eq!(condition("f", &None).unwrap(), None);
    }

    #[tokio::test]
    async fn errors_carry_a_code_and_jobs_needs_order_by() {
        let s = schema();
        let r = s
            .execute("{ jobs(input: {orderBy: [\"createTime<\"]}) { total } }")
            .await;
        let e = &r.errors[0];
        assert!(e.message.contains("authentication required"), "{e:?}");
        let code = e.extensions.as_ref().and_then(|x| x.get("code")).cloned();
        assert_eq!(code, Some(async_graphql::Value::from("UNAUTHENTICATED")));
        let r = s.execute("{ jobs(input: {limit: 1}) { total } }").await;
        assert!(r.errors[0].message.contains("orderBy"), "{:?}", r.errors);
    }
}
