import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDataset, getDataset } from '../../src/service/datasets.js';
import { DEDUP_DEFAULTS, dedupParts, duplicatePage, requestDedup, runDedup, streamDuplicates } from '../../src/service/dedup.js';
import { jobOf } from '../../src/service/job-kinds.js';
import { leaseJob, type JobRun } from '../../src/service/jobs.js';
import { requestRefit } from '../../src/service/refit.js';
import { ingestItems } from '../../src/service/ingest.js';
import { claimNextJob, requeueRunningJobs } from '../../src/store/jobs.js';
import { BACKENDS } from '../helpers/backends.js';
import { silentLogger } from '../helpers/logger.js';
import { plantedClusters } from '../helpers/planted.js';
import { row, startHarness, waitForJob, type Harness } from './harness.js';

const DIM = 24;
const TIMING = { leaseMs: 60_000, heartbeatMs: 60_000 };

describe('dedupParts', () => {
  it('packs whole clusters largest first up to the part size; a larger cluster is a part alone', () => {
    const sizes = [
      { cluster: 0, n: 30 },
      { cluster: 1, n: 120 },
      { cluster: 2, n: 50 },
      { cluster: 3, n: 1 },
      { cluster: 4, n: 45 },
    ];
    expect(dedupParts('clusters', 7, 0.05, sizes, 100).map((p) => p.clusters)).toEqual([[1], [2, 4], [0, 3]]);
    expect(dedupParts('clusters', 7, 0.05, sizes, 100)[1]).toEqual({ stage: 'clusters', version: 7, epsilon: 0.05, clusters: [2, 4], sizes: [50, 45] });
    expect(dedupParts('boundary', 7, 0.05, sizes, 100)[0]).toMatchObject({ stage: 'boundary', clusters: [1] });
    expect(dedupParts('clusters', 7, 0.05, [], 100)).toEqual([]);
  });
});

