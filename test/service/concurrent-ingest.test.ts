import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDataset, getDataset, type Dataset } from '../../src/service/datasets.js';
import { ingestItems } from '../../src/service/ingest.js';
import { startServiceLayer, type ServiceLayer } from '../../src/service/runtime.js';
import { storeBatch } from '../../src/service/store-batch.js';
import { tryBecomeFolder } from '../../src/store/centroid-deltas.js';
import type { Database, Sql } from '../../src/store/database.js';
import { lockDataset, lockDatasetShared } from '../../src/store/datasets.js';
import { openDatabase } from '../../src/store/open.js';
import { BACKENDS, NATIVE_URL } from '../helpers/backends.js';
import { silentLogger } from '../helpers/logger.js';
import { plantedClusters } from '../helpers/planted.js';
import { row, waitForJob } from './harness.js';

const DIM = 16;
const K = 6;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

async function until(what: string, probe: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const data = plantedClusters({ seed: 31, clusters: K, perCluster: 400, dim: DIM, noise: 0.4 });
const itemAt = (i: number, prefix = 'x') => ({ externalId: `${prefix}${i}`, embedding: row(data.points, i % (K * 400), DIM) });

/** A dataset whose first fit ran on `n` items; later batches are scored and append centroid deltas. */
async function fitted(layer: ServiceLayer, db: Database, name: string, n = 600): Promise<Dataset> {
  await createDataset(layer.ctx, { name, dimension: DIM, k: K, settings: { minItemsForFit: n, autoRefit: false, seed: 5 } });
  const result = await ingestItems(layer.ctx, name, Array.from({ length: n }, (_, i) => itemAt(i, 'fit')));
  expect((await waitForJob(db, result.scheduledJobId!)).state).toBe('succeeded');
  return getDataset(layer.ctx, name);
}

async function setState(db: Sql, datasetId: string) {
  const [state] = await db.query<{ revision: number; itemsSinceFit: number; deltas: number; counts: Uint8Array }>(
    `SELECT p.revision, p.items_since_fit::int AS "itemsSinceFit", p.counts,
            (SELECT count(*)::int FROM centroid_deltas c WHERE c.dataset_id = d.id) AS deltas
       FROM datasets d JOIN prototype_sets p ON p.dataset_id = d.id AND p.version = d.active_version WHERE d.id = $1`,
    [datasetId],
  );
  const counts = Buffer.from(state.counts);
  let total = 0;
  for (let c = 0; c < counts.length / 8; c++) total += Number(counts.readBigInt64BE(c * 8));
  return { ...state, countTotal: total };
}

describe.each(BACKENDS)('ingest folds centroid deltas on $name', (backend) => {
  let layer: ServiceLayer;
  let db: Database;
  let cleanup: () => Promise<void>;
  beforeAll(async () => {
    const fresh = await backend.fresh();
    cleanup = fresh.cleanup;
    ({ db } = await openDatabase(fresh.config));
    layer = await startServiceLayer(db, silentLogger, { kernelThreads: 1, jobs: { pollMs: 50, staleMs: 60_000, annIndexBatch: 0 }, embedding: null });
  });
  afterAll(async () => {
    await layer?.stop();
    await db?.close();
    await cleanup?.();
  });

  it('every batch after the fit moves the centroids once: counts and items since the fit add up, no delta is left', async () => {
    const dataset = await fitted(layer, db, 'folds');
    const before = await setState(db, dataset.id);
    expect(before.countTotal).toBe(600);
    for (let b = 0; b < 4; b++) {
      const result = await ingestItems(layer.ctx, 'folds', Array.from({ length: 100 }, (_, i) => itemAt(600 + b * 100 + i)));
      expect(result.items.every((r) => r.status === 'stored' && r.score !== null)).toBe(true);
    }
    const after = await setState(db, dataset.id);
    expect(after.deltas).toBe(0);
    expect(after.itemsSinceFit).toBe(400);
    expect(after.countTotal).toBe(1000);
    expect(after.revision).toBe(before.revision + 4);
  });
});

describe.each(NATIVE_URL ? [BACKENDS.find((b) => b.name === 'native')!] : [])('concurrent ingest into one dataset on $name', (backend) => {
  let layerA: ServiceLayer;
  let layerB: ServiceLayer;
  let dbA: Database;
  let dbB: Database;
  let cleanup: () => Promise<void>;
  beforeAll(async () => {
    const fresh = await backend.fresh();
    cleanup = fresh.cleanup;
    ({ db: dbA } = await openDatabase(fresh.config));
    ({ db: dbB } = await openDatabase(fresh.config));
    const options = { kernelThreads: 1, jobs: { pollMs: 50, staleMs: 60_000, annIndexBatch: 0 }, embedding: null };
    layerA = await startServiceLayer(dbA, silentLogger, options);
    layerB = await startServiceLayer(dbB, silentLogger, options);
  });
  afterAll(async () => {
    await layerA?.stop();
    await layerB?.stop();
    await dbA?.close();
    await dbB?.close();
    await cleanup?.();
  });

  it('a batch commits while another batch of the same dataset is still in its transaction', async () => {
    const dataset = await fitted(layerA, dbA, 'side-by-side');
    const inside = deferred();
    const release = deferred();
    const held = storeBatch(layerA.ctx, dataset, [itemAt(1, 'held')], async () => {
      inside.resolve();
      await release.promise;
    });
    await inside.promise;
    const started = Date.now();
    const other = await ingestItems(layerB.ctx, 'side-by-side', [itemAt(2, 'other')]);
    expect(other.items[0].status).toBe('stored');
    expect(Date.now() - started).toBeLessThan(5_000);
    release.resolve();
    expect((await held).items[0].status).toBe('stored');
    await layerA.ctx.folds.sweep();
    const state = await setState(dbA, dataset.id);
    expect(state.itemsSinceFit).toBe(2);
    expect(state.deltas).toBe(0);
  });

  it('a version switch waiting for the dataset lock is not overtaken by later ingests (no starvation)', async () => {
    const dataset = await fitted(layerA, dbA, 'queueing');
    const order: string[] = [];
    const releaseFirst = deferred();
    const first = dbA.transaction(async (tx) => {
      await lockDatasetShared(tx, dataset.id);
      order.push('ingest 1');
      await releaseFirst.promise;
    });
    await until('the first ingest to hold the lock', async () => order.length === 1);
    const exclusive = dbB.transaction(async (tx) => {
      await lockDataset(tx, dataset.id);
      order.push('switch');
      await sleep(200);
    });
    const waiting = async () =>
      (
        await dbA.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objsubid = 2
             AND objid::bigint = (hashtext($1)::bigint & 4294967295)`,
          [dataset.id],
        )
      )[0].n;
    await until('the switch to wait', async () => (await waiting()) === 1);
    const later = dbA.transaction(async (tx) => {
      await lockDatasetShared(tx, dataset.id);
      order.push('ingest 2');
    });
    await until('the later ingest to wait', async () => (await waiting()) === 2);
    releaseFirst.resolve();
    await Promise.all([first, exclusive, later]);
    expect(order).toEqual(['ingest 1', 'switch', 'ingest 2']);
  });

  it('two replicas writing overlapping ids at once: no deadlock, every id stored once and scored, every delta folded', async () => {
    const dataset = await fitted(layerA, dbA, 'overlap');
    // Each batch takes 300 of 500 ids, in its own shuffled order: new and existing ids mixed, shared between batches.
    let seed = 17;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const batches = Array.from({ length: 12 }, () => {
      const ids = Array.from({ length: 500 }, (_, i) => i).sort(() => random() - 0.5).slice(0, 300);
      return ids.map((i) => itemAt(i, 'o'));
    });
    const results = await Promise.all(batches.map((batch, b) => ingestItems((b % 2 === 0 ? layerA : layerB).ctx, 'overlap', batch)));
    for (const result of results) expect(result.items.every((r) => (r.status === 'stored' || r.status === 'updated') && r.score !== null)).toBe(true);
    const distinct = new Set(batches.flat().map((item) => item.externalId)).size;
    const [counts] = await dbA.query<{ items: number; scored: number }>(
      `SELECT (SELECT count(*)::int FROM items WHERE dataset_id = $1 AND external_id LIKE 'o%') AS items,
              (SELECT count(*)::int FROM item_scores s JOIN items i ON i.id = s.item_id
                 WHERE s.dataset_id = $1 AND s.version = 1 AND i.external_id LIKE 'o%') AS scored`,
      [dataset.id],
    );
    expect(counts).toEqual({ items: distinct, scored: distinct });
    expect(results.filter((r) => r.items.some((i) => i.status === 'stored')).length).toBeGreaterThan(0);
    await layerA.ctx.folds.sweep();
    await layerB.ctx.folds.sweep();
    const state = await setState(dbA, dataset.id);
    expect(state.deltas).toBe(0);
    expect(state.itemsSinceFit).toBe(12 * 300);
    expect(state.countTotal).toBe(600 + 12 * 300);
  });

  it('a folder that stopped mid-fold holds up no ingest; its deltas are folded once it is gone', async () => {
    const dataset = await fitted(layerA, dbA, 'paused-folder');
    const release = deferred();
    const holding = deferred();
    const paused = dbB.transaction(async (tx) => {
      expect(await tryBecomeFolder(tx, dataset.id)).toBe(true);
      holding.resolve();
      await release.promise;
    });
    await holding.promise;
    const started = Date.now();
    const result = await ingestItems(layerA.ctx, 'paused-folder', Array.from({ length: 50 }, (_, i) => itemAt(i, 'p')));
    expect(result.items.every((r) => r.status === 'stored')).toBe(true);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect((await setState(dbA, dataset.id)).deltas).toBe(1);
    release.resolve();
    await paused;
    // The ingesting replica's retry (or any worker's sweep) folds the delta.
    await until('the delta to be folded', async () => (await setState(dbA, dataset.id)).deltas === 0);
    expect((await setState(dbA, dataset.id)).itemsSinceFit).toBe(50);
  });
});
