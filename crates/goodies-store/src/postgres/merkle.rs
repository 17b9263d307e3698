//! The Merkle tree in PostgreSQL tables (see [`crate::merkle`]).
//!
//! Every write transaction holds the write lock, so the tree is updated by one
//! transaction at a time, whichever server process runs it.

use std::collections::{BTreeMap, BTreeSet};

use inbetweenies_conflict::{MerkleTree, NodeHash, NodeId, FANOUT};
use inbetweenies_proto::{EntityId, Version};
use sqlx::PgConnection;

use super::{db, PgStore};
use crate::error::{Result, StoreError};
use crate::merkle::*;

/// Stores the hashes of `level` given by index.
async fn put_nodes(
    conn: &mut PgConnection,
    level: u8,
    nodes: &BTreeMap<i64, NodeHash>,
) -> Result<()> {
    let idx: Vec<i32> = nodes.keys().map(|i| *i as i32).collect();
    let hashes: Vec<String> = nodes.values().map(NodeHash::to_hex).collect();
    sqlx::query(
        "INSERT INTO merkle_nodes (level, idx, hash) SELECT $1, i, h FROM UNNEST($2::int[], $3::text[]) AS t(i, h) \
         ON CONFLICT (level, idx) DO UPDATE SET hash = EXCLUDED.hash",
    )
    .bind(i16::from(level))
    .bind(&idx)
    .bind(&hashes)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// The stored hashes of `level` whose parent is one of `parents`.
async fn children_of(
    conn: &mut PgConnection,
    level: u8,
    parents: &BTreeSet<i64>,
) -> Result<BTreeMap<i64, NodeHash>> {
    let list: Vec<i32> = parents.iter().map(|p| *p as i32).collect();
    let rows: Vec<(i32, String)> = sqlx::query_as(
        "SELECT idx, hash FROM merkle_nodes WHERE level = $1 AND idx / 16 = ANY($2::int[])",
    )
    .bind(i16::from(level))
    .bind(&list)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    rows.into_iter()
        .map(|(i, h)| Ok((i64::from(i), parse_hash(&h)?)))
        .collect()
}

/// Brings the tree up to date with the ids this write transaction changed (recorded in
/// `merkle_dirty` by the triggers while the tree is on) and empties `merkle_dirty`.
pub(super) async fn apply_dirty(conn: &mut PgConnection) -> Result<()> {
    let ids: Vec<String> = sqlx::query_scalar("DELETE FROM merkle_dirty RETURNING id")
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    if ids.is_empty() {
        return Ok(());
    }
    let latest: Vec<(String, String)> =
        sqlx::query_as("SELECT id, version FROM entities WHERE is_latest AND id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
    let latest: BTreeMap<String, String> = latest.into_iter().collect();
    let mut leaves: BTreeSet<i64> = BTreeSet::new();
    let (mut up_leaf, mut up_id, mut up_version) = (Vec::new(), Vec::new(), Vec::new());
    let (mut rm_leaf, mut rm_id) = (Vec::new(), Vec::new());
    for id in &ids {
        let leaf = leaf_index(id);
        leaves.insert(leaf);
        match latest.get(id) {
            Some(v) => {
                up_leaf.push(leaf as i32);
                up_id.push(id.as_str());
                up_version.push(v.as_str());
            }
            None => {
                rm_leaf.push(leaf as i32);
                rm_id.push(id.as_str());
            }
        }
    }
    sqlx::query(
        "INSERT INTO merkle_rows (leaf, id, version) \
         SELECT * FROM UNNEST($1::int[], $2::text[], $3::text[]) \
         ON CONFLICT (leaf, id) DO UPDATE SET version = EXCLUDED.version",
    )
    .bind(&up_leaf)
    .bind(&up_id)
    .bind(&up_version)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    sqlx::query(
        "DELETE FROM merkle_rows r USING UNNEST($1::int[], $2::text[]) AS d(leaf, id) \
         WHERE r.leaf = d.leaf AND r.id = d.id",
    )
    .bind(&rm_leaf)
    .bind(&rm_id)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    let list: Vec<i32> = leaves.iter().map(|l| *l as i32).collect();
    let rows: Vec<(i32, String, String)> =
        sqlx::query_as("SELECT leaf, id, version FROM merkle_rows WHERE leaf = ANY($1::int[])")
            .bind(&list)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
    let mut by_leaf: BTreeMap<i64, Vec<(String, String)>> =
        leaves.iter().map(|l| (*l, Vec::new())).collect();
    for (leaf, id, version) in rows {
        by_leaf
            .entry(i64::from(leaf))
            .or_default()
            .push((id, version));
    }
    let mut changed: BTreeMap<i64, NodeHash> = by_leaf
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

impl PgStore {
    /// Turns the tree on and builds it from the latest rows, unless it is on already.
    async fn merkle_ensure(&self) -> Result<()> {
        let on: bool = sqlx::query_scalar("SELECT merkle_on FROM goodies_meta")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        if on {
            return Ok(());
        }
        let mut w = self.begin_write().await?;
        let on: bool = sqlx::query_scalar("SELECT merkle_on FROM goodies_meta")
            .fetch_one(&mut *w.tx)
            .await
            .map_err(db)?;
        if on {
            return Ok(());
        }
        let latest: Vec<(String, String)> =
            sqlx::query_as("SELECT id, version FROM entities WHERE is_latest")
                .fetch_all(&mut *w.tx)
                .await
                .map_err(db)?;
        for sql in [
            "DELETE FROM merkle_rows",
            "DELETE FROM merkle_nodes",
            "DELETE FROM merkle_dirty",
            "UPDATE goodies_meta SET merkle_on = TRUE",
        ] {
            sqlx::query(sql).execute(&mut *w.tx).await.map_err(db)?;
        }
        for chunk in latest.chunks(10_000) {
            let leaf: Vec<i32> = chunk.iter().map(|(id, _)| leaf_index(id) as i32).collect();
            let id: Vec<&str> = chunk.iter().map(|(i, _)| i.as_str()).collect();
            let version: Vec<&str> = chunk.iter().map(|(_, v)| v.as_str()).collect();
            sqlx::query(
                "INSERT INTO merkle_rows (leaf, id, version) \
                 SELECT * FROM UNNEST($1::int[], $2::text[], $3::text[])",
            )
            .bind(&leaf)
            .bind(&id)
            .bind(&version)
            .execute(&mut *w.tx)
            .await
            .map_err(db)?;
        }
        let tree = MerkleTree::from_rows(latest, MERKLE_DEPTH)
            .map_err(|e| StoreError::Corrupt(format!("Merkle tree: {e}")))?;
        for level in 0..=MERKLE_DEPTH {
            let nodes: BTreeMap<i64, NodeHash> = tree
                .level(level)
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, h)| (i as i64, *h))
                .collect();
            put_nodes(&mut w.tx, level, &nodes).await?;
        }
        w.commit(&self.opts).await
    }

    /// Nodes of one level of the tree, read in one snapshot.
    pub(super) async fn read_merkle(&self, level: u8, nodes: &[NodeId]) -> Result<Vec<MerkleNode>> {
        check_request(level, nodes)?;
        self.merkle_ensure().await?;
        let mut tx = self.begin_snapshot_read().await?;
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            let idx = i64::from(node.index());
            let hash: String =
                sqlx::query_scalar("SELECT hash FROM merkle_nodes WHERE level = $1 AND idx = $2")
                    .bind(i16::from(level))
                    .bind(idx as i32)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?
                    .ok_or_else(|| StoreError::Corrupt(format!("Merkle node {node} missing")))?;
            let below = if level < MERKLE_DEPTH {
                let kids = children_of(&mut tx, level + 1, &BTreeSet::from([idx])).await?;
                if kids.len() != FANOUT {
                    return Err(StoreError::Corrupt(format!(
                        "Merkle node {node} has {} children stored",
                        kids.len()
                    )));
                }
                MerkleBelow::Children(kids.into_values().collect())
            } else {
                let mut rows: Vec<(String, String)> =
                    sqlx::query_as("SELECT id, version FROM merkle_rows WHERE leaf = $1")
                        .bind(idx as i32)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(db)?;
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
        tx.commit().await.map_err(db)?;
        Ok(out)
    }
}