describe.each(BACKENDS)('the dedup job on the $name backend', (backend) => {
  let h: Harness;

  beforeAll(async () => {
    h = await startHarness(backend, { pollMs: 1_000_000, staleMs: 1000 });
  });
  afterAll(async () => {
    await h?.close();
  });

  /** 2,400 items in 12 planted clusters, every 8th with a near-copy `twin-<i>`, and a first fit. */
  async function plantedWithTwins(name: string): Promise<void> {
    await createDataset(h.layer.ctx, { name, dimension: DIM, k: 12, settings: { minItemsForFit: 1_000_000, autoRefit: false } });
    const data = plantedClusters({ seed: 5, clusters: 12, perCluster: 200, dim: DIM, noise: 0.5 });
    const items = [];
    for (let i = 0; i < 2400; i++) {
      items.push({ externalId: `${name}-${i}`, embedding: row(data.points, i, DIM) });
      if (i % 8 === 0) items.push({ externalId: `twin-${i}`, embedding: row(data.points, i, DIM).map((x, j) => (j === 0 ? x + 0.002 : x)) });
    }
    for (let from = 0; from < items.length; from += 1000) await ingestItems(h.layer.ctx, name, items.slice(from, from + 1000));
    const fit = await requestRefit(h.layer.ctx, name);
    h.layer.worker.wake();
    expect((await waitForJob(h.db, fit.id)).state).toBe('succeeded');
  }

  it('a run interrupted after some of its parts resumes with only the open ones and finds every planted twin', async () => {
    await plantedWithTwins('resume');
    const dataset = await getDataset(h.layer.ctx, 'resume');
    await h.layer.worker.stop(); // this test plays the first worker by hand
    const queued = await requestDedup(h.layer.ctx, 'resume', 0.01);
    const claimed = (await claimNextJob(h.db, TIMING.leaseMs))!;
    expect(claimed.id).toBe(queued.id);
    const lease = leaseJob(h.db, silentLogger, claimed, TIMING);
    const crash: JobRun = {
      ...h.layer.worker.jobRun(claimed, lease),
      progress: async (phase, done) => {
        if (phase === 'compare' && done >= 2) throw new Error('simulated crash');
      },
    };
    await expect(runDedup(h.layer.ctx, jobOf('dedup', claimed), crash, { ...DEDUP_DEFAULTS, partItems: 500 })).rejects.toThrow('simulated crash');
    lease.close();
    const parts = await h.db.query<{ state: string; n: number }>('SELECT state, count(*)::int AS n FROM job_parts WHERE job_id = $1 GROUP BY state ORDER BY state', [queued.id]);
    expect(parts[0]).toEqual({ state: 'done', n: 2 });
    expect(parts[1].state).toBe('queued');
    expect(parts[1].n).toBeGreaterThanOrEqual(3); // 12 clusters of ~225 items, at most two per part
    // Nothing is served meanwhile.
    await expect(duplicatePage(h.layer.ctx, 'resume', { epsilon: 0.01, limit: 10 })).rejects.toMatchObject({ code: 'DEDUP_NOT_RUN', details: { jobId: queued.id } });
    const [before] = await h.db.query<{ n: number }>('SELECT count(*)::int AS n FROM dedup_pairs WHERE job_id = $1', [queued.id]);

    // The lease runs out; a worker re-queues the job and finishes the open parts.
    await h.db.query(`UPDATE jobs SET lease_expires_at = now() - interval '1 hour' WHERE id = $1`, [queued.id]);
    if (backend.name === 'embedded') await requeueRunningJobs(h.db);
    h.layer.worker.start();
    const done = await waitForJob(h.db, queued.id);
    expect(done).toMatchObject({ state: 'succeeded', attempts: 2, result: { version: dataset.activeVersion, clusters: 12, items: 2700, duplicates: 300, groups: 300 } });
    const [after] = await h.db.query<{ n: number }>('SELECT count(*)::int AS n FROM dedup_pairs WHERE job_id = $1', [queued.id]);
    expect(before.n).toBeGreaterThan(0);
    expect(after.n).toBe(300); // the two parts written before the crash were not written again
    const stream = await streamDuplicates(h.layer.ctx, 'resume', { epsilon: 0.01 });
    const pairs = new Set<string>();
    for await (const chunk of stream.groups) for (const g of chunk) for (const d of g.duplicates) pairs.add([g.kept, d].sort().join('|'));
    for (let i = 0; i < 2400; i += 8) expect(pairs.has([`resume-${i}`, `twin-${i}`].sort().join('|'))).toBe(true);
    expect((await h.db.query('SELECT 1 FROM job_parts WHERE job_id = $1', [queued.id])).length).toBe(0);
  });

  it('a refit that switches versions while a run compares fails the run, and its pairs are not served', async () => {
    await plantedWithTwins('straddle');
    await h.layer.worker.stop();
    const queued = await requestDedup(h.layer.ctx, 'straddle', 0.01);
    const claimed = (await claimNextJob(h.db, TIMING.leaseMs))!;
    const lease = leaseJob(h.db, silentLogger, claimed, TIMING);
    let refitted = false;
    const straddling: JobRun = {
      ...h.layer.worker.jobRun(claimed, lease),
      progress: async (phase, done) => {
        if (phase !== 'compare' || done < 1 || refitted) return;
        // Mid-run, another worker refits: the version this run pinned is replaced.
        refitted = true;
        const refit = await requestRefit(h.layer.ctx, 'straddle');
        const other = (await claimNextJob(h.db, TIMING.leaseMs))!;
        expect(other.id).toBe(refit.id);
        const otherLease = leaseJob(h.db, silentLogger, other, TIMING);
        const { runRefit } = await import('../../src/service/refit.js');
        await otherLease.finish({ state: 'succeeded', result: await runRefit(h.layer.ctx, jobOf('refit', other), h.layer.worker.jobRun(other, otherLease)) });
        otherLease.close();
      },
    };
    await expect(runDedup(h.layer.ctx, jobOf('dedup', claimed), straddling, { ...DEDUP_DEFAULTS, partItems: 500 })).rejects.toMatchObject({ code: 'VERSION_SUPERSEDED' });
    lease.close();
    expect(refitted).toBe(true);
    await expect(duplicatePage(h.layer.ctx, 'straddle', { epsilon: 0.01, limit: 10 })).rejects.toMatchObject({ code: 'DEDUP_NOT_RUN' });
    await expect(duplicatePage(h.layer.ctx, 'straddle', { jobId: queued.id, limit: 10 })).rejects.toMatchObject({ code: 'DEDUP_RUN_NOT_FOUND' });
    h.layer.worker.start();
  });

  it('asking again at the same ε gives the same job; another ε meanwhile is a conflict naming it', async () => {
    await plantedWithTwins('twice');
    await h.layer.worker.stop();
    const first = await requestDedup(h.layer.ctx, 'twice', 0.01);
    expect((await requestDedup(h.layer.ctx, 'twice', 0.01)).id).toBe(first.id);
    await expect(requestDedup(h.layer.ctx, 'twice', 0.02)).rejects.toMatchObject({ code: 'DEDUP_RUNNING', details: { jobId: first.id, epsilon: 0.01 } });
    await expect(requestDedup(h.layer.ctx, 'twice', 2.5)).rejects.toMatchObject({ code: 'INVALID_EPSILON' });
    h.layer.worker.start();
    expect((await waitForJob(h.db, first.id)).state).toBe('succeeded');
    const page = await duplicatePage(h.layer.ctx, 'twice', { epsilon: 0.01, limit: 1000 });
    expect(page.groups).toHaveLength(300);
    expect(page.run).toMatchObject({ jobId: first.id, groups: 300, duplicates: 300 });
  });
});

