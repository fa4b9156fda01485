//! W3C Trace Context (`traceparent`, `tracestate`): reading a caller's
//! headers, and the ones a request carries on to a backend.
//!
//! # Why by hand
//! The default build has no OpenTelemetry, yet the router must still pass a
//! caller's trace on to its backends, and judge hostile headers; the one
//! crate that only does this (`traceparent` 0.0.x) is unmaintained and
//! brings anyhow and a second fastrand. With the `otel` feature the same
//! parser feeds the OpenTelemetry context (`otel.rs`) rather than
//! `TraceContextPropagator`, so a header is judged the same with or
//! without the feature.
//!
//! # Invariants
//! A header this module refuses is never forwarded: the request starts a
//! new trace (in `serve`, or in the router under `otel`), and the caller
//! never learns more than that. Nothing here panics or allocates more than
//! the bounded header on any input.

use std::fmt;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// The header names (lowercase, as `HeaderName` keeps them); `&str`
/// rather than `HeaderName` constants, which clippy rightly flags: a
/// custom `HeaderName` holds `Bytes`, and a const of it is copied per use.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Longest `traceparent` read. Version 00 is exactly 55 bytes; later
/// versions may append fields, so a little room is left, but a header of
/// kilobytes is someone probing, not a tracer.
pub const MAX_TRACEPARENT_BYTES: usize = 256;
/// Longest `tracestate` forwarded: the spec's own propagation limit (512
/// characters); past it a vendor may discard the header, and we do.
pub const MAX_TRACESTATE_BYTES: usize = 512;
/// Length of a version-00 header: `vv-` + 32 + `-` + 16 + `-` + `ff`.
const VERSION_00_BYTES: usize = 55;

/// The sampled bit of the trace flags.
pub const SAMPLED: u8 = 0x01;

/// A valid `traceparent`: the caller's trace and its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    /// The caller's span, which becomes our span's parent.
    pub parent_id: [u8; 8],
    pub flags: u8,
}

/// Why a `traceparent` was refused (for tests and debug logs; never sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    #[error("longer than {MAX_TRACEPARENT_BYTES} bytes")]
    TooLong,
    #[error("not version-00 shaped (vv-<32 hex>-<16 hex>-<2 hex>)")]
    Shape,
    #[error("version ff is forbidden")]
    ForbiddenVersion,
    #[error("version 00 has exactly four fields")]
    TrailingData,
    #[error("{0} is not lowercase hex")]
    Hex(&'static str),
    #[error("{0} is all zeros")]
    Zero(&'static str),
}

/// Lowercase hex of exactly `N` bytes: the spec's `HEXDIGLC`, so upper
/// case is refused (the `hex` crate alone would take it).
fn lower_hex<const N: usize>(text: &str, field: &'static str) -> Result<[u8; N], TraceParentError> {
    if text.len() != 2 * N || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(TraceParentError::Hex(field));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|_| TraceParentError::Hex(field))?;
    Ok(out)
}

impl TraceParent {
    /// Parses a `traceparent` value as the W3C spec (level 1) asks.
    ///
    /// # Errors
    /// Over [`MAX_TRACEPARENT_BYTES`], not four dash-separated lowercase
    /// hex fields of 2, 32, 16 and 2 digits, version `ff`, version 00 with
    /// anything after the flags, or an all-zero trace or parent id.
    pub fn parse(text: &str) -> Result<TraceParent, TraceParentError> {
        if text.len() > MAX_TRACEPARENT_BYTES {
            return Err(TraceParentError::TooLong);
        }
        // ASCII first: every slice below is then on a character boundary.
        if !text.is_ascii() {
            return Err(TraceParentError::Shape);
        }
        let (Some(head), rest) = (text.get(..VERSION_00_BYTES), text.get(VERSION_00_BYTES..))
        else {
            return Err(TraceParentError::Shape);
        };
        let b = head.as_bytes();
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(TraceParentError::Shape);
        }
        let [version] = lower_hex::<1>(&head[0..2], "version")?;
        if version == 0xff {
            return Err(TraceParentError::ForbiddenVersion);
        }
        // A later version may append fields after a dash; version 00 may not.
        match rest {
            Some("") | None => {}
            Some(more) if version > 0 && more.starts_with('-') => {}
            Some(_) if version == 0 => return Err(TraceParentError::TrailingData),
            Some(_) => return Err(TraceParentError::Shape),
        }
        let trace_id = lower_hex::<16>(&head[3..35], "trace-id")?;
        let parent_id = lower_hex::<8>(&head[36..52], "parent-id")?;
        let [flags] = lower_hex::<1>(&head[53..55], "trace-flags")?;
        if trace_id == [0; 16] {
            return Err(TraceParentError::Zero("trace-id"));
        }
        if parent_id == [0; 8] {
            return Err(TraceParentError::Zero("parent-id"));
        }
        Ok(TraceParent { trace_id, parent_id, flags })
    }

    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

