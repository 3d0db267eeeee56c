import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { textRows, vectorLiteral, type Database } from '../../src/store/database.js';
import { sampleDatasetEmbeddings } from '../../src/store/items.js';
import { openDatabase } from '../../src/store/open.js';
import { BACKENDS } from '../helpers/backends.js';

const DIM = 4;
const N = 400;

/** Item i's vector: distinct per item, so a sample's vectors name the items in it. */
const vectorOf = (i: number) => [i, 1, -i, 2];

describe.each(BACKENDS)('the refit sample on the $name backend', (backend) => {
  let db: Database;
  let cleanup: () => Promise<void>;
  const datasets: Record<'first' | 'again', string> = { first: '', again: '' };

  async function ingest(name: string, order: number[]): Promise<string> {
    const id = (await db.prisma.dataset.create({ data: { name, dimension: DIM } })).id;
    const rows = order.map((i) => [id, `img/${String(i).padStart(4, '0')}.png`, vectorLiteral(vectorOf(i))]);
    await db.copyIn('items (dataset_id, external_id, embedding)', 'text', textRows(rows));
    return id;
  }

  /** The items of a sample, as item indices in the order the fit receives them. */
  async function sampled(datasetId: string, seed: number): Promise<number[]> {
    const sample = await sampleDatasetEmbeddings(db, datasetId, DIM, 0.3, seed);
    return Array.from({ length: sample.n }, (_, r) => sample.vectors[r * DIM]);
  }

  beforeAll(async () => {
    const fresh = await backend.fresh();
    cleanup = fresh.cleanup;
    db = (await openDatabase(fresh.config)).db;
    const indices = Array.from({ length: N }, (_, i) => i);
    datasets.first = await ingest('first', indices);
    // The same items again after another dataset took ids from the shared sequence, in reverse order:
    // every internal id differs from the first dataset's.
    await ingest('between', indices.slice(0, 123));
    datasets.again = await ingest('again', [...indices].reverse());
  });

  afterAll(async () => {
    await db?.close();
    await cleanup?.();
  });

  it('draws the same items in the same order for the same seed, whatever the internal ids and ingest order', async () => {
    const first = await sampled(datasets.first, 7);
    expect(first.length).toBeGreaterThan(0.2 * N);
    expect(first.length).toBeLessThan(0.4 * N);
    expect(await sampled(datasets.again, 7)).toEqual(first);
    // In external-id order: the fit's input does not depend on how the items arrived.
    expect(first).toEqual([...first].sort((a, b) => a - b));
  });

  it('draws another sample for another seed', async () => {
    const [a, b] = [await sampled(datasets.first, 7), await sampled(datasets.first, 8)];
    expect(b).not.toEqual(a);
    expect(await sampled(datasets.again, 8)).toEqual(b);
  });
});
