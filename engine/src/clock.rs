//! The governance clock: the `now` tregov puts in a request's context.
//!
//! A decision that compares `context.now` with a stored date changes only when the clock
//! passes that date (or the date offset by a duration a policy names). So `now` is not the
//! wall clock but the latest such instant at or before it, or the start of the current UTC
//! day when none has passed today: between two instants every question is asked with the same
//! `now`, so its answer stays cached exactly (the context is part of the key), and the
//! controller knows when to look again (`next`). What the clock guarantees: a comparison of
//! `now` with a stored `datetime`, with one offset by a duration literal of the policies, or
//! with a datetime literal of the policies, has its wall-clock answer; any other use of `now`
//! (time of day, differences of two dates) sees it move at those instants and at midnight.
//!
//! The instants are read from the store's entity bodies (every `datetime` at any depth) and
//! the policies' literals; the dates themselves are turned into milliseconds by Cedar.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::SystemTime;

use cedar_policy::{EntityUid, PolicySet};
use cedar_policy_core::ast::{RestrictedExpr, ValueKind};
use cedar_policy_core::evaluator::RestrictedEvaluator;
use cedar_policy_core::extensions::Extensions;
use serde_json::Value;

use crate::entities::EntityGraph;

const DAY_MS: i64 = 86_400_000;

/// Where the governance clock stands at a wall-clock moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// `now`, in milliseconds since the epoch.
    pub now: i64,
    /// The next instant at which `now` moves.
    pub next: i64,
}

impl Tick {
    /// `now` as a request context attribute value (Cedar's JSON form).
    pub fn now_value(&self) -> Value {
        datetime_value(self.now)
    }

    /// How long from `wall` until the clock moves.
    pub fn until_next(&self, wall: SystemTime) -> std::time::Duration {
        let wait = self.next.saturating_sub(wall_ms(wall)).max(0);
        std::time::Duration::from_millis(wait as u64)
    }
}

/// Milliseconds since the epoch of a wall-clock moment (0 before the epoch).
pub fn wall_ms(wall: SystemTime) -> i64 {
    wall.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A `datetime` attribute value in Cedar's JSON form.
pub fn datetime_value(ms: i64) -> Value {
    serde_json::json!({"__extn": {"fn": "datetime", "arg": datetime_text(ms)}})
}

/// The milliseconds of a `datetime` in Cedar's JSON form (`{"__extn": …}`), as Cedar reads it.
pub fn json_datetime_ms(value: &Value) -> Option<i64> {
    let extn = value.get("__extn")?;
    milliseconds(&restricted_text(extn)?, "datetime")
}

/// `2026-12-06T10:00:00.000Z`: a text Cedar's `datetime` reads back to the same instant.
pub fn datetime_text(ms: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_string())
}

/// The instants at which the clock moves: stored dates (per entity, so a changed entity
/// replaces its own), the policies' date literals, and the offsets they are seen through.
#[derive(Debug, Clone)]
pub struct Instants {
    by_entity: HashMap<EntityUid, Vec<i64>>,
    /// Every stored date with how many entities hold it.
    stored: BTreeMap<i64, u32>,
    /// The policies' datetime literals.
    literal: Vec<i64>,
    /// 0, each policy duration literal both ways, and the expiry warning window back.
    offsets: Vec<i64>,
}

impl Default for Instants {
    fn default() -> Self {
        Self {
            by_entity: HashMap::new(),
            stored: BTreeMap::new(),
            literal: Vec::new(),
            offsets: vec![0],
        }
    }
}

impl Instants {
    /// The instants of a graph's entities under a policy set.
    pub fn new(graph: &EntityGraph, policies: &PolicySet, warning_ms: i64) -> Self {
        let mut instants = Self::default();
        instants.set_policies(policies, warning_ms);
        for (uid, body) in graph.stored_bodies() {
            // Most entities hold no date: their attributes are not parsed.
            if body.iter().any(|text| text.contains("datetime")) {
                instants.set_entity(uid, &body);
            }
        }
        instants
    }

    /// Takes the policies' literals (and the warning window, in milliseconds before a date).
    pub fn set_policies(&mut self, policies: &PolicySet, warning_ms: i64) {
        let (datetimes, durations) = policy_literals(policies);
        self.literal = datetimes;
        let mut offsets = vec![0, -warning_ms.abs()];
        for d in durations {
            offsets.extend([d, d.saturating_neg()]);
        }
        offsets.sort_unstable();
        offsets.dedup();
        self.offsets = offsets;
    }