describe.each(BACKENDS)('SemDeDup across a cluster boundary on the $name backend', (backend) => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness(backend);
  });
  afterAll(async () => {
    await h?.close();
  });

  it('a near-duplicate pair split by the clustering is joined by the boundary stage', async () => {
    const dim = 8;
    await createDataset(h.layer.ctx, { name: 'split', dimension: dim, k: 2, settings: { minItemsForFit: 1_000_000, autoRefit: false } });
    const data = plantedClusters({ seed: 9, clusters: 2, perCluster: 150, dim, noise: 0.6 });
    const items = Array.from({ length: data.n }, (_, i) => ({ externalId: `p-${i}`, embedding: row(data.points, i, dim) }));
    await ingestItems(h.layer.ctx, 'split', items);
    const fit = await requestRefit(h.layer.ctx, 'split');
    expect((await waitForJob(h.db, fit.id)).state).toBe('succeeded');
    // Two items on either side of the boundary between the two prototypes, close to it: cosine ≈ 0.9999.
    const dataset = await getDataset(h.layer.ctx, 'split');
    const set = await h.layer.ctx.prototypes.get(h.db, dataset.id, dataset.activeVersion!, dim);
    const [c0, c1] = [row(set.centroids, 0, dim), row(set.centroids, 1, dim)];
    const side = (t: number) => c0.map((x, j) => x + c1[j] + t * (x - c1[j]));
    await ingestItems(h.layer.ctx, 'split', [
      { externalId: 'near-a', embedding: side(0.004) },
      { externalId: 'near-b', embedding: side(-0.004) },
    ]);
    const clusters = await h.db.query<{ external_id: string; cluster: number }>(
      `SELECT i.external_id, s.cluster FROM items i JOIN item_scores s ON s.item_id = i.id WHERE i.external_id IN ('near-a', 'near-b') ORDER BY i.external_id`,
    );
    expect(new Set(clusters.map((c) => c.cluster)).size).toBe(2); // the pair is split by the clustering

    const job = await requestDedup(h.layer.ctx, 'split', 0.001);
    const done = await waitForJob(h.db, job.id);
    expect(done.state).toBe('succeeded');
    expect((done.result as { boundaryItems: number }).boundaryItems).toBeGreaterThanOrEqual(2);
    const page = await duplicatePage(h.layer.ctx, 'split', { epsilon: 0.001, limit: 100 });
    const pairs = page.groups.flatMap((g) => g.duplicates.map((d) => [g.kept, d].sort().join('|')));
    expect(pairs).toEqual(['near-a|near-b']);
    expect(page.run).toMatchObject({ groups: 1, duplicates: 1 });
    // The item SemDeDup keeps is the one farther from its prototype.
    const scores = await h.db.query<{ external_id: string; score: number }>(
      `SELECT i.external_id, s.score FROM items i JOIN item_scores s ON s.item_id = i.id WHERE i.external_id IN ('near-a', 'near-b') ORDER BY s.score DESC`,
    );
    expect(page.groups[0].kept).toBe(scores[0].external_id);
  });
});
