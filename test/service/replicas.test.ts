import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDataset, getDataset } from '../../src/service/datasets.js';
import { ingestHandler, startIngest } from '../../src/service/ingest-jobs.js';
import { JobWorker, type JobHandler, type RunEnd } from '../../src/service/jobs.js';
import { REFIT_DEFAULTS, requestRefit, rescorePart, runRefit, type RefitOptions } from '../../src/service/refit.js';
import { DEDUP_DEFAULTS, dedupPart, requestDedup, runDedup, streamDuplicates, type DedupOptions } from '../../src/service/dedup.js';
import { findNearDuplicates } from '../../src/core/dedup.js';
import { OrtDistanceKernel } from '../../src/kernels/ort.js';
import { startServiceLayer, type ServiceLayer } from '../../src/service/runtime.js';
import type { Database } from '../../src/store/database.js';
import { LeaseLostError } from '../../src/store/jobs.js';
import { openDatabase } from '../../src/store/open.js';
import type { DatabaseConfig } from '../../src/config/index.js';
import { BACKENDS, NATIVE_URL } from '../helpers/backends.js';
import { silentLogger } from '../helpers/logger.js';
import { plantedClusters } from '../helpers/planted.js';
import { row, waitForJob } from './harness.js';
import { ingestItems } from '../../src/service/ingest.js';

