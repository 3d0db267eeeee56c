import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDataset, getDataset } from '../../src/service/datasets.js';
import { jobOf, type RefitResult } from '../../src/service/job-kinds.js';
import { isTransientDbError, JobAbortedError, JobWorker, leaseJob, type JobHandlers, type JobPartHandlers, type JobWorkerOptions, type RunEnd } from '../../src/service/jobs.js';
import { requestRefit } from '../../src/service/refit.js';
import type { Database } from '../../src/store/database.js';
import { claimNextJob, getJob, requeueExpiredJobs, type JobRow } from '../../src/store/jobs.js';
import { openDatabase } from '../../src/store/open.js';
import { BACKENDS, NATIVE_URL } from '../helpers/backends.js';
import { silentLogger } from '../helpers/logger.js';
import { plantedClusters } from '../helpers/planted.js';
import { row, startHarness, waitForJob, type Harness } from './harness.js';
import { ingestItems } from '../../src/service/ingest.js';

/** A real error with the given SQLSTATE, raised by the database itself. */
const raise = (sqlstate: string, message: string) => `DO $$ BEGIN RAISE EXCEPTION '${message}' USING ERRCODE = '${sqlstate}'; END $$`;

interface Ended {
  job: JobRow;
  state: RunEnd;
  at: number;
  result: object | null;
}

const OPTIONS: JobWorkerOptions = { pollMs: 20, leaseMs: 10_000, heartbeatMs: 1000, retry: { limit: 3, baseMs: 100, maxMs: 150 } };

/** The handler of a kind a test does not expect to run. */
const unexpected = async (): Promise<never> => {
  throw new Error('no job of this kind was expected');
};

/** A worker with the test's handlers (each test plays its jobs as refits, told apart by params.reason). */
function runner(db: Database, handlers: Partial<JobHandlers>, options: Partial<JobWorkerOptions> = {}) {
  const ended: Ended[] = [];
  const waiters: Array<() => void> = [];
  const r = new JobWorker(db, silentLogger, { refit: unexpected, ingest: unexpected, dedup: unexpected, ...handlers }, { refit: unexpected, dedup: unexpected }, {
    ...OPTIONS,
    onFinished: (job, state, _ms, result) => {
      ended.push({ job, state, at: Date.now(), result });
      waiters.splice(0).forEach((w) => w());
    },
    ...options,
  });
  /** Resolves once `n` runs have ended. */
  const until = async (n: number) => {
    while (ended.length < n) await new Promise<void>((resolve) => waiters.push(resolve));
    return ended;
  };
  return { runner: r, ended, until };
}

async function insertJob(db: Database, kind: string, params: object = {}, result: object | null = null): Promise<string> {
  const [job] = await db.query<{ id: string }>(`INSERT INTO jobs (id, kind, params, result) VALUES (gen_random_uuid(), $1, $2, $3) RETURNING id`, [
    kind,
    JSON.stringify(params),
    result === null ? null : JSON.stringify(result),
  ]);
  return job.id;
}

const REFIT_RESULT: RefitResult = { version: 3, previousVersion: 2, k: 4, fitItems: 100, objective: 0.25, timings: { totalMs: 12 } };

async function jobRow(db: Database, id: string) {
  const [job] = await db.query<{ state: string; attempts: number; retries: number; error: string | null; params: object }>(
    `SELECT state::text, attempts, retries, error, params FROM jobs WHERE id = $1`,
    [id],
  );
  return job;
}

