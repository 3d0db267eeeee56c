import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../src/core/random.js';
import { createDataset, getDataset } from '../../src/service/datasets.js';
import { ingestItems } from '../../src/service/ingest.js';
import { requestRefit } from '../../src/service/refit.js';
import { computeSelection, selectedExternalIds, selectPage, streamSelection, type SelectionRequest } from '../../src/service/selection.js';
import { STREAM_STALL_MS, streamAtActiveVersion } from '../../src/store/ranked-selection.js';
import { BACKENDS } from '../helpers/backends.js';
import { randomUnitRows } from '../helpers/planted.js';
import { startHarness, waitForJob, type Harness } from './harness.js';

const DIM = 8;
const N = 700;
const NAME = 'ranked';

/** Ids whose byte order differs from a natural-language collation: case, accents, punctuation, digits. */
function idOf(rng: Rng, i: number): string {
  const stems = ['a', 'B', 'b', 'Z', 'é', 'e', '_x', '-y', '~', '10', '9', 'A b'];
  return `${stems[Math.floor(rng.next() * stems.length)]}${i % 7 === 0 ? '' : '.'}${i}`;
}

async function inMemory(h: Harness, request: SelectionRequest): Promise<string[]> {
  const handle = await computeSelection(h.layer.ctx, NAME, request);
  const ids: string[] = [];
  for await (const chunk of selectedExternalIds(h.layer.ctx, handle.itemIds)) ids.push(...chunk);
  return ids;
}

async function streamed(h: Harness, request: SelectionRequest): Promise<{ ids: string[]; size: number; total: number }> {
  const stream = await streamSelection(h.layer.ctx, NAME, request);
  const ids: string[] = [];
  for await (const chunk of stream.externalIds) ids.push(...chunk);
  return { ids, size: stream.size, total: stream.total };
}

async function paged(h: Harness, request: SelectionRequest, limit: number): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await selectPage(h.layer.ctx, NAME, request, { cursor, limit });
    ids.push(...page.externalIds);
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
  return ids;
}

describe.each(BACKENDS)('hardest/easiest served from the score index on the $name backend', (backend) => {
  let h: Harness;

  beforeAll(async () => {
    h = await startHarness(backend);
    const ctx = h.layer.ctx;
    await createDataset(ctx, { name: NAME, dimension: DIM, k: 5, settings: { minItemsForFit: 1_000_000, autoRefit: false } });
    const rng = new Rng(42);
    const vectors = randomUnitRows(rng, N, DIM);
    await ingestItems(ctx, NAME, Array.from({ length: N }, (_, i) => ({ externalId: idOf(rng, i), embedding: vectors.subarray(i * DIM, (i + 1) * DIM) })));
    const job = await requestRefit(ctx, NAME);
    expect((await waitForJob(h.db, job.id)).state).toBe('succeeded');
    // Coarse scores: ~20 distinct values, so nearly every boundary falls inside a run of ties.
    const dataset = await getDataset(ctx, NAME);
    await h.db.query('UPDATE item_scores SET score = round(score::numeric * 20) / 20 WHERE dataset_id = $1', [dataset.id]);
    const [{ distinct }] = await h.db.query<{ distinct: number }>('SELECT count(DISTINCT score)::int AS distinct FROM item_scores WHERE dataset_id = $1', [dataset.id]);
    expect(distinct).toBeLessThan(30);
  }, 120_000);

  afterAll(async () => {
    await h?.close();
  });

  const requests: SelectionRequest[] = [];
  for (const order of ['hardest', 'easiest'] as const) {
    for (const balance of ['none', 'cluster'] as const) {
      for (const budget of [{ fraction: 0.3 }, { fraction: 1 }, { fraction: 0.001 }, { count: 0 }, { count: 1 }, { count: 333 }, { count: 10_000 }]) {
        requests.push({ order, balance, ...budget });
      }
    }
  }

  it.each(requests)('streams exactly what the core selects: %o', async (request) => {
    const expected = await inMemory(h, request);
    const got = await streamed(h, request);
    expect(got.total).toBe(N);
    expect(got.size).toBe(expected.length);
    expect(got.ids).toEqual(expected);
  });

  it('pages through exactly what the core selects, the first page filled by the database', async () => {
    for (const request of requests.filter((r) => r.count !== 0)) {
      expect(await paged(h, request, 37)).toEqual(await inMemory(h, request));
    }
    const [{ n }] = await h.db.query<{ n: number }>('SELECT count(*)::int AS n FROM selections');
    expect(n).toBeGreaterThan(0);
  });

  it('hands the connection back when the reader stops early', async () => {
    for (let i = 0; i < 6; i++) {
      const stream = await streamSelection(h.layer.ctx, NAME, { order: 'hardest', fraction: 1 });
      for await (const chunk of stream.externalIds) {
        expect(chunk.length).toBeGreaterThan(0);
        break;
      }
    }
    // More abandoned streams than the native pool has connections: each gave its connection back.
    expect((await streamed(h, { order: 'easiest', count: 5 })).ids).toEqual(await inMemory(h, { order: 'easiest', count: 5 }));
  });

  it('frees the snapshot at once when its consumer leaves before the first read', async () => {
    const started = Date.now();
    for (let i = 0; i < 6; i++) {
      const stream = await streamSelection(h.layer.ctx, NAME, { order: 'hardest', fraction: 1 });
      stream.cancel(); // a client gone before the response began: nothing ever iterates the stream
    }
    expect((await streamed(h, { order: 'easiest', count: 5 })).ids).toEqual(await inMemory(h, { order: 'easiest', count: 5 }));
    // Without the cancel each stream would hold its transaction (PGlite's only connection) for STREAM_STALL_MS.
    expect(Date.now() - started).toBeLessThan(STREAM_STALL_MS / 4);
  });

  it('gives up a stream nobody reads', async () => {
    const dataset = await getDataset(h.layer.ctx, NAME);
    const stream = await streamAtActiveVersion(
      h.db,
      dataset.id,
      async (tx) => ({ head: null, chunks: tx.copyOut('(SELECT g FROM generate_series(1, 200000) g)', 'binary') }),
      50,
    );
    expect(stream).toBeDefined();
    await new Promise((resolve) => setTimeout(resolve, 300));
    await expect(async () => {
      for await (const chunk of stream!.chunks) expect(chunk.length).toBeGreaterThan(0);
    }).rejects.toThrow(/not read for 50 ms/);
    expect((await streamed(h, { order: 'hardest', count: 3 })).ids).toHaveLength(3);
  });
});
