import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { openDatabase } from '../../src/store/open.js';
import { adminQuery, NATIVE_URL, urlWithSchema } from '../helpers/backends.js';

// Runs where a native PostgreSQL is configured (TEST_DATABASE_URL), as every native test does.
describe.each(NATIVE_URL ? [NATIVE_URL] : [])('native ?schema= handling', (url) => {
  it('creates a missing schema and puts the tables there, not in public', async () => {
    const schema = `fresh_${randomBytes(5).toString('hex')}`;
    const { db } = await openDatabase({ backend: 'native', url: urlWithSchema(url, schema), poolMax: 2 });
    try {
      const rows = await adminQuery(`SELECT table_schema FROM information_schema.tables WHERE table_name = 'datasets' AND table_schema = $1`, [schema]);
      expect(rows.rowCount).toBe(1);
    } finally {
      await db.close();
      await adminQuery(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  });
});
