//! The Merkle tree in SQLite tables (see [`crate::merkle`]).

use std::collections::{BTreeMap, BTreeSet};

use inbetweenies_conflict::{MerkleTree, NodeId, FANOUT};
use inbetweenies_proto::{EntityId, Version};
use sqlx::{Row, SqliteConnection};

use super::{latest_summaries, SqliteStore, LATEST_VERSIONS_JSON};
use crate::error::{Result, StoreError};
use crate::merkle::*;

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("cannot encode JSON: {e}")))
}

/// Stores the hashes of `level` given by index.
async fn put_nodes(
    conn: &mut SqliteConnection,
    level: u8,
    nodes: &BTreeMap<i64, inbetweenies_conflict::NodeHash>,
) -> Result<()> {
    let rows: Vec<(i64, String)> = nodes.iter().map(|(i, h)| (*i, h.to_hex())).collect();
    for chunk in rows.chunks(5_000) {
        sqlx::query(
            "INSERT OR REPLACE INTO merkle_nodes (level, idx, hash) \
             SELECT ?, value ->> 0, value ->> 1 FROM json_each(?)",
        )
        .bind(i64::from(level))
        .bind(json(&chunk)?)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::database)?;
    }
    Ok(())
}

/// The stored hashes of `level` whose parent is one of `parents`.
async fn children_of(
    conn: &mut SqliteConnection,
    level: u8,
    parents: &BTreeSet<i64>,
) -> Result<BTreeMap<i64, inbetweenies_conflict::NodeHash>> {
    let list: Vec<i64> = parents.iter().copied().collect();
    let rows = sqlx::query(
        "SELECT n.idx, n.hash FROM json_each(?) p JOIN merkle_nodes n \
         ON n.level = ? AND n.idx >= p.value * 16 AND n.idx < p.value * 16 + 16",
    )
    .bind(json(&list)?)
    .bind(i64::from(level))
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::database)?;
    let mut out = BTreeMap::new();
    for row in rows {
        let idx: i64 = row.try_get(0).map_err(StoreError::database)?;
        let hash: String = row.try_get(1).map_err(StoreError::database)?;
        out.insert(idx, parse_hash(&hash)?);
    }
    Ok(out)
}

/// Brings the tree up to date with the ids this write transaction changed (recorded in
/// `merkle_dirty` by the triggers while the tree is on) and empties `merkle_dirty`.
pub(super) async fn apply_dirty(conn: &mut SqliteConnection) -> Result<()> {
    let mut ids: Vec<String> = sqlx::query_scalar("DELETE FROM merkle_dirty RETURNING id")
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::database)?;
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(());
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let latest = latest_summaries(conn, &refs).await?;
    let mut upserts: Vec<(i64, &str, &str)> = Vec::new();
    let mut removals: Vec<(i64, &str)> = Vec::new();
    let mut leaves: BTreeSet<i64> = BTreeSet::new();
    for id in &refs {
        let leaf = leaf_index(id);
        leaves.insert(leaf);
        match latest.get(&EntityId::new(*id)) {
            Some(l) => upserts.push((leaf, id, l.version.as_str())),
            None => removals.push((leaf, id)),
        }
    }
    for chunk in upserts.chunks(5_000) {
        sqlx::query(
            "INSERT OR REPLACE INTO merkle_rows (leaf, id, version) \
             SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?)",
        )
        .bind(json(&chunk)?)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::database)?;
    }
    for chunk in removals.chunks(5_000) {
        sqlx::query(
            "DELETE FROM merkle_rows WHERE (leaf, id) IN \
             (SELECT value ->> 0, value ->> 1 FROM json_each(?))",
        )
        .bind(json(&chunk)?)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::database)?;
    }
    // The changed leaves, then each level above up to the root.
    let list: Vec<i64> = leaves.iter().copied().collect();
    let rows = sqlx::query(
        "SELECT r.leaf, r.id, r.version FROM json_each(?) l JOIN merkle_rows r ON r.leaf = l.value",
    )
    .bind(json(&list)?)
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::database)?;
    let mut by_leaf: BTreeMap<i64, Vec<(String, String)>> =
        leaves.iter().map(|l| (*l, Vec::new())).collect();
    for row in rows {
        let leaf: i64 = row.try_get(0).map_err(StoreError::database)?;
        by_leaf.entry(leaf).or_default().push((
            row.try_get(1).map_err(StoreError::database)?,
            row.try_get(2).map_err(StoreError::database)?,
        ));
    }
    let mut changed: BTreeMap<i64, _> = by_leaf
        .iter_mut()
        .map(|(leaf, rows)| (*leaf, leaf_hash(rows)))
        .collect();
    put_nodes(conn, MERKLE_DEPTH, &changed).await?;
    for level in (0..MERKLE_DEPTH).rev() {
        let parents = parents_of(changed.keys().copied());
        let children = children_of(conn, level + 1, &parents).await?;
        changed = parent_hashes(&children)?;
        put_nodes(conn, level, &changed).await?;
    }
    Ok(())
}

