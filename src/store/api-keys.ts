import type { Database, Sql } from './database.js';

export interface ApiKeyRow {
  id: string;
  name: string;
  scopes: string[];
  datasets: string[];
  createdAt: Date;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
}

const COLUMNS = `id, name, scopes, datasets, created_at AS "createdAt", last_used_at AS "lastUsedAt", revoked_at AS "revokedAt"`;

/** Serialises first-key minting across processes (an arbitrary constant, distinct from the migration lock). */
const FIRST_KEY_ADVISORY_LOCK = 72707370;

interface NewApiKey {
  name: string;
  keyHash: string;
  scopes: string[];
  datasets: string[];
}

/**
 * Inserts `key` only when no key was ever minted, and says whether it did. The count and the insert
 * run under one transaction-scoped advisory lock, so of several replicas booting at once on a fresh
 * database exactly one mints the initial key (a count outside the lock would let each of them mint one).
 */
export async function insertFirstApiKey(db: Database, key: NewApiKey): Promise<ApiKeyRow | undefined> {
  return db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [FIRST_KEY_ADVISORY_LOCK]);
    const [row] = await tx.query<{ n: number }>('SELECT count(*)::int AS n FROM api_keys');
    return row.n > 0 ? undefined : insertApiKey(tx, key);
  });
}

export async function insertApiKey(db: Sql, key: NewApiKey): Promise<ApiKeyRow> {
  const rows = await db.query<ApiKeyRow>(
    `INSERT INTO api_keys (id, name, key_hash, scopes, datasets) VALUES (gen_random_uuid(), $1, $2, $3::text[], $4::text[]) RETURNING ${COLUMNS}`,
    [key.name, key.keyHash, key.scopes, key.datasets],
  );
  return rows[0];
}

/** The live (not revoked) key with this secret hash. */
export async function findApiKeyByHash(db: Database, keyHash: string): Promise<ApiKeyRow | undefined> {
  const rows = await db.query<ApiKeyRow>(`SELECT ${COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL`, [keyHash]);
  return rows[0];
}

export async function findApiKeyById(db: Database, id: string): Promise<ApiKeyRow | undefined> {
  const rows = await db.query<ApiKeyRow>(`SELECT ${COLUMNS} FROM api_keys WHERE id = $1`, [id]);
  return rows[0];
}

export async function listApiKeys(db: Database): Promise<ApiKeyRow[]> {
  return db.query<ApiKeyRow>(`SELECT ${COLUMNS} FROM api_keys ORDER BY created_at, id`);
}

export async function revokeApiKey(db: Database, id: string): Promise<ApiKeyRow | undefined> {
  const rows = await db.query<ApiKeyRow>(
    `UPDATE api_keys SET revoked_at = coalesce(revoked_at, CURRENT_TIMESTAMP) WHERE id = $1 RETURNING ${COLUMNS}`,
    [id],
  );
  return rows[0];
}

export async function touchApiKey(db: Database, id: string): Promise<void> {
  await db.query('UPDATE api_keys SET last_used_at = CURRENT_TIMESTAMP WHERE id = $1', [id]);
}
