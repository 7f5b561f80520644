//! An event to enqueue ([`NewEvent`]), its debug flags ([`DebugFlag`], the one list of
//! them in Rust), the checks it can pass before it is sent, and the array
//! `enqueue_batch` sends.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use crate::error::Error;
use crate::storable;

/// A debug flag that makes an event misbehave on purpose, for testing consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DebugFlag {
    /// Enqueue rejects the event as an invalid payload.
    ValidationError,
    /// Processing fails every attempt: retries, then the dead-letter queue.
    ProcessingError,
    /// The event becomes visible to processing only after a delay.
    QueueDelay,
    /// Processing sends the event straight to the dead-letter queue.
    DlqRouting,
}

impl DebugFlag {
    /// Every flag.
    pub const ALL: [DebugFlag; 4] = [
        DebugFlag::ValidationError,
        DebugFlag::ProcessingError,
        DebugFlag::QueueDelay,
        DebugFlag::DlqRouting,
    ];

    /// The flag as the SQL API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            DebugFlag::ValidationError => "validation_error",
            DebugFlag::ProcessingError => "processing_error",
            DebugFlag::QueueDelay => "queue_delay",
            DebugFlag::DlqRouting => "dlq_routing",
        }
    }
}

impl fmt::Display for DebugFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A debug flag name that is not one of [`DebugFlag::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownDebugFlag(pub String);

impl fmt::Display for UnknownDebugFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = DebugFlag::ALL.iter().map(|d| d.as_str()).collect();
        let (last, rest) = names.split_last().expect("DebugFlag::ALL is not empty");
        write!(
            f,
            "debug must be {} or {last}, got '{}'",
            rest.join(", "),
            self.0
        )
    }
}

impl std::error::Error for UnknownDebugFlag {}

impl FromStr for DebugFlag {
    type Err = UnknownDebugFlag;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DebugFlag::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownDebugFlag(s.to_string()))
    }
}

/// An event to enqueue, built up field by field.
///
/// ```
/// use triggers_client::NewEvent;
/// let event = NewEvent::new(serde_json::json!({"order": 42}))
///     .tenant("acme")
///     .metadata(serde_json::json!({"source": "shop"}))
///     .idempotency_key("order-42");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub(crate) payload: Value,
    pub(crate) metadata: Option<Value>,
    pub(crate) tenant: String,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) stream: Option<String>,
    pub(crate) debug: Option<DebugFlag>,
}

impl NewEvent {
    /// An event with this payload (a JSON object) for tenant `default`.
    pub fn new(payload: Value) -> Self {
        NewEvent {
            payload,
            metadata: None,
            tenant: "default".to_string(),
            idempotency_key: None,
            stream: None,
            debug: None,
        }
    }

