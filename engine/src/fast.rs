//! Hash tables for the hot paths, keyed by uids, numbers and texts: foldhash, seeded at
//! random per table as the standard SipHash is, at a fraction of its cost.

use std::collections::{HashMap, HashSet};

pub(crate) type Fast = foldhash::fast::RandomState;
pub(crate) type FastMap<K, V> = HashMap<K, V, Fast>;
pub(crate) type FastSet<K> = HashSet<K, Fast>;
