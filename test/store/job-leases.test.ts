import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/store/database.js';
import {
  claimNextJob,
  finishJob,
  holdLease,
  LeaseLostError,
  mergeJobResult,
  renewLease,
  reportProgress,
  requeueExpiredJobs,
  type JobLease,
} from '../../src/store/jobs.js';
import { openDatabase } from '../../src/store/open.js';
import { BACKENDS, NATIVE_URL, type TestBackend } from '../helpers/backends.js';

const LEASE_MS = 60_000;

async function openFresh(backend: TestBackend) {
  const fresh = await backend.fresh();
  const { db } = await openDatabase(fresh.config);
  return { db, config: fresh.config, cleanup: fresh.cleanup };
}

async function queueJob(db: Database, kind = 'test'): Promise<string> {
  const [row] = await db.query<{ id: string }>(`INSERT INTO jobs (id, kind) VALUES (gen_random_uuid(), $1) RETURNING id`, [kind]);
  return row.id;
}

async function claim(db: Database): Promise<JobLease> {
  const job = await claimNextJob(db, LEASE_MS);
  expect(job).toBeDefined();
  return { id: job!.id, token: job!.attempts };
}

async function expire(db: Database, id: string): Promise<void> {
  await db.query(`UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1`, [id]);
}

describe.each(BACKENDS)('job leases on the $name backend', (backend) => {
  let db: Database;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ db, cleanup } = await openFresh(backend));
  });
  afterAll(async () => {
    await db?.close();
    await cleanup?.();
  });

  it('a claim leases the job with a new token; only an expired lease is re-queued', async () => {
    const id = await queueJob(db);
    const lease = await claim(db);
    expect(lease).toEqual({ id, token: 1 });
    const [row] = await db.query<{ ms: number }>(`SELECT extract(epoch FROM lease_expires_at - now()) * 1000 AS ms FROM jobs WHERE id = $1`, [id]);
    expect(Number(row.ms)).toBeGreaterThan(LEASE_MS - 5000);
    expect(await requeueExpiredJobs(db, LEASE_MS)).toBe(0);
    await expire(db, id);
    expect(await requeueExpiredJobs(db, LEASE_MS)).toBe(1);
    expect(await claim(db)).toEqual({ id, token: 2 });
    await db.query(`DELETE FROM jobs`);
  });

  it("a run whose job was taken over can write nothing: fence, heartbeat, progress, result and finish are refused", async () => {
    const id = await queueJob(db);
    const first = await claim(db);
    await db.transaction((tx) => holdLease(tx, first));
    await expire(db, id);
    await requeueExpiredJobs(db, LEASE_MS);
    const second = await claim(db);
    expect(second.token).toBe(2);

    await expect(db.transaction((tx) => holdLease(tx, first))).rejects.toBeInstanceOf(LeaseLostError);
    expect(await renewLease(db, first, LEASE_MS)).toBe(false);
    await expect(reportProgress(db, first, 'stale', 1, 2)).rejects.toBeInstanceOf(LeaseLostError);
    await expect(mergeJobResult(db, first, { stale: true })).rejects.toBeInstanceOf(LeaseLostError);
    await expect(finishJob(db, first, { state: 'succeeded', result: { stale: true } })).rejects.toBeInstanceOf(LeaseLostError);

    // The new holder is unaffected.
    expect(await renewLease(db, second, LEASE_MS)).toBe(true);
    await reportProgress(db, second, 'fresh', 1, 2);
    await finishJob(db, second, { state: 'succeeded', result: { fresh: true } });
    const [row] = await db.query<{ state: string; phase: string; result: object; lease: Date | null }>(
      `SELECT state::text, phase, result, lease_expires_at AS lease FROM jobs WHERE id = $1`,
      [id],
    );
    expect(row).toEqual({ state: 'succeeded', phase: 'fresh', result: { fresh: true }, lease: null });
    // A finished job is nobody's: even its last holder cannot write to it anymore.
    await expect(db.transaction((tx) => holdLease(tx, second))).rejects.toBeInstanceOf(LeaseLostError);
    await db.query(`DELETE FROM jobs`);
  });

  it('a retry waits in the queue until its run_after, and counts as a retry', async () => {
    const id = await queueJob(db);
    const lease = await claim(db);
    await finishJob(db, lease, { state: 'queued', error: 'connection lost', retryInMs: 400 });
    expect(await claimNextJob(db, LEASE_MS)).toBeUndefined();
    const [row] = await db.query<{ state: string; error: string; retries: number }>(`SELECT state::text, error, retries FROM jobs WHERE id = $1`, [id]);
    expect(row).toEqual({ state: 'queued', error: 'connection lost', retries: 1 });
    await new Promise((r) => setTimeout(r, 500));
    const again = await claimNextJob(db, LEASE_MS);
    expect(again).toMatchObject({ id, attempts: 2, retries: 1, error: null, runAfter: null });
    await db.query(`DELETE FROM jobs`);
  });

  it('a running job claimed before leases existed is judged by its last update', async () => {
    const [row] = await db.query<{ id: string }>(
      `INSERT INTO jobs (id, kind, state, attempts, updated_at) VALUES (gen_random_uuid(), 'legacy', 'running', 1, now() - interval '10 seconds') RETURNING id`,
    );
    expect(await requeueExpiredJobs(db, 60_000)).toBe(0);
    expect(await requeueExpiredJobs(db, 5_000)).toBe(1);
    expect(await claim(db)).toEqual({ id: row.id, token: 2 });
    await db.query(`DELETE FROM jobs`);
  });
});

