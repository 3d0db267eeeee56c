import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDataset, getDataset } from '../../src/service/datasets.js';
import { jobOf } from '../../src/service/job-kinds.js';
import { jobView, leaseJob, queueJob, type JobRun } from '../../src/service/jobs.js';
import { REFIT_DEFAULTS, requestRefit, runRefit } from '../../src/service/refit.js';
import { selectItems } from '../../src/service/selection.js';
import { claimNextJob, requeueRunningJobs } from '../../src/store/jobs.js';
import type { Database } from '../../src/store/database.js';
import { BACKENDS } from '../helpers/backends.js';
import { silentLogger } from '../helpers/logger.js';
import { plantedClusters } from '../helpers/planted.js';
import { row, startHarness, waitForJob, type Harness } from './harness.js';
import { ingestItems } from '../../src/service/ingest.js';

const DIM = 48;

/** What a reader sees: the active version, the dataset's items, and how many have a score under that version. */
async function observe(db: Database, name: string): Promise<{ v: number; items: number; scored: number }> {
  const [r] = await db.query<{ v: number; items: number; scored: number }>(
    `SELECT d.active_version AS v, count(i.id)::int AS items, count(s.item_id)::int AS scored
       FROM datasets d JOIN items i ON i.dataset_id = d.id
       LEFT JOIN item_scores s ON s.item_id = i.id AND s.dataset_id = d.id AND s.version = d.active_version
      WHERE d.name = $1 GROUP BY d.active_version`,
    [name],
  );
  return r;
}

async function ingestPlanted(h: Harness, name: string, n: number, seed: number): Promise<void> {
  const data = plantedClusters({ seed, clusters: 12, perCluster: Math.ceil(n / 12), dim: DIM, noise: 0.5 });
  for (let from = 0; from < n; from += 1000) {
    const batch = [];
    for (let i = from; i < Math.min(n, from + 1000); i++) batch.push({ externalId: `${name}-${i}`, embedding: row(data.points, i, DIM) });
    const result = await ingestItems(h.layer.ctx, name, batch);
    expect(result.items.every((r) => r.status !== 'error')).toBe(true);
  }
}

const TIMING = { leaseMs: 60_000, heartbeatMs: 60_000 };

