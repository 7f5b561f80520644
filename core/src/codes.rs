//! The SQLSTATEs of the SQL API's errors (class `TG`).

/// The stable errors of the SQL API, each with its own SQLSTATE (class `TG`). The
/// extension raises them, the client maps them to its `Error` variants and the server
/// to HTTP codes (`ErrorCode::from_sql` in server/src/http/error.rs, a `match` on these
/// variants); all three go through this table, never through message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `payload` is NULL or not a JSON object (or the `validation_error` debug flag).
    InvalidPayload,
    /// `metadata` is not a JSON object.
    InvalidMetadata,
    /// `payload` is larger than `triggers.config.max_payload_bytes`.
    PayloadTooLarge,
    /// Any other argument out of its domain: a limit, a status, a tenant, a flag.
    InvalidParameter,
    /// An inbox cursor that this version did not produce.
    InvalidCursor,
    /// No such event for this tenant.
    NotFound,
    /// The event is not in a state that allows the operation.
    InvalidState,
    /// The event has used all of its manual retries.
    RetriesExhausted,
    /// An API key that is malformed, unknown or revoked.
    InvalidApiKey,
    /// A per-tenant limit is reached (its webhook endpoints, `max_endpoints`).
    LimitReached,
    /// The calling role is bound to another tenant (`triggers.grant_tenant`), or may
    /// not act for every tenant at once.
    NotPermitted,
}

impl ErrorCode {
    /// Every code, in SQLSTATE order.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::InvalidPayload,
        ErrorCode::InvalidMetadata,
        ErrorCode::PayloadTooLarge,
        ErrorCode::InvalidParameter,
        ErrorCode::InvalidCursor,
        ErrorCode::NotFound,
        ErrorCode::InvalidState,
        ErrorCode::RetriesExhausted,
        ErrorCode::InvalidApiKey,
        ErrorCode::LimitReached,
        ErrorCode::NotPermitted,
    ];

    /// The SQLSTATE the extension raises.
    pub fn sqlstate(self) -> &'static str {
        match self {
            ErrorCode::InvalidPayload => "TG001",
            ErrorCode::InvalidMetadata => "TG002",
            ErrorCode::PayloadTooLarge => "TG003",
            ErrorCode::InvalidParameter => "TG004",
            ErrorCode::InvalidCursor => "TG005",
            ErrorCode::NotFound => "TG006",
            ErrorCode::InvalidState => "TG007",
            ErrorCode::RetriesExhausted => "TG008",
            ErrorCode::InvalidApiKey => "TG009",
            ErrorCode::LimitReached => "TG010",
            ErrorCode::NotPermitted => "TG011",
        }
    }

    /// The code for a SQLSTATE, if it is one of ours.
    pub fn from_sqlstate(sqlstate: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.sqlstate() == sqlstate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_distinct_and_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_sqlstate(code.sqlstate()), Some(code));
            assert_eq!(code.sqlstate().len(), 5);
        }
        assert_eq!(ErrorCode::from_sqlstate("XX000"), None);
    }

    /// Every SQLSTATE the SQL raises is in this table, and every entry is raised.
    #[test]
    fn the_sql_raises_exactly_these_codes() {
        let sql_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../sql");
        let mut raised = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(sql_dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            // 'TG and three digits: a SQLSTATE, not a placeholder such as 'TGnnn.
            for (i, _) in text.match_indices("'TG") {
                let code = text.get(i + 1..i + 6);
                if let Some(code) = code.filter(|c| c[2..].bytes().all(|b| b.is_ascii_digit())) {
                    raised.insert(code.to_string());
                }
            }
        }
        let known: std::collections::BTreeSet<String> = ErrorCode::ALL
            .iter()
            .map(|c| c.sqlstate().to_string())
            .collect();
        assert_eq!(raised, known);
    }
}
