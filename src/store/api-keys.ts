import type { Database } from './database.js';

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

export async function insertApiKey(db: Database, key: { name: string; keyHash: string; scopes: string[]; datasets: string[] }): Promise<ApiKeyRow> {
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

/** Every key ever minted, revoked ones included. */
export async function countApiKeys(db: Database): Promise<number> {
  const [row] = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM api_keys');
  return row.n;
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
