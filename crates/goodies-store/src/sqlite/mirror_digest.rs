//! A client mirror's state digest from its kept input (migration 0009): the byte string
//! the digest hashes (`{id}\x1f{version}\x1e` of every latest row, in id byte order)
//! kept in chunks of a few hundred rows, patched where rows changed.
//!
//! The first digest a mirror needs reads every latest row once (as the store's own
//! digest does), hashes them and keeps the input in chunks; from then on triggers
//! record every id whose latest version changes, by any writer of the file, and the
//! next digest re-reads only those ids' latest versions, patches the chunks holding
//! them and hashes the chunks (a few hundred KiB for 10,000 rows, no sort, no row
//! decoding). The digest is the same SHA-256 as `inbetweenies_conflict::state_digest`,
//! byte for byte. It is remembered in `stored_digest` like the store's own, so an
//! unchanged mirror answers it with one read.
//!
//! [`SqliteStore::rebuild_kept_digest`] does not trust the chunks: it reads every
//! latest row again and rebuilds them (the sync's answer to a digest that disagrees
//! with the server's).

use sha2::{Digest as _, Sha256};
use sqlx::{Sqlite, SqliteConnection, Transaction};

use crate::error::{Result, StoreError};
use crate::sqlite::{
    latest_summaries, parse_latest_versions, IdVersion, SqliteStore, LATEST_VERSIONS_JSON,
};

/// Rows per chunk when chunks are cut.
const CHUNK_ROWS: usize = 256;
/// A chunk that grew past this many rows is cut again.
const SPLIT_ROWS: usize = 2 * CHUNK_ROWS;
/// Bytes that separate an id from its version, and one row from the next.
const UNIT: u8 = 0x1f;
const RECORD: u8 = 0x1e;

type Row = (String, String);

/// Whether a value can sit in a chunk (it holds neither separator).
fn plain(s: &str) -> bool {
    !s.bytes().any(|b| b == UNIT || b == RECORD)
}

fn encode<'a>(rows: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> Vec<u8> {
    let mut body = Vec::with_capacity(rows.clone().map(|(i, v)| i.len() + v.len() + 2).sum());
    for (id, version) in rows {
        body.extend_from_slice(id.as_bytes());
        body.push(UNIT);
        body.extend_from_slice(version.as_bytes());
        body.push(RECORD);
    }
    body
}

fn decode(body: &[u8]) -> Result<Vec<Row>> {
    let bad = || StoreError::Corrupt("digest chunk is not id/version rows".into());
    let mut rows = Vec::new();
    for record in body.split(|b| *b == RECORD) {
        if record.is_empty() {
            continue;
        }
        let at = record.iter().position(|b| *b == UNIT).ok_or_else(bad)?;
        let id = std::str::from_utf8(&record[..at]).map_err(|_| bad())?;
        let version = std::str::from_utf8(&record[at + 1..]).map_err(|_| bad())?;
        rows.push((id.to_owned(), version.to_owned()));
    }
    Ok(rows)
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::database(e)
}