    /// An entity written (`body`: its attributes' and tags' JSON texts) or deleted (empty):
    /// its dates replace what it held.
    pub fn set_entity(&mut self, uid: &EntityUid, body: &[&str]) {
        let mut dates: Vec<i64> = body
            .iter()
            .filter(|text| text.contains("datetime"))
            .filter_map(|text| serde_json::from_str::<Value>(text).ok())
            .flat_map(|v| body_datetimes(&v))
            .collect();
        dates.sort_unstable();
        dates.dedup();
        if dates.is_empty() && !self.by_entity.contains_key(uid) {
            return;
        }
        self.replace(uid.clone(), dates);
    }

    fn replace(&mut self, key: EntityUid, dates: Vec<i64>) {
        let old = if dates.is_empty() {
            self.by_entity.remove(&key)
        } else {
            self.by_entity.insert(key, dates.clone())
        };
        for d in old.into_iter().flatten() {
            if let Some(n) = self.stored.get_mut(&d) {
                *n -= 1;
                if *n == 0 {
                    self.stored.remove(&d);
                }
            }
        }
        for d in dates {
            *self.stored.entry(d).or_default() += 1;
        }
    }

    /// The clock at `wall` (milliseconds since the epoch).
    pub fn tick_at(&self, wall: i64) -> Tick {
        let midnight = wall - wall.rem_euclid(DAY_MS);
        let mut tick = Tick {
            now: midnight,
            next: midnight.saturating_add(DAY_MS),
        };
        for &offset in &self.offsets {
            let bound = wall.saturating_sub(offset);
            let before = self.stored.range(..=bound).next_back().map(|(d, _)| *d);
            let after = self
                .stored
                .range(bound.saturating_add(1)..)
                .next()
                .map(|(d, _)| *d);
            let literal_before = self.literal.iter().filter(|d| **d <= bound).max().copied();
            let literal_after = self.literal.iter().filter(|d| **d > bound).min().copied();
            for d in [before, literal_before].into_iter().flatten() {
                tick.now = tick.now.max(d.saturating_add(offset));
            }
            for d in [after, literal_after].into_iter().flatten() {
                tick.next = tick.next.min(d.saturating_add(offset));
            }
        }
        tick
    }

    /// The stored dates in `(after, until]`, with the entity holding each, in date order.
    pub fn dates_within(&self, after: i64, until: i64) -> Vec<(EntityUid, i64)> {
        if after >= until
            || self
                .stored
                .range(after.saturating_add(1)..=until)
                .next()
                .is_none()
        {
            return Vec::new();
        }
        let mut found: Vec<(EntityUid, i64)> = self
            .by_entity
            .iter()
            .flat_map(|(uid, dates)| dates.iter().map(move |d| (uid, *d)))
            .filter(|(_, d)| *d > after && *d <= until)
            .map(|(uid, d)| (uid.clone(), d))
            .collect();
        found.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        found
    }

    /// The moments after `after` at which a decision over these entities could change: each
    /// date they hold, seen through every offset the clock knows, ascending.
    pub fn moments_for<'u>(
        &self,
        uids: impl IntoIterator<Item = &'u EntityUid>,
        after: i64,
    ) -> Vec<i64> {
        let mut moments: Vec<i64> = uids
            .into_iter()
            .filter_map(|uid| self.by_entity.get(uid))
            .flatten()
            .flat_map(|d| self.offsets.iter().map(move |o| d.saturating_add(*o)))
            .filter(|t| *t > after)
            .collect();
        moments.sort_unstable();
        moments.dedup();
        moments
    }

    /// How many stored dates are still ahead of `wall` (a metric: pending expiries).
    pub fn pending_after(&self, wall: i64) -> usize {
        self.stored
            .range(wall.saturating_add(1)..)
            .map(|(_, n)| *n as usize)
            .sum()
    }
}

/// Every `datetime` in an entity body's attributes, at any depth, in milliseconds.
fn body_datetimes(attrs: &Value) -> Vec<i64> {
    let mut out = Vec::new();
    walk_datetimes(attrs, &mut out);
    out.sort_unstable();
    out.dedup();
    out
}

fn walk_datetimes(value: &Value, out: &mut Vec<i64>) {
    match value {
        Value::Object(map) => match map.get("__extn") {
            Some(extn) => {
                if let Some(ms) = restricted_text(extn).and_then(|t| milliseconds(&t, "datetime")) {
                    out.push(ms);
                }
            }
            None => map.values().for_each(|v| walk_datetimes(v, out)),
        },
        Value::Array(items) => items.iter().for_each(|v| walk_datetimes(v, out)),
        _ => {}
    }
}

