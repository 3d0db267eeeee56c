import { createHash, randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Sql } from './database.js';

/** One folder of Prisma Migrate's layout: prisma/migrations/<name>/migration.sql. */
export interface Migration {
  name: string;
  sql: string;
  /** SHA-256 (hex) of migration.sql, as Prisma records it. */
  checksum: string;
}

export class MigrationError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MigrationError';
  }
}

/** Prisma Migrate's bookkeeping table, created with Prisma's own definition. */
const CREATE_MIGRATIONS_TABLE = `
CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
)`;

/**
 * The advisory lock key Prisma Migrate takes, so the service and the CLI never migrate at once —
 * nor do several service processes booting at the same time. Every schema change at boot (CREATE
 * SCHEMA, the bookkeeping table, the migrations with their CREATE EXTENSION) runs under it.
 */
export const PRISMA_ADVISORY_LOCK = 72707369;

export async function readMigrations(dir: string): Promise<Migration[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const names = entries.filter((e) => e.isDirectory()).map((e) => e.name).sort();
  return Promise.all(
    names.map(async (name) => {
      const sql = await readFile(path.join(dir, name, 'migration.sql'), 'utf8');
      return { name, sql, checksum: createHash('sha256').update(sql, 'utf8').digest('hex') };
    }),
  );
}

interface AppliedRow {
  migration_name: string;
  checksum: string;
  finished_at: Date | null;
  rolled_back_at: Date | null;
}

/**
 * Applies every pending migration, all of them in ONE transaction: either the database reaches the
 * latest schema or it stays exactly as it was (a failure rolls back every statement and every
 * bookkeeping row). Rows are written to _prisma_migrations as `prisma migrate deploy` writes them,
 * so the real CLI sees these migrations as applied. Returns the names applied now.
 *
 * The transaction's first statement takes Prisma's advisory lock, before ANY DDL: processes booting
 * at the same time on a fresh database run one after the other (the later ones find everything
 * applied), instead of racing on CREATE TABLE IF NOT EXISTS / CREATE EXTENSION IF NOT EXISTS, which
 * are not safe concurrently (a duplicate-key error on pg_type or pg_extension).
 */
export async function applyMigrations(db: { transaction<T>(fn: (tx: Sql) => Promise<T>): Promise<T> }, migrations: Migration[]): Promise<string[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await applyOnce(db, migrations);
    } catch (error) {
      if (!(error instanceof SchemaNotVisibleError) || attempt >= 3) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
    }
  }
}

/**
 * The first schema of the session's search_path is not the one its objects would be created in
 * (it is missing, or the session does not see it yet). Migrating then would silently build every
 * table in the next schema of the path (public); the native backend creates a named schema before
 * it opens any pooled session (native.ts ensureSchema), so this is a last check, not the mechanism.
 */
class SchemaNotVisibleError extends Error {}

async function applyOnce(db: { transaction<T>(fn: (tx: Sql) => Promise<T>): Promise<T> }, migrations: Migration[]): Promise<string[]> {
  return db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [PRISMA_ADVISORY_LOCK]);
    const [where] = await tx.query<{ current: string | null; path: string }>("SELECT current_schema() AS current, current_setting('search_path') AS path");
    const wanted = /^\s*(?:"((?:[^"]|"")+)"|([^,\s]+))/.exec(where.path);
    // Quoted names are exact; unquoted ones are folded to lower case, as PostgreSQL does.
    const first = wanted?.[1]?.replaceAll('""', '"') ?? wanted?.[2]?.toLowerCase();
    if (first && first !== '$user' && first !== where.current) {
      throw new SchemaNotVisibleError(`search_path starts with ${first} but objects would be created in ${String(where.current)}`);
    }
    await tx.exec(CREATE_MIGRATIONS_TABLE);
    const rows = await tx.query<AppliedRow>(
      'SELECT migration_name, checksum, finished_at, rolled_back_at FROM "_prisma_migrations" ORDER BY started_at',
    );
    const live = rows.filter((r) => r.rolled_back_at === null);
    const failed = live.find((r) => r.finished_at === null);
    if (failed) {
      throw new MigrationError(
        `migration ${failed.migration_name} is recorded as failed in _prisma_migrations; resolve it ` +
          `(e.g. \`prisma migrate resolve --rolled-back ${failed.migration_name}\`) before starting`,
      );
    }
    const applied = new Map(live.map((r) => [r.migration_name, r.checksum]));
    for (const m of migrations) {
      const checksum = applied.get(m.name);
      if (checksum !== undefined && checksum !== m.checksum) {
        throw new MigrationError(`migration ${m.name} was modified after it was applied (checksum differs)`);
      }
    }
    const pending = migrations.filter((m) => !applied.has(m.name));
    for (const m of pending) {
      try {
        await tx.exec(m.sql);
      } catch (error) {
        throw new MigrationError(`migration ${m.name} failed: ${(error as Error).message}; no migration was applied`, {
          cause: error,
        });
      }
      await tx.query(
        `INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, finished_at, applied_steps_count)
         VALUES ($1, $2, $3, now(), clock_timestamp(), 1)`,
        [randomUUID(), m.checksum, m.name],
      );
    }
    return pending.map((m) => m.name);
  });
}

/** True when every migration on disk is recorded as finished (what /readyz checks). */
export async function migrationsUpToDate(db: Pick<Sql, 'query'>, migrations: Migration[]): Promise<boolean> {
  const rows = await db.query<{ migration_name: string }>(
    `SELECT migration_name FROM "_prisma_migrations"
      WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL AND migration_name = ANY($1::text[])`,
    [migrations.map((m) => m.name)],
  );
  return new Set(rows.map((r) => r.migration_name)).size === migrations.length;
}
