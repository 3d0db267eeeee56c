import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../../src/store/open.js';

describe('embedded backend', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  async function tempDir() {
    const dir = await mkdtemp(path.join(tmpdir(), 'protoprune-embedded-'));
    dirs.push(dir);
    return dir;
  }

  it('keeps its data across a close and reopen of the data directory', async () => {
    const dataDir = await tempDir();
    const first = await openDatabase({ backend: 'embedded', dataDir });
    await first.db.prisma.dataset.create({ data: { name: 'survivor', dimension: 4 } });
    await first.db.query(
      `INSERT INTO items (dataset_id, external_id, embedding)
       SELECT id, 'a', '[0.5,0.5,0.5,0.5]' FROM datasets WHERE name = 'survivor'`,
    );
    await first.db.close();

    const second = await openDatabase({ backend: 'embedded', dataDir });
    expect(second.appliedNow).toEqual([]);
    const rows = await second.db.query<{ external_id: string; embedding: number[] }>(
      `SELECT i.external_id, i.embedding FROM items i JOIN datasets d ON d.id = i.dataset_id WHERE d.name = 'survivor'`,
    );
    expect(rows).toEqual([{ external_id: 'a', embedding: [0.5, 0.5, 0.5, 0.5] }]);
    await second.db.close();
  });

  it('refuses a second open of a directory that is in use', async () => {
    const dataDir = await tempDir();
    const first = await openDatabase({ backend: 'embedded', dataDir });
    await expect(openDatabase({ backend: 'embedded', dataDir })).rejects.toThrow(/is in use by process/);
    await first.db.close();
    const again = await openDatabase({ backend: 'embedded', dataDir });
    await again.db.close();
  });
});