const DIM = 16;
const LEASE = { leaseMs: 1500, heartbeatMs: 500 };
const RETRY = { limit: 3, baseMs: 300, maxMs: 300 };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until<T>(what: string, probe: () => Promise<T | undefined | null | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/**
 * Makes a replica's database handle behave like a process that stopped (SIGSTOP): from the first
 * transaction at which `when()` holds, that transaction and every later one wait until `resume()`,
 * and its heartbeats wait until `restore()` — so once resumed, only the fence of each write can
 * stop it. The database itself stays real.
 */
function stallWhen(db: Database, when: () => Promise<boolean>) {
  const transaction = db.transaction;
  const control = db.control.query;
  let gate: Promise<void> | undefined;
  let release: (() => void) | undefined;
  let beats: Promise<void> | undefined;
  let releaseBeats: (() => void) | undefined;
  let engaged!: () => void;
  const stalled = new Promise<void>((resolve) => (engaged = resolve));
  let armed = true;
  db.transaction = async (fn) => {
    if (armed && (await when())) {
      armed = false;
      gate = new Promise<void>((resolve) => (release = resolve));
      beats = new Promise<void>((resolve) => (releaseBeats = resolve));
      engaged();
    }
    await gate;
    return transaction(fn);
  };
  db.control.query = async (text, params) => {
    if (/SET lease_expires_at = now\(\)/.test(text)) await beats;
    else await gate;
    return control(text, params);
  };
  return {
    stalled,
    resume() {
      gate = undefined;
      release!();
    },
    /** Lets everything through and takes the wrapper off (after a test, also a failed one). */
    restore() {
      armed = false;
      gate = beats = undefined;
      release?.();
      releaseBeats?.();
      db.transaction = transaction;
      db.control.query = control;
    },
  };
}

/** A job worker like the service layer's, for one replica, that records how each run ended. */
function replicaWorker(db: Database, layer: ServiceLayer, options: { pollMs?: number; ingestChunk?: number; refit?: RefitOptions; dedup?: DedupOptions; partDelayMs?: number } = {}) {
  const ends: { id: string; attempt: number; state: RunEnd }[] = [];
  /** Rescore parts this replica wrote (job id, part number). */
  const parts: { jobId: string; from: string }[] = [];
  /** Rescore parts this replica's handler started (a part claimed again after its lease ran out starts twice). */
  const partStarts: { jobId: string; from: string }[] = [];
  /** Dedup parts this replica wrote (job id, stage and first cluster). */
  const dedupParts: { jobId: string; first: string }[] = [];
  /** What each failed refit run threw. */
  const errors = new Map<string, unknown>();
  const refit: JobHandler<'refit'> = async (job, run) => {
    try {
      return await runRefit(layer.ctx, job, run, options.refit);
    } catch (error) {
      errors.set(`${job.id}/${job.attempts}`, error);
      throw error;
    }
  };
  const worker = new JobWorker(
    db,
    silentLogger,
    { refit, ingest: ingestHandler(layer.ctx, { retry: RETRY, chunk: options.ingestChunk }), dedup: (job, run) => runDedup(layer.ctx, job, run, options.dedup) },
    {
      refit: async (job, part, run) => {
        partStarts.push({ jobId: job.id, from: part.from });
        if (options.partDelayMs) await sleep(options.partDelayMs); // slower parts, so that every replica gets some
        const result = await rescorePart(layer.ctx, job, part, run, options.refit);
        parts.push({ jobId: job.id, from: part.from });
        return result;
      },
      dedup: async (job, part, run) => {
        if (options.partDelayMs) await sleep(options.partDelayMs);
        const result = await dedupPart(layer.ctx, job, part, run);
        dedupParts.push({ jobId: job.id, first: `${part.stage}:${part.clusters[0]}` });
        return result;
      },
    },
    { pollMs: options.pollMs ?? 50, ...LEASE, retry: RETRY, onFinished: (job, state) => ends.push({ id: job.id, attempt: job.attempts, state }) },
  );
  return { worker, ends, errors, parts, partStarts, dedupParts, endOf: (id: string, attempt: number) => until(`run ${attempt} of ${id} to end`, async () => ends.find((e) => e.id === id && e.attempt === attempt)) };
}

async function planted(layer: ServiceLayer, name: string, n: number, seed: number) {
  await createDataset(layer.ctx, { name, dimension: DIM, k: 8, settings: { minItemsForFit: 1_000_000, autoRefit: false } });
  const data = plantedClusters({ seed, clusters: 8, perCluster: Math.ceil(n / 8), dim: DIM, noise: 0.5 });
  for (let from = 0; from < n; from += 1000) {
    const batch = [];
    for (let i = from; i < Math.min(n, from + 1000); i++) batch.push({ externalId: `${name}-${i}`, embedding: row(data.points, i, DIM) });
    const result = await ingestItems(layer.ctx, name, batch);
    expect(result.items.every((r) => r.status === 'stored')).toBe(true);
  }
  return getDataset(layer.ctx, name);
}

describe.each(NATIVE_URL ? [BACKENDS.find((b) => b.name === 'native')!] : [])('replicas sharing one $name database', (backend) => {
  let config: DatabaseConfig & { backend: 'native' };
  let schema: string;
  let cleanup: () => Promise<void>;
  let dbA: Database;
  let dbB: Database;
  let layerA: ServiceLayer;
  let layerB: ServiceLayer;
  const admin = new pg.Client({ connectionString: NATIVE_URL });

  beforeAll(async () => {
    const fresh = await backend.fresh();
    config = fresh.config as typeof config;
    schema = new URL(config.url).searchParams.get('schema')!;
    cleanup = fresh.cleanup;
    ({ db: dbA } = await openDatabase(config));
    ({ db: dbB } = await openDatabase(config));
    const options = { kernelThreads: 1, jobs: { pollMs: 1_000_000, staleMs: LEASE.leaseMs, annIndexBatch: 0, retry: RETRY }, embedding: null };
    layerA = await startServiceLayer(dbA, silentLogger, options);
    layerB = await startServiceLayer(dbB, silentLogger, options);
    // Each test runs the replicas' workers itself.
    await layerA.worker.stop();
    await layerB.worker.stop();
    await admin.connect();
  });
  afterAll(async () => {
    await admin.end();
    await layerA?.stop();
    await layerB?.stop();
    await dbA?.close();
    await dbB?.close();
    await cleanup?.();
  });

  async function activeScoreProblems(datasetId: string) {
    const [r] = await dbB.query<{ items: number; scored: number; wrong: number; active: number; set: number }>(
      `SELECT (SELECT count(*)::int FROM items WHERE dataset_id = d.id) AS items,
              (SELECT count(*)::int FROM item_scores s WHERE s.dataset_id = d.id AND s.version = d.active_version) AS scored,
              (SELECT count(*)::int FROM items i WHERE i.dataset_id = d.id AND
                 (SELECT count(*) FROM item_scores s WHERE s.dataset_id = i.dataset_id AND s.item_id = i.id AND s.version = d.active_version) <> 1) AS wrong,
              d.active_version AS active,
              (SELECT count(*)::int FROM prototype_sets p WHERE p.dataset_id = d.id AND p.version = d.active_version) AS set
         FROM datasets d WHERE d.id = $1`,
      [datasetId],
    );
    return r;
  }

  async function versions(datasetId: string) {
    const scores = await dbB.query<{ version: number; n: number }>(
      'SELECT version, count(*)::int AS n FROM item_scores WHERE dataset_id = $1 GROUP BY version ORDER BY version',
      [datasetId],
    );
    const sets = await dbB.query<{ version: number }>('SELECT version FROM prototype_sets WHERE dataset_id = $1 ORDER BY version', [datasetId]);
    return { scores: Object.fromEntries(scores.map((s) => [s.version, s.n])), sets: sets.map((s) => s.version) };
  }

  async function jobRow(id: string) {
    const [job] = await dbB.query<{ state: string; attempts: number; retries: number; error: string | null; result: Record<string, unknown>; updatedAt: Date }>(
      `SELECT state::text, attempts, retries, error, result, updated_at AS "updatedAt" FROM jobs WHERE id = $1`,
      [id],
    );
    return job;
  }

  it.each(['rescore', 'cleanup'] as const)(
    'a refit taken over from a stalled replica (stalled before its %s) finishes once: the stalled one writes nothing more',
    async (pauseAt) => {
      const dataset = await planted(layerA, `steal-${pauseAt}`, 3000, pauseAt === 'rescore' ? 11 : 12);
      const a = replicaWorker(dbA, layerA);
      const b = replicaWorker(dbB, layerB);
      let stall: ReturnType<typeof stallWhen> | undefined;
      a.worker.start();
      try {
        const first = await requestRefit(layerA.ctx, dataset.name);
        await a.endOf(first.id, 1);
        // Another dataset's scores, which no cleanup of this dataset may touch.
        const bystander = '00000000-0000-4000-8000-000000000001';
        await dbB.query(`INSERT INTO item_scores (dataset_id, version, item_id, score, cluster) SELECT $1, 1, g, 0.5, 0 FROM generate_series(1, 100) g`, [bystander]);

        // Replica A stalls at its first write after the checkpoint (pauseAt 'rescore') or after the switch ('cleanup').
        stall = stallWhen(dbA, async () => {
          const [job] = await dbB.query<{ result: Record<string, unknown> | null }>(
            `SELECT result FROM jobs WHERE dataset_id = $1 AND kind = 'refit' AND state = 'running'`,
            [dataset.id],
          );
          return pauseAt === 'rescore' ? job?.result?.version !== undefined : job?.result !== undefined && job.result !== null && 'previousVersion' in job.result;
        });
        const second = await requestRefit(layerA.ctx, dataset.name);
        await stall.stalled;
        const mine = (await jobRow(second.id)).result.version as number;
        expect(mine).toBe(2);
        // Meanwhile a newer refit would already have written some scores of version 3.
        await dbB.query(
          `INSERT INTO item_scores (dataset_id, version, item_id, score, cluster) SELECT dataset_id, 3, id, 0.5, 0 FROM items WHERE dataset_id = $1 ORDER BY id LIMIT 10`,
          [dataset.id],
        );

        // Replica B takes the job over once A's lease ran out, and finishes it (attempt 2).
        b.worker.start();
        expect((await b.endOf(second.id, 2)).state).toBe('succeeded');
        const afterB = await jobRow(second.id);
        expect(afterB).toMatchObject({ state: 'succeeded', attempts: 2, result: { version: 2, previousVersion: 1 } });

        // A wakes up (its heartbeat still silent): its next write is refused by the fence and its
        // run ends without writing anything.
        stall.resume();
        expect((await a.endOf(second.id, 1)).state).toBe('lost');
        expect(a.errors.get(`${second.id}/1`)).toBeInstanceOf(LeaseLostError);
        expect(await jobRow(second.id)).toEqual(afterB);

        expect(await activeScoreProblems(dataset.id)).toEqual({ items: 3000, scored: 3000, wrong: 0, active: 2, set: 1 });
        expect(await versions(dataset.id)).toEqual({ scores: { 2: 3000, 3: 10 }, sets: [1, 2] });
        const [others] = await dbB.query<{ n: number }>('SELECT count(*)::int AS n FROM item_scores WHERE dataset_id = $1', [bystander]);
        expect(others.n).toBe(100);
        await dbB.query('DELETE FROM item_scores WHERE dataset_id = $1', [bystander]);
      } finally {
        stall?.restore();
        await a.worker.stop();
        await b.worker.stop();
      }
    },
  );

  it('a background ingest taken over from a stalled replica stores no further chunk', async () => {
    await createDataset(layerA.ctx, { name: 'ingest-steal', dimension: DIM, settings: { minItemsForFit: 1_000_000, autoRefit: false } });
    const dataset = await getDataset(layerA.ctx, 'ingest-steal');
    // A only runs the ingest it is given: its queue poll must not take the job over from itself.
    const a = replicaWorker(dbA, layerA, { pollMs: 1_000_000, ingestChunk: 20 });
    const items = Array.from({ length: 400 }, (_, i) => ({ externalId: `i${i}`, embedding: Array.from({ length: DIM }, (_, j) => Math.sin(i * 3 + j) + 0.1) }));
    const countItems = async () => (await dbB.query<{ n: number }>('SELECT count(*)::int AS n FROM items WHERE dataset_id = $1', [dataset.id]))[0].n;
    // Stalls at the first chunk after 100 items were stored and counted.
    const stall = stallWhen(dbA, async () => {
      const [job] = await dbB.query<{ stored: number | null }>(
        `SELECT (result->'counts'->>'stored')::int AS stored FROM jobs WHERE dataset_id = $1 AND kind = 'ingest'`,
        [dataset.id],
      );
      return (job?.stored ?? 0) >= 100;
    });
    const b = replicaWorker(dbB, layerB);
    a.worker.start();
    const view = await startIngest(layerA.ctx, a.worker, dataset.name, items);
    try {
      await stall.stalled;
      b.worker.start();
      expect((await b.endOf(view.id, 2)).state).toBe('failed');
      const failed = await jobRow(view.id);
      expect(failed).toMatchObject({ state: 'failed', attempts: 2, result: { counts: { stored: 100, updated: 0, failed: 0 } } });
      expect(failed.error).toMatch(/ingest interrupted after 100 of 400 items/);

      stall.resume();
      expect((await a.endOf(view.id, 1)).state).toBe('lost');
      expect(await countItems()).toBe(100);
      expect(await jobRow(view.id)).toEqual(failed);
    } finally {
      stall.restore();
      await a.worker.stop();
      await b.worker.stop();
    }
  });

  /** Holds item_scores locked from the admin connection, so the next statement of a refit writing scores waits. */
  async function lockScores(): Promise<{ blocked: () => Promise<number[]>; release: () => Promise<void> }> {
    await admin.query('BEGIN');
    await admin.query(`LOCK TABLE "${schema}".item_scores IN ACCESS EXCLUSIVE MODE`);
    const [{ pid }] = (await admin.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows;
    return {
      // Backends waiting for that lock: only this schema's.
      blocked: async () =>
        (await dbB.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))', [pid])).map((r) => r.pid),
      release: async () => {
        await admin.query('ROLLBACK');
      },
    };
  }

  it('stopping the service layer cancels the running statement of a job and returns at once', async () => {
    const { db: dbC } = await openDatabase(config);
    const layerC = await startServiceLayer(dbC, silentLogger, { kernelThreads: 1, jobs: { pollMs: 50, staleMs: 30_000, annIndexBatch: 0 }, embedding: null });
    let stoppedC = false;
    const dataset = await planted(layerC, 'slow', 2000, 14);
    const lock = await lockScores();
    try {
      const job = await requestRefit(layerC.ctx, dataset.name);
      const [stuck] = await until('the refit to wait for the lock', async () => {
        const pids = await lock.blocked();
        return pids.length > 0 && pids;
      });
      expect(stuck).toBeGreaterThan(0);
      const started = Date.now();
      const stopped = await Promise.race([layerC.stop().then(() => 'stopped'), sleep(5000).then(() => 'still waiting')]);
      expect(stopped).toBe('stopped');
      stoppedC = true;
      expect(Date.now() - started).toBeLessThan(3000);
      expect(await lock.blocked()).toEqual([]);
      const [activity] = await dbB.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1 AND state = 'active'`, [stuck]);
      expect(activity.n).toBe(0);
      // Interrupted, not failed: it resumes at the next start.
      expect(await jobRow(job.id)).toMatchObject({ state: 'queued', attempts: 1, retries: 0 });
      await dbB.query(`DELETE FROM jobs WHERE id = $1`, [job.id]);
    } finally {
      await lock.release();
      if (!stoppedC) await layerC.stop();
      await dbC.close();
    }
  });

  it("a refit's rescore parts are shared by both replicas' workers, each written once", async () => {
    const dataset = await planted(layerA, 'shared-rescore', 4000, 17);
    // 256 per centroid at k = 8: a sample smaller than the 4,000 items.
    const refit = { ...REFIT_DEFAULTS, samplePerCentroid: 256, partItems: 200, pageItems: 64 };
    const a = replicaWorker(dbA, layerA, { refit, partDelayMs: 20 });
    const b = replicaWorker(dbB, layerB, { refit, partDelayMs: 20, pollMs: 10 });
    a.worker.start();
    b.worker.start();
    try {
      const job = await requestRefit(layerA.ctx, dataset.name);
      await until('the refit to end', async () => [...a.ends, ...b.ends].find((e) => e.id === job.id));
      expect([...a.ends, ...b.ends].filter((e) => e.id === job.id).map((e) => e.state)).toEqual(['succeeded']);
      const written = [...a.parts, ...b.parts].filter((p) => p.jobId === job.id);
      expect(a.parts.filter((p) => p.jobId === job.id).length).toBeGreaterThan(0);
      expect(b.parts.filter((p) => p.jobId === job.id).length).toBeGreaterThan(0);
      expect(new Set(written.map((p) => p.from)).size).toBe(written.length); // no part written twice
      expect(written.length).toBeGreaterThanOrEqual(19); // ~4000 / 200 (equal id widths)
      expect(await activeScoreProblems(dataset.id)).toEqual({ items: 4000, scored: 4000, wrong: 0, active: 1, set: 1 });
      expect(await waitForJob(dbB, job.id)).toMatchObject({ state: 'succeeded', result: { fitItems: 4000 } });
      // The fit reads a seeded sample of about 256 per centroid, not all 4,000.
      const { sampleItems } = (await waitForJob(dbB, job.id)).result as { sampleItems: number };
      expect(sampleItems).toBeGreaterThan(1800);
      expect(sampleItems).toBeLessThan(2300);
      expect((await dbB.query('SELECT 1 FROM job_parts WHERE job_id = $1', [job.id])).length).toBe(0);
    } finally {
      await a.worker.stop();
      await b.worker.stop();
    }
  });

  it('a part that runs longer than its lease keeps it (heartbeat): no part is claimed twice', async () => {
    const dataset = await planted(layerA, 'long-parts', 2000, 29);
    const refit = { ...REFIT_DEFAULTS, partItems: 500, pageItems: 100 };
    // Each part takes 2.5 s, longer than the 1.5 s lease; the heartbeat renews it every 0.5 s.
    const a = replicaWorker(dbA, layerA, { refit, partDelayMs: 2500 });
    const b = replicaWorker(dbB, layerB, { refit, partDelayMs: 2500, pollMs: 10 });
    a.worker.start();
    b.worker.start();
    try {
      const job = await requestRefit(layerA.ctx, dataset.name);
      await until('the refit to end', async () => [...a.ends, ...b.ends].find((e) => e.id === job.id), 60_000);
      expect([...a.ends, ...b.ends].filter((e) => e.id === job.id).map((e) => e.state)).toEqual(['succeeded']);
      const started = [...a.partStarts, ...b.partStarts].filter((p) => p.jobId === job.id);
      const written = [...a.parts, ...b.parts].filter((p) => p.jobId === job.id);
      expect(written.length).toBeGreaterThanOrEqual(4);
      expect(started.length).toBe(written.length);
      expect(await activeScoreProblems(dataset.id)).toEqual({ items: 2000, scored: 2000, wrong: 0, active: 1, set: 1 });
    } finally {
      await a.worker.stop();
      await b.worker.stop();
    }
  }, 90_000);

  it("a dedup run's clusters are shared by both replicas' workers, each part written once, and its groups are the core's", async () => {
    const dataset = await planted(layerA, 'shared-dedup', 3000, 23);
    // Near-duplicates of every 10th item, written after the items so the fit is the same either way.
    const twins = [];
    const data = plantedClusters({ seed: 23, clusters: 8, perCluster: Math.ceil(3000 / 8), dim: DIM, noise: 0.5 });
    for (let i = 0; i < 3000; i += 10) {
      const v = row(data.points, i, DIM).map((x, j) => x + (j === i % DIM ? 0.01 : 0));
      twins.push({ externalId: `twin-${i}`, embedding: v });
    }
    await ingestItems(layerA.ctx, dataset.name, twins);
    const a = replicaWorker(dbA, layerA, { refit: { ...REFIT_DEFAULTS, partItems: 1000 }, dedup: { ...DEDUP_DEFAULTS, partItems: 300 }, partDelayMs: 20 });
    const b = replicaWorker(dbB, layerB, { refit: { ...REFIT_DEFAULTS, partItems: 1000 }, dedup: { ...DEDUP_DEFAULTS, partItems: 300 }, partDelayMs: 20, pollMs: 10 });
    a.worker.start();
    b.worker.start();
    const kernel = await OrtDistanceKernel.create({ intraOpNumThreads: 1 });
    try {
      const refit = await requestRefit(layerA.ctx, dataset.name);
      await until('the refit to end', async () => [...a.ends, ...b.ends].find((e) => e.id === refit.id && e.state === 'succeeded'));
      const job = await requestDedup(layerB.ctx, dataset.name, 0.001);
      await until('the dedup to end', async () => [...a.ends, ...b.ends].find((e) => e.id === job.id));
      expect([...a.ends, ...b.ends].filter((e) => e.id === job.id).map((e) => e.state)).toEqual(['succeeded']);
      const written = [...a.dedupParts, ...b.dedupParts].filter((p) => p.jobId === job.id);
      expect(a.dedupParts.filter((p) => p.jobId === job.id).length).toBeGreaterThan(0);
      expect(b.dedupParts.filter((p) => p.jobId === job.id).length).toBeGreaterThan(0);
      expect(new Set(written.map((p) => p.first)).size).toBe(written.length); // no part written twice
      expect(written.filter((p) => p.first.startsWith('clusters:')).length).toBeGreaterThanOrEqual(8); // 8 clusters of ~412 items, one part each at 300 items per part
      // The core's groups over the whole dataset (read back here in one process), plus pairs across cluster boundaries.
      const rows = await dbB.query<{ external_id: string; embedding: string; score: number; cluster: number }>(
        `SELECT i.external_id, i.embedding::text AS embedding, s.score, s.cluster FROM items i JOIN item_scores s ON s.item_id = i.id
          WHERE i.dataset_id = $1 AND s.version = 1 ORDER BY i.id`,
        [dataset.id],
      );
      const points = new Float32Array(rows.length * DIM);
      rows.forEach((r, i) => points.set(JSON.parse(r.embedding), i * DIM));
      const core = await findNearDuplicates(points, rows.length, DIM, Int32Array.from(rows, (r) => r.cluster), Float32Array.from(rows, (r) => r.score), { epsilon: 0.001, kernel });
      const clusterOf = new Map(rows.map((r) => [r.external_id, r.cluster]));
      const expected = core.flatMap((g) => g.duplicates.map((d) => `${rows[g.kept].external_id}|${rows[d].external_id}`)).sort();
      const stream = await streamDuplicates(layerA.ctx, dataset.name, { epsilon: 0.001 });
      const served: [string, string[]][] = [];
      for await (const chunk of stream.groups) served.push(...chunk.map((g): [string, string[]] => [g.kept, [...g.duplicates].sort()]));
      const servedPairs = served.flatMap(([kept, dups]) => dups.map((d) => `${kept}|${d}`));
      const within = servedPairs.filter((p) => clusterOf.get(p.split('|')[0]) === clusterOf.get(p.split('|')[1])).sort();
      expect(within).toEqual(expected);
      expect(stream.run).toMatchObject({ jobId: job.id, version: 1, epsilon: 0.001, duplicates: servedPairs.length });
      // Every planted twin is in a group with its original.
      const together = new Set(served.flatMap(([kept, dups]) => dups.map((d) => `${kept}|${d}`)));
      const missed = twins.filter((t) => !together.has(`${dataset.name}-${t.externalId.slice(5)}|${t.externalId}`) && !together.has(`${t.externalId}|${dataset.name}-${t.externalId.slice(5)}`));
      expect(missed).toEqual([]);
      expect((await dbB.query('SELECT 1 FROM job_parts WHERE job_id = $1', [job.id])).length).toBe(0);
    } finally {
      await kernel.dispose();
      await a.worker.stop();
      await b.worker.stop();
    }
  });

  it('a rescore part that lost a deadlock goes back to the queue and is written once; its refit succeeds without a retry', async () => {
    const dataset = await planted(layerA, 'deadlocked', 2000, 15);
    const a = replicaWorker(dbA, layerA);
    const lock = await lockScores();
    let locked = true;
    a.worker.start();
    try {
      const job = await requestRefit(layerA.ctx, dataset.name);
      await until('the rescore part to wait for the lock', async () => (await lock.blocked()).length > 0);
      // The part's write holds its part row (the fence) and waits for item_scores; now the admin
      // transaction, holding item_scores, asks for the part row: a lock cycle, which the server
      // breaks by failing the statement that waited first (40P01): the part's.
      await admin.query(`SELECT 1 FROM "${schema}".job_parts WHERE job_id = $1 FOR UPDATE`, [job.id]);
      await lock.release();
      locked = false;
      expect((await a.endOf(job.id, 1)).state).toBe('succeeded');
      expect(a.ends.filter((e) => e.id === job.id).map((e) => e.state)).toEqual(['succeeded']);
      expect(await waitForJob(dbB, job.id)).toMatchObject({ state: 'succeeded', attempts: 1, result: { version: 1 } });
      expect(await activeScoreProblems(dataset.id)).toEqual({ items: 2000, scored: 2000, wrong: 0, active: 1, set: 1 });
    } finally {
      if (locked) await lock.release();
      await a.worker.stop();
    }
  });
});