/// Always written as version 00, whatever version was read: the only one
/// we know the fields of.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.parent_id),
            self.flags
        )
    }
}

/// The caller's trace context, when its headers carry a valid one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub parent: TraceParent,
    /// `tracestate`, only alongside a valid parent and within
    /// [`MAX_TRACESTATE_BYTES`] (several headers joined with commas, as
    /// the spec says they combine).
    pub state: Option<String>,
}

/// The trace context of a request's headers: `None` when absent or refused.
/// Two `traceparent` headers are refused: which one is the caller's?
pub fn incoming(headers: &HeaderMap) -> Option<Incoming> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let (Some(value), None) = (values.next(), values.next()) else { return None };
    let parent = TraceParent::parse(value.to_str().ok()?).ok()?;
    let mut state = String::new();
    for value in headers.get_all(TRACESTATE) {
        let Ok(text) = value.to_str() else { return Some(Incoming { parent, state: None }) };
        if state.len() + text.len() + 1 > MAX_TRACESTATE_BYTES {
            return Some(Incoming { parent, state: None });
        }
        if !state.is_empty() {
            state.push(',');
        }
        state.push_str(text.trim());
    }
    Some(Incoming { parent, state: (!state.is_empty()).then_some(state) })
}

/// The trace headers a request carries on to a backend, decided once per
/// request (and once for its shadow copy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outgoing {
    traceparent: Option<HeaderValue>,
    tracestate: Option<HeaderValue>,
}

impl Outgoing {
    /// As a child of `span` when it has an OpenTelemetry context (the
    /// `otel` feature, an exporter, the span enabled); else the caller's
    /// valid context unchanged, as an intermediary that takes no part in
    /// tracing forwards it; else nothing, and the backend starts a trace.
    pub fn for_span(headers: &HeaderMap, span: &tracing::Span) -> Outgoing {
        #[cfg(feature = "otel")]
        if let Some((parent, state)) = super::otel::span_context(span) {
            return Outgoing::from_parts(&parent, state.as_deref());
        }
        let _ = span;
        match incoming(headers) {
            Some(caller) => Outgoing::from_parts(&caller.parent, caller.state.as_deref()),
            None => Outgoing::default(),
        }
    }

    fn from_parts(parent: &TraceParent, state: Option<&str>) -> Outgoing {
        Outgoing {
            traceparent: HeaderValue::try_from(parent.to_string()).ok(),
            tracestate: state.filter(|s| !s.is_empty()).and_then(|s| HeaderValue::from_str(s).ok()),
        }
    }

    /// Whether a caller's header is one this replaces (never copied as is).
    pub fn replaces(name: &HeaderName) -> bool {
        name == TRACEPARENT || name == TRACESTATE
    }

