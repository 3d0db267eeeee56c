import type { Job as PrismaJob } from '../generated/prisma/client.js';
import type { Database, Sql } from './database.js';

type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface JobRow {
  id: string;
  datasetId: string | null;
  kind: string;
  state: JobState;
  params: Record<string, unknown>;
  phase: string | null;
  progressDone: number;
  progressTotal: number;
  result: Record<string, unknown> | null;
  error: string | null;
  /** Claims so far; the current run's fencing token. */
  attempts: number;
  /** Re-queues after transient database errors so far. */
  retries: number;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  updatedAt: Date;
  leaseExpiresAt: Date | null;
  runAfter: Date | null;
}

const COLUMNS = `id, dataset_id AS "datasetId", kind, state::text AS state, params, phase,
  progress_done::float8 AS "progressDone", progress_total::float8 AS "progressTotal", result, error, attempts, retries,
  created_at AS "createdAt", started_at AS "startedAt", finished_at AS "finishedAt", updated_at AS "updatedAt",
  lease_expires_at AS "leaseExpiresAt", run_after AS "runAfter"`;

/**
 * One run's hold on a job: the job id and its fencing token, the job's `attempts` when this run
 * claimed it. A later claim (after the lease expired) increments `attempts`, which fences this run out.
 */
export interface JobLease {
  id: string;
  token: number;
}

/** The job is no longer this run's: it was re-queued and claimed again, finished, or deleted. */
export class LeaseLostError extends Error {
  constructor(readonly lease: JobLease) {
    super(`job ${lease.id} is no longer held by attempt ${lease.token}`);
    this.name = 'LeaseLostError';
  }
}

const HELD = `id = $1 AND state = 'running' AND attempts = $2`;

/**
 * Queues a job unless one of the same kind is already queued or running for the dataset, in
 * which case that one is returned: asking twice for a refit yields one refit.
 */
export async function enqueueJob(tx: Sql, datasetId: string, kind: string, params: object): Promise<{ job: JobRow; created: boolean }> {
  await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`job:${datasetId}:${kind}`]);
  const existing = await tx.query<JobRow>(
    `SELECT ${COLUMNS} FROM jobs WHERE dataset_id = $1 AND kind = $2 AND state IN ('queued', 'running') ORDER BY created_at LIMIT 1`,
    [datasetId, kind],
  );
  if (existing[0]) return { job: existing[0], created: false };
  const [job] = await tx.query<JobRow>(
    `INSERT INTO jobs (id, dataset_id, kind, params) VALUES (gen_random_uuid(), $1, $2, $3) RETURNING ${COLUMNS}`,
    [datasetId, kind, JSON.stringify(params)],
  );
  return { job, created: true };
}

/**
 * Creates a job that is running from the start, held by its creator with token 1 (a submitted
 * job, e.g. a background ingest, whose payload only its creating process has).
 */
export async function insertRunningJob(
  db: Sql,
  job: { datasetId: string; kind: string; params: object; phase: string; total: number },
  leaseMs: number,
): Promise<JobRow> {
  const [row] = await db.query<JobRow>(
    `INSERT INTO jobs (id, dataset_id, kind, state, params, phase, progress_done, progress_total, attempts, started_at, lease_expires_at)
     VALUES (gen_random_uuid(), $1, $2, 'running', $3, $4, 0, $5, 1, now(), now() + make_interval(secs => $6::float8 / 1000))
     RETURNING ${COLUMNS}`,
    [job.datasetId, job.kind, JSON.stringify(job.params), job.phase, job.total, leaseMs],
  );
  return row;
}

function fromPrisma(job: PrismaJob): JobRow {
  return {
    ...job,
    params: job.params as Record<string, unknown>,
    result: job.result as Record<string, unknown> | null,
    progressDone: Number(job.progressDone),
    progressTotal: Number(job.progressTotal),
  };
}

export async function getJob(db: Database, id: string): Promise<JobRow | undefined> {
  const job = await db.prisma.job.findUnique({ where: { id } });
  return job ? fromPrisma(job) : undefined;
}

export async function activeJob(db: Database, datasetId: string, kind: string): Promise<JobRow | undefined> {
  const job = await db.prisma.job.findFirst({
    where: { datasetId, kind, state: { in: ['queued', 'running'] } },
    orderBy: { createdAt: 'asc' },
  });
  return job ? fromPrisma(job) : undefined;
}

