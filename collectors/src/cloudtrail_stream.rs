//! Reading one CloudTrail log file as a stream, within bounds.
//!
//! A log object is whatever is in the bucket: an interrupted upload (gzip trailer cut, JSON
//! cut mid-record), a gzip bomb, a gigabyte of anything. So a file is never inflated whole:
//! records are parsed one at a time from the decompressing stream and handed on in chunks,
//! the inflated size is capped (`max_inflated_bytes`) and so is any one record
//! (`MAX_RECORD_BYTES`). A file that is not whole says why (`StreamedLog::damage`), and the
//! records read before the damage are still handed on: they are real, and dropping them
//! would lose them silently.

use std::cell::Cell;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::ops::ControlFlow;
use std::rc::Rc;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tregov_engine::events::StoredEvent;

use crate::cloudtrail_parse::{AccountClaim, RecordReader};

/// No CloudTrail record comes near this (AWS caps an event at 256 KB); a longer one is
/// damage, and holding it would let one object take the process's memory.
pub const MAX_RECORD_BYTES: u64 = 16 * 1024 * 1024;

/// How many events are handed on at once: enough to batch the store's writes, few enough
/// that eight files in flight hold a few megabytes.
pub const CHUNK_EVENTS: usize = 5_000;

/// What reading one file gave, beside the events handed on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamedLog {
    /// Records read (and handed on), whole file or not.
    pub records: u64,
    /// SHA-256 (hex) of the uncompressed file, as digest files list it; only for a whole
    /// file.
    pub sha256: Option<String>,
    /// Why the file is not whole; `None` when it was read to its end.
    pub damage: Option<String>,
}