describe.each(NATIVE_URL ? [BACKENDS.find((b) => b.name === 'native')!] : [])('job fencing under concurrency on the $name backend', (backend) => {
  let db: Database;
  let other: Database;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    let config;
    ({ db, config, cleanup } = await openFresh(backend));
    ({ db: other } = await openDatabase(config));
  });
  afterAll(async () => {
    await other?.close();
    await db?.close();
    await cleanup?.();
  });

  it('a requeue skips a job while a fenced write holds it, and takes it once the write committed', async () => {
    const id = await queueJob(db);
    const lease = await claim(db);
    await expire(db, id);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let fenced!: () => void;
    const inside = new Promise<void>((r) => (fenced = r));
    const write = db.transaction(async (tx) => {
      await holdLease(tx, lease);
      fenced();
      await held;
      await tx.query(`UPDATE jobs SET params = '{"written": true}' WHERE id = $1`, [id]);
    });
    await inside;
    expect(await requeueExpiredJobs(other, LEASE_MS)).toBe(0);
    release();
    await write;
    expect(await requeueExpiredJobs(other, LEASE_MS)).toBe(1);
    const [row] = await db.query<{ params: object }>(`SELECT params FROM jobs WHERE id = $1`, [id]);
    expect(row.params).toEqual({ written: true });
    await db.query(`DELETE FROM jobs`);
  });

  it('a write that starts while a requeue holds the job waits for it, then fails', async () => {
    const id = await queueJob(db);
    const lease = await claim(db);
    await expire(db, id);
    // The requeue as a transaction left open, so the write has to arrive while it holds the row.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let requeued!: () => void;
    const taken = new Promise<void>((r) => (requeued = r));
    const requeue = other.transaction(async (tx) => {
      expect(await requeueExpiredJobs(tx, LEASE_MS)).toBe(1);
      requeued();
      await held;
    });
    await taken;
    const write = db.transaction(async (tx) => {
      await holdLease(tx, lease);
      await tx.query(`UPDATE jobs SET params = '{"written": true}' WHERE id = $1`, [id]);
    });
    const outcome = write.then(
      () => 'committed',
      (e: unknown) => e,
    );
    await new Promise((r) => setTimeout(r, 300));
    const [waiting] = await other.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%FOR KEY SHARE%'`,
    );
    expect(waiting.n).toBe(1);
    release();
    await requeue;
    expect(await outcome).toBeInstanceOf(LeaseLostError);
    const [row] = await db.query<{ params: object; state: string }>(`SELECT params, state::text FROM jobs WHERE id = $1`, [id]);
    expect(row).toEqual({ params: {}, state: 'queued' });
    await db.query(`DELETE FROM jobs`);
  });
});
