import { cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MIGRATIONS_DIR } from '../../src/paths.js';
import { vectorLiteral } from '../../src/store/database.js';
import { findPrototypeSetRow, loadPrototypeSet } from '../../src/store/prototypes.js';
import { openDatabase } from '../../src/store/open.js';
import { BACKENDS } from '../helpers/backends.js';

const STATE_MIGRATION = '20261129030000_centroid_state';

/** A migrations directory holding every migration before `name`. */
async function migrationsBefore(name: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'protoprune-migrations-'));
  for (const entry of await readdir(MIGRATIONS_DIR)) {
    if (entry < name) await cp(path.join(MIGRATIONS_DIR, entry), path.join(dir, entry), { recursive: true });
  }
  return dir;
}

describe.each(BACKENDS)('the centroid-state migration on the $name backend', (backend) => {
  it('carries every set’s current centroids and counts over, exactly', async () => {
    const fresh = await backend.fresh();
    const older = await migrationsBefore(STATE_MIGRATION);
    try {
      const dim = 3;
      const current = [
        [0.6, 0.8, 0],
        [0, -0.28, 0.96],
      ];
      const fitted = [
        [1, 0, 0],
        [0, 0, 1],
      ];
      const before = await openDatabase(fresh.config, older);
      const [ds] = await before.db.query<{ id: string }>(`INSERT INTO datasets (id, name, dimension) VALUES (gen_random_uuid(), 'm', ${dim}) RETURNING id`);
      await before.db.query(`INSERT INTO prototype_sets (dataset_id, version, k, fit_items, revision) VALUES ($1, 1, 2, 10, 4)`, [ds.id]);
      for (let c = 0; c < 2; c++) {
        await before.db.query(
          `INSERT INTO prototypes (set_id, cluster, centroid, fit_centroid, count) SELECT id, $1, $2::vector, $3::vector, $4 FROM prototype_sets`,
          [c, vectorLiteral(Float32Array.from(current[c])), vectorLiteral(Float32Array.from(fitted[c])), 7 + c * 1000],
        );
      }
      await before.db.close();

      const after = await openDatabase(fresh.config);
      try {
        const row = await findPrototypeSetRow(after.db, ds.id, 1);
        const set = await loadPrototypeSet(after.db, row!, dim);
        expect(Array.from(set.centroids)).toEqual(current.flat().map(Math.fround));
        expect(Array.from(set.fitCentroids)).toEqual(fitted.flat().map(Math.fround));
        expect(Array.from(set.counts)).toEqual([7, 1007]);
        expect(set.revision).toBe(4);
      } finally {
        await after.db.close();
      }
    } finally {
      await rm(older, { recursive: true, force: true });
      await fresh.cleanup();
    }
  });
});
