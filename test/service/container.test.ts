import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DistanceKernel } from '../../src/kernels/types.js';
import { createContext } from '../../src/service/context.js';
import { createDataset } from '../../src/service/datasets.js';
import type { Database } from '../../src/store/database.js';
import { BACKENDS } from '../helpers/backends.js';
import { silentLogger } from '../helpers/logger.js';
import { startHarness, waitForJob, type Harness } from './harness.js';

describe('the service container', () => {
  // Building a container touches neither the database nor the kernel.
  const db = { backend: 'embedded' } as Database;
  const kernel = {} as DistanceKernel;

  it('is frozen: no field can be set after construction', () => {
    const ctx = createContext(db, kernel, silentLogger);
    expect(Object.isFrozen(ctx)).toBe(true);
    expect(() => Object.assign(ctx, { metrics: null })).toThrow(TypeError);
    expect(() => Object.assign(ctx, { ingestJobs: ctx.ingestJobs })).toThrow(TypeError);
  });

  it('without a job worker refuses background ingests', async () => {
    const ctx = createContext(db, kernel, silentLogger);
    expect(ctx.metrics).toBeNull();
    await expect(ctx.ingestJobs.start('any', [{ externalId: 'a', embedding: [1] }])).rejects.toMatchObject({ code: 'NO_BACKGROUND_INGEST' });
  });

  it('holds its own caches and budgets: two containers share no state', () => {
    const one = createContext(db, kernel, silentLogger);
    const two = createContext(db, kernel, silentLogger);
    expect(one.requestBudgets.forLimit(10)).toBe(one.requestBudgets.forLimit(10));
    expect(one.requestBudgets.forLimit(10)).not.toBe(two.requestBudgets.forLimit(10));
    expect(one.scoreDistributions).not.toBe(two.scoreDistributions);
    expect(one.prototypes).not.toBe(two.prototypes);
    const now = Date.now();
    expect(one.keyTouches.due('key', now)).toBe(true);
    expect(one.keyTouches.due('key', now + 1000)).toBe(false);
    expect(two.keyTouches.due('key', now + 1000)).toBe(true);
    expect(one.keyTouches.due('key', now + 61_000)).toBe(true);
  });
});

describe.each(BACKENDS)("the service layer's container on the $name backend", (backend) => {
  let h: Harness;

  beforeAll(async () => {
    h = await startHarness(backend);
  });
  afterAll(async () => {
    await h?.close();
  });

  it('is frozen and runs background ingests on its job worker', async () => {
    const { ctx } = h.layer;
    expect(Object.isFrozen(ctx)).toBe(true);
    await createDataset(ctx, { name: 'bg', dimension: 2, settings: { minItemsForFit: 1_000_000, autoRefit: false } });
    const items = Array.from({ length: 5 }, (_, i) => ({ externalId: `e${i}`, embedding: [1, i + 1] }));
    const started = await ctx.ingestJobs.start('bg', items, 'test');
    expect(started).toMatchObject({ kind: 'ingest', state: 'running', progress: { total: 5 } });
    const done = await waitForJob(h.db, started.id);
    expect(done).toMatchObject({ state: 'succeeded', attempts: 1, result: { counts: { stored: 5, updated: 0, failed: 0 }, errors: [] } });
    // Stopped, the worker refuses new submissions instead of leaving them unheld.
    await h.layer.worker.stop();
    await expect(ctx.ingestJobs.start('bg', items)).rejects.toMatchObject({ code: 'SHUTTING_DOWN' });
  });

  it('a stop while a submission is creating its row waits for that run to end', async () => {
    const other = await startHarness(backend);
    try {
      const { ctx, worker } = other.layer;
      const dataset = await createDataset(ctx, { name: 'late', dimension: 2, settings: { minItemsForFit: 1_000_000, autoRefit: false } });
      const items = [{ externalId: 'a', embedding: [1, 2] }];
      const submitted = worker.submit(
        { datasetId: dataset.id, kind: 'ingest', params: { items: 1, transport: 'test' }, phase: 'ingest', total: 1 },
        { dataset: 'late', items, transport: 'test' },
      );
      await worker.stop();
      const row = await submitted;
      // Ended (failed by the shutdown) before stop() returned, not left running for its lease.
      const [stored] = await other.db.query<{ state: string }>('SELECT state FROM jobs WHERE id = $1', [row.id]);
      expect(stored.state).toBe('failed');
    } finally {
      await other.close();
    }
  });
});
