//! A recorded history of memory operations and a checker, in the spirit of Jepsen's.
//!
//! Clients record every operation with when it was invoked and when it completed, and its
//! outcome: `Ok` (acknowledged, with what was read), `Failed` (certainly not applied: a 4xx, or
//! a 503 that says nothing was stored) or `Unknown` (no answer, or an answer that says the
//! outcome is unknown: it may or may not have been applied, at any time after its invocation).
//!
//! Every write names a unique value (`content` tokens, `importance` numbers), so a read says
//! which write it saw. The model of one memory is a register per field, and deletion is final.
//! The checker finds:
//! - **lost writes**: once the system is quiet, a field holds a value that is not from one of
//!   the newest writes (a write W' acknowledged strictly after W completed hides W), or a
//!   memory whose delete was acknowledged can still be read;
//! - **stale reads**: a read that returns W's value although a write W' completed before the
//!   read began and W completed before W' began;
//! - **resurrections**: a memory read after its acknowledged delete completed;
//! - **vanished memories**: a memory not found although its create completed before the read
//!   began and no delete of it had begun before the read completed;
//! - **phantoms**: a value no write of that memory ever carried;
//! - **unsettled**: a memory not `ready` once the system is quiet.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// Nanoseconds since the start of the run.
pub type Time = u64;

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<T> {
    Ok(T),
    Failed,
    Unknown,
}

/// One field's value as a write sets it or a read shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Number(f64),
}

impl Value {
    fn same(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Text(a), Value::Text(b)) => a == b,
            (Value::Number(a), Value::Number(b)) => (a - b).abs() < 1e-9,
            _ => false,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Text(text) => write!(f, "{text:?}"),
            Value::Number(number) => write!(f, "{number}"),
        }
    }
}

/// What a read of one memory returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    NotFound,
    Found(BTreeMap<String, Value>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A create with its fields; `Ok` carries nothing (the id is the event's).
    Create(BTreeMap<String, Value>),
    /// A PATCH of some fields.
    Update(BTreeMap<String, Value>),
    Delete,
    /// A read of the memory by a GET.
    Read(Read),
    /// The memory's row in a search's results.
    Found(Read),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub client: usize,
    /// The memory; for a create whose answer never came, unknown and not recorded.
    pub memory: String,
    pub op: Op,
    pub invoked: Time,
    pub completed: Time,
    pub outcome: Outcome<()>,
}

/// Everything the checker found, by kind.
#[derive(Debug, Default)]
pub struct Report {
    pub operations: usize,
    pub memories: usize,
    pub anomalies: BTreeMap<&'static str, Vec<String>>,
}

impl Report {
    pub fn count(&self) -> usize {
        self.anomalies.values().map(Vec::len).sum()
    }

    fn add(&mut self, kind: &'static str, detail: String) {
        self.anomalies.entry(kind).or_default().push(detail);
    }

    /// A summary: counts per kind and the first few of each.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} operations on {} memories, {} anomalies",
            self.operations,
            self.memories,
            self.count()
        );
        for (kind, details) in &self.anomalies {
            let _ = write!(text, "\n  {kind}: {}", details.len());
            for detail in details.iter().take(5) {
                let _ = write!(text, "\n    {detail}");
            }
        }
        text
    }
}

/// A write of one field, as the checker sees it.
#[derive(Debug, Clone)]
struct FieldWrite {
    value: Value,
    invoked: Time,
    /// `None`: not known to have completed (it may apply at any time).
    completed: Option<Time>,
    acknowledged: bool,
}

