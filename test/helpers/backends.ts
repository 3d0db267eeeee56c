import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { DatabaseConfig } from '../../src/config/index.js';

/**
 * The database backends every storage test runs against: the embedded one always, the native one
 * when TEST_DATABASE_URL is set (as .ci/run does). Each `fresh()` call yields an empty, isolated
 * database: a new PGlite directory, or a new schema (`?schema=` in the URL) in the native database.
 */
export interface TestBackend {
  name: 'embedded' | 'native';
  /** `dataDir` is an empty directory for the service's own files (DATA_DIR). */
  fresh(): Promise<{ config: DatabaseConfig; dataDir: string; cleanup(): Promise<void> }>;
}

export const NATIVE_URL = process.env.TEST_DATABASE_URL;

const embedded: TestBackend = {
  name: 'embedded',
  async fresh() {
    const dir = await mkdtemp(path.join(tmpdir(), 'protoprune-test-'));
    return { config: { backend: 'embedded', dataDir: dir }, dataDir: dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
  },
};

/** The native test URL with Prisma's `?schema=` parameter, which the native store honours. */
export function urlWithSchema(url: string, schema: string): string {
  const u = new URL(url);
  u.searchParams.set('schema', schema);
  return u.toString();
}

export async function adminQuery(sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: NATIVE_URL });
  await client.connect();
  try {
    return await client.query(sql, params);
  } finally {
    await client.end();
  }
}

const native: TestBackend = {
  name: 'native',
  async fresh() {
    const schema = `test_${randomBytes(6).toString('hex')}`;
    await adminQuery(`CREATE SCHEMA "${schema}"`);
    const dataDir = await mkdtemp(path.join(tmpdir(), 'protoprune-test-'));
    return {
      config: { backend: 'native', url: urlWithSchema(NATIVE_URL!, schema), poolMax: 4 },
      dataDir,
      cleanup: async () => {
        await adminQuery(`DROP SCHEMA "${schema}" CASCADE`);
        await rm(dataDir, { recursive: true, force: true });
      },
    };
  },
};

export const BACKENDS: TestBackend[] = NATIVE_URL ? [embedded, native] : [embedded];