    /// Attaches metadata (a JSON object).
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// The tenant the event belongs to.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = tenant.into();
        self
    }

    /// A key that makes enqueueing idempotent within the tenant.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Puts the event on an ordered stream.
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = Some(stream.into());
        self
    }

    /// Sets a debug flag.
    pub fn debug(mut self, flag: DebugFlag) -> Self {
        self.debug = Some(flag);
        self
    }

    /// The tenant the event belongs to.
    pub fn tenant_name(&self) -> &str {
        &self.tenant
    }

    /// Refuses, naming the field, what enqueue would refuse for this event alone, without
    /// a round trip: a payload that is not a JSON object or metadata that is not one
    /// (the extension's TG001 and TG002, in its words), a NUL character in any string or
    /// key, or a number beyond `numeric`'s range. Sizes and limits, which depend on the
    /// database's settings, are left to the extension.
    ///
    /// The enqueue calls check only what Postgres cannot store (the extension cannot name
    /// the field of that), and leave the shape to the extension, so an event refused
    /// there fails inside the caller's transaction as it always did. Call this to learn
    /// early (the server does, before group commit).
    pub fn check(&self) -> Result<(), Error> {
        self.check_shape()?;
        self.check_storable("")
    }

    /// The extension's two shape checks (`triggers._event_error`), same codes, same
    /// words; a test holds the words to the SQL.
    fn check_shape(&self) -> Result<(), Error> {
        if !self.payload.is_object() {
            return Err(Error::InvalidPayload(format!(
                "payload must be a JSON object, got {}",
                json_type(&self.payload)
            )));
        }
        match &self.metadata {
            Some(m) if !m.is_object() => Err(Error::InvalidMetadata(format!(
                "metadata must be a JSON object or NULL, got {}",
                json_type(m)
            ))),
            _ => Ok(()),
        }
    }

    /// What Postgres cannot store (see `storable`), with `prefix` before each field name
    /// ("events[3].").
    pub(crate) fn check_storable(&self, prefix: &str) -> Result<(), Error> {
        let named = |field: &str| format!("{prefix}{field}");
        if let Err(e) = storable::json(&named("payload"), &self.payload) {
            return Err(Error::InvalidPayload(e));
        }
        let texts = [
            ("tenant", Some(self.tenant.as_str())),
            ("idempotency_key", self.idempotency_key.as_deref()),
            ("stream", self.stream.as_deref()),
        ];
        storable::texts(prefix, texts).map_err(Error::InvalidParameter)?;
        match &self.metadata {
            Some(m) => storable::json(&named("metadata"), m).map_err(Error::InvalidParameter),
            None => Ok(()),
        }
    }
}

/// A JSON value's type as Postgres's `jsonb_typeof` names it.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `enqueue_batch`'s array, written straight from the events: no copy of any payload.
#[derive(Debug)]
pub(crate) struct BatchArray<'a>(pub &'a [NewEvent]);

impl serde::Serialize for BatchArray<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(BatchElement))
    }
}

/// One element: `{payload, metadata?, idempotency_key?, stream?, debug?}`.
struct BatchElement<'a>(&'a NewEvent);

impl serde::Serialize for BatchElement<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let e = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("payload", &e.payload)?;
        if let Some(m) = &e.metadata {
            map.serialize_entry("metadata", m)?;
        }
        if let Some(k) = &e.idempotency_key {
            map.serialize_entry("idempotency_key", k)?;
        }
        if let Some(s) = &e.stream {
            map.serialize_entry("stream", s)?;
        }
        if let Some(d) = e.debug {
            map.serialize_entry("debug", d.as_str())?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn debug_flags_round_trip_and_name_the_list_when_unknown() {
        for flag in DebugFlag::ALL {
            assert_eq!(flag.as_str().parse::<DebugFlag>(), Ok(flag));
        }
        assert_eq!(
            "explode".parse::<DebugFlag>().unwrap_err().to_string(),
            "debug must be validation_error, processing_error, queue_delay or dlq_routing, \
             got 'explode'"
        );
    }

    #[test]
    fn check_refuses_a_shape_the_extension_refuses_in_its_words() {
        let err = NewEvent::new(json!([1])).check().unwrap_err();
        assert!(
            matches!(&err, Error::InvalidPayload(m) if m == "payload must be a JSON object, got array"),
            "{err:?}"
        );
        let err = NewEvent::new(json!({}))
            .metadata(json!(5))
            .check()
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidMetadata(m) if m == "metadata must be a JSON object or NULL, got number"),
            "{err:?}"
        );
        assert!(NewEvent::new(json!({"a": 1}))
            .metadata(json!({}))
            .check()
            .is_ok());
    }

    /// The shape messages are the extension's: the SQL raises the same words.
    #[test]
    fn shape_messages_are_the_sqls() {
        let sql_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../sql");
        let sql: String = std::fs::read_dir(sql_dir)
            .unwrap()
            .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
            .collect();
        for words in [
            "payload must be a JSON object, got ",
            "metadata must be a JSON object or NULL, got ",
        ] {
            assert!(sql.contains(words), "the SQL no longer says '{words}'");
        }
    }
}
