import type { DatabaseConfig } from '../config/index.js';
import { MIGRATIONS_DIR } from '../paths.js';
import type { Database } from './database.js';
import { openEmbedded } from './embedded.js';
import { applyMigrations, readMigrations, type Migration } from './migrations.js';
import { openNative, type ConnectionObserver } from './native.js';

export interface OpenedDatabase {
  db: Database;
  migrations: Migration[];
  /** Migrations applied during this open (empty when the schema was already current). */
  appliedNow: string[];
}

export interface OpenOptions {
  /** Told when native connections are made or fail (see ConnectionObserver); the embedded backend has none. */
  observer?: ConnectionObserver;
}

/**
 * Opens the configured backend, brings its schema up to date and registers the vector type. Safe
 * when several processes open the same fresh database at once: every schema change runs under one
 * advisory lock (see applyMigrations).
 */
export async function openDatabase(config: DatabaseConfig, migrationsDir = MIGRATIONS_DIR, options: OpenOptions = {}): Promise<OpenedDatabase> {
  const migrations = await readMigrations(migrationsDir);
  const db = config.backend === 'native' ? await openNative(config.url, config.poolMax, options.observer) : await openEmbedded(config.dataDir);
  try {
    const appliedNow = await applyMigrations(db, migrations);
    await db.registerVectorType();
    return { db, migrations, appliedNow };
  } catch (error) {
    await db.close().catch(() => undefined);
    throw error;
  }
}