impl SqliteStore {
    /// Turns the tree on and builds it from the latest rows, unless it is on already.
    async fn merkle_ensure(&self) -> Result<()> {
        let on: i64 = sqlx::query_scalar("SELECT merkle_on FROM store_meta WHERE one = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::database)?;
        if on != 0 {
            return Ok(());
        }
        let mut w = self.writer().await?;
        let on: i64 = sqlx::query_scalar("SELECT merkle_on FROM store_meta WHERE one = 1")
            .fetch_one(w.conn())
            .await
            .map_err(StoreError::database)?;
        if on != 0 {
            return Ok(());
        }
        let latest: String = sqlx::query_scalar(LATEST_VERSIONS_JSON)
            .fetch_one(w.conn())
            .await
            .map_err(StoreError::database)?;
        let latest: Vec<(String, String)> = serde_json::from_str(&latest)
            .map_err(|e| StoreError::Corrupt(format!("latest versions: {e}")))?;
        for sql in [
            "DELETE FROM merkle_rows",
            "DELETE FROM merkle_nodes",
            "DELETE FROM merkle_dirty",
            "UPDATE store_meta SET merkle_on = 1 WHERE one = 1",
        ] {
            sqlx::query(sql)
                .execute(w.conn())
                .await
                .map_err(StoreError::database)?;
        }
        let rows: Vec<(i64, &str, &str)> = latest
            .iter()
            .map(|(id, v)| (leaf_index(id), id.as_str(), v.as_str()))
            .collect();
        for chunk in rows.chunks(5_000) {
            sqlx::query(
                "INSERT INTO merkle_rows (leaf, id, version) \
                 SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?)",
            )
            .bind(json(&chunk)?)
            .execute(w.conn())
            .await
            .map_err(StoreError::database)?;
        }
        let tree = MerkleTree::from_rows(latest, MERKLE_DEPTH)
            .map_err(|e| StoreError::Corrupt(format!("Merkle tree: {e}")))?;
        for level in 0..=MERKLE_DEPTH {
            let hashes = tree.level(level).unwrap_or_default();
            let nodes: BTreeMap<i64, _> = hashes
                .iter()
                .enumerate()
                .map(|(i, h)| (i as i64, *h))
                .collect();
            put_nodes(w.conn(), level, &nodes).await?;
        }
        w.commit().await
    }

    /// Nodes of one level of the tree, read in one snapshot.
    pub(super) async fn read_merkle(&self, level: u8, nodes: &[NodeId]) -> Result<Vec<MerkleNode>> {
        check_request(level, nodes)?;
        self.merkle_ensure().await?;
        let mut tx = self.pool.begin().await.map_err(StoreError::database)?;
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            let idx = i64::from(node.index());
            let hash: String =
                sqlx::query_scalar("SELECT hash FROM merkle_nodes WHERE level = ? AND idx = ?")
                    .bind(i64::from(level))
                    .bind(idx)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::database)?
                    .ok_or_else(|| StoreError::Corrupt(format!("Merkle node {node} missing")))?;
            let below = if level < MERKLE_DEPTH {
                let parents = BTreeSet::from([idx]);
                let kids = children_of(&mut tx, level + 1, &parents).await?;
                if kids.len() != FANOUT {
                    return Err(StoreError::Corrupt(format!(
                        "Merkle node {node} has {} children stored",
                        kids.len()
                    )));
                }
                MerkleBelow::Children(kids.into_values().collect())
            } else {
                let rows = sqlx::query("SELECT id, version FROM merkle_rows WHERE leaf = ?")
                    .bind(idx)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(StoreError::database)?;
                let mut rows: Vec<(String, String)> = rows
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<std::result::Result<_, sqlx::Error>>()
                    .map_err(StoreError::database)?;
                rows.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                MerkleBelow::Rows(
                    rows.into_iter()
                        .map(|(i, v)| (EntityId::new(i), Version::new(v)))
                        .collect(),
                )
            };
            out.push(MerkleNode {
                node: *node,
                hash: parse_hash(&hash)?,
                below,
            });
        }
        tx.commit().await.map_err(StoreError::database)?;
        Ok(out)
    }
}
