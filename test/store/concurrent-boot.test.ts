import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MIGRATIONS_DIR } from '../../src/paths.js';
import pg from 'pg';
import type { Sql } from '../../src/store/database.js';
import { applyMigrations, readMigrations } from '../../src/store/migrations.js';
import { openDatabase } from '../../src/store/open.js';
import { adminQuery, NATIVE_URL, urlWithSchema } from '../helpers/backends.js';
import { freePort, killGroup, launchService, waitUntilReady, type Running } from '../helpers/process.js';

const BOOTS = 5;

async function migrationRows(schema: string): Promise<Array<{ migration_name: string; n: number }>> {
  const result = await adminQuery(
    `SELECT migration_name, count(*)::int AS n FROM "${schema}"."_prisma_migrations"
      WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL GROUP BY migration_name ORDER BY migration_name`,
  );
  return result.rows as Array<{ migration_name: string; n: number }>;
}

/**
 * Simultaneous first boots on a fresh database (a schema that does not exist yet): every schema
 * change (CREATE SCHEMA, the _prisma_migrations table, the migrations and their CREATE EXTENSION)
 * runs under one advisory lock, so no boot dies on a duplicate key in pg_namespace or pg_type, and
 * each migration is applied and recorded exactly once.
 */
describe.each(NATIVE_URL ? [NATIVE_URL] : [])('simultaneous first boots on native PostgreSQL', (url) => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });

  function freshSchema(): string {
    const schema = `boot_${randomBytes(5).toString('hex')}`;
    cleanups.push(() => adminQuery(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`));
    return schema;
  }

  it(`${BOOTS} openDatabase calls at once (separate pools) all succeed; each migration is applied once`, async () => {
    const expected = (await readMigrations(MIGRATIONS_DIR)).map((m) => m.name);
    for (let round = 0; round < 3; round++) {
      const schema = freshSchema();
      const results = await Promise.allSettled(
        Array.from({ length: BOOTS }, () => openDatabase({ backend: 'native', url: urlWithSchema(url, schema), poolMax: 2 })),
      );
      const failures = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => String(r.reason));
      for (const r of results) if (r.status === 'fulfilled') cleanups.push(() => r.value.db.close());
      expect(failures, `round ${round}`).toEqual([]);
      const opened = results.map((r) => (r as PromiseFulfilledResult<Awaited<ReturnType<typeof openDatabase>>>).value);
      // Exactly one of them applied the migrations; the others found them applied.
      expect(opened.map((o) => o.appliedNow.length).sort((a, b) => b - a)).toEqual([expected.length, ...Array(BOOTS - 1).fill(0)]);
      expect(await migrationRows(schema)).toEqual(expected.map((name) => ({ migration_name: name, n: 1 })));
      for (const o of opened) await o.db.close();
    }
  });

  it(`${BOOTS} service processes started at once on a fresh schema all become ready; exactly one mints the initial admin key`, async () => {
    const schema = freshSchema();
    const running: Running[] = [];
    const ports: number[] = [];
    const dataDirs: string[] = [];
    for (let i = 0; i < BOOTS; i++) {
      const dataDir = await mkdtemp(path.join(tmpdir(), 'protoprune-boot-'));
      dataDirs.push(dataDir);
      cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
      const port = await freePort();
      ports.push(port);
      const child = launchService({
        PORT: String(port),
        GRPC_PORT: '0',
        HOST: '127.0.0.1',
        DATA_DIR: dataDir,
        DATABASE_URL: urlWithSchema(url, schema),
        DATABASE_POOL_MAX: '2',
        METRICS_ENABLED: 'false',
        LOG_LEVEL: 'info',
      });
      running.push(child);
      cleanups.push(async () => killGroup(child));
    }
    await Promise.all(running.map((r, i) => waitUntilReady(ports[i], r, 180_000)));
    for (const r of running) expect(r.child.exitCode).toBeNull();
    const expected = (await readMigrations(MIGRATIONS_DIR)).map((m) => m.name);
    expect(await migrationRows(schema)).toEqual(expected.map((name) => ({ migration_name: name, n: 1 })));
    // Exactly one process applied the migrations (each logs what it applied at "database ready").
    const applied = running.map((r) => {
      const ready = r.stdout().split('\n').filter((l) => l.includes('"database ready"')).map((l) => JSON.parse(l) as { appliedMigrations: string[] });
      expect(ready).toHaveLength(1);
      return ready[0].appliedMigrations.length;
    });
    expect(applied.sort((a, b) => b - a)).toEqual([expected.length, ...Array(BOOTS - 1).fill(0)]);
    // The first-key check and insert are atomic across processes: one key, in one replica's DATA_DIR.
    const keyFiles = dataDirs.map((dir) => path.join(dir, 'initial-admin-key')).filter((file) => existsSync(file));
    expect(keyFiles).toHaveLength(1);
    const keys = await adminQuery(`SELECT name, scopes, key_hash FROM "${schema}".api_keys`);
    expect(keys.rows.map((k) => [k.name, k.scopes])).toEqual([['initial-admin', ['admin']]]);
    const secret = (await readFile(keyFiles[0], 'utf8')).trim();
    const answer = await fetch(`http://127.0.0.1:${ports[0]}/v1/datasets`, { headers: { authorization: `Bearer ${secret}` } });
    expect(answer.status).toBe(200);
    for (const r of running) r.child.kill('SIGTERM');
    const exits = await Promise.all(running.map((r) => r.exited));
    expect(exits.map((e) => e.code)).toEqual(Array(BOOTS).fill(0));
  }, 300_000);
});

describe.each(NATIVE_URL ? [NATIVE_URL] : [])('a session whose search_path does not resolve to its first schema', (url) => {
  it('is refused instead of migrating the next schema of the path', async () => {
    const schema = `boot_${randomBytes(5).toString('hex')}`;
    const fallback = `${schema}_fallback`;
    await adminQuery(`CREATE SCHEMA "${fallback}"`);
    const client = new pg.Client({ connectionString: url, options: `-c search_path="${schema}","${fallback}",public` });
    await client.connect();
    try {
      // As a session that resolved its path before another one created `schema`.
      const db = {
        async transaction<T>(fn: (tx: Sql) => Promise<T>): Promise<T> {
          await client.query('BEGIN');
          try {
            const sql: Sql = {
              query: async <Row>(text: string, params?: unknown[]) => (await client.query(text, params)).rows as Row[],
              exec: async (script: string) => void (await client.query(script)),
            } as Sql;
            const result = await fn(sql);
            await client.query('COMMIT');
            return result;
          } catch (error) {
            await client.query('ROLLBACK');
            throw error;
          }
        },
      };
      await expect(applyMigrations(db, await readMigrations(MIGRATIONS_DIR))).rejects.toThrow(`search_path starts with ${schema}`);
      const created = await adminQuery(`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = $1`, [fallback]);
      expect(created.rows[0].n).toBe(0);
    } finally {
      await client.end();
      await adminQuery(`DROP SCHEMA "${fallback}" CASCADE`);
    }
  });
});