/// Reads every latest row, hashes them, and (when every value is plain) keeps them in
/// fresh chunks and turns the triggers on; otherwise turns the chunks off.
async fn rebuild(conn: &mut SqliteConnection) -> Result<String> {
    let json: String = sqlx::query_scalar(LATEST_VERSIONS_JSON)
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    let rows = parse_latest_versions(&json)?;
    let mut hasher = Sha256::new();
    let mut keep = true;
    let mut previous: Option<&str> = None;
    for IdVersion(id, version) in &rows {
        if previous.is_some_and(|p| p.as_bytes() >= id.as_bytes()) {
            return Err(StoreError::Corrupt(format!(
                "latest rows out of id order: {id:?} after {previous:?}"
            )));
        }
        previous = Some(id);
        keep &= plain(id) && plain(version);
        hasher.update(id.as_bytes());
        hasher.update([UNIT]);
        hasher.update(version.as_bytes());
        hasher.update([RECORD]);
    }
    for q in [
        "DELETE FROM digest_chunks",
        "DELETE FROM digest_dirty",
        "DELETE FROM digest_chunks_on",
    ] {
        sqlx::query(q).execute(&mut *conn).await.map_err(db)?;
    }
    if keep {
        if rows.is_empty() {
            put_body(conn, "", Vec::new()).await?;
        }
        for (n, piece) in rows.chunks(CHUNK_ROWS).enumerate() {
            let key = if n == 0 { "" } else { &*piece[0].0 };
            let body = encode(piece.iter().map(|IdVersion(i, v)| (&**i, &**v)));
            put_body(conn, key, body).await?;
        }
        sqlx::query("INSERT INTO digest_chunks_on (one) VALUES (1)")
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    Ok(hex::encode(hasher.finalize()))
}

async fn put_chunk(conn: &mut SqliteConnection, key: &str, rows: &[Row]) -> Result<()> {
    put_body(
        conn,
        key,
        encode(rows.iter().map(|(i, v)| (i.as_str(), v.as_str()))),
    )
    .await
}

async fn put_body(conn: &mut SqliteConnection, key: &str, body: Vec<u8>) -> Result<()> {
    sqlx::query("INSERT OR REPLACE INTO digest_chunks (first_id, body) VALUES (?, ?)")
        .bind(key)
        .bind(body)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

/// Patches the chunks holding `dirty` ids from their latest rows. `false` when a value
/// cannot be kept in a chunk (the caller rebuilds, which turns the chunks off).
async fn patch(conn: &mut SqliteConnection, keys: &[String], dirty: &[String]) -> Result<bool> {
    let refs: Vec<&str> = dirty.iter().map(String::as_str).collect();
    let latest = latest_summaries(conn, &refs).await?;
    // Dirty ids by chunk: the chunk with the greatest key at or before the id.
    let mut by_chunk: Vec<(usize, Vec<(&str, Option<&str>)>)> = Vec::new();
    for id in &refs {
        let version = latest
            .get(&inbetweenies_proto::EntityId::new(*id))
            .map(|l| l.version.as_str());
        if !plain(id) || version.is_some_and(|v| !plain(v)) {
            return Ok(false);
        }
        let chunk = keys
            .partition_point(|k| k.as_bytes() <= id.as_bytes())
            .saturating_sub(1);
        match by_chunk.last_mut() {
            Some((c, ids)) if *c == chunk => ids.push((id, version)),
            _ => by_chunk.push((chunk, vec![(id, version)])),
        }
    }
    for (chunk, ids) in by_chunk {
        let key = keys[chunk].as_str();
        let body: Vec<u8> = sqlx::query_scalar("SELECT body FROM digest_chunks WHERE first_id = ?")
            .bind(key)
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
        let mut rows = decode(&body)?;
        for (id, version) in ids {
            let at = rows.binary_search_by(|(i, _)| i.as_bytes().cmp(id.as_bytes()));
            match (at, version) {
                (Ok(i), Some(v)) => rows[i].1 = v.to_owned(),
                (Err(i), Some(v)) => rows.insert(i, (id.to_owned(), v.to_owned())),
                (Ok(i), None) => {
                    rows.remove(i);
                }
                (Err(_), None) => {}
            }
        }
        if rows.is_empty() && !key.is_empty() {
            // Its range falls to the chunk before it, whose ids all sort before `key`.
            sqlx::query("DELETE FROM digest_chunks WHERE first_id = ?")
                .bind(key)
                .execute(&mut *conn)
                .await
                .map_err(db)?;
        } else if rows.len() > SPLIT_ROWS {
            for (n, piece) in rows.chunks(CHUNK_ROWS).enumerate() {
                let k = if n == 0 { key } else { piece[0].0.as_str() };
                put_chunk(conn, k, piece).await?;
            }
        } else {
            put_chunk(conn, key, &rows).await?;
        }
    }
    Ok(true)
}

/// Remembers `digest` as the digest of the rows this transaction sees (it holds the
/// write lock, so no write can come between).
async fn remember(tx: &mut Transaction<'static, Sqlite>, digest: &str) -> Result<()> {
    sqlx::query(
        "INSERT OR REPLACE INTO stored_digest (one, write_generation, digest) \
         SELECT 1, write_generation, ? FROM store_meta WHERE one = 1",
    )
    .bind(digest)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

impl SqliteStore {
    /// The mirror's state digest: remembered, or from the kept chunks patched where
    /// rows changed (built from every latest row the first time).
    pub(crate) async fn kept_digest(&self) -> Result<String> {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT digest FROM stored_digest WHERE one = 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        if let Some(d) = stored {
            return Ok(d);
        }
        let _guard = self.shared.lock.write().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let stored: Option<String> =
            sqlx::query_scalar("SELECT digest FROM stored_digest WHERE one = 1")
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        if let Some(d) = stored {
            tx.commit().await.map_err(db)?;
            return Ok(d);
        }
        let on: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM digest_chunks_on)")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        let keys: Vec<String> = if on {
            sqlx::query_scalar("SELECT first_id FROM digest_chunks ORDER BY first_id")
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?
        } else {
            Vec::new()
        };
        let digest = if keys.first().is_some_and(String::is_empty) {
            let mut dirty: Vec<String> =
                sqlx::query_scalar("DELETE FROM digest_dirty RETURNING id")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db)?;
            dirty.sort_unstable();
            dirty.dedup();
            // Patching a quarter of the rows costs as much as reading them all.
            let patched =
                dirty.len() <= keys.len() * CHUNK_ROWS / 4 && patch(&mut tx, &keys, &dirty).await?;
            if patched {
                let bodies: Vec<Vec<u8>> =
                    sqlx::query_scalar("SELECT body FROM digest_chunks ORDER BY first_id")
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(db)?;
                let mut hasher = Sha256::new();
                for body in &bodies {
                    hasher.update(body);
                }
                hex::encode(hasher.finalize())
            } else {
                rebuild(&mut tx).await?
            }
        } else {
            rebuild(&mut tx).await?
        };
        remember(&mut tx, &digest).await?;
        tx.commit().await.map_err(db)?;
        Ok(digest)
    }

    /// The mirror's state digest read from every latest row, whatever is remembered or
    /// kept; the chunks are rebuilt from the same read.
    pub(crate) async fn rebuild_kept_digest(&self) -> Result<String> {
        let _guard = self.shared.lock.write().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let digest = rebuild(&mut tx).await?;
        remember(&mut tx, &digest).await?;
        tx.commit().await.map_err(db)?;
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use inbetweenies_proto::{EntityId, EntityType, SourceType};

    use super::*;
    use crate::api::{ClientStore, GraphRead};
    use crate::types::{LocalEdit, StoreOptions};

    /// The digest computed from scratch, through nothing the store keeps.
    async fn reference(store: &SqliteStore) -> String {
        let rows = store.latest_versions().await.expect("latest versions");
        inbetweenies_conflict::state_digest(rows.iter().map(|(i, v)| (i.as_str(), v.as_str())))
    }

    async fn create(store: &SqliteStore, id: &str) {
        store
            .write_local(
                LocalEdit::Create {
                    id: Some(EntityId::new(id)),
                    entity_type: EntityType::Note,
                    name: id.into(),
                    content: Default::default(),
                    source_type: SourceType::Manual,
                },
                "me",
            )
            .await
            .expect("create");
    }

    async fn chunks(store: &SqliteStore) -> Vec<(String, usize)> {
        let rows: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT first_id, body FROM digest_chunks ORDER BY first_id")
                .fetch_all(&store.pool)
                .await
                .expect("chunks");
        rows.into_iter()
            .map(|(k, b)| (k, decode(&b).expect("decode").len()))
            .collect()
    }

    async fn check(store: &SqliteStore, what: &str) {
        let want = reference(store).await;
        assert_eq!(store.kept_digest().await.expect("kept"), want, "{what}");
        // Remembered: the next answer is the stored one, and it is the same.
        assert_eq!(
            store.stored_digest().await.expect("stored"),
            Some(want.clone()),
            "{what}"
        );
        assert_eq!(store.kept_digest().await.expect("kept"), want, "{what}");
    }

    /// The kept input follows creates, edits, deletes, removals, writes that bypass the
    /// store (raw SQL), chunks that grow past their size (cut again) and chunks that
    /// empty (dropped), and always hashes to the digest computed from scratch.
    #[tokio::test]
    async fn the_kept_digest_is_the_digest_of_the_latest_rows() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        let store = SqliteStore::connect(&url, StoreOptions::default())
            .await
            .expect("store");
        check(&store, "empty mirror").await;
        for n in 0..700 {
            create(&store, &format!("m-{n:04}")).await;
        }
        check(&store, "first build").await;
        let built = chunks(&store).await;
        assert_eq!(built.len(), 3, "{built:?}");
        assert_eq!(
            built[0].0, "",
            "the first chunk covers everything before the second"
        );

        // An id before every other, one after, an edit, a delete.
        create(&store, "a-first").await;
        create(&store, "z-last").await;
        let id = EntityId::new("m-0300");
        store
            .write_local(
                LocalEdit::Update {
                    id: id.clone(),
                    name: Some("renamed".into()),
                    content: None,
                },
                "me",
            )
            .await
            .expect("update");
        store
            .write_local(
                LocalEdit::Delete {
                    id: EntityId::new("m-0301"),
                },
                "me",
            )
            .await
            .expect("delete");
        check(&store, "patched").await;
        assert_eq!(chunks(&store).await.len(), 3, "patched, not rebuilt");

        // A write behind the store's back is seen (the triggers record it).
        sqlx::query(
            "UPDATE entities SET version = 'tampered' WHERE id = 'm-0010' AND is_latest = 1",
        )
        .execute(&store.pool)
        .await
        .expect("raw update");
        check(&store, "raw SQL write").await;

        // 400 ids inside one chunk's range: it is cut again.
        for n in 0..400 {
            create(&store, &format!("m-0100-{n:03}")).await;
        }
        check(&store, "grown chunk").await;
        let grown = chunks(&store).await;
        assert!(grown.len() > 3, "{grown:?}");
        assert!(
            grown.iter().all(|(_, rows)| *rows <= SPLIT_ROWS),
            "{grown:?}"
        );

        // Every row of the last chunk removed (raw deletes): the chunk goes.
        sqlx::query("DELETE FROM entities WHERE id >= 'm-0512'")
            .execute(&store.pool)
            .await
            .expect("raw delete");
        check(&store, "emptied chunk").await;
        assert!(chunks(&store)
            .await
            .iter()
            .all(|(k, rows)| k.is_empty() || *rows > 0));

        // Rebuilt from the rows whatever is kept: a tampered chunk is not trusted.
        sqlx::query("UPDATE digest_chunks SET body = x'' WHERE first_id = ''")
            .execute(&store.pool)
            .await
            .expect("tamper");
        let want = reference(&store).await;
        assert_eq!(store.rebuild_kept_digest().await.expect("rebuilt"), want);
        sqlx::query("DELETE FROM stored_digest")
            .execute(&store.pool)
            .await
            .expect("forget");
        check(&store, "after the rebuild").await;
    }

    /// A value holding a separator byte cannot be kept in a chunk: the chunks are
    /// turned off and the digest is still right.
    #[tokio::test]
    async fn a_separator_in_an_id_turns_the_chunks_off() {
        let store = SqliteStore::connect("sqlite::memory:", StoreOptions::default())
            .await
            .expect("store");
        create(&store, "plain").await;
        check(&store, "plain").await;
        create(&store, "odd\u{1e}id").await;
        check(&store, "separator").await;
        let on: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM digest_chunks_on)")
            .fetch_one(&store.pool)
            .await
            .expect("on");
        assert!(!on);
        create(&store, "later").await;
        check(&store, "later").await;
    }
}
