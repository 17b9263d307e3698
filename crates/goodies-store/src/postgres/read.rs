//! Graph reads, the change feed and the cached state digest on PostgreSQL.

use std::collections::{HashMap, HashSet, VecDeque};

use async_trait::async_trait;
use futures::TryStreamExt as _;
use inbetweenies_conflict::DigestBuilder;
use inbetweenies_proto::{
    Entity, EntityId, EntityType, Relationship, RelationshipId, RelationshipType, Timestamp,
    Version,
};
use sqlx::{Postgres, QueryBuilder, Row as _};

use super::rows::{self, entity_cols, relationship_cols, ENTITY_COLS};
use super::{db, PgStore, WRITE_LOCK};
use crate::api::GraphRead;
use crate::error::{Result, StoreError};
use crate::types::{
    ChangePage, ChangeQuery, ChangeRecord, Direction, EntityQuery, GraphStats, LatestAfter,
    Neighbour, RelationshipQuery, Seq, StoredEntity,
};

/// A count or offset as PostgreSQL wants it.
fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A sequence number as PostgreSQL wants it.
fn seq_i64(s: Seq) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

fn type_strings(v: &[EntityType]) -> Vec<String> {
    v.iter().map(|t| t.as_str().to_owned()).collect()
}

/// The page statement: the store's clock and head (one row of `goodies_meta`)
/// joined to at most `q.limit` change rows in sequence order.
///
/// `LIMIT 1` on the `clock` CTE is not decoration: without it the planner takes
/// the one-row `goodies_meta` for hundreds of rows (it is never analyzed while
/// small), multiplies the page by that, prices the statement above
/// `jit_above_cost` and compiles it with JIT on every read - a few milliseconds
/// of work became hundreds, and seconds under load. The test
/// `the_page_statement_is_planned_as_one_page` holds the estimate to the page.
///
/// `prefix` goes before the statement (`EXPLAIN …` in the test; empty otherwise).
fn page_statement(prefix: &str, q: &ChangeQuery) -> QueryBuilder<'static, Postgres> {
    let limit = to_i64(q.limit.max(1));
    let after = seq_i64(q.after_seq.unwrap_or(0));
    let since = q.since.map(|t| t.unix_micros());

    let mut qb = QueryBuilder::<Postgres>::new(prefix);
    qb.push(
        "WITH clock AS MATERIALIZED (SELECT goodies_now_us() AS now_us, m.last_seq, \
         m.restored_seq, m.restored_at, m.horizon_at, m.horizon_seq FROM goodies_meta m \
         LIMIT 1), lo AS MATERIALIZED (SELECT GREATEST(",
    );
    qb.push_bind(after);
    if let Some(since) = since {
        // received_at grows with seq, so `received_at > since` starts after the last
        // row received at or before `since`: an index probe instead of a scan.
        for table in ["entities", "relationships"] {
            qb.push(format!(
                ", COALESCE((SELECT seq FROM {table} WHERE received_at <= "
            ));
            qb.push_bind(since);
            qb.push(" ORDER BY received_at DESC LIMIT 1), 0)");
        }
    }
    qb.push(") AS v), page AS (SELECT kind, seq FROM (");
    let mut parts = 0;
    if q.include_entities {
        qb.push(
            "(SELECT 0 AS kind, seq FROM entities WHERE is_latest AND seq > (SELECT v FROM lo)",
        );
        if let Some(since) = since {
            qb.push(" AND received_at > ").push_bind(since);
        }
        if let Some(types) = &q.entity_types {
            qb.push(" AND entity_type = ANY(")
                .push_bind(type_strings(types))
                .push(")");
        }
        if let Some(users) = &q.modified_by {
            qb.push(" AND user_id = ANY(")
                .push_bind(users.clone())
                .push(")");
        }
        qb.push(" ORDER BY seq LIMIT ").push_bind(limit).push(")");
        parts += 1;
    }
    if q.include_relationships {
        if parts > 0 {
            qb.push(" UNION ALL ");
        }
        qb.push("(SELECT 1 AS kind, seq FROM relationships WHERE seq > (SELECT v FROM lo)");
        if let Some(since) = since {
            qb.push(" AND received_at > ").push_bind(since);
        }
        if let Some(users) = &q.modified_by {
            qb.push(" AND user_id = ANY(")
                .push_bind(users.clone())
                .push(")");
        }
        qb.push(" ORDER BY seq LIMIT ").push_bind(limit).push(")");
        parts += 1;
    }
    if parts == 0 {
        qb.push("SELECT 0 AS kind, 0::BIGINT AS seq WHERE FALSE");
    }
    qb.push(") u ORDER BY seq LIMIT ").push_bind(limit);
    qb.push(format!(
        ") SELECT clock.now_us, clock.last_seq, clock.restored_seq, clock.restored_at, \
         clock.horizon_at, clock.horizon_seq, page.kind, {}, {} FROM clock \
         LEFT JOIN page ON TRUE \
         LEFT JOIN entities e ON page.kind = 0 AND e.seq = page.seq \
         LEFT JOIN relationships r ON page.kind = 1 AND r.seq = page.seq \
         ORDER BY page.seq",
        entity_cols("e"),
        relationship_cols("r"),
    ));
    qb
}