/// Reads the gzip log file `gz`, handing its events on to `sink` `CHUNK_EVENTS` at a time
/// (records claiming another account with them). A sink error stops the read and is the
/// damage.
pub fn stream_log_file(
    key: &str,
    gz: impl Read,
    egress_bucket: Option<&str>,
    max_inflated_bytes: u64,
    sink: &mut dyn FnMut(Vec<StoredEvent>, Vec<AccountClaim>) -> Result<(), String>,
) -> StreamedLog {
    let reader = RecordReader::new(key, egress_bucket);
    let mut events = Vec::new();
    let mut claims = Vec::new();
    let mut sink_error = None;
    let mut on_record = |index: u64, raw: &RawValue| {
        let (event, claim) = reader.event(index, raw);
        events.push(event);
        claims.extend(claim);
        if events.len() >= CHUNK_EVENTS {
            if let Err(e) = sink(std::mem::take(&mut events), std::mem::take(&mut claims)) {
                sink_error = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    };
    let read = each_record(gz, max_inflated_bytes, &mut on_record);
    let mut damage = read.damage;
    if !events.is_empty() || !claims.is_empty() {
        if let Err(e) = sink(events, claims) {
            sink_error = Some(e);
        }
    }
    if let Some(e) = sink_error {
        damage = Some(e);
    }
    StreamedLog {
        records: read.records,
        sha256: damage.is_none().then_some(read.sha256),
        damage,
    }
}

/// The record at `index` of a (gzip) log file, exactly as delivered.
pub fn record_at(gz: impl Read, index: u64) -> Result<String, String> {
    let mut found = None;
    let read = each_record(gz, u64::MAX, &mut |i, raw| {
        if i == index {
            found = Some(raw.get().to_string());
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    match (found, read.damage) {
        (Some(record), _) => Ok(record),
        (None, Some(damage)) => Err(damage),
        (None, None) => Err(format!("the file has no record {index}")),
    }
}

/// What `each_record` saw.
struct Walked {
    records: u64,
    sha256: String,
    damage: Option<String>,
}

/// Calls `on_record` with every record of the gzip log file `gz`, in order, until it breaks.
fn each_record(
    gz: impl Read,
    max_inflated_bytes: u64,
    on_record: &mut dyn FnMut(u64, &RawValue) -> ControlFlow<()>,
) -> Walked {
    let mut gz = BufReader::new(gz);
    let is_gzip = matches!(gz.fill_buf(), Ok([0x1f, 0x8b, ..]));
    if !is_gzip {
        return Walked {
            records: 0,
            sha256: String::new(),
            damage: Some("not a gzip file".into()),
        };
    }
    let marks = Rc::new(Marks::default());
    let mut json = BufReader::with_capacity(
        64 * 1024,
        Inflated {
            inner: flate2::read::MultiGzDecoder::new(gz),
            cap: max_inflated_bytes,
            marks: marks.clone(),
            hasher: Sha256::new(),
            over: None,
        },
    );
    let mut records = Records {
        count: 0,
        marks,
        stopped: false,
        on_record,
    };
    let parsed = {
        let mut de = serde_json::Deserializer::from_reader(&mut json);
        LogSeed(&mut records)
            .deserialize(&mut de)
            .and_then(|()| de.end())
    };
    let count = records.count;
    let stopped = records.stopped;
    let damage = match parsed {
        _ if stopped => None,
        Ok(()) => drain(&mut json).err(),
        Err(e) => Some(describe(&e, json.get_ref().over, count)),
    };
    Walked {
        records: count,
        sha256: hex::encode(json.into_inner().hasher.finalize()),
        damage,
    }
}

/// Reads the rest of the stream, so the gzip trailer (its length and CRC) is checked: JSON
/// that is whole in a stream that is not is still a file cut short.
fn drain(json: &mut BufReader<Inflated<impl Read>>) -> Result<(), String> {
    let rest = io::copy(json, &mut io::sink());
    match (rest, json.get_ref().over) {
        (_, Some(over)) => Err(over.to_string()),
        (Err(e), None) => Err(format!(
            "truncated: the gzip stream is cut short ({e}); every record before the cut is kept"
        )),
        (Ok(0), None) => Ok(()),
        (Ok(n), None) => Err(format!("{n} bytes after the log's JSON")),
    }
}

fn describe(e: &serde_json::Error, over: Option<Over>, kept: u64) -> String {
    let kept_note = |what: String| format!("{what}; the {kept} records before it are kept");
    if let Some(over) = over {
        return kept_note(over.to_string());
    }
    if e.is_eof() {
        return kept_note("truncated: the log ends mid-record".into());
    }
    if e.io_error_kind() == Some(io::ErrorKind::UnexpectedEof) {
        return kept_note("truncated: the gzip stream is cut short".into());
    }
    if e.is_io() {
        return kept_note(format!("cannot decompress: {e}"));
    }
    if kept == 0 {
        return format!("not a CloudTrail log (a JSON object with a `Records` array): {e}");
    }
    kept_note(format!("unreadable after record {kept}: {e}"))
}

/// Which bound a file crossed.
#[derive(Debug, Clone, Copy)]
enum Over {
    Inflated(u64),
    Record,
}

impl fmt::Display for Over {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Over::Inflated(cap) => write!(f, "inflates beyond `max_inflated_bytes` ({cap} bytes)"),
            Over::Record => write!(
                f,
                "runs on for more than {MAX_RECORD_BYTES} bytes without a record ending"
            ),
        }
    }
}

/// How far the inflated stream has got, and where the last record ended: shared between the
/// stream and the parser, so no one record grows unbounded.
#[derive(Default)]
struct Marks {
    inflated: Cell<u64>,
    record_end: Cell<u64>,
}

/// The decompressed stream: hashed as it is read, and cut off at either bound.
struct Inflated<R> {
    inner: R,
    cap: u64,
    marks: Rc<Marks>,
    hasher: Sha256,
    over: Option<Over>,
}

impl<R: Read> Read for Inflated<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let inflated = self.marks.inflated.get();
        // The parser reads through a buffer, so it trails the stream by at most that buffer:
        // close enough for a bound sixteen megabytes wide.
        let since_record = inflated.saturating_sub(self.marks.record_end.get());
        let over = if inflated > self.cap {
            Some(Over::Inflated(self.cap))
        } else if since_record > MAX_RECORD_BYTES {
            Some(Over::Record)
        } else {
            None
        };
        if let Some(over) = over {
            self.over = Some(over);
            return Err(io::Error::other(over.to_string()));
        }
        let n = self.inner.read(buf)?;
        self.marks.inflated.set(inflated + n as u64);
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The state a parse shares with its visitors.
struct Records<'a> {
    count: u64,
    marks: Rc<Marks>,
    /// The caller had what it wanted: the rest of the file is not read.
    stopped: bool,
    on_record: &'a mut dyn FnMut(u64, &RawValue) -> ControlFlow<()>,
}

/// The log file: a JSON object whose `Records` array is read one record at a time; other
/// keys are skipped without being held.
struct LogSeed<'r, 'a>(&'r mut Records<'a>);

impl<'de> DeserializeSeed<'de> for LogSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LogSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with a `Records` array")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "Records" && !seen {
                seen = true;
                map.next_value_seed(RecordsSeed(&mut *self.0))?;
                if self.0.stopped {
                    return Err(serde::de::Error::custom("stopped"));
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if !seen {
            return Err(serde::de::Error::missing_field("Records"));
        }
        Ok(())
    }
}

struct RecordsSeed<'r, 'a>(&'r mut Records<'a>);

impl<'de> DeserializeSeed<'de> for RecordsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RecordsSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let records = self.0;
        while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
            records.marks.record_end.set(records.marks.inflated.get());
            let index = records.count;
            records.count += 1;
            if (records.on_record)(index, &raw).is_break() {
                records.stopped = true;
                return Err(serde::de::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const KEY: &str =
        "AWSLogs/111111111111/CloudTrail/eu-west-2/2026/11/26/111111111111_CloudTrail_eu-west-2_20261126T1200Z_x.json.gz";

    fn gzip(json: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(json).expect("write");
        gz.finish().expect("gzip")
    }

    fn log_of(records: usize) -> String {
        let body: Vec<String> = (0..records)
            .map(|i| format!(r#"{{"eventID":"e{i}","eventName":"GetObject"}}"#))
            .collect();
        format!(r#"{{"Records":[{}]}}"#, body.join(","))
    }

    /// Streams `gz` and returns what it said and every event id handed on.
    fn stream(gz: &[u8], cap: u64) -> (StreamedLog, Vec<String>, usize) {
        let mut ids = Vec::new();
        let mut chunks = 0;
        let read = stream_log_file(KEY, gz, None, cap, &mut |events, _| {
            chunks += 1;
            ids.extend(events.into_iter().map(|e| e.event_id));
            Ok(())
        });
        (read, ids, chunks)
    }

    #[test]
    fn a_whole_file_is_handed_on_in_chunks_with_the_hash_of_its_json() {
        let json = log_of(CHUNK_EVENTS * 2 + 7);
        let (read, ids, chunks) = stream(&gzip(json.as_bytes()), u64::MAX);
        assert_eq!(read.damage, None);
        assert_eq!(read.records, (CHUNK_EVENTS * 2 + 7) as u64);
        assert_eq!(ids.len(), CHUNK_EVENTS * 2 + 7);
        assert_eq!(chunks, 3);
        assert_eq!(
            read.sha256,
            Some(hex::encode(Sha256::digest(json.as_bytes())))
        );
    }

    #[test]
    fn a_file_whose_gzip_trailer_is_cut_is_damaged_but_keeps_every_record() {
        let mut gz = gzip(log_of(50).as_bytes());
        gz.truncate(gz.len() - 5);
        let (read, ids, _) = stream(&gz, u64::MAX);
        let damage = read.damage.expect("damage");
        assert!(damage.contains("truncated"), "{damage}");
        assert_eq!(ids.len(), 50);
        assert_eq!(read.sha256, None, "a file cut short is not vouched for");
    }

    #[test]
    fn a_file_cut_mid_record_keeps_the_records_before_the_cut() {
        let json = log_of(100);
        let cut = json.find(r#"{"eventID":"e60""#).expect("record 60") + 10;
        let (read, ids, _) = stream(&gzip(&json.as_bytes()[..cut]), u64::MAX);
        let damage = read.damage.expect("damage");
        assert!(damage.contains("truncated"), "{damage}");
        assert!(
            damage.contains("the 60 records before it are kept"),
            "{damage}"
        );
        assert_eq!(ids.len(), 60);
        assert_eq!(ids.last().map(String::as_str), Some("e59"));
    }

    #[test]
    fn a_file_inflating_beyond_the_cap_is_cut_off_there() {
        // Records, then a megabyte of whitespace: a bomb in miniature.
        let mut json = log_of(10).into_bytes();
        json.truncate(json.len() - 2);
        json.extend(std::iter::repeat_n(b' ', 1 << 20));
        json.extend(b"]}");
        let (read, ids, _) = stream(&gzip(&json), 64 * 1024);
        let damage = read.damage.expect("damage");
        assert!(damage.contains("max_inflated_bytes"), "{damage}");
        assert_eq!(ids.len(), 10, "the records before the bomb are kept");
    }

    #[test]
    fn one_record_longer_than_the_record_bound_is_damage_not_memory() {
        // Past the bound by more than the parser's read-ahead.
        let huge = "x".repeat(MAX_RECORD_BYTES as usize + 256 * 1024);
        let json = format!(r#"{{"Records":[{{"eventID":"a"}},{{"eventID":"b","pad":"{huge}"}}]}}"#);
        let (read, ids, _) = stream(&gzip(json.as_bytes()), u64::MAX);
        let damage = read.damage.expect("damage");
        assert!(damage.contains("without a record ending"), "{damage}");
        assert_eq!(ids, vec!["a".to_string()]);
    }

    #[test]
    fn a_file_that_is_not_gzip_or_not_a_log_says_so() {
        let (read, _, _) = stream(b"this is not gzip", u64::MAX);
        assert_eq!(read.damage.as_deref(), Some("not a gzip file"));
        let (read, _, _) = stream(&gzip(b"[1,2,3]"), u64::MAX);
        assert!(read.damage.expect("damage").contains("`Records`"));
        let (read, _, _) = stream(&gzip(br#"{"Other":1}"#), u64::MAX);
        assert!(read.damage.expect("damage").contains("Records"));
    }

    #[test]
    fn a_sink_that_fails_stops_the_read_and_is_the_damage() {
        let gz = gzip(log_of(CHUNK_EVENTS + 1).as_bytes());
        let read = stream_log_file(KEY, &gz[..], None, u64::MAX, &mut |_, _| {
            Err("the writer stopped".into())
        });
        assert_eq!(read.damage.as_deref(), Some("the writer stopped"));
    }

    #[test]
    fn a_record_is_found_by_its_index_without_reading_the_rest() {
        let mut json = log_of(3).into_bytes();
        json.truncate(json.len() - 2);
        json.extend(b",{\"cut\":");
        let gz = gzip(&json);
        assert!(record_at(&gz[..], 1).expect("record 1").contains("\"e1\""));
        assert!(record_at(&gz[..], 5).is_err());
    }
}