/// An `__extn` JSON value as the restricted expression it stands for: `f("arg")` or, for a
/// method such as `offset`, `first.f(second)`.
fn restricted_text(extn: &Value) -> Option<String> {
    let name = extn["fn"].as_str()?;
    let arg = |v: &Value| match v {
        Value::String(s) => serde_json::to_string(s).ok(),
        Value::Object(map) => map.get("__extn").and_then(restricted_text),
        _ => None,
    };
    if let Some(single) = extn.get("arg") {
        return Some(format!("{name}({})", arg(single)?));
    }
    let args = extn["args"].as_array()?;
    match args.as_slice() {
        [only] => Some(format!("{name}({})", arg(only)?)),
        [receiver, rest @ ..] => {
            let rest = rest.iter().map(arg).collect::<Option<Vec<_>>>()?;
            Some(format!("{}.{name}({})", arg(receiver)?, rest.join(", ")))
        }
        [] => None,
    }
}

/// Cedar's value of a restricted expression, when it is a `datetime` or a `duration`
/// (`kind`): its milliseconds (since the epoch, or long).
fn milliseconds(text: &str, kind: &str) -> Option<i64> {
    let expr = RestrictedExpr::from_str(text).ok()?;
    let value = RestrictedEvaluator::new(Extensions::all_available())
        .interpret(expr.as_borrowed())
        .ok()?;
    let ValueKind::ExtensionValue(ev) = value.value_kind() else {
        return None;
    };
    if ev.typename().to_string() != kind {
        return None;
    }
    // Cedar writes both as a count of milliseconds: a datetime as
    // `datetime("1970-01-01").offset(duration("<n>ms"))`, a duration as `duration("<n>ms")`
    // (its argument the string `"<n>ms"`).
    let (_, args) = ev.value().canonical_repr();
    let last = args.last()?.to_string();
    let count = last.strip_prefix("duration(").unwrap_or(&last);
    let count = count.strip_suffix(')').unwrap_or(count);
    count.trim_matches('"').strip_suffix("ms")?.parse().ok()
}

/// The datetime and duration literals of a policy set, in milliseconds.
fn policy_literals(policies: &PolicySet) -> (Vec<i64>, Vec<i64>) {
    let (mut datetimes, mut durations) = (Vec::new(), Vec::new());
    for policy in policies.policies() {
        if let Ok(est) = policy.to_json() {
            walk_literals(&est, &mut datetimes, &mut durations);
        }
    }
    for list in [&mut datetimes, &mut durations] {
        list.sort_unstable();
        list.dedup();
    }
    (datetimes, durations)
}

/// Cedar's JSON policy form writes an extension call as `{"datetime": [{"Value": "..."}]}`.
fn walk_literals(value: &Value, datetimes: &mut Vec<i64>, durations: &mut Vec<i64>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let literal = v
                    .as_array()
                    .and_then(|a| a.first())
                    .and_then(|a| a["Value"].as_str());
                match (key.as_str(), literal) {
                    ("datetime", Some(text)) => datetimes.extend(literal_ms(text, "datetime")),
                    ("duration", Some(text)) => durations.extend(literal_ms(text, "duration")),
                    _ => walk_literals(v, datetimes, durations),
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|v| walk_literals(v, datetimes, durations)),
        _ => {}
    }
}