#[derive(Debug, Default)]
struct MemoryHistory {
    writes: HashMap<String, Vec<FieldWrite>>,
    /// Completion of the first acknowledged create.
    created: Option<Time>,
    /// Completion of the first acknowledged delete.
    deleted: Option<Time>,
    /// Invocation of the first delete that may have applied.
    delete_begun: Option<Time>,
    reads: Vec<(Time, Time, Read, &'static str)>,
}

impl MemoryHistory {
    fn record(&mut self, event: &Event) {
        let acknowledged = event.outcome == Outcome::Ok(());
        if event.outcome == Outcome::Failed {
            return;
        }
        let completed = acknowledged.then_some(event.completed);
        let mut write_fields = |fields: &BTreeMap<String, Value>| {
            for (field, value) in fields {
                self.writes
                    .entry(field.clone())
                    .or_default()
                    .push(FieldWrite {
                        value: value.clone(),
                        invoked: event.invoked,
                        completed,
                        acknowledged,
                    });
            }
        };
        match &event.op {
            Op::Create(fields) => {
                write_fields(fields);
                if acknowledged {
                    self.created = Some(
                        self.created
                            .map_or(event.completed, |t| t.min(event.completed)),
                    );
                }
            }
            Op::Update(fields) => write_fields(fields),
            Op::Delete => {
                self.delete_begun = Some(
                    self.delete_begun
                        .map_or(event.invoked, |t| t.min(event.invoked)),
                );
                if acknowledged {
                    self.deleted = Some(
                        self.deleted
                            .map_or(event.completed, |t| t.min(event.completed)),
                    );
                }
            }
            Op::Read(read) | Op::Found(read) => {
                if acknowledged {
                    let source = match event.op {
                        Op::Found(_) => "search",
                        _ => "get",
                    };
                    self.reads
                        .push((event.invoked, event.completed, read.clone(), source));
                }
            }
        }
    }

    /// The writes of `field` that carried `value`.
    fn writers<'a>(&'a self, field: &str, value: &Value) -> Vec<&'a FieldWrite> {
        self.writes
            .get(field)
            .map(|writes| writes.iter().filter(|w| w.value.same(value)).collect())
            .unwrap_or_default()
    }

    /// Whether a read at `[invoked, ..]` may return a value written by `writer`: no write of
    /// the field completed before the read began that began after `writer` completed.
    fn visible(&self, field: &str, writer: &FieldWrite, read_invoked: Time) -> bool {
        let Some(writer_done) = writer.completed else {
            return true;
        };
        !self.writes.get(field).is_some_and(|writes| {
            writes.iter().any(|other| {
                other.acknowledged
                    && other.invoked > writer_done
                    && other.completed.is_some_and(|done| done < read_invoked)
            })
        })
    }
}

/// Checks a history and the state read once the system was quiet (`final_reads`, one per
/// memory; `statuses` the memgate status of each memory found then).
pub fn check(
    events: &[Event],
    final_reads: &HashMap<String, Read>,
    statuses: &HashMap<String, String>,
) -> Report {
    let mut memories: HashMap<String, MemoryHistory> = HashMap::new();
    for event in events {
        memories
            .entry(event.memory.clone())
            .or_default()
            .record(event);
    }
    let mut report = Report {
        operations: events.len(),
        memories: memories.len(),
        ..Report::default()
    };
    for (id, history) in &memories {
        for (invoked, completed, read, source) in &history.reads {
            let when = format!(
                "{source} at {}..{} ms",
                invoked / 1_000_000,
                completed / 1_000_000
            );
            check_read(
                &mut report,
                id,
                history,
                (*invoked, *completed),
                read,
                &when,
            );
        }
        if let Some(read) = final_reads.get(id) {
            check_read(&mut report, id, history, (Time::MAX, Time::MAX), read, "");
            if matches!(read, Read::Found(_)) {
                let status = statuses.get(id).map(String::as_str).unwrap_or("?");
                if status != "ready" {
                    report.add("unsettled", format!("{id}: status {status} once quiet"));
                }
            }
        }
    }
    report
}