/**
 * Takes the oldest queued job that is due (skipping ones another worker is claiming), marks it
 * running with a lease of `leaseMs` and a new fencing token (attempts + 1).
 */
export async function claimNextJob(db: Sql, leaseMs: number): Promise<JobRow | undefined> {
  const rows = await db.query<JobRow>(
    `UPDATE jobs SET state = 'running', started_at = now(), updated_at = now(), attempts = attempts + 1, error = NULL,
            run_after = NULL, lease_expires_at = now() + make_interval(secs => $1::float8 / 1000)
      WHERE id = (SELECT id FROM jobs WHERE state = 'queued' AND (run_after IS NULL OR run_after <= now())
                   ORDER BY created_at FOR UPDATE SKIP LOCKED LIMIT 1)
      RETURNING ${COLUMNS}`,
    [leaseMs],
  );
  return rows[0];
}

/**
 * The fence of every write a run makes: called first in the write's transaction, it checks that
 * the run still holds the job and locks the job row against a requeue until the transaction ends
 * (FOR KEY SHARE: a requeue's FOR UPDATE waits for it, while the run's own heartbeat and progress
 * updates do not). Throws LeaseLostError when the job was taken over.
 */
export async function holdLease(tx: Sql, lease: JobLease): Promise<void> {
  const rows = await tx.query(`SELECT 1 FROM jobs WHERE ${HELD} FOR KEY SHARE`, [lease.id, lease.token]);
  if (rows.length === 0) throw new LeaseLostError(lease);
}

/** The heartbeat: extends the lease to `leaseMs` from now; false when the run no longer holds the job. */
export async function renewLease(db: Pick<Sql, 'query'>, lease: JobLease, leaseMs: number): Promise<boolean> {
  const rows = await db.query(
    `UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3::float8 / 1000), updated_at = now() WHERE ${HELD} RETURNING id`,
    [lease.id, lease.token, leaseMs],
  );
  return rows.length > 0;
}

export async function reportProgress(db: Pick<Sql, 'query'>, lease: JobLease, phase: string, done: number, total: number): Promise<void> {
  const rows = await db.query(
    `UPDATE jobs SET phase = $3, progress_done = $4, progress_total = $5, updated_at = now() WHERE ${HELD} RETURNING id`,
    [lease.id, lease.token, phase, Math.round(done), Math.round(total)],
  );
  if (rows.length === 0) throw new LeaseLostError(lease);
}

export async function mergeJobResult(db: Pick<Sql, 'query'>, lease: JobLease, result: object): Promise<void> {
  const rows = await db.query(
    `UPDATE jobs SET result = coalesce(result, '{}'::jsonb) || $3::jsonb, updated_at = now() WHERE ${HELD} RETURNING id`,
    [lease.id, lease.token, JSON.stringify(result)],
  );
  if (rows.length === 0) throw new LeaseLostError(lease);
}

/** How a run ends: final, or back to the queue (at once, or after `retryInMs` as a retry). */
export type JobOutcome =
  | { state: 'succeeded'; result?: object }
  | { state: 'failed'; error: string; result?: object }
  | { state: 'queued'; error?: string; retryInMs?: number };

/**
 * Ends the run (merging `result` into the job's; a succeeded job's progress is complete, even when
 * its last report was throttled away); throws LeaseLostError when the run no longer holds the job.
 */
export async function finishJob(db: Pick<Sql, 'query'>, lease: JobLease, outcome: JobOutcome): Promise<void> {
  const result = 'result' in outcome && outcome.result ? JSON.stringify(outcome.result) : null;
  const error = 'error' in outcome ? (outcome.error ?? null) : null;
  const retryInMs = outcome.state === 'queued' ? (outcome.retryInMs ?? null) : null;
  const rows = await db.query(
    `UPDATE jobs SET state = $3::"JobState", error = $4, updated_at = now(), lease_expires_at = NULL,
            result = CASE WHEN $5::jsonb IS NULL THEN result ELSE coalesce(result, '{}'::jsonb) || $5::jsonb END,
            finished_at = CASE WHEN $3 = 'queued' THEN NULL ELSE now() END,
            progress_done = CASE WHEN $3 = 'succeeded' THEN progress_total ELSE progress_done END,
            run_after = CASE WHEN $6::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $6::float8 / 1000) END,
            retries = retries + CASE WHEN $6::float8 IS NULL THEN 0 ELSE 1 END
      WHERE ${HELD} RETURNING id`,
    [lease.id, lease.token, outcome.state, error, result, retryInMs],
  );
  if (rows.length === 0) throw new LeaseLostError(lease);
}

