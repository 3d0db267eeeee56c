import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../src/core/random.js';
import { createDataset } from '../../src/service/datasets.js';
import { indexPendingVectors } from '../../src/service/duplicates.js';
import { dedupNow } from '../helpers/dedup.js';
import { checkNearDuplicates } from '../helpers/near-duplicates.js';
import { prototypeStatus } from '../../src/service/prototypes.js';
import { requestRefit } from '../../src/service/refit.js';
import { selectItems } from '../../src/service/selection.js';
import { BACKENDS } from '../helpers/backends.js';
import { plantedClusters, randomUnitRows } from '../helpers/planted.js';
import { row, startHarness, waitForJob, type Harness } from './harness.js';
import { ingestItems } from '../../src/service/ingest.js';
import type { IngestItem } from '../../src/service/ingest-items.js';

const DIM = 32;
const CLUSTERS = 6;
const PER_CLUSTER = 50;

/** Planted clusters, one item exactly at each centre, and a few uniformly random outliers. */
function plantedItems(): { items: IngestItem[]; centreIds: string[]; outlierIds: string[] } {
  const data = plantedClusters({ seed: 11, clusters: CLUSTERS, perCluster: PER_CLUSTER, dim: DIM, noise: 0.35 });
  const items: IngestItem[] = [];
  for (let i = 0; i < data.n; i++) items.push({ externalId: `p-${String(i).padStart(4, '0')}`, embedding: row(data.points, i, DIM), metadata: { label: data.labels[i] } });
  const centreIds = Array.from({ length: CLUSTERS }, (_, c) => `centre-${c}`);
  centreIds.forEach((id, c) => items.push({ externalId: id, embedding: row(data.centres, c, DIM) }));
  const outliers = randomUnitRows(new Rng(5), 4, DIM);
  const outlierIds = Array.from({ length: 4 }, (_, i) => `outlier-${i}`);
  outlierIds.forEach((id, i) => items.push({ externalId: id, embedding: row(outliers, i, DIM) }));
  return { items, centreIds, outlierIds };
}

