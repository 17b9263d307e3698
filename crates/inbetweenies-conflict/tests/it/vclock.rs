//! Vector clock cases: increment, merge, compare, wire form.

use inbetweenies_conflict::{ClockOrdering, VectorClock, VectorClockError};
use inbetweenies_proto::VectorClockWire;

fn clock(entries: &[(&str, u64)]) -> VectorClock {
    entries.iter().map(|(d, c)| ((*d).to_owned(), *c)).collect()
}

#[test]
fn compare_cases() {
    let cases = [
        (clock(&[]), clock(&[]), ClockOrdering::Equal),
        (clock(&[("a", 0)]), clock(&[]), ClockOrdering::Equal),
        (
            clock(&[("a", 1)]),
            clock(&[("a", 2)]),
            ClockOrdering::Before,
        ),
        (
            clock(&[("a", 1)]),
            clock(&[("a", 1), ("b", 1)]),
            ClockOrdering::Before,
        ),
        (
            clock(&[("a", 3), ("b", 1)]),
            clock(&[("a", 2), ("b", 1)]),
            ClockOrdering::After,
        ),
        (
            clock(&[("a", 2)]),
            clock(&[("b", 1)]),
            ClockOrdering::Concurrent,
        ),
        (
            clock(&[("a", 2), ("b", 0)]),
            clock(&[("a", 1), ("b", 1)]),
            ClockOrdering::Concurrent,
        ),
    ];
    for (left, right, expected) in cases {
        assert_eq!(left.compare(&right), expected, "{left} vs {right}");
        let back = match expected {
            ClockOrdering::Before => ClockOrdering::After,
            ClockOrdering::After => ClockOrdering::Before,
            other => other,
        };
        assert_eq!(right.compare(&left), back, "{right} vs {left}");
        assert_eq!(left == right, expected == ClockOrdering::Equal);
        assert_eq!(
            left.partial_cmp(&right).is_none(),
            expected == ClockOrdering::Concurrent
        );
    }
}

#[test]
fn increment_and_merge() {
    let mut phone = VectorClock::new();
    let mut laptop = VectorClock::new();
    assert_eq!(phone.increment("phone"), 1);
    assert_eq!(phone.increment("phone"), 2);
    assert_eq!(laptop.increment("laptop"), 1);
    assert!(phone.is_concurrent_with(&laptop));
    let mut server = phone.merged(&laptop);
    assert_eq!(server.get("phone"), 2);
    assert_eq!(server.get("laptop"), 1);
    assert!(phone.happened_before(&server));
    assert!(laptop.happened_before(&server));
    server.merge(&phone);
    assert_eq!(server, phone.merged(&laptop));
    laptop.merge(&server);
    laptop.increment("laptop");
    assert_eq!(laptop.compare(&server), ClockOrdering::After);
    assert_eq!(laptop.get("nobody"), 0);
}

#[test]
fn wire_round_trip_and_errors() {
    let c = clock(&[("phone", 12), ("laptop", 3)]);
    let wire = c.to_wire();
    assert_eq!(
        serde_json::to_string(&wire).unwrap(),
        r#"{"clocks":{"laptop":"3","phone":"12"}}"#
    );
    assert_eq!(VectorClock::from_wire(&wire).unwrap(), c);
    let empty: VectorClockWire = serde_json::from_str(r#"{"clocks": {}}"#).unwrap();
    assert!(VectorClock::from_wire(&empty).unwrap().is_empty());
    let max: VectorClockWire =
        serde_json::from_str(r#"{"clocks": {"a": "18446744073709551615"}}"#).unwrap();
    assert_eq!(VectorClock::from_wire(&max).unwrap().get("a"), u64::MAX);
    for bad in ["", "-1", "+1", "1.5", "abc", " 1", "18446744073709551616"] {
        let mut wire = VectorClockWire::default();
        wire.clocks.insert("dev".into(), bad.into());
        let err = VectorClock::from_wire(&wire).unwrap_err();
        assert_eq!(
            err,
            VectorClockError::NotACounter {
                device: "dev".into(),
                value: bad.into()
            }
        );
        assert!(err.to_string().starts_with("vector clock entry for device"));
    }
}