/**
 * Puts running jobs whose lease expired back in the queue (their worker died or stalled); returns
 * how many. A job row a run holds in a write (holdLease) is skipped until that write commits, so
 * no write is ever half-way when its job changes hands. Jobs claimed before leases existed count
 * as expired `legacyStaleMs` after their last update.
 */
export async function requeueExpiredJobs(db: Sql, legacyStaleMs: number): Promise<number> {
  const rows = await db.query(
    `UPDATE jobs SET state = 'queued', lease_expires_at = NULL, updated_at = now()
      WHERE id IN (SELECT id FROM jobs
                    WHERE state = 'running'
                      AND coalesce(lease_expires_at, updated_at + make_interval(secs => $1::float8 / 1000)) < now()
                    FOR UPDATE SKIP LOCKED)
      RETURNING id`,
    [legacyStaleMs],
  );
  return rows.length;
}

/**
 * Puts every running job back in the queue. Only for a database no other process can use (the
 * embedded one at boot): whoever ran those jobs is gone.
 */
export async function requeueRunningJobs(db: Sql): Promise<number> {
  const rows = await db.query(`UPDATE jobs SET state = 'queued', lease_expires_at = NULL, updated_at = now() WHERE state = 'running' RETURNING id`);
  await db.query(`UPDATE job_parts SET state = 'queued', lease_expires_at = NULL WHERE state = 'running'`);
  return rows.length;
}

/** A part of a job (table job_parts) as a worker claimed it. */
export interface JobPartRow {
  jobId: string;
  /** The job's kind (the part's handler is the kind's). */
  kind: string;
  datasetId: string | null;
  part: number;
  params: Record<string, unknown>;
  /** Claims of this part so far: the claiming run's fencing token. */
  token: number;
}

/** One run's hold on a part: its job, its number and the token of its claim. */
export interface PartLease {
  jobId: string;
  part: number;
  token: number;
}

/** The part was claimed again after its lease expired (or its job is gone): this run writes nothing. */
export class PartLostError extends Error {
  constructor(readonly lease: PartLease) {
    super(`part ${lease.part} of job ${lease.jobId} is no longer held by claim ${lease.token}`);
    this.name = 'PartLostError';
  }
}

/**
 * Splits a job into parts numbered from `firstPart` (a later stage of the job adds its parts after
 * the earlier ones); idempotent: parts that exist are kept, with their state. Call under the job's lease.
 */
export async function createJobParts(tx: Sql, jobId: string, params: readonly object[], firstPart = 0): Promise<void> {
  if (params.length === 0) return;
  await tx.query(
    `INSERT INTO job_parts (job_id, part, params)
     SELECT $1, $3::int + p.ordinality - 1, p.value FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS p
     ON CONFLICT (job_id, part) DO NOTHING`,
    [jobId, JSON.stringify(params), firstPart],
  );
}

/**
 * Claims a part that is queued, or running with an expired lease, of a running job (of `jobId`
 * only, when given), with a lease of `leaseMs` and a new token. Parts another worker is claiming
 * or writing are skipped, never waited for.
 */
export async function claimJobPart(db: Sql, leaseMs: number, jobId: string | null = null): Promise<JobPartRow | undefined> {
  const rows = await db.query<JobPartRow>(
    `WITH claimed AS (
       UPDATE job_parts p SET state = 'running', token = p.token + 1, lease_expires_at = now() + make_interval(secs => $1::float8 / 1000)
        WHERE (p.job_id, p.part) = (
          SELECT q.job_id, q.part FROM job_parts q JOIN jobs j ON j.id = q.job_id
           WHERE q.state <> 'done' AND (q.state = 'queued' OR q.lease_expires_at < now())
             AND j.state = 'running' AND ($2::uuid IS NULL OR q.job_id = $2::uuid)
           ORDER BY q.job_id, q.part LIMIT 1 FOR UPDATE OF q SKIP LOCKED)
        RETURNING p.job_id, p.part, p.params, p.token)
     SELECT c.job_id::text AS "jobId", j.kind, j.dataset_id::text AS "datasetId", c.part, c.params, c.token
       FROM claimed c JOIN jobs j ON j.id = c.job_id`,
    [leaseMs, jobId],
  );
  return rows[0];
}