    /// Writes the headers into a request to a backend.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Some(value) = &self.traceparent {
            headers.insert(TRACEPARENT, value.clone());
            if let Some(state) = &self.tracestate {
                headers.insert(TRACESTATE, state.clone());
            }
        }
    }

    /// The `traceparent` sent, if any.
    pub fn traceparent(&self) -> Option<&HeaderValue> {
        self.traceparent.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_spec_example_parses_and_formats_back() {
        let parent = TraceParent::parse(VALID).unwrap();
        assert_eq!(parent.trace_id[0], 0x4b);
        assert_eq!(parent.parent_id[7], 0xb7);
        assert!(parent.sampled());
        assert_eq!(parent.to_string(), VALID);
        let unsampled = TraceParent::parse(&VALID.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled());
    }

    #[test]
    fn hostile_and_malformed_headers_are_refused() {
        use TraceParentError::*;
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        let cases: &[(&str, TraceParentError)] = &[
            ("", Shape),
            ("garbage", Shape),
            (&VALID[..54], Shape),
            (zero_trace, Zero("trace-id")),
            (zero_parent, Zero("parent-id")),
            (&VALID.to_uppercase(), Hex("trace-id")),
            (&VALID.replacen("00-", "ff-", 1), ForbiddenVersion),
            (&VALID.replacen("00-", "0g-", 1), Hex("version")),
            (&format!("{VALID}-extra"), TrailingData),
            (&format!("{VALID}x"), TrailingData),
            (&VALID.replace("-01", "-1x"), Hex("trace-flags")),
            (&VALID.replacen('-', "_", 1), Shape),
            (&VALID.replace("4bf9", "4bf\u{e9}"), Shape),
            (&format!("{VALID}{}", "-a".repeat(200)), TooLong),
        ];
        for (text, why) in cases {
            assert_eq!(TraceParent::parse(text).as_ref(), Err(why), "{text:?}");
        }
    }

    #[test]
    fn a_later_version_keeps_its_four_fields() {
        let later = format!("{}-what-comes-next", VALID.replacen("00-", "01-", 1));
        let parent = TraceParent::parse(&later).unwrap();
        assert_eq!(parent.to_string(), VALID, "written back as version 00");
        let glued = format!("{}x", VALID.replacen("00-", "01-", 1));
        assert_eq!(TraceParent::parse(&glued), Err(TraceParentError::Shape));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn tracestate_travels_only_with_a_valid_parent_and_within_its_bound() {
        let caller = incoming(&headers(&[(TRACEPARENT, VALID), (TRACESTATE, "a=1")])).unwrap();
        assert_eq!(caller.state.as_deref(), Some("a=1"));
        let joined = headers(&[(TRACEPARENT, VALID), (TRACESTATE, "a=1"), (TRACESTATE, "b=2")]);
        assert_eq!(incoming(&joined).unwrap().state.as_deref(), Some("a=1,b=2"));
        let huge = "k=".to_string() + &"v".repeat(MAX_TRACESTATE_BYTES);
        let caller = incoming(&headers(&[(TRACEPARENT, VALID), (TRACESTATE, &huge)])).unwrap();
        assert_eq!(caller.state, None, "an oversized tracestate is dropped, the parent kept");
        assert_eq!(incoming(&headers(&[(TRACEPARENT, "nope"), (TRACESTATE, "a=1")])), None);
        assert_eq!(incoming(&headers(&[(TRACEPARENT, VALID), (TRACEPARENT, VALID)])), None);
        assert_eq!(incoming(&HeaderMap::new()), None);
    }

    #[test]
    fn without_a_span_context_the_callers_valid_trace_is_forwarded_and_others_dropped() {
        let span = tracing::Span::none();
        let mut out = HeaderMap::new();
        Outgoing::for_span(&headers(&[(TRACEPARENT, VALID), (TRACESTATE, "a=1")]), &span)
            .apply(&mut out);
        assert_eq!(out.get(TRACEPARENT).unwrap(), VALID);
        assert_eq!(out.get(TRACESTATE).unwrap(), "a=1");
        let hostile = Outgoing::for_span(&headers(&[(TRACEPARENT, &"0".repeat(55))]), &span);
        assert_eq!(hostile, Outgoing::default());
        let mut out = HeaderMap::new();
        hostile.apply(&mut out);
        assert!(out.is_empty());
    }
}
