import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../src/core/random.js';
import { createDataset, getDataset, listDatasets, MAX_DIMENSION, type Dataset } from '../../src/service/datasets.js';
import { indexPendingVectors } from '../../src/service/duplicates.js';
import { dedupNow } from '../helpers/dedup.js';
import { checkNearDuplicates } from '../helpers/near-duplicates.js';
import { nearestStoredSql } from '../../src/store/ann-index.js';
import { scoreBatch } from '../../src/service/score.js';
import { vectorLiteral, type Database } from '../../src/store/database.js';
import { annExpression, annIndexKind, annIndexName, annOperatorClass, annQueryOperand } from '../../src/store/datasets.js';
import { BACKENDS } from '../helpers/backends.js';
import { cosine64, halfvecMisorderedPair, nearCopy, storedForm } from '../helpers/halfvec.js';
import { plantedClusters, randomUnitRows } from '../helpers/planted.js';
import { startHarness, waitForJob, type Harness } from '../service/harness.js';
import { ingestItems } from '../../src/service/ingest.js';
import type { IngestItem } from '../../src/service/ingest-items.js';

describe('the near-duplicate index kind follows the dimension (one rule)', () => {
  it('vector up to 2,000 dimensions (as before), halfvec from 2,001 to 4,000, nothing above', () => {
    expect(MAX_DIMENSION).toBe(4000);
    for (const d of [1, 512, 2000]) {
      expect(annIndexKind(d)).toBe('vector');
      expect(annOperatorClass(d)).toBe('vector_cosine_ops');
    }
    for (const d of [2001, 2048, 4000]) {
      expect(annIndexKind(d)).toBe('halfvec');
      expect(annOperatorClass(d)).toBe('halfvec_cosine_ops');
    }
    // Existing datasets keep exactly the expression their index was built on.
    expect(annExpression(2000, 'a.embedding')).toBe('(a.embedding::vector(2000))');
    expect(annExpression(2048, 'a.embedding')).toBe('(a.embedding::halfvec(2048))');
    expect(annQueryOperand(4000, 'q.v')).toBe('q.v::halfvec(4000)');
    for (const d of [0, 4001, 16000, 2.5]) expect(() => annIndexKind(d)).toThrow(RangeError);
  });
});

/** Index names anywhere in an EXPLAIN (FORMAT JSON) plan, with the Order By of each index scan. */
function indexScans(plan: unknown): { index: string; orderBy: string | undefined }[] {
  const found: { index: string; orderBy: string | undefined }[] = [];
  const visit = (node: unknown) => {
    if (Array.isArray(node)) return node.forEach(visit);
    if (!node || typeof node !== 'object') return;
    const n = node as Record<string, unknown>;
    if (typeof n['Index Name'] === 'string') found.push({ index: n['Index Name'], orderBy: n['Order By'] as string | undefined });
    Object.values(n).forEach(visit);
  };
  visit(plan);
  return found;
}

/**
 * EXPLAIN of the statement `nearestStored` runs. `noSeqScan`: with sequential scans off, the planner
 * can still reach item_ann through its primary key (and sort), so the dataset's HNSW index shows up
 * only if the query's ORDER BY expression is exactly the one the index was built on.
 */