describe.each(BACKENDS)('the job runner on the $name backend', (backend) => {
  let db: Database;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    const fresh = await backend.fresh();
    cleanup = fresh.cleanup;
    ({ db } = await openDatabase(fresh.config));
  });
  afterAll(async () => {
    await db?.close();
    await cleanup?.();
  });

  it('queues a job that hit a transient database error again with growing backoff, then runs it to success', async () => {
    const starts: number[] = [];
    const { runner: r, until } = runner(db, {
      refit: async (job, run) => {
        starts.push(Date.now());
        if (job.attempts <= 2) await run.write((tx) => tx.query(raise('40001', 'could not serialize access')));
        return REFIT_RESULT;
      },
    });
    const id = await insertJob(db, 'refit');
    r.start();
    try {
      const ended = await until(3);
      expect(ended.map((e) => e.state)).toEqual(['retried', 'retried', 'succeeded']);
    } finally {
      await r.stop();
    }
    expect(await jobRow(db, id)).toMatchObject({ state: 'succeeded', attempts: 3, retries: 2, error: null });
    // Waits of 100 ms, then 150 ms (200 capped); the database clock decides, so allow a little slack.
    expect(starts[1] - starts[0]).toBeGreaterThanOrEqual(80);
    expect(starts[2] - starts[1]).toBeGreaterThanOrEqual(130);
  });

  it('fails with the last error once the retries are used up, and at once on an error that is not transient', async () => {
    const { runner: r, until } = runner(
      db,
      {
        refit: async (job, run) => {
          await run.write((tx) => tx.query(job.params.reason === 'deadlocked' ? raise('40P01', 'deadlock detected') : raise('22023', 'bad parameter')));
          return REFIT_RESULT;
        },
      },
      { retry: { limit: 2, baseMs: 10, maxMs: 10 } },
    );
    const deadlocked = await insertJob(db, 'refit', { reason: 'deadlocked' });
    const invalid = await insertJob(db, 'refit', { reason: 'invalid' });
    r.start();
    try {
      await until(4);
    } finally {
      await r.stop();
    }
    expect(await jobRow(db, deadlocked)).toMatchObject({ state: 'failed', attempts: 3, retries: 2, error: 'deadlock detected' });
    expect(await jobRow(db, invalid)).toMatchObject({ state: 'failed', attempts: 1, retries: 0, error: 'bad parameter' });
  });

  it('a heartbeat that finds the job taken over aborts the run, which writes nothing more', async () => {
    let entered!: () => void;
    const running = new Promise<void>((resolve) => (entered = resolve));
    let refused: unknown;
    const { runner: r, until } = runner(
      db,
      {
        refit: async (job, run) => {
          entered();
          await new Promise((resolve) => run.signal.addEventListener('abort', resolve));
          expect(run.abortReason()).toBe('lease-lost');
          refused = await run.write((tx) => tx.query(`UPDATE jobs SET params = '{"late": true}' WHERE id = $1`, [job.id])).then(
            () => null,
            (e: unknown) => e,
          );
          return REFIT_RESULT;
        },
      },
      { heartbeatMs: 50 },
    );
    const id = await insertJob(db, 'refit');
    r.start();
    try {
      await running;
      // Another worker takes the job over: re-queued and claimed again (attempt 2).
      await db.query(`UPDATE jobs SET state = 'queued' WHERE id = $1`, [id]);
      const stolen = await claimNextJob(db, 60_000);
      expect(stolen).toMatchObject({ id, attempts: 2 });
      const started = Date.now();
      const [end] = await until(1);
      expect(Date.now() - started).toBeLessThan(2000);
      expect(end.state).toBe('lost');
    } finally {
      await r.stop();
    }
    expect(refused).toBeInstanceOf(JobAbortedError);
    // Still the new holder's, untouched by the old run (not even its result or finish).
    expect(await jobRow(db, id)).toMatchObject({ state: 'running', attempts: 2, params: {} });
    await db.query(`DELETE FROM jobs`);
  });

  it('refuses to boot without a handler for every job kind', () => {
    const handlers = { refit: unexpected } as Partial<JobHandlers> as JobHandlers; // what the type of the map rules out
    const all = { refit: unexpected, ingest: unexpected, dedup: unexpected };
    const parts = { refit: unexpected, dedup: unexpected };
    expect(() => new JobWorker(db, silentLogger, handlers, parts, OPTIONS)).toThrow('the job worker has no handler for job kind ingest');
    expect(() => new JobWorker(db, silentLogger, all, {} as JobPartHandlers, OPTIONS)).toThrow('the job worker has no handler for job kind refit (parts)');
    expect(() => new JobWorker(db, silentLogger, all, { refit: unexpected } as unknown as JobPartHandlers, OPTIONS)).toThrow('the job worker has no handler for job kind dedup (parts)');
    expect(() => new JobWorker(db, silentLogger, all, parts, OPTIONS)).not.toThrow();
  });

  it("reads a job's result back typed: a handler's result round trips, a field of the wrong type is left out", async () => {
    let seen: Partial<RefitResult> | undefined;
    const { runner: r, until } = runner(db, {
      refit: async (job) => {
        seen = job.result;
        return REFIT_RESULT;
      },
    });
    const id = await insertJob(db, 'refit', { reason: 'requested' }, { version: 'seven', snapshotAt: '2026-01-01T00:00:00.000Z', previousVersion: null });
    r.start();
    try {
      const [end] = await until(1);
      expect(end).toMatchObject({ state: 'succeeded', result: REFIT_RESULT });
    } finally {
      await r.stop();
    }
    // The checkpoint as the handler got it: no version (it was not a number), the snapshot and previousVersion kept.
    expect(seen).toEqual({ snapshotAt: '2026-01-01T00:00:00.000Z', previousVersion: null });
    const stored = (await getJob(db, id))!;
    const job = jobOf('refit', stored);
    expect(job.params).toEqual({ reason: 'requested' });
    expect(job.result).toEqual({ ...REFIT_RESULT, snapshotAt: '2026-01-01T00:00:00.000Z' });
    expect(() => jobOf('ingest', stored)).toThrow(/is of kind refit, not ingest/);
    await db.query(`DELETE FROM jobs`);
  });

  it(`${backend.name === 'native' ? 're-queues' : 'never re-queues'} the job of a live run whose lease ran out`, async () => {
    // A run this process holds (like a background ingest) while the runner polls: on native
    // PostgreSQL an expired lease means a stalled or dead holder and the job is handed on; the
    // embedded database has no other process, so it stays with its run (a late heartbeat is harmless).
    const { runner: r } = runner(db, {});
    const id = await insertJob(db, 'held-elsewhere');
    const claimed = (await claimNextJob(db, 60_000))!;
    const run = leaseJob(db, silentLogger, claimed, { leaseMs: 60_000, heartbeatMs: 60_000 });
    await db.query(`UPDATE jobs SET lease_expires_at = now() - interval '1 minute' WHERE id = $1`, [id]);
    r.start();
    await new Promise((resolve) => setTimeout(resolve, 300));
    await r.stop();
    const job = await jobRow(db, id);
    if (backend.name === 'native') {
      // Re-queued, then claimed by the polling runner, which has no handler for the kind.
      expect(job).toMatchObject({ attempts: 2, state: 'failed', error: 'unknown job kind held-elsewhere' });
      await expect(run.finish({ state: 'succeeded' })).rejects.toThrow(/no longer held/);
    } else {
      expect(job).toMatchObject({ attempts: 1, state: 'running' });
      await run.finish({ state: 'succeeded' });
      expect(await requeueExpiredJobs(db, 60_000)).toBe(0);
    }
    run.close();
    await db.query(`DELETE FROM jobs`);
  });
});

