//! Text scoring for `search_entities` and `find_similar_entities`, and the content preview.
//!
//! Search score of an entity for a query `q` (lowercased, split on whitespace into words):
//! 1. name contains `q`: +3; else +1.5 per word of `q` the name contains;
//! 2. the content (as JSON text) contains `q`: +2; else +0.5 per word it contains;
//!    +1 more per string value of the content that contains `q`;
//! 3. name equal to `q`: the score doubles;
//! 4. name-to-query likeness (below) over 0.8: the likeness is added.
//!
//! Likeness of two strings is `2·M / (len a + len b)`, M the characters of matching blocks
//! found by repeatedly taking the longest common substring (Ratcliff–Obershelp).

use inbetweenies_proto::{Entity, JsonObject};
use serde_json::Value;

/// The search score of an entity, and why it matched (highlights per field).
pub fn search_score(entity: &Entity, query: &str) -> (f64, JsonObject) {
    let q = query.to_lowercase();
    let words: Vec<&str> = q.split_whitespace().collect();
    let name = entity.name.to_lowercase();
    let mut score = 0.0;
    let mut highlights = JsonObject::new();
    if name.contains(&q) {
        score += 3.0;
        highlights.insert("name".into(), Value::from(vec![entity.name.clone()]));
    } else {
        let hits = words.iter().filter(|w| name.contains(**w)).count();
        if hits > 0 {
            score += 1.5 * hits as f64;
            highlights.insert("name".into(), Value::from(vec![entity.name.clone()]));
        }
    }
    if !entity.content.is_empty() {
        let mut notes: Vec<String> = Vec::new();
        let text = Value::Object(entity.content.clone())
            .to_string()
            .to_lowercase();
        if text.contains(&q) {
            score += 2.0;
            notes.push(format!("Content contains '{query}'"));
        } else {
            let hits = words.iter().filter(|w| text.contains(**w)).count();
            if hits > 0 {
                score += 0.5 * hits as f64;
                notes.push(format!("Content matches {hits} word(s)"));
            }
        }
        for (key, value) in &entity.content {
            if let Value::String(s) = value {
                if s.to_lowercase().contains(&q) {
                    score += 1.0;
                    notes.push(format!("{key}: {}...", prefix(s, 50)));
                }
            }
        }
        if !notes.is_empty() {
            highlights.insert("content".into(), Value::from(notes));
        }
    }
    if name == q {
        score *= 2.0;
    }
    let like = likeness(&name, &q);
    if like > 0.8 {
        score += like;
    }
    (score, highlights)
}

/// Similarity of a candidate to a reference entity, from 0 to 1:
/// 0.2 for the same entity type, 0.3 × the likeness of the lowercased names,
/// 0.3 × the share of content keys they have in common (of all keys of either),
/// 0.2 × the share of common keys whose values are equal.
pub fn similarity(reference: &Entity, candidate: &Entity) -> f64 {
    let mut score = 0.0;
    if reference.entity_type == candidate.entity_type {
        score += 0.2;
    }
    score += 0.3
        * likeness(
            &reference.name.to_lowercase(),
            &candidate.name.to_lowercase(),
        );
    let (a, b) = (&reference.content, &candidate.content);
    if !a.is_empty() && !b.is_empty() {
        let common: Vec<&String> = a.keys().filter(|k| b.contains_key(*k)).collect();
        let union = a.len() + b.len() - common.len();
        score += 0.3 * common.len() as f64 / union as f64;
        if !common.is_empty() {
            let equal = common.iter().filter(|k| a.get(**k) == b.get(**k)).count();
            score += 0.2 * equal as f64 / common.len() as f64;
        }
    }
    score
}

/// `2·M / (len a + len b)` over characters (1.0 for two empty strings).
pub fn likeness(a: &str, b: &str) -> f64 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    2.0 * matched(&a, &b) as f64 / (a.len() + b.len()) as f64
}

fn matched(a: &[char], b: &[char]) -> usize {
    if a.is_empty() || b.is_empty() {
        return 0;
    }
    // Longest common substring, the earliest in `a` (then in `b`) on ties.
    let (mut best, mut at_a, mut at_b) = (0usize, 0usize, 0usize);
    let mut prev = vec![0usize; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![0usize; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            if ca == cb {
                cur[j + 1] = prev[j] + 1;
                if cur[j + 1] > best {
                    best = cur[j + 1];
                    at_a = i + 1 - best;
                    at_b = j + 1 - best;
                }
            }
        }
        prev = cur;
    }
    if best == 0 {
        return 0;
    }
    best + matched(&a[..at_a], &b[..at_b]) + matched(&a[at_a + best..], &b[at_b + best..])
}

/// The first three content entries as `key: value` (each value cut to 50 characters),
/// joined by ", " and followed by "..."; `None` for empty content.
pub fn content_preview(content: &JsonObject) -> Option<String> {
    if content.is_empty() {
        return None;
    }
    let items: Vec<String> = content
        .iter()
        .take(3)
        .map(|(k, v)| format!("{k}: {}", prefix(&display(v), 50)))
        .collect();
    Some(format!("{}...", items.join(", ")))
}

fn prefix(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// A value as text: strings bare, lists and objects with quoted strings
/// (`['a', 'b']`, `{'k': 1}`), booleans `True`/`False`, null `None`.
fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => nested(other),
    }
}

fn nested(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.contains('\'') && !s.contains('"') => format!("\"{s}\""),
        Value::String(s) => format!("'{}'", s.replace('\'', "\\'")),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(nested).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", nested(&Value::String(k.clone())), nested(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn likeness_counts_matching_blocks() {
        assert_eq!(likeness("kitchen", "kitchen"), 1.0);
        assert_eq!(likeness("abcd", "bcde"), 0.75);
        assert_eq!(likeness("abc", "xyz"), 0.0);
    }

    #[test]
    fn previews_quote_nested_strings_and_cut_long_values() {
        let content = json!({"area": 250, "features": ["island", "pantry"], "floor": 1, "x": 2});
        let Value::Object(c) = content else {
            unreachable!()
        };
        assert_eq!(
            content_preview(&c).as_deref(),
            Some("area: 250, features: ['island', 'pantry'], floor: 1...")
        );
        let Value::Object(long) =
            json!({"steps": ["1. Press thermostat to wake", "2. Navigate to Settings"]})
        else {
            unreachable!()
        };
        assert_eq!(
            content_preview(&long).as_deref(),
            Some("steps: ['1. Press thermostat to wake', '2. Navigate to Se...")
        );
        assert_eq!(content_preview(&JsonObject::new()), None);
    }
}