impl PgStore {
    /// One page of the change feed (see the module docs for why it cannot skip a late commit).
    pub(super) async fn page(
        &self,
        q: &ChangeQuery,
        latest_after: Option<Seq>,
    ) -> Result<(ChangePage, LatestAfter)> {
        let limit = to_i64(q.limit.max(1));
        let mut qb = page_statement("", q);

        // READ COMMITTED: the shared lock first (its own statement), then one
        // statement whose snapshot is taken while no writer can be mid-commit.
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        // Decoded as rows arrive (only the page's rows: the statement merges both kinds
        // and cuts at the limit), not gathered into a list of raw rows first.
        let mut records = Vec::with_capacity(q.limit.clamp(1, 4096));
        let mut clock = None;
        {
            let mut fetched = qb.build().fetch(&mut *tx);
            while let Some(row) = fetched.try_next().await.map_err(db)? {
                if clock.is_none() {
                    let meta: [i64; 6] = [
                        row.try_get(0).map_err(db)?,
                        row.try_get(1).map_err(db)?,
                        row.try_get(2).map_err(db)?,
                        row.try_get(3).map_err(db)?,
                        row.try_get(4).map_err(db)?,
                        row.try_get(5).map_err(db)?,
                    ];
                    clock = Some(meta);
                }
                let kind: Option<i32> = row.try_get(6).map_err(db)?;
                match kind {
                    None => {}
                    Some(0) => records.push(ChangeRecord::Entity(rows::stored_entity_at(&row, 7)?)),
                    Some(_) => records.push(ChangeRecord::Relationship(
                        rows::stored_relationship_at(&row, 7 + ENTITY_COLS)?,
                    )),
                }
            }
        }
        let [clock, seq, restored_seq, restored_at, horizon_at, horizon_seq] =
            clock.ok_or_else(|| StoreError::Corrupt("change page without a clock".into()))?;
        // Still under the shared lock, so in the page's state: nothing has committed since.
        let mut latest = LatestAfter::default();
        if let Some(after) = latest_after.map(seq_i64).filter(|after| seq > *after) {
            let found: Vec<(String, String)> =
                sqlx::query_as("SELECT id, version FROM entities WHERE is_latest AND seq > $1")
                    .bind(after)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db)?;
            latest.rows = found
                .into_iter()
                .map(|(id, v)| (EntityId::new(id), Version::new(v)))
                .collect();
        }
        tx.commit().await.map_err(db)?;
        let server_time = rows::ts(clock - 1)?;
        let head = crate::head::head_from(
            seq,
            restored_seq,
            restored_at,
            horizon_at,
            horizon_seq,
            server_time,
        )?;
        let next_after_seq = if records.len() as i64 == limit {
            records.last().map(ChangeRecord::seq)
        } else {
            None
        };
        Ok((
            ChangePage {
                records,
                next_after_seq,
                server_time,
                head,
            },
            latest,
        ))
    }

    /// The highest committed sequence number.
    pub(super) async fn read_max_seq(&self) -> Result<Seq> {
        let v: i64 = sqlx::query_scalar("SELECT last_seq FROM goodies_meta")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        rows::seq(v)
    }
}