const DIM = 24;

describe.each(BACKENDS)('refit cleanup on the $name backend', (backend) => {
  let h: Harness;

  beforeAll(async () => {
    h = await startHarness(backend, { pollMs: 50 });
  });
  afterAll(async () => {
    await h?.close();
  });

  async function scoreCounts(datasetId: string): Promise<Record<number, number>> {
    const rows = await h.db.query<{ version: number; n: number }>(
      'SELECT version, count(*)::int AS n FROM item_scores WHERE dataset_id = $1 GROUP BY version ORDER BY version',
      [datasetId],
    );
    return Object.fromEntries(rows.map((r) => [r.version, r.n]));
  }

  it("a late cleanup (a refit resumed after its switch) never deletes the active version's scores, nor newer ones", async () => {
    await createDataset(h.layer.ctx, { name: 'late-cleanup', dimension: DIM, k: 6, settings: { minItemsForFit: 1_000_000, autoRefit: false } });
    const data = plantedClusters({ seed: 5, clusters: 6, perCluster: 100, dim: DIM, noise: 0.4 });
    const result = await ingestItems(
      h.layer.ctx,
      'late-cleanup',
      Array.from({ length: data.n }, (_, i) => ({ externalId: `p${i}`, embedding: row(data.points, i, DIM) })),
    );
    expect(result.items.every((r) => r.status === 'stored')).toBe(true);
    for (const expected of [1, 2]) {
      const job = await requestRefit(h.layer.ctx, 'late-cleanup');
      expect(await waitForJob(h.db, job.id)).toMatchObject({ state: 'succeeded', result: { version: expected } });
    }
    const dataset = await getDataset(h.layer.ctx, 'late-cleanup');
    expect(dataset.activeVersion).toBe(2);
    expect(await scoreCounts(dataset.id)).toEqual({ 2: data.n });
    // A newer refit in progress has written some scores of version 3 already.
    await h.db.query(
      `INSERT INTO item_scores (dataset_id, version, item_id, score, cluster)
       SELECT dataset_id, 3, id, 0.5, 0 FROM items WHERE dataset_id = $1 ORDER BY id LIMIT 10`,
      [dataset.id],
    );

    // The refit that made version 1 switched, then lost its process before cleaning up; it runs again now.
    const [stale] = await h.db.query<{ id: string }>(
      `INSERT INTO jobs (id, dataset_id, kind, state, attempts, result)
       VALUES (gen_random_uuid(), $1, 'refit', 'queued', 1, $2) RETURNING id`,
      [dataset.id, JSON.stringify({ version: 1, snapshotAt: new Date().toISOString(), previousVersion: null })],
    );
    h.layer.worker.wake();
    const done = await waitForJob(h.db, stale.id);
    expect(done).toMatchObject({ state: 'succeeded', attempts: 2, result: { version: 1, previousVersion: null } });

    expect((await getDataset(h.layer.ctx, 'late-cleanup')).activeVersion).toBe(2);
    expect(await scoreCounts(dataset.id)).toEqual({ 2: data.n, 3: 10 });
    const sets = await h.db.query<{ version: number }>('SELECT version FROM prototype_sets WHERE dataset_id = $1 ORDER BY version', [dataset.id]);
    expect(sets.map((s) => s.version)).toEqual([1, 2]);
  });
});

