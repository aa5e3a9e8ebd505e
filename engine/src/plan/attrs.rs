//! Typed reads of Cedar entity attributes: a missing or differently typed attribute reads as
//! absent (or false), so a malformed entity is passed over rather than planned on.

use cedar_policy::{Entity, EntityUid, EvalResult};

pub(super) fn attr_string(e: &Entity, name: &str) -> Option<String> {
    match e.attr(name)? {
        Ok(EvalResult::String(s)) => Some(s),
        _ => None,
    }
}

pub(super) fn attr_bool(e: &Entity, name: &str) -> bool {
    matches!(e.attr(name), Some(Ok(EvalResult::Bool(true))))
}

pub(super) fn attr_uid(e: &Entity, name: &str) -> Option<EntityUid> {
    match e.attr(name)? {
        Ok(EvalResult::EntityUid(u)) => Some(u),
        _ => None,
    }
}

pub(super) fn type_is(uid: &EntityUid, name: &str) -> bool {
    crate::entities::is_type(uid, name)
}