/// Checks one read made during `(invoked, completed)` (described by `when`; empty for the
/// read once the system was quiet).
fn check_read(
    report: &mut Report,
    id: &str,
    history: &MemoryHistory,
    (invoked, completed): (Time, Time),
    read: &Read,
    when: &str,
) {
    let last = when.is_empty();
    let when = if last { "once quiet" } else { when };
    match read {
        Read::NotFound => {
            let created_before = history.created.is_some_and(|t| t < invoked);
            let delete_begun = history.delete_begun.is_some_and(|t| t < completed);
            if created_before && !delete_begun {
                report.add("vanished", format!("{id}: not found, {when}"));
            }
        }
        Read::Found(fields) => {
            if history.deleted.is_some_and(|t| t < invoked) {
                let kind = if last { "lost write" } else { "resurrection" };
                report.add(
                    kind,
                    format!("{id}: found after its delete was acknowledged, {when}"),
                );
                return;
            }
            for (field, value) in fields {
                let writers = history.writers(field, value);
                if writers.is_empty() {
                    if history.writes.contains_key(field) {
                        report.add("phantom", format!("{id}: {field} = {value}, {when}"));
                    }
                    continue;
                }
                if !writers
                    .iter()
                    .any(|writer| history.visible(field, writer, invoked))
                {
                    let kind = if last { "lost write" } else { "stale read" };
                    report.add(
                        kind,
                        format!(
                            "{id}: {field} = {value} hidden by a later acknowledged write, {when}"
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(content: &str) -> BTreeMap<String, Value> {
        BTreeMap::from([("content".to_string(), Value::Text(content.into()))])
    }

    fn event(op: Op, invoked: Time, completed: Time, outcome: Outcome<()>) -> Event {
        Event {
            client: 0,
            memory: "m".into(),
            op,
            invoked,
            completed,
            outcome,
        }
    }

    fn found(content: &str) -> Read {
        Read::Found(fields(content))
    }

    fn ready() -> HashMap<String, String> {
        HashMap::from([("m".to_string(), "ready".to_string())])
    }

    #[test]
    fn a_history_in_order_has_no_anomaly() {
        let events = vec![
            event(Op::Create(fields("a")), 0, 10, Outcome::Ok(())),
            event(Op::Update(fields("b")), 20, 30, Outcome::Ok(())),
            event(Op::Read(found("b")), 40, 50, Outcome::Ok(())),
            // Concurrent with the update: either value is fine.
            event(Op::Read(found("a")), 25, 35, Outcome::Ok(())),
        ];
        let last = HashMap::from([("m".to_string(), found("b"))]);
        let report = check(&events, &last, &ready());
        assert_eq!(report.count(), 0, "{}", report.summary());
    }

    #[test]
    fn an_undone_update_is_a_lost_write_and_its_reads_are_stale() {
        let events = vec![
            event(Op::Create(fields("a")), 0, 10, Outcome::Ok(())),
            event(Op::Update(fields("b")), 20, 30, Outcome::Ok(())),
            event(Op::Read(found("a")), 40, 50, Outcome::Ok(())),
        ];
        let last = HashMap::from([("m".to_string(), found("a"))]);
        let report = check(&events, &last, &ready());
        assert_eq!(report.anomalies["stale read"].len(), 1);
        assert_eq!(report.anomalies["lost write"].len(), 1);
    }

    #[test]
    fn a_deleted_memory_read_again_is_a_resurrection() {
        let events = vec![
            event(Op::Create(fields("a")), 0, 10, Outcome::Ok(())),
            event(Op::Delete, 20, 30, Outcome::Ok(())),
            event(Op::Read(found("a")), 40, 50, Outcome::Ok(())),
        ];
        let last = HashMap::from([("m".to_string(), found("a"))]);
        let report = check(&events, &last, &ready());
        assert_eq!(report.anomalies["resurrection"].len(), 1);
        assert_eq!(report.anomalies["lost write"].len(), 1);
    }

    #[test]
    fn unknown_writes_may_or_may_not_apply() {
        let events = vec![
            event(Op::Create(fields("a")), 0, 10, Outcome::Ok(())),
            event(Op::Update(fields("b")), 20, 30, Outcome::Unknown),
            event(Op::Delete, 40, 45, Outcome::Unknown),
            event(Op::Update(fields("c")), 50, 60, Outcome::Failed),
            event(Op::Read(found("b")), 70, 80, Outcome::Ok(())),
            event(Op::Read(found("a")), 90, 95, Outcome::Ok(())),
            event(Op::Read(Read::NotFound), 100, 110, Outcome::Ok(())),
        ];
        let last = HashMap::from([("m".to_string(), Read::NotFound)]);
        let report = check(&events, &last, &ready());
        assert_eq!(report.count(), 0, "{}", report.summary());
        // A failed write never shows.
        let last = HashMap::from([("m".to_string(), found("c"))]);
        let report = check(&events, &last, &ready());
        assert_eq!(report.anomalies["phantom"].len(), 1);
    }

    #[test]
    fn a_created_memory_that_is_not_found_vanished_and_a_pending_one_is_unsettled() {
        let events = vec![
            event(Op::Create(fields("a")), 0, 10, Outcome::Ok(())),
            event(Op::Read(Read::NotFound), 20, 30, Outcome::Ok(())),
        ];
        let last = HashMap::from([("m".to_string(), found("a"))]);
        let statuses = HashMap::from([("m".to_string(), "processing".to_string())]);
        let report = check(&events, &last, &statuses);
        assert_eq!(report.anomalies["vanished"].len(), 1);
        assert_eq!(report.anomalies["unsettled"].len(), 1);
    }
}