describe('transient database errors', () => {
  it('are told apart from the others by SQLSTATE, driver code or pool message, also when wrapped', () => {
    const sql = (code: string) => Object.assign(new Error(`sqlstate ${code}`), { code });
    for (const code of ['40001', '40P01', '57P01', '57P02', '57P03', '53300', '08006', '08001']) expect(isTransientDbError(sql(code)), code).toBe(true);
    expect(isTransientDbError(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }))).toBe(true);
    expect(isTransientDbError(new Error('timeout exceeded when trying to connect'))).toBe(true);
    expect(isTransientDbError(new Error('Connection terminated unexpectedly'))).toBe(true);
    expect(isTransientDbError(new Error('query failed', { cause: sql('40P01') }))).toBe(true);
    for (const code of ['23505', '22P02', '42P01', '57014']) expect(isTransientDbError(sql(code)), code).toBe(false);
    expect(isTransientDbError(new Error('dataset has no items to fit'))).toBe(false);
    expect(isTransientDbError(undefined)).toBe(false);
  });

  it('include a refused connection (the database is down)', async () => {
    // Nothing listens on port 1.
    const client = new pg.Client({ connectionString: 'postgres://protoprune@127.0.0.1:1/none' });
    const error = await client.connect().then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).not.toBeNull();
    expect(isTransientDbError(error)).toBe(true);
  });
});

describe.each(NATIVE_URL ? [{ url: NATIVE_URL }] : [])('transient database errors from the native server', ({ url }) => {
  it('counts a backend terminated by the server (what a failover or pg_terminate_backend does) as transient', async () => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    client.on('error', () => undefined);
    const error = await client.query('SELECT pg_terminate_backend(pg_backend_pid())').then(
      () => null,
      (e: unknown) => e,
    );
    await client.end().catch(() => undefined);
    expect(error).not.toBeNull();
    expect(isTransientDbError(error)).toBe(true);
  });
});
