import type { Job as PrismaJob } from '../generated/prisma/client.js';
import type { Database, Sql } from './database.js';

export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

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
  attempts: number;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  updatedAt: Date;
}

const COLUMNS = `id, dataset_id AS "datasetId", kind, state::text AS state, params, phase,
  progress_done::float8 AS "progressDone", progress_total::float8 AS "progressTotal", result, error, attempts,
  created_at AS "createdAt", started_at AS "startedAt", finished_at AS "finishedAt", updated_at AS "updatedAt"`;

export const ACTIVE_STATES: readonly JobState[] = ['queued', 'running'];

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

/** Takes the oldest queued job (skipping ones another worker holds) and marks it running. */
export async function claimNextJob(db: Sql): Promise<JobRow | undefined> {
  const rows = await db.query<JobRow>(
    `UPDATE jobs SET state = 'running', started_at = now(), updated_at = now(), attempts = attempts + 1, error = NULL
      WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY created_at FOR UPDATE SKIP LOCKED LIMIT 1)
      RETURNING ${COLUMNS}`,
  );
  return rows[0];
}

/** Records progress; also the worker's heartbeat (updated_at). */
export async function reportProgress(db: Sql, id: string, phase: string, done: number, total: number): Promise<void> {
  await db.query(
    `UPDATE jobs SET phase = $2, progress_done = $3, progress_total = $4, updated_at = now() WHERE id = $1 AND state = 'running'`,
    [id, phase, Math.round(done), Math.round(total)],
  );
}

export async function heartbeat(db: Sql, id: string): Promise<void> {
  await db.query(`UPDATE jobs SET updated_at = now() WHERE id = $1 AND state = 'running'`, [id]);
}

export async function mergeJobResult(db: Sql, id: string, result: object): Promise<void> {
  await db.query(`UPDATE jobs SET result = coalesce(result, '{}'::jsonb) || $2::jsonb, updated_at = now() WHERE id = $1`, [
    id,
    JSON.stringify(result),
  ]);
}

export async function finishJob(db: Sql, id: string, state: 'succeeded' | 'failed' | 'queued', error?: string): Promise<void> {
  await db.query(
    `UPDATE jobs SET state = $2::"JobState", error = $3, updated_at = now(),
            finished_at = CASE WHEN $2 = 'queued' THEN NULL ELSE now() END
      WHERE id = $1`,
    [id, state, error ?? null],
  );
}

/**
 * Puts running jobs whose worker stopped beating for `staleMs` back in the queue (a crashed or
 * killed process); returns how many.
 */
export async function requeueStaleJobs(db: Sql, staleMs: number): Promise<number> {
  const rows = await db.query(
    `UPDATE jobs SET state = 'queued', updated_at = now()
      WHERE state = 'running' AND updated_at < now() - make_interval(secs => $1::float8 / 1000) RETURNING id`,
    [staleMs],
  );
  return rows.length;
}
