import { createHash } from 'node:crypto';
import { cp, mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MIGRATIONS_DIR } from '../../src/paths.js';
import { openDatabase } from '../../src/store/open.js';
import { applyMigrations, MigrationError, readMigrations } from '../../src/store/migrations.js';
import type { Database } from '../../src/store/database.js';
import { BACKENDS } from '../helpers/backends.js';

async function tableExists(db: Database, table: string): Promise<boolean> {
  const rows = await db.query<{ found: string | null }>('SELECT to_regclass($1)::text AS found', [table]);
  return rows[0].found !== null;
}

/** A copy of the real migrations plus one more whose second statement fails. */
async function migrationsWithBrokenTail(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'protoprune-migrations-'));
  await cp(MIGRATIONS_DIR, dir, { recursive: true });
  await mkdir(path.join(dir, '99991231000000_broken'));
  await writeFile(
    path.join(dir, '99991231000000_broken', 'migration.sql'),
    'CREATE TABLE "half_done" ("id" INTEGER);\nALTER TABLE "no_such_table" ADD COLUMN "x" INTEGER;\n',
  );
  return dir;
}

describe.each(BACKENDS)('migrations on the $name backend', (backend) => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });

  async function fresh() {
    const { config, cleanup } = await backend.fresh();
    cleanups.push(cleanup);
    return config;
  }

  it('applies every migration once, records it as Prisma does, and is a no-op the second time', async () => {
    const config = await fresh();
    const first = await openDatabase(config);
    const files = await readMigrations(MIGRATIONS_DIR);
    expect(first.appliedNow).toEqual(files.map((m) => m.name));
    const rows = await first.db.query<{ migration_name: string; checksum: string; finished_at: Date | null; applied_steps_count: number }>(
      'SELECT migration_name, checksum, finished_at, applied_steps_count FROM "_prisma_migrations" ORDER BY migration_name',
    );
    await first.db.close();

    for (const [i, m] of files.entries()) {
      const sql = await readFile(path.join(MIGRATIONS_DIR, m.name, 'migration.sql'));
      expect(rows[i].migration_name).toBe(m.name);
      expect(rows[i].checksum).toBe(createHash('sha256').update(sql).digest('hex'));
      expect(rows[i].finished_at).toBeInstanceOf(Date);
      expect(rows[i].applied_steps_count).toBe(1);
    }

    const second = await openDatabase(config);
    expect(second.appliedNow).toEqual([]);
    const count = await second.db.query<{ n: number }>('SELECT count(*)::int AS n FROM "_prisma_migrations"');
    expect(count[0].n).toBe(files.length);
    expect(await tableExists(second.db, 'items')).toBe(true);
    await second.db.close();
  });

  it('a failing migration on a fresh database leaves no schema at all and names the migration', async () => {
    const config = await fresh();
    const dir = await migrationsWithBrokenTail();
    cleanups.push(() => rm(dir, { recursive: true, force: true }));

    await expect(openDatabase(config, dir)).rejects.toThrow(/migration 99991231000000_broken failed: .*no_such_table/);

    const { db } = await openDatabase(config, MIGRATIONS_DIR);
    // Reopening with the good migrations works from scratch: nothing of the failed boot remained.
    const rows = await db.query<{ migration_name: string }>('SELECT migration_name FROM "_prisma_migrations"');
    expect(rows.map((r) => r.migration_name)).not.toContain('99991231000000_broken');
    expect(await tableExists(db, 'half_done')).toBe(false);
    await db.close();
  });

  it('a failing migration on an up-to-date database changes nothing', async () => {
    const config = await fresh();
    const { db } = await openDatabase(config);
    const before = await db.query('SELECT migration_name, checksum FROM "_prisma_migrations" ORDER BY 1');
    const dir = await migrationsWithBrokenTail();
    cleanups.push(() => rm(dir, { recursive: true, force: true }));

    await expect(applyMigrations(db, await readMigrations(dir))).rejects.toBeInstanceOf(MigrationError);
    expect(await tableExists(db, 'half_done')).toBe(false);
    expect(await db.query('SELECT migration_name, checksum FROM "_prisma_migrations" ORDER BY 1')).toEqual(before);
    await db.close();
  });

  it('refuses to start when an applied migration was edited afterwards', async () => {
    const config = await fresh();
    const { db } = await openDatabase(config);
    const edited = (await readMigrations(MIGRATIONS_DIR)).map((m, i) => (i === 0 ? { ...m, checksum: '0'.repeat(64) } : m));
    await expect(applyMigrations(db, edited)).rejects.toThrow(/was modified after it was applied/);
    await db.close();
  });
});