fn literal_ms(text: &str, kind: &str) -> Option<i64> {
    let quoted = serde_json::to_string(text).ok()?;
    milliseconds(&format!("{kind}({quoted})"), kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        milliseconds(&format!("datetime({text:?})"), "datetime").expect("a datetime")
    }

    fn uid(id: &str) -> EntityUid {
        crate::entities::uid_from_parts("Tre::Agreement", id).expect("uid")
    }

    fn set(instants: &mut Instants, id: &str, attrs: Value) {
        instants.set_entity(&uid(id), &[&attrs.to_string()]);
    }

    fn dt(text: &str) -> Value {
        serde_json::json!({"__extn": {"fn": "datetime", "arg": text}})
    }

    #[test]
    fn cedar_turns_each_form_of_a_stored_date_into_the_same_milliseconds() {
        assert_eq!(ms("1970-01-02"), DAY_MS);
        assert_eq!(ms("2026-12-06T10:00:00Z"), ms("2026-12-06T11:00:00+0100"));
        let canonical = serde_json::json!({"__extn": {"fn": "offset", "args": [
            {"__extn": {"fn": "datetime", "arg": "1970-01-01"}},
            {"__extn": {"fn": "duration", "arg": "86400000ms"}},
        ]}});
        assert_eq!(
            body_datetimes(&serde_json::json!({"a": canonical})),
            vec![DAY_MS]
        );
        let precise = ms("2026-12-06T10:00:00.250Z");
        assert_eq!(ms(&datetime_text(precise)), precise);
    }

    #[test]
    fn a_membership_end_held_in_a_users_tags_is_an_instant_of_the_clock() {
        let user = r#"{"uid":{"type":"Tre::User","id":"alice"},"attrs":{},"parents":[{"type":"Tre::AccessGroup","id":"g"}],"tags":{"Tre::AccessGroup::\"g\"":{"__extn":{"fn":"datetime","arg":"2026-12-06T10:00:00Z"}}}}"#;
        let graph = EntityGraph::from_bodies([user], None).expect("graph");
        let instants = Instants::new(&graph, &PolicySet::new(), 0);
        let ends = ms("2026-12-06T10:00:00Z");
        assert_eq!(instants.tick_at(ends - 1).next, ends);
        assert_eq!(instants.tick_at(ends).now, ends);
    }

    #[test]
    fn the_clock_stands_at_the_last_date_passed_and_names_the_next() {
        let mut instants = Instants::default();
        set(
            &mut instants,
            "a",
            serde_json::json!({"expires": dt("2026-12-06T10:00:00Z")}),
        );
        set(
            &mut instants,
            "b",
            serde_json::json!({"x": {"y": [dt("2026-12-06T12:00:00Z")]}}),
        );
        let before = instants.tick_at(ms("2026-12-06T09:00:00Z"));
        assert_eq!(
            before.now,
            ms("2026-12-06"),
            "the day's start when nothing passed today"
        );
        assert_eq!(before.next, ms("2026-12-06T10:00:00Z"));
        let after = instants.tick_at(ms("2026-12-06T10:00:00.001Z"));
        assert_eq!(after.now, ms("2026-12-06T10:00:00Z"));
        assert_eq!(after.next, ms("2026-12-06T12:00:00Z"));
        assert_eq!(instants.pending_after(ms("2026-12-06T10:30:00Z")), 1);
    }

    #[test]
    fn a_rewritten_or_deleted_entity_takes_its_dates_with_it() {
        let mut instants = Instants::default();
        set(
            &mut instants,
            "a",
            serde_json::json!({"expires": dt("2026-12-06T10:00:00Z")}),
        );
        set(
            &mut instants,
            "a",
            serde_json::json!({"expires": dt("2026-12-07T10:00:00Z")}),
        );
        let tick = instants.tick_at(ms("2026-12-06T11:00:00Z"));
        assert_eq!(tick.now, ms("2026-12-06"));
        assert_eq!(
            tick.next,
            ms("2026-12-07"),
            "midnight comes before the new date"
        );
        set(&mut instants, "a", serde_json::json!({}));
        assert_eq!(instants.pending_after(0), 0);
        set(
            &mut instants,
            "a",
            serde_json::json!({"expires": dt("2026-12-06T10:00:00Z")}),
        );
        instants.set_entity(&uid("a"), &[]);
        assert_eq!(instants.pending_after(0), 0);
    }

    #[test]
    fn a_policys_durations_and_the_warning_window_move_the_clock_too() {
        let policies = PolicySet::from_str(
            r#"forbid (principal, action, resource) when {
                 context.now.offset(duration("-1h")) >= datetime("2030-01-01") };"#,
        )
        .expect("policies");
        let mut instants = Instants::default();
        instants.set_policies(&policies, 30 * 60_000);
        set(
            &mut instants,
            "a",
            serde_json::json!({"expires": dt("2026-12-06T10:00:00Z")}),
        );
        // Offsets: the literal hour either way and the half-hour warning before.
        let tick = instants.tick_at(ms("2026-12-06T08:00:00Z"));
        assert_eq!(tick.next, ms("2026-12-06T09:00:00Z"));
        let tick = instants.tick_at(ms("2026-12-06T09:40:00Z"));
        assert_eq!(tick.now, ms("2026-12-06T09:30:00Z"));
        assert_eq!(tick.next, ms("2026-12-06T10:00:00Z"));
        let tick = instants.tick_at(ms("2029-12-31T23:20:00Z"));
        assert_eq!(
            tick.now,
            ms("2029-12-31T23:00:00Z"),
            "the literal an hour back"
        );
    }
}