describe.each(BACKENDS)('pruning engine on the $name backend', (backend) => {
  let h: Harness;
  const planted = plantedItems();
  const total = planted.items.length;

  beforeAll(async () => {
    h = await startHarness(backend);
  });
  afterAll(async () => {
    await h?.close();
  });

  it('validates every item alone: bad ones fail with a code, the rest are stored', async () => {
    await createDataset(h.layer.ctx, { name: 'validation', dimension: 3 });
    const result = await ingestItems(h.layer.ctx, 'validation', [
      { externalId: 'ok', embedding: [1, 2, 3] },
      { externalId: 'short', embedding: [1, 2] },
      { externalId: 'nan', embedding: [1, Number.NaN, 3] },
      { externalId: 'zero', embedding: [0, 0, 0] },
      { externalId: 'twice', embedding: [1, 0, 0] },
      { externalId: 'twice', embedding: [0, 1, 0] },
      { externalId: '', embedding: [1, 1, 1] },
    ]);
    expect(result.items.map((r) => (r.status === 'error' ? r.code : r.status))).toEqual([
      'stored',
      'DIMENSION_MISMATCH',
      'NON_FINITE_VALUE',
      'ZERO_VECTOR',
      'DUPLICATE_EXTERNAL_ID',
      'stored',
      'INVALID_EXTERNAL_ID',
    ]);
    const rows = await h.db.query<{ external_id: string; embedding: number[] }>(
      `SELECT external_id, embedding FROM items i JOIN datasets d ON d.id = i.dataset_id WHERE d.name = 'validation' ORDER BY 1`,
    );
    expect(rows.map((r) => r.external_id)).toEqual(['ok', 'twice']);
    const [ok, twice] = rows;
    expect(Math.hypot(...ok.embedding)).toBeCloseTo(1, 6);
    expect(twice.embedding).toEqual([0, 1, 0]);
    const again = await ingestItems(h.layer.ctx, 'validation', [{ externalId: 'ok', embedding: [3, 2, 1] }]);
    expect(again.items[0].status).toBe('updated');
  });

  it('schedules the first fit once enough items arrived, and scores every item with version 1', async () => {
    await createDataset(h.layer.ctx, { name: 'planted', dimension: DIM, k: CLUSTERS, settings: { minItemsForFit: total, seed: 3 } });
    const first = await ingestItems(h.layer.ctx, 'planted', planted.items.slice(0, 100));
    expect(first.prototypeVersion).toBeNull();
    expect(first.scheduledJobId).toBeNull();
    expect(first.items.every((r) => r.status === 'stored' && r.score === null)).toBe(true);

    const rest = await ingestItems(h.layer.ctx, 'planted', planted.items.slice(100));
    expect(rest.scheduledJobId).not.toBeNull();
    const job = await waitForJob(h.db, rest.scheduledJobId!);
    expect(job.state).toBe('succeeded');
    expect(job.result).toMatchObject({ version: 1, k: CLUSTERS, fitItems: total });
    expect(job.progress.done).toBe(job.progress.total);

    const status = await prototypeStatus(h.layer.ctx, 'planted');
    expect(status.version).toBe(1);
    expect(status.clusterSizes.reduce((a, b) => a + b, 0)).toBe(total);
    // Six planted groups of 50 (+ centre) are recovered: every cluster holds one group (and maybe an outlier).
    expect([...status.clusterSizes].sort((a, b) => a - b).every((s) => s >= PER_CLUSTER + 1 && s <= PER_CLUSTER + 5)).toBe(true);
  });

  it('ranks planted centres easiest and planted outliers hardest', async () => {
    const hardest = await selectItems(h.layer.ctx, 'planted', { order: 'hardest', count: 4 });
    expect(hardest.version).toBe(1);
    expect([...hardest.externalIds].sort()).toEqual(planted.outlierIds);
    const easiest = await selectItems(h.layer.ctx, 'planted', { order: 'easiest', count: CLUSTERS });
    expect([...easiest.externalIds].sort()).toEqual(planted.centreIds);
  });

  it('selects exact sizes for every policy, and per-cluster quotas with balance=cluster', async () => {
    for (const order of ['hardest', 'easiest', 'random', 'stratified'] as const) {
      const byFraction = await selectItems(h.layer.ctx, 'planted', { order, fraction: 0.3, seed: 1 });
      expect(byFraction.externalIds).toHaveLength(Math.round(0.3 * total));
      expect(new Set(byFraction.externalIds).size).toBe(byFraction.externalIds.length);
      const balanced = await selectItems(h.layer.ctx, 'planted', { order, count: 61, balance: 'cluster', seed: 1 });
      expect(balanced.externalIds).toHaveLength(61);
    }
    const a = await selectItems(h.layer.ctx, 'planted', { order: 'random', fraction: 0.5, seed: 7 });
    const b = await selectItems(h.layer.ctx, 'planted', { order: 'random', fraction: 0.5, seed: 7 });
    const c = await selectItems(h.layer.ctx, 'planted', { order: 'random', fraction: 0.5, seed: 8 });
    expect(a.externalIds).toEqual(b.externalIds);
    expect(a.externalIds).not.toEqual(c.externalIds);
    await expect(selectItems(h.layer.ctx, 'planted', { order: 'hardest', fraction: 1.5 })).rejects.toMatchObject({ code: 'INVALID_SELECTION' });
  });

  it('scores an incremental batch at once and folds it into the centroids', async () => {
    const before = await prototypeStatus(h.layer.ctx, 'planted');
    // Same seed, more points per group: the first 300 repeat the stored ones, the next 18 are new draws around the same centres.
    const data = plantedClusters({ seed: 11, clusters: CLUSTERS, perCluster: PER_CLUSTER + 3, dim: DIM, noise: 0.35 });
    const batch = Array.from({ length: CLUSTERS * 3 }, (_, i) => ({ externalId: `late-${i}`, embedding: row(data.points, CLUSTERS * PER_CLUSTER + i, DIM) }));
    const result = await ingestItems(h.layer.ctx, 'planted', batch);
    expect(result.prototypeVersion).toBe(1);
    for (const r of result.items) {
      expect(r.status).toBe('stored');
      if (r.status === 'stored') {
        expect(r.score).toBeGreaterThanOrEqual(0);
        expect(r.score).toBeLessThan(0.3);
      }
    }
    const after = await prototypeStatus(h.layer.ctx, 'planted');
    expect(after.revision).toBe(before.revision + 1);
    expect(after.itemsSinceFit).toBe(before.itemsSinceFit + batch.length);
    expect(after.drift.max).toBeGreaterThan(0);
    expect(after.clusterSizes.reduce((x, y) => x + y, 0)).toBe(total + batch.length);
  });

  it('finds planted exact duplicates with SemDeDup at ε = 0, and nothing else', async () => {
    const copies = [3, 77, 150].map((i) => ({ externalId: `copy-of-${i}`, embedding: planted.items[i].embedding }));
    await ingestItems(h.layer.ctx, 'planted', copies);
    const report = await dedupNow(h.layer.ctx, 'planted', 0);
    const pairs = report.groups.map((g) => [g.kept, ...g.duplicates].sort());
    expect(pairs.sort()).toEqual([3, 77, 150].map((i) => [`copy-of-${i}`, planted.items[i].externalId].sort()).sort());
    expect(report.run.duplicates).toBe(3);
    expect(report.groups.flatMap((g) => g.similarities).every((s) => s > 0.9999)).toBe(true);
  });

  it('checks new items for near-duplicates among stored ones, before and after HNSW indexing', async () => {
    const probe = [planted.items[10].embedding, row(randomUnitRows(new Rng(99), 1, DIM), 0, DIM)];
    const pending = await checkNearDuplicates(h.layer.ctx, 'planted', probe, 0.01);
    expect(pending[0]).toMatchObject({ externalId: planted.items[10].externalId, duplicate: true });
    expect(pending[0].similarity).toBeCloseTo(1, 5);
    expect(pending[1].duplicate).toBe(false);

    // Index everything (the background worker may hold some rows; those are skipped, so re-check).
    const pendingCount = async () => (await h.db.query<{ n: number }>('SELECT count(*)::int AS n FROM ann_pending'))[0].n;
    for (let round = 0; round < 200 && (await pendingCount()) > 0; round++) {
      if ((await indexPendingVectors(h.layer.ctx, 1000)) === 0) await new Promise((r) => setTimeout(r, 50));
    }
    expect(await pendingCount()).toBe(0);
    const [{ n: indexedCount }] = await h.db.query<{ n: number }>('SELECT count(*)::int AS n FROM item_ann');
    expect(indexedCount).toBeGreaterThan(0);
    const indexed = await checkNearDuplicates(h.layer.ctx, 'planted', probe, 0.01);
    expect(indexed[0]).toMatchObject({ externalId: planted.items[10].externalId, duplicate: true });
    expect(indexed[1].duplicate).toBe(false);
  });

  it('a requested refit creates version 2, switches atomically, and drops version 1 scores', async () => {
    const job = await requestRefit(h.layer.ctx, 'planted');
    const same = await requestRefit(h.layer.ctx, 'planted');
    expect(same.id).toBe(job.id);
    const done = await waitForJob(h.db, job.id);
    expect(done.state).toBe('succeeded');
    expect(done.result).toMatchObject({ version: 2, previousVersion: 1 });
    const versions = await h.db.query<{ version: number }>(
      `SELECT DISTINCT s.version FROM item_scores s JOIN datasets d ON d.id = s.dataset_id WHERE d.name = 'planted'`,
    );
    expect(versions).toEqual([{ version: 2 }]);
    const status = await prototypeStatus(h.layer.ctx, 'planted');
    expect(status).toMatchObject({ version: 2, revision: 0, itemsSinceFit: 0, drift: { mean: 0, max: 0 } });
  });
});
