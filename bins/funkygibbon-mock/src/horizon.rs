//! The history horizon (PROTOCOL §15.3, docs/SERVER.md): periodic compaction with
//! `--history-horizon`, and `POST /api/v1/admin/history/compact` (admin only).

use std::sync::Weak;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use goodies_store::horizon::CompactionReport;
use inbetweenies_proto::Timestamp;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::body::RawBody;
use crate::error::ApiError;
use crate::state::{AppInner, AppState};

/// Reads a duration: a whole number followed by `d`, `h`, `m` or `s` (or none: seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 30d, 12h, 90m or 45s"))?;
    let secs = match unit {
        "d" => n.checked_mul(86_400),
        "h" => n.checked_mul(3_600),
        "m" => n.checked_mul(60),
        "s" => Some(n),
        _ => None,
    }
    .ok_or_else(|| format!("{s:?} is not a duration such as 30d, 12h, 90m or 45s"))?;
    Ok(Duration::from_secs(secs))
}

/// How often the periodic compaction runs for a horizon: a quarter of it, between
/// one second and one hour.
pub fn period(horizon: Duration) -> Duration {
    (horizon / 4).clamp(Duration::from_secs(1), Duration::from_secs(3_600))
}

/// The horizon for "older than `age`" now.
fn horizon_for(age: Duration) -> Timestamp {
    let micros = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
    Timestamp::now().saturating_add_micros(-micros)
}

fn report_json(r: &CompactionReport) -> Value {
    json!({
        "pruned_versions": r.pruned_versions,
        "horizon": r.horizon.at,
        "horizon_seq": r.horizon.seq,
    })
}

/// Starts the periodic compaction when a horizon is configured; it ends with the server.
pub(crate) fn spawn(app: &AppState) {
    let Some(age) = app.config.history_horizon else {
        return;
    };
    let weak: Weak<AppInner> = std::sync::Arc::downgrade(&app.0);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period(age));
        loop {
            tick.tick().await;
            let Some(app) = weak.upgrade() else {
                return;
            };
            match app.store.compact_history(horizon_for(age)).await {
                Ok(r) => tracing::info!(
                    pruned = r.pruned_versions,
                    horizon = %r.horizon.at,
                    "history compacted"
                ),
                Err(e) => tracing::warn!(error = %e, "history compaction failed"),
            }
        }
    });
}

/// `POST /api/v1/admin/history/compact` `{"older_than": "30d"}` or `{"before": T}`, or no
/// body (the configured horizon): prunes superseded history now. Admin only.
pub(crate) async fn compact(
    State(app): State<AppState>,
    caller: Caller,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let value = body.json_opt()?.unwrap_or(Value::Null);
    let bad = |field: &str, msg: String| ApiError::bad_request(msg).with_field(field);
    let before = match (value.get("before"), value.get("older_than")) {
        (Some(Value::String(t)), None) => Timestamp::parse(t)
            .map_err(|e| bad("before", format!("before must be an RFC 3339 time: {e}")))?,
        (None, Some(Value::String(d))) => {
            horizon_for(parse_duration(d).map_err(|e| bad("older_than", e))?)
        }
        (None, None) => match app.config.history_horizon {
            Some(age) => horizon_for(age),
            None => {
                return Err(bad(
                    "older_than",
                    "no --history-horizon is configured: give older_than or before".into(),
                ))
            }
        },
        (Some(_), Some(_)) => {
            return Err(bad("before", "give before or older_than, not both".into()))
        }
        (Some(_), None) => return Err(bad("before", "before must be an RFC 3339 time".into())),
        (None, Some(_)) => {
            return Err(bad(
                "older_than",
                "older_than must be a duration such as 30d".into(),
            ))
        }
    };
    if before > Timestamp::now() {
        return Err(bad("before", "the horizon cannot be in the future".into()));
    }
    let report = app.store.compact_history(before).await?;
    Ok(Json(report_json(&report)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        for bad in ["", "d", "1w", "-1d", "1.5h", "1 d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(period(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(
            period(Duration::from_secs(86_400 * 30)),
            Duration::from_secs(3_600)
        );
    }
}