describe.each(BACKENDS)('prototype versions on the $name backend', (backend) => {
  let h: Harness;

  beforeAll(async () => {
    // A worker that only acts when woken, and treats jobs silent for 1 s as orphaned.
    h = await startHarness(backend, { pollMs: 1_000_000, staleMs: 1000 });
  });
  afterAll(async () => {
    await h?.close();
  });

  it('a reader running during a refit only ever sees one complete version', async () => {
    await createDataset(h.layer.ctx, { name: 'switch', dimension: DIM, k: 12, settings: { minItemsForFit: 1_000_000, autoRefit: false } });
    await ingestPlanted(h, 'switch', 4000, 1);
    const first = await requestRefit(h.layer.ctx, 'switch');
    expect((await waitForJob(h.db, first.id)).state).toBe('succeeded');

    await ingestPlanted(h, 'switch', 4000, 2); // same ids, new vectors: a refit has real work
    const job = await requestRefit(h.layer.ctx, 'switch');
    const seen = new Set<number>();
    let observations = 0;
    let finished = false;
    const reader = (async () => {
      while (!finished) {
        const o = await observe(h.db, 'switch');
        observations++;
        seen.add(o.v);
        expect(o.scored).toBe(o.items);
        const selection = await selectItems(h.layer.ctx, 'switch', { order: 'hardest', fraction: 0.25 });
        expect(selection.total).toBe(4000);
        expect(selection.externalIds).toHaveLength(1000);
      }
    })();
    const done = await waitForJob(h.db, job.id);
    finished = true;
    await reader;
    expect(done.state).toBe('succeeded');
    expect(observations).toBeGreaterThan(1);
    expect(seen).toContain(2);
    expect((await observe(h.db, 'switch')).v).toBe(2);
  });

  it('a checkpoint of a one-pass rescore (no parts) is fitted again, and its partial scores go', async () => {
    await createDataset(h.layer.ctx, { name: 'legacy', dimension: DIM, k: 12, settings: { minItemsForFit: 1_000_000, autoRefit: false } });
    await ingestPlanted(h, 'legacy', 1200, 5);
    const dataset = await getDataset(h.layer.ctx, 'legacy');
    const first = await requestRefit(h.layer.ctx, 'legacy');
    expect((await waitForJob(h.db, first.id)).state).toBe('succeeded');
    await h.layer.worker.stop();
    // As an earlier version of the service left it: version 2 stored with its checkpoint, half of
    // its scores written, no parts.
    const { job } = await h.db.transaction((tx) => queueJob(tx, dataset.id, 'refit', { reason: 'requested' }));
    await h.db.query(
      `INSERT INTO prototype_sets (dataset_id, version, k, fit_items, objective, centroids, counts)
       SELECT dataset_id, 2, k, fit_items, objective, centroids, counts FROM prototype_sets WHERE dataset_id = $1 AND version = 1`,
      [dataset.id],
    );
    await h.db.query(
      `INSERT INTO item_scores (dataset_id, version, item_id, score, cluster)
       SELECT dataset_id, 2, item_id, score, cluster FROM item_scores WHERE dataset_id = $1 AND version = 1 AND item_id % 2 = 0`,
      [dataset.id],
    );
    await h.db.query(`UPDATE jobs SET result = jsonb_build_object('version', 2, 'snapshotAt', now()::text) WHERE id = $1`, [job.id]);
    h.layer.worker.start();
    const done = await waitForJob(h.db, job.id);
    expect(done.state).toBe('succeeded');
    expect(done.result).toMatchObject({ version: 3, previousVersion: 1, fitItems: 1200 });
    expect(await observe(h.db, 'legacy')).toEqual({ v: 3, items: 1200, scored: 1200 });
    const left = await h.db.query<{ version: number }>('SELECT DISTINCT version FROM item_scores WHERE dataset_id = $1 ORDER BY version', [dataset.id]);
    expect(left.map((r) => r.version)).toEqual([3]);
  });

  it('an interrupted rescore leaves the previous version serving and resumes without cleanup', async () => {
    await createDataset(h.layer.ctx, { name: 'crash', dimension: DIM, k: 12, settings: { minItemsForFit: 1_000_000, autoRefit: false } });
    await ingestPlanted(h, 'crash', 3000, 3);
    const dataset = await getDataset(h.layer.ctx, 'crash');
    await h.layer.worker.stop(); // no worker while this test plays one by hand

    // Version 1, run by hand.
    await h.db.transaction((tx) => queueJob(tx, dataset.id, 'refit', { reason: 'requested' }));
    const v1 = (await claimNextJob(h.db, TIMING.leaseMs))!;
    const run1 = leaseJob(h.db, silentLogger, v1, TIMING);
    await run1.finish({ state: 'succeeded', result: await runRefit(h.layer.ctx, jobOf('refit', v1), h.layer.worker.jobRun(v1, run1)) });
    run1.close();

    // Version 2 "crashes" once two of its six rescore parts are written: the process dies mid-rescore.
    const { job } = await h.db.transaction((tx) => queueJob(tx, dataset.id, 'refit', { reason: 'requested' }));
    const claimed = (await claimNextJob(h.db, TIMING.leaseMs))!;
    expect(claimed.id).toBe(job.id);
    const run2 = leaseJob(h.db, silentLogger, claimed, TIMING);
    const crash: JobRun = {
      ...h.layer.worker.jobRun(claimed, run2),
      progress: async (phase, done) => {
        if (phase === 'rescore' && done >= 2) throw new Error('simulated crash');
      },
    };
    await expect(runRefit(h.layer.ctx, jobOf('refit', claimed), crash, { ...REFIT_DEFAULTS, partItems: 500 })).rejects.toThrow('simulated crash');
    run2.close();
    const parts = await h.db.query<{ state: string; n: number }>(`SELECT state, count(*)::int AS n FROM job_parts WHERE job_id = $1 GROUP BY state ORDER BY state`, [job.id]);
    expect(parts).toEqual([{ state: 'done', n: 2 }, { state: 'queued', n: 4 }]);
    const [written] = await h.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM item_scores WHERE dataset_id = $1 AND version = 2`, [dataset.id]);
    expect(written.n).toBeGreaterThan(0);
    expect(written.n).toBeLessThan(3000);

    const during = await observe(h.db, 'crash');
    expect(during).toEqual({ v: 1, items: 3000, scored: 3000 });
    expect((await selectItems(h.layer.ctx, 'crash', { order: 'easiest', count: 10 })).version).toBe(1);

    // The dead worker's lease runs out; a new worker re-queues the job (the embedded database: its
    // next boot) and finishes it from its checkpoint.
    await h.db.query(`UPDATE jobs SET lease_expires_at = now() - interval '1 hour' WHERE id = $1`, [job.id]);
    if (backend.name === 'embedded') await requeueRunningJobs(h.db);
    h.layer.worker.start();
    const done = await waitForJob(h.db, job.id);
    expect(done.state).toBe('succeeded');
    expect(done.attempts).toBe(2);
    expect(done.result).toMatchObject({ version: 2, previousVersion: 1 });
    expect(await observe(h.db, 'crash')).toEqual({ v: 2, items: 3000, scored: 3000 });
    const sets = await h.db.query<{ version: number }>('SELECT version FROM prototype_sets WHERE dataset_id = $1 ORDER BY version', [dataset.id]);
    expect(sets.map((s) => s.version)).toEqual([1, 2]);
    expect((await h.db.query('SELECT 1 FROM job_parts WHERE job_id = $1', [job.id])).length).toBe(0);
    expect(jobView(claimed, null).kind).toBe('refit');
  });
});