const PART_HELD = `job_id = $1 AND part = $2 AND state = 'running' AND token = $3`;

/** The fence of a part's write: checks the claim still holds and locks the part row until the transaction ends. */
export async function holdPart(tx: Sql, lease: PartLease): Promise<void> {
  const rows = await tx.query(`SELECT 1 FROM job_parts WHERE ${PART_HELD} FOR UPDATE`, [lease.jobId, lease.part, lease.token]);
  if (rows.length === 0) throw new PartLostError(lease);
}

/** Extends a held part's lease (its worker's heartbeat); false when the claim is no longer held. */
export async function renewPartLease(db: Pick<Sql, 'query'>, lease: PartLease, leaseMs: number): Promise<boolean> {
  const rows = await db.query(`UPDATE job_parts SET lease_expires_at = now() + make_interval(secs => $4::float8 / 1000) WHERE ${PART_HELD} RETURNING part`, [
    lease.jobId,
    lease.part,
    lease.token,
    leaseMs,
  ]);
  return rows.length > 0;
}

/** Marks a held part done with what it reports back; in the transaction of its writes, after holdPart. */
export async function finishJobPart(tx: Sql, lease: PartLease, result: object): Promise<void> {
  const rows = await tx.query(
    `UPDATE job_parts SET state = 'done', result = $4::jsonb, finished_at = now(), lease_expires_at = NULL WHERE ${PART_HELD} RETURNING part`,
    [lease.jobId, lease.part, lease.token, JSON.stringify(result)],
  );
  if (rows.length === 0) throw new PartLostError(lease);
}

/** Gives a held part back to the queue at once (a run that stops early); false when it was not held anymore. */
export async function releaseJobPart(db: Sql, lease: PartLease): Promise<boolean> {
  const rows = await db.query(`UPDATE job_parts SET state = 'queued', lease_expires_at = NULL WHERE ${PART_HELD} RETURNING part`, [
    lease.jobId,
    lease.part,
    lease.token,
  ]);
  return rows.length > 0;
}

/** Marks a held part failed (its handler threw): its job fails when it sees it. */
export async function failJobPart(db: Sql, lease: PartLease, error: string): Promise<void> {
  await db.query(
    `UPDATE job_parts SET state = 'failed', result = jsonb_build_object('error', $4::text), finished_at = now(), lease_expires_at = NULL WHERE ${PART_HELD}`,
    [lease.jobId, lease.part, lease.token, error],
  );
}

/** How many parts the job has, how many are done, and the first that failed (if one did). */
export async function countJobParts(db: Sql, jobId: string): Promise<{ total: number; done: number; failed: { part: number; error: string } | null }> {
  const [row] = await db.query<{ total: number; done: number; failedPart: number | null; failedError: string | null }>(
    `SELECT count(*)::int AS total, (count(*) FILTER (WHERE state = 'done'))::int AS done,
            min(part) FILTER (WHERE state = 'failed') AS "failedPart",
            (array_agg(result->>'error' ORDER BY part) FILTER (WHERE state = 'failed'))[1] AS "failedError"
       FROM job_parts WHERE job_id = $1`,
    [jobId],
  );
  return { total: row.total, done: row.done, failed: row.failedPart === null ? null : { part: row.failedPart, error: row.failedError ?? 'unknown error' } };
}

/** The results of the job's done parts, in part order. */
export async function readJobPartResults(db: Sql, jobId: string): Promise<Record<string, unknown>[]> {
  const rows = await db.query<{ result: Record<string, unknown> }>(`SELECT result FROM job_parts WHERE job_id = $1 AND state = 'done' ORDER BY part`, [jobId]);
  return rows.map((r) => r.result);
}

/** The params of every part of the job, in part order. */
export async function readJobPartParams(db: Sql, jobId: string): Promise<Record<string, unknown>[]> {
  const rows = await db.query<{ params: Record<string, unknown> }>('SELECT params FROM job_parts WHERE job_id = $1 ORDER BY part', [jobId]);
  return rows.map((r) => r.params);
}

/** Deletes the job's parts (once their results are folded into the job's). Call under the job's lease. */
export async function deleteJobParts(tx: Sql, jobId: string): Promise<void> {
  await tx.query('DELETE FROM job_parts WHERE job_id = $1', [jobId]);
}
