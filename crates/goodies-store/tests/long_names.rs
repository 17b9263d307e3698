//! Names of any length are stored exactly and listed in name order on every backend.
//!
//! PostgreSQL's btree index entries hold at most about 2.7 kB, so an index
//! over whole names refused a long name that does not compress (where SQLite
//! stored it). The listing index keys on a prefix instead; these stories
//! check that a 1 MB name is stored and read back exactly, and that names
//! which share a long prefix still list in byte order of the whole name.

mod support;

use anyhow::ensure;
use goodies_store::EntityQuery;
use inbetweenies_proto::EntityType;
use support::*;

/// `len` letters that do not compress (a fixed pseudo-random sequence).
fn incompressible(len: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

async fn a_long_name_is_stored_exactly_and_names_list_in_byte_order(
    h: &Harness,
) -> anyhow::Result<()> {
    let store = h.default_server().await;
    let long = incompressible(1 << 20, 7);
    // Names that share their first 300 characters (more than any index prefix)
    // and differ after it, one that is a prefix of another, and short ones.
    let shared = incompressible(300, 11);
    let names = [
        long.clone(),
        format!("{shared}b"),
        format!("{shared}a"),
        shared.clone(),
        format!("{shared}a\u{1f600}"),
        "Z".to_owned(),
        "a".to_owned(),
        "\u{e9}".to_owned(),
    ];
    let mut changes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let v = ver(i as i64, 1, "tester");
        changes.push(create(ent(
            &format!("e{i}"),
            &v,
            &[],
            EntityType::Note,
            name,
            serde_json::json!({}),
        )));
    }
    let out = store.apply_push(batch("d", "tester", changes)).await?;
    ensure!(out.entities_written == names.len() as u64, "{out:?}");

    let back = store
        .entity(&"e0".into())
        .await?
        .ok_or_else(|| anyhow::anyhow!("e0 is stored"))?;
    ensure!(back.name == long, "the 1 MB name reads back exactly");

    let listed = store.entities(&EntityQuery::default()).await?;
    let listed: Vec<(String, String)> = listed
        .into_iter()
        .map(|e| (e.name, e.id.to_string()))
        .collect();
    let mut expected: Vec<(String, String)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), format!("e{i}")))
        .collect();
    expected.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()).then(a.1.cmp(&b.1)));
    ensure!(
        listed == expected,
        "listed in byte order of the whole name: {:?}",
        listed.iter().map(|(_, id)| id).collect::<Vec<_>>()
    );

    // A page in the middle is the same slice of that order.
    let page = store
        .entities(&EntityQuery {
            limit: Some(3),
            offset: 2,
            ..EntityQuery::default()
        })
        .await?;
    let page: Vec<String> = page.into_iter().map(|e| e.id.to_string()).collect();
    let want: Vec<String> = expected[2..5].iter().map(|(_, id)| id.clone()).collect();
    ensure!(page == want, "{page:?} != {want:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_stores_a_1_mb_name_and_lists_long_names_in_order() -> anyhow::Result<()> {
    a_long_name_is_stored_exactly_and_names_list_in_byte_order(&Harness::sqlite()).await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stores_a_1_mb_name_and_lists_long_names_in_order() -> anyhow::Result<()> {
    let Some(h) = Harness::postgres().await else {
        return Ok(());
    };
    a_long_name_is_stored_exactly_and_names_list_in_byte_order(&h).await
}