#[async_trait]
impl GraphRead for PgStore {
    async fn entity(&self, id: &EntityId) -> Result<Option<Entity>> {
        let sql = format!(
            "SELECT {} FROM entities a WHERE a.id = $1 AND a.is_latest",
            entity_cols("a")
        );
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(rows::entity).transpose()
    }

    async fn entity_version(&self, id: &EntityId, version: &Version) -> Result<Option<Entity>> {
        let sql = format!(
            "SELECT {} FROM entities a WHERE a.id = $1 AND a.version = $2",
            entity_cols("a")
        );
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .bind(version.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(rows::entity).transpose()
    }

    async fn history(&self, id: &EntityId) -> Result<Vec<StoredEntity>> {
        let sql = format!(
            "SELECT {} FROM entities a WHERE a.id = $1 ORDER BY a.seq",
            entity_cols("a")
        );
        let fetched = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        fetched
            .iter()
            .map(|r| rows::stored_entity_at(r, 0))
            .collect()
    }

    async fn entities(&self, query: &EntityQuery) -> Result<Vec<Entity>> {
        let mut qb = QueryBuilder::<Postgres>::new(format!(
            "SELECT {} FROM entities a WHERE a.is_latest",
            entity_cols("a")
        ));
        if !query.include_deleted {
            qb.push(" AND NOT a.is_deleted");
        }
        if let Some(types) = &query.entity_types {
            qb.push(" AND a.entity_type = ANY(")
                .push_bind(type_strings(types))
                .push(")");
        }
        if let Some(needle) = &query.name_contains {
            qb.push(" AND strpos(lower(a.name), lower(")
                .push_bind(needle.clone())
                .push(")) > 0");
        }
        // The same order as by name, then id; the index holds the prefix only
        // (see migration 0002: a name of any length can be stored).
        qb.push(" ORDER BY left(a.name, 200) COLLATE \"C\", a.name COLLATE \"C\", a.id");
        if let Some(limit) = query.limit {
            qb.push(" LIMIT ").push_bind(to_i64(limit));
        }
        if query.offset > 0 {
            qb.push(" OFFSET ").push_bind(to_i64(query.offset));
        }
        let fetched = qb.build().fetch_all(&self.pool).await.map_err(db)?;
        fetched.iter().map(rows::entity).collect()
    }

    async fn relationship(&self, id: &RelationshipId) -> Result<Option<Relationship>> {
        let sql = format!(
            "SELECT {} FROM relationships r WHERE r.id = $1",
            relationship_cols("r")
        );
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(rows::relationship).transpose()
    }

    async fn relationships(&self, query: &RelationshipQuery) -> Result<Vec<Relationship>> {
        let mut qb = QueryBuilder::<Postgres>::new(format!(
            "SELECT {} FROM relationships r WHERE TRUE",
            relationship_cols("r")
        ));
        if let Some(from) = &query.from_entity_id {
            qb.push(" AND r.from_entity_id = ")
                .push_bind(from.as_str().to_owned());
        }
        if let Some(to) = &query.to_entity_id {
            qb.push(" AND r.to_entity_id = ")
                .push_bind(to.as_str().to_owned());
        }
        if let Some(t) = &query.relationship_type {
            qb.push(" AND r.relationship_type = ")
                .push_bind(t.as_str().to_owned());
        }
        qb.push(" ORDER BY r.seq");
        if let Some(limit) = query.limit {
            qb.push(" LIMIT ").push_bind(to_i64(limit));
        }
        if query.offset > 0 {
            qb.push(" OFFSET ").push_bind(to_i64(query.offset));
        }
        let fetched = qb.build().fetch_all(&self.pool).await.map_err(db)?;
        fetched.iter().map(rows::relationship).collect()
    }

    async fn neighbours(
        &self,
        id: &EntityId,
        relationship_type: Option<&RelationshipType>,
        direction: Direction,
    ) -> Result<Vec<Neighbour>> {
        // (edge column naming this entity, edge column naming the neighbour)
        let sides: &[(&str, &str)] = match direction {
            Direction::Outgoing => &[("from_entity_id", "to_entity_id")],
            Direction::Incoming => &[("to_entity_id", "from_entity_id")],
            Direction::Both => &[
                ("from_entity_id", "to_entity_id"),
                ("to_entity_id", "from_entity_id"),
            ],
        };
        let mut qb = QueryBuilder::<Postgres>::new("SELECT * FROM (");
        for (i, (this, other)) in sides.iter().enumerate() {
            if i > 0 {
                qb.push(" UNION ALL ");
            }
            qb.push(format!(
                "SELECT {}, {} FROM relationships r \
                 JOIN entities e ON e.id = r.{other} AND e.is_latest AND NOT e.is_deleted \
                 WHERE r.{this} = ",
                relationship_cols("r"),
                entity_cols("e"),
            ));
            qb.push_bind(id.as_str().to_owned());
            if let Some(t) = relationship_type {
                qb.push(" AND r.relationship_type = ")
                    .push_bind(t.as_str().to_owned());
            }
        }
        // Column 11 (1-based) is the edge's seq.
        qb.push(") n ORDER BY 11");
        let fetched = qb.build().fetch_all(&self.pool).await.map_err(db)?;
        let rel_cols = 12;
        fetched
            .iter()
            .map(|row| {
                Ok(Neighbour {
                    relationship: rows::relationship(row)?,
                    entity: rows::stored_entity_at(row, rel_cols)?.entity,
                })
            })
            .collect()
    }

    async fn path(
        &self,
        from: &EntityId,
        to: &EntityId,
        max_depth: usize,
    ) -> Result<Option<Vec<EntityId>>> {
        let known: i64 =
            sqlx::query_scalar("SELECT count(*) FROM entities WHERE is_latest AND id = ANY($1)")
                .bind([from.as_str(), to.as_str()])
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
        if known < if from == to { 1 } else { 2 } {
            return Ok(None);
        }
        if from == to {
            return Ok(Some(vec![from.clone()]));
        }
        // Breadth-first, one query per level; neighbours visited in id order so
        // the path found is the same on every backend.
        let mut parent: HashMap<String, String> = HashMap::new();
        let mut seen: HashSet<String> = HashSet::from([from.as_str().to_owned()]);
        let mut frontier: Vec<String> = vec![from.as_str().to_owned()];
        for _ in 0..max_depth {
            if frontier.is_empty() {
                break;
            }
            let edges: Vec<(String, String)> = sqlx::query_as(
                "SELECT from_entity_id, to_entity_id FROM relationships \
                 WHERE from_entity_id = ANY($1) OR to_entity_id = ANY($1)",
            )
            .bind(&frontier)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            let in_frontier: HashSet<&str> = frontier.iter().map(String::as_str).collect();
            let mut adjacency: HashMap<&str, Vec<&str>> = HashMap::new();
            for (a, b) in &edges {
                if in_frontier.contains(a.as_str()) {
                    adjacency.entry(a.as_str()).or_default().push(b.as_str());
                }
                if in_frontier.contains(b.as_str()) {
                    adjacency.entry(b.as_str()).or_default().push(a.as_str());
                }
            }
            let mut next = Vec::new();
            for node in &frontier {
                let Some(ns) = adjacency.get_mut(node.as_str()) else {
                    continue;
                };
                ns.sort_unstable();
                for n in ns.iter() {
                    if seen.insert((*n).to_owned()) {
                        parent.insert((*n).to_owned(), node.clone());
                        if *n == to.as_str() {
                            let mut path = VecDeque::from([to.clone()]);
                            let mut cur = to.as_str().to_owned();
                            while let Some(p) = parent.get(&cur) {
                                path.push_front(EntityId::new(p.clone()));
                                cur = p.clone();
                            }
                            return Ok(Some(path.into()));
                        }
                        next.push((*n).to_owned());
                    }
                }
            }
            next.sort_unstable();
            frontier = next;
        }
        Ok(None)
    }

    async fn entities_as_of(
        &self,
        at: Timestamp,
        entity_types: Option<&[EntityType]>,
    ) -> Result<Vec<Entity>> {
        let mut qb = QueryBuilder::<Postgres>::new(format!(
            "SELECT {} FROM (SELECT DISTINCT ON (id) * FROM entities \
             WHERE became_latest AND received_at <= ",
            entity_cols("a")
        ));
        qb.push_bind(at.unix_micros());
        qb.push(" ORDER BY id, seq DESC) a WHERE NOT a.is_deleted");
        if let Some(types) = entity_types {
            qb.push(" AND a.entity_type = ANY(")
                .push_bind(type_strings(types))
                .push(")");
        }
        qb.push(" ORDER BY a.id");
        let fetched = qb.build().fetch_all(&self.pool).await.map_err(db)?;
        fetched.iter().map(rows::entity).collect()
    }

    async fn stats(&self) -> Result<GraphStats> {
        let (entities, versions, relationships, pending): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT \
               (SELECT count(*) FROM entities WHERE is_latest AND NOT is_deleted), \
               (SELECT count(*) FROM entities), \
               (SELECT count(*) FROM relationships), \
               (SELECT count(*) FROM conflicts WHERE status = 'pending')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        let by_type: Vec<(String, i64)> = sqlx::query_as(
            "SELECT entity_type, count(*) FROM entities WHERE is_latest AND NOT is_deleted \
             GROUP BY entity_type ORDER BY entity_type COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let rel_by_type: Vec<(String, i64)> = sqlx::query_as(
            "SELECT relationship_type, count(*) FROM relationships \
             GROUP BY relationship_type ORDER BY relationship_type COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let count = |n: i64| rows::seq(n);
        Ok(GraphStats {
            entities: count(entities)?,
            entity_versions: count(versions)?,
            relationships: count(relationships)?,
            entities_by_type: by_type
                .into_iter()
                .map(|(t, n)| Ok((EntityType::parse(&t), count(n)?)))
                .collect::<Result<_>>()?,
            relationships_by_type: rel_by_type
                .into_iter()
                .map(|(t, n)| Ok((RelationshipType::parse(&t), count(n)?)))
                .collect::<Result<_>>()?,
            pending_conflicts: count(pending)?,
        })
    }

    async fn state_digest(&self) -> Result<String> {
        // Cheap check first: an unchanged store answers from the cache.
        let max = self.read_max_seq().await?;
        let mut cache = self.digest.lock().await;
        if let Some((seq, digest)) = cache.as_ref() {
            if *seq == max {
                return Ok(digest.clone());
            }
        }
        // Recompute in one snapshot, keyed by the max seq of that same snapshot.
        let mut tx = self.begin_snapshot_read().await?;
        let snapshot_max: i64 = sqlx::query_scalar("SELECT last_seq FROM goodies_meta")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        let snapshot_max = rows::seq(snapshot_max)?;
        let mut builder = DigestBuilder::new();
        {
            let mut stream = sqlx::query_as::<_, (String, String)>(
                "SELECT id, version FROM entities WHERE is_latest ORDER BY id",
            )
            .fetch(&mut *tx);
            while let Some((id, version)) = stream.try_next().await.map_err(db)? {
                builder
                    .push(&id, &version)
                    .map_err(|e| StoreError::Corrupt(format!("digest order: {e}")))?;
            }
        }
        tx.commit().await.map_err(db)?;
        let digest = builder.finish();
        *cache = Some((snapshot_max, digest.clone()));
        Ok(digest)
    }

    async fn latest_versions(&self) -> Result<Vec<(EntityId, Version)>> {
        let fetched: Vec<(String, String)> =
            sqlx::query_as("SELECT id, version FROM entities WHERE is_latest ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        Ok(fetched
            .into_iter()
            .map(|(id, v)| (EntityId::new(id), Version::new(v)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use sqlx::postgres::PgConnectOptions;
    use sqlx::{Connection as _, PgConnection};

    use super::*;

    /// A fresh, migrated database on the server named by `GOODIES_TEST_POSTGRES_URL`,
    /// with its name (to drop); `None`, said aloud, when that is not set or not
    /// reachable - a failure instead when `GOODIES_REQUIRE_POSTGRES=1`.
    async fn fresh_database() -> Option<(PgConnectOptions, String)> {
        let skip = |why: String| -> Option<(PgConnectOptions, String)> {
            if std::env::var("GOODIES_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("PostgreSQL is required (GOODIES_REQUIRE_POSTGRES=1) but {why}");
            }
            eprintln!("skipping: PostgreSQL not reachable (set GOODIES_TEST_POSTGRES_URL): {why}");
            None
        };
        let url = match std::env::var("GOODIES_TEST_POSTGRES_URL") {
            Ok(u) if !u.trim().is_empty() => u,
            _ => return skip("GOODIES_TEST_POSTGRES_URL is not set".into()),
        };
        let admin: PgConnectOptions = url.parse().expect("a PostgreSQL URL");
        let mut conn = match PgConnection::connect_with(&admin).await {
            Ok(c) => c,
            Err(e) => return skip(format!("cannot connect: {e}")),
        };
        let name = format!("goodies_plan_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .expect("create database");
        let _ = conn.close().await;
        let opts = admin.clone().database(&name);
        super::super::migrate(&opts).await.expect("migrate");
        Some((admin, name))
    }

    /// The top plan node's estimated rows and total cost.
    async fn estimate(conn: &mut PgConnection, q: &ChangeQuery) -> (f64, f64) {
        let mut explain = page_statement("EXPLAIN (FORMAT JSON) ", q);
        let plan: serde_json::Value = explain
            .build_query_scalar()
            .fetch_one(&mut *conn)
            .await
            .expect("explain the page statement");
        let top = &plan[0]["Plan"];
        (
            top["Plan Rows"].as_f64().expect("Plan Rows"),
            top["Total Cost"].as_f64().expect("Total Cost"),
        )
    }

    /// The page statement is priced as the page it reads (a few hundred rows),
    /// on a store of thousands that was never analyzed - the state of every
    /// store that has just grown. Priced as more it crosses `jit_above_cost`
    /// and is compiled on every read (hundreds of milliseconds each, seconds
    /// under load: what made the server's crash test time out).
    #[tokio::test]
    async fn the_page_statement_is_planned_as_one_page() {
        let Some((admin, name)) = fresh_database().await else {
            return;
        };
        let mut conn = PgConnection::connect_with(&admin.clone().database(&name))
            .await
            .expect("connect");
        sqlx::query(
            "INSERT INTO entities SELECT 'e' || g, 'v' || g, 'device', 'n' || g, '{}'::json, \
             'manual', 'u', '[]'::json, g, g, g, g, TRUE, TRUE, FALSE \
             FROM generate_series(1, 20000) g",
        )
        .execute(&mut conn)
        .await
        .expect("fill entities");
        sqlx::query(
            "INSERT INTO relationships SELECT 'r' || g, 'e1', 'v1', 'e2', 'v2', 'located_in', \
             '{}'::json, 'u', g, g, 20000 + g, 20000 + g FROM generate_series(1, 5000) g",
        )
        .execute(&mut conn)
        .await
        .expect("fill relationships");
        sqlx::query("UPDATE goodies_meta SET last_seq = 25000")
            .execute(&mut conn)
            .await
            .expect("meta");
        let jit_above: f64 = sqlx::query_scalar("SELECT current_setting('jit_above_cost')::float8")
            .fetch_one(&mut conn)
            .await
            .expect("jit_above_cost");

        let shapes = [
            ChangeQuery::default(),
            ChangeQuery {
                after_seq: Some(10_000),
                limit: 1000,
                ..ChangeQuery::default()
            },
            ChangeQuery {
                since: Some(Timestamp::from_unix_micros(15_000).expect("time")),
                ..ChangeQuery::default()
            },
            ChangeQuery {
                entity_types: Some(vec![EntityType::Device]),
                include_relationships: false,
                limit: 100,
                ..ChangeQuery::default()
            },
        ];
        for q in &shapes {
            let (rows, cost) = estimate(&mut conn, q).await;
            let page = q.limit.max(1) as f64;
            assert!(
                rows <= page,
                "the page statement is planned for {rows} rows, more than its page of {page}: {q:?}"
            );
            assert!(
                cost < jit_above,
                "the page statement is priced at {cost}, above jit_above_cost {jit_above}: {q:?}"
            );
        }
        let _ = conn.close().await;
        if let Ok(mut admin) = PgConnection::connect_with(&admin).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut admin)
                .await;
        }
    }
}