async function explain(db: Database, dataset: Dataset, probes: Float32Array[], noSeqScan: boolean): Promise<unknown> {
  const [row] = await db.transaction(async (tx) => {
    if (noSeqScan) await tx.exec('SET LOCAL enable_seqscan = off');
    return tx.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${nearestStoredSql(dataset)}`, [probes.map((p) => vectorLiteral(storedForm(p)))]);
  });
  const plan = row['QUERY PLAN'];
  return typeof plan === 'string' ? JSON.parse(plan) : plan;
}

function hnswScans(plan: unknown, dataset: Dataset) {
  return indexScans(plan).filter((s) => s.index === annIndexName(dataset.id));
}

async function pendingOf(db: Database, datasetId: string): Promise<number> {
  return (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM ann_pending WHERE dataset_id = $1', [datasetId]))[0].n;
}

describe.each(BACKENDS)('datasets up to 4,000 dimensions on the $name backend', (backend) => {
  let h: Harness;

  beforeAll(async () => {
    h = await startHarness(backend);
  });
  afterAll(async () => {
    await h?.close();
  });

  it('builds the HNSW index on vector up to 2,000 dimensions and on halfvec from 2,001 to 4,000', async () => {
    for (const [d, expected] of [
      [2000, /\(\(?embedding\)?::vector\(2000\)\)? vector_cosine_ops\)/],
      [2001, /\(\(?embedding\)?::halfvec\(2001\)\)? halfvec_cosine_ops\)/],
      [4000, /\(\(?embedding\)?::halfvec\(4000\)\)? halfvec_cosine_ops\)/],
    ] as const) {
      const dataset = await createDataset(h.layer.ctx, { name: `kind-${d}`, dimension: d });
      const [index] = await h.db.query<{ indexdef: string }>('SELECT indexdef FROM pg_indexes WHERE indexname = $1', [annIndexName(dataset.id)]);
      expect(index.indexdef).toMatch(/USING hnsw/);
      expect(index.indexdef).toMatch(expected);
      expect(index.indexdef).toContain(dataset.id);
    }
  });

  it('refuses dimensions above 4,000 with DIMENSION_TOO_LARGE, explaining the limit, and creates nothing', async () => {
    for (const dimension of [4001, 16000]) {
      const error = await createDataset(h.layer.ctx, { name: `too-big-${dimension}`, dimension }).catch((e: unknown) => e);
      expect(error).toMatchObject({ kind: 'invalid', code: 'DIMENSION_TOO_LARGE', details: { field: 'dimension', max: 4000 } });
      expect((error as Error).message).toMatch(/4,000/);
      expect((error as Error).message).toMatch(/HNSW/);
      expect((error as Error).message).toMatch(/halfvec/);
    }
    expect((await listDatasets(h.layer.ctx)).map((d) => d.name).filter((n) => n.startsWith('too-big'))).toEqual([]);
    await expect(createDataset(h.layer.ctx, { name: 'zero-d', dimension: 0 })).rejects.toMatchObject({ code: 'INVALID_DIMENSION' });
  });

  // 512 is the unchanged vector path (same index, the lookup query's new shape); 2,048 and 4,000 use halfvec.
  describe.each([512, 2048, 4000])('%i dimensions', (dim) => {
    const name = `nd-${dim}`;
    const EPSILON = 0.01;
    const kind = annIndexKind(dim);
    const rng = new Rng(dim);
    const base = plantedClusters({ seed: dim, clusters: 4, perCluster: 30, dim, noise: 0.5 });
    const baseRow = (i: number) => base.points.subarray(i * dim, (i + 1) * dim);
    const TWINS = [5, 42, 97];
    const pair = halfvecMisorderedPair(dim);
    const items: IngestItem[] = [
      ...Array.from({ length: base.n }, (_, i) => ({ externalId: `b-${i}`, embedding: baseRow(i) })),
      ...TWINS.map((i) => ({ externalId: `twin-of-b-${i}`, embedding: nearCopy(baseRow(i), 0.03, rng) })),
      { externalId: 'halfvec-nearest', embedding: pair.halfvecNearest },
      { externalId: 'exact-nearest', embedding: pair.exactNearest },
    ];
    // Not stored: near copies of base items and of their twins, the misorder probe, and one far vector.
    const probes = [
      ...TWINS.map((i) => ({ externalId: `probe-b-${i}`, embedding: nearCopy(baseRow(i), 0.02, rng) })),
      { externalId: 'probe-pair', embedding: pair.probe },
      { externalId: 'probe-far', embedding: nearCopy(new Float32Array(dim).fill(-1 / Math.sqrt(dim)), 1, rng) },
    ];
    let dataset: Dataset;
    let stored: Map<string, Float32Array>;

    /** Brute force over the stored float32 vectors, in float64: the nearest item and its similarity. */
    function bruteForce(probe: ArrayLike<number>): { externalId: string; similarity: number } {
      let best = { externalId: '', similarity: -Infinity };
      for (const [externalId, v] of stored) {
        const similarity = cosine64(v, probe);
        if (similarity > best.similarity) best = { externalId, similarity };
      }
      return best;
    }

    /** The exact float32 distance pgvector computes for a stored item and a probe, and the halfvec one. */
    async function distances(externalId: string, probe: Float32Array): Promise<{ exact: number; halfvec: number }> {
      const [r] = await h.db.query<{ exact: number; halfvec: number }>(
        `SELECT embedding <=> $2::vector AS exact, embedding::halfvec(${dim}) <=> $2::halfvec(${dim}) AS halfvec
           FROM items WHERE dataset_id = $1 AND external_id = $3`,
        [dataset.id, vectorLiteral(probe), externalId],
      );
      return { exact: Number(r.exact), halfvec: Number(r.halfvec) };
    }

    beforeAll(async () => {
      await createDataset(h.layer.ctx, { name, dimension: dim, k: 4, settings: { minItemsForFit: items.length, seed: 1, duplicateEpsilon: EPSILON } });
      const result = await ingestItems(h.layer.ctx, name, items);
      expect(result.items.every((r) => r.status === 'stored')).toBe(true);
      expect(result.scheduledJobId).not.toBeNull();
      expect((await waitForJob(h.db, result.scheduledJobId!)).state).toBe('succeeded');
      dataset = await getDataset(h.layer.ctx, name);
      // The background indexer (the harness runs it between jobs) moves every pending item into item_ann.
      const deadline = Date.now() + 120_000;
      while ((await pendingOf(h.db, dataset.id)) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const rows = await h.db.query<{ external_id: string; embedding: number[] }>('SELECT external_id, embedding FROM items WHERE dataset_id = $1', [dataset.id]);
      stored = new Map(rows.map((r) => [r.external_id, Float32Array.from(r.embedding)]));
    }, 180_000);

    it('the background indexer moved every item into item_ann', async () => {
      expect(await pendingOf(h.db, dataset.id)).toBe(0);
      const [{ n }] = await h.db.query<{ n: number }>('SELECT count(*)::int AS n FROM item_ann WHERE dataset_id = $1', [dataset.id]);
      expect(n).toBe(items.length);
      expect(stored.size).toBe(items.length);
    });

    it(`the lookup query's ORDER BY matches the dataset's HNSW index (${kind}), so the planner can use it`, async () => {
      // Small datasets are cheaper to scan, and the planner says so; at size it picks the index (see below).
      const hnsw = hnswScans(await explain(h.db, dataset, probes.map((p) => p.embedding), true), dataset);
      expect(hnsw).toHaveLength(1);
      expect(hnsw[0].orderBy).toContain(`::${kind}(${dim})`);
      if (kind === 'vector') expect(hnsw[0].orderBy).not.toContain('halfvec');
    });

    it('the planted pair is misordered by halfvec, so only a re-rank finds the exact nearest', async () => {
      // What the index alone would answer (no re-rank): ordered by the index's expression.
      const bare = await h.db.query<{ external_id: string }>(
        `SELECT i.external_id FROM item_ann a JOIN items i ON i.id = a.item_id WHERE a.dataset_id = $1
          ORDER BY ${annExpression(dim, 'a.embedding')} <=> ${annQueryOperand(dim, '$2')} LIMIT 1`,
        [dataset.id, vectorLiteral(pair.probe)],
      );
      expect(bare[0].external_id).toBe(kind === 'halfvec' ? 'halfvec-nearest' : 'exact-nearest');
      const hv = await distances('halfvec-nearest', pair.probe);
      const ex = await distances('exact-nearest', pair.probe);
      expect(ex.exact).toBeLessThan(hv.exact - 1e-6);
      expect(hv.halfvec).toBeLessThan(ex.halfvec - 1e-6);
    });

    it('checkNearDuplicates finds the planted near-duplicates with exact float32 similarities', async () => {
      const found = await checkNearDuplicates(h.layer.ctx, name, probes.map((p) => p.embedding));
      expect(found).toHaveLength(probes.length);
      for (const [j, probe] of probes.entries()) {
        // The service normalises each probe as ingest does; compare against the same float32 vector.
        const sent = storedForm(probe.embedding);
        const expected = bruteForce(sent);
        const got = found[j];
        const far = probe.externalId === 'probe-far';
        // HNSW is approximate far from everything (no near-duplicate there); near ones must be found.
        if (!far) expect(got.externalId, probe.externalId).toBe(expected.externalId);
        // Exactly pgvector's float32 cosine distance of the vectors, never the halfvec one...
        const d = await distances(got.externalId!, sent);
        expect(got.similarity, probe.externalId).toBe(1 - d.exact);
        if (kind === 'halfvec') expect(got.similarity).not.toBe(1 - d.halfvec);
        // ... which agrees with float64 brute force to float32 rounding.
        const reported = cosine64(stored.get(got.externalId!)!, sent);
        expect(Math.abs(got.similarity! - reported), probe.externalId).toBeLessThan(2e-6);
        if (!far) expect(Math.abs(got.similarity! - expected.similarity)).toBeLessThan(2e-6);
        expect(got.duplicate).toBe(expected.similarity >= 1 - EPSILON);
      }
      expect(found.map((f) => f.duplicate)).toEqual([true, true, true, true, false]);
      const pairProbe = found[TWINS.length];
      expect(pairProbe.externalId).toBe('exact-nearest');
      expect(Math.abs(1 - pairProbe.similarity! - pair.distances.exactNearest.exact)).toBeLessThan(2e-6);
    });

    it('scoring a batch reports the same exact nearest items and flags the near-duplicates', async () => {
      const result = await scoreBatch(h.layer.ctx, name, probes, { epsilon: EPSILON });
      const direct = await checkNearDuplicates(h.layer.ctx, name, probes.map((p) => p.embedding), EPSILON);
      for (const [j, r] of result.items.entries()) {
        expect(r.status).toBe('scored');
        if (r.status !== 'scored') continue;
        expect(r.nearest).toEqual({ externalId: direct[j].externalId, similarity: direct[j].similarity });
        expect(r.duplicate).toBe(direct[j].duplicate);
        expect(r.reason === 'near-duplicate').toBe(direct[j].duplicate);
      }
      expect(result.items[TWINS.length]).toMatchObject({ nearest: { externalId: 'exact-nearest' }, duplicate: true, decision: 'skip' });
    });

    it('SemDeDup over the stored items groups each planted twin with its original', async () => {
      const report = await dedupNow(h.layer.ctx, name, EPSILON);
      const groups = report.groups.map((g) => [g.kept, ...g.duplicates].sort()).sort();
      expect(groups).toEqual([...TWINS.map((i) => [`b-${i}`, `twin-of-b-${i}`].sort()), ['exact-nearest', 'halfvec-nearest']].sort());
    });
  });
});

describe.each(BACKENDS)('pending and indexed items at 4,000 dimensions on the $name backend', (backend) => {
  const dim = 4000;
  let h: Harness;
  const pair = halfvecMisorderedPair(dim);
  const others = randomUnitRows(new Rng(3), 30, dim);

  beforeAll(async () => {
    h = await startHarness(backend, { annIndexBatch: 0 }); // no background indexing: the test moves items itself
    await createDataset(h.layer.ctx, { name: 'pending', dimension: dim });
    await ingestItems(h.layer.ctx, 'pending', [
      ...Array.from({ length: 30 }, (_, i) => ({ externalId: `o-${i}`, embedding: others.subarray(i * dim, (i + 1) * dim) })),
      { externalId: 'halfvec-nearest', embedding: pair.halfvecNearest },
      { externalId: 'exact-nearest', embedding: pair.exactNearest },
    ]);
  });
  afterAll(async () => {
    await h?.close();
  });

  it('finds the exact nearest with the same similarity before (exact scan) and after (halfvec index + re-rank) indexing', async () => {
    const before = await checkNearDuplicates(h.layer.ctx, 'pending', [pair.probe]);
    expect(before[0]).toMatchObject({ externalId: 'exact-nearest', duplicate: true });
    const [{ n: indexedBefore }] = await h.db.query<{ n: number }>('SELECT count(*)::int AS n FROM item_ann');
    expect(indexedBefore).toBe(0);
    expect(await indexPendingVectors(h.layer.ctx, 1000)).toBe(32);
    const after = await checkNearDuplicates(h.layer.ctx, 'pending', [pair.probe]);
    expect(after[0]).toEqual(before[0]);
    expect(Math.abs(1 - after[0].similarity! - pair.distances.exactNearest.exact)).toBeLessThan(2e-6);
  });
});

/**
 * At size the planner picks the index by itself. It charges an HNSW scan per row fetched (a halfvec
 * tuple fills a page), so on native PostgreSQL with default costs the crossover for 2,048-d
 * halfvec is about 1,100 indexed items (and about 1,900 at 4,000-d); this dataset is above it.
 */
for (const backend of BACKENDS.filter((b) => b.name === 'native')) {
  describe('a 2,048-d dataset large enough for the planner to choose the HNSW index (native)', () => {
    const dim = 2048;
    const n = 1400;
    let h: Harness;
    let dataset: Dataset;
    const points = randomUnitRows(new Rng(77), n, dim);
    const row = (i: number) => points.subarray(i * dim, (i + 1) * dim);

    beforeAll(async () => {
      h = await startHarness(backend);
      await createDataset(h.layer.ctx, { name: 'large', dimension: dim, settings: { minItemsForFit: n + 1 } });
      for (let start = 0; start < n; start += 500) {
        const batch = Array.from({ length: Math.min(500, n - start) }, (_, j) => ({ externalId: `x-${start + j}`, embedding: row(start + j) }));
        await ingestItems(h.layer.ctx, 'large', batch);
      }
      dataset = await getDataset(h.layer.ctx, 'large');
      const deadline = Date.now() + 240_000;
      while ((await pendingOf(h.db, dataset.id)) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      await h.db.exec('ANALYZE item_ann');
    }, 300_000);
    afterAll(async () => {
      await h?.close();
    });

    it('EXPLAIN of the lookup shows an index scan of the dataset HNSW index on halfvec, and the lookup is exact', async () => {
      expect(await pendingOf(h.db, dataset.id)).toBe(0);
      const probe = nearCopy(row(321), 0.05, new Rng(5));
      const hnsw = hnswScans(await explain(h.db, dataset, [probe], false), dataset);
      expect(hnsw).toHaveLength(1);
      expect(hnsw[0].orderBy).toContain(`::halfvec(${dim})`);
      const [found] = await checkNearDuplicates(h.layer.ctx, 'large', [probe]);
      expect(found.externalId).toBe('x-321');
      expect(Math.abs(found.similarity! - cosine64(row(321), probe))).toBeLessThan(2e-6);
    });
  });
}
