import { finishJob, getJob, heartbeat, mergeJobResult, reportProgress, type JobRow } from '../store/jobs.js';
import type { ServiceContext } from './context.js';
import { getDataset } from './datasets.js';
import { ServiceError } from './errors.js';
import { ingestItems, type AnyItem } from './images.js';
import type { ItemOutcome } from './ingest.js';
import { jobView, type JobView } from './jobs.js';

export const INGEST_JOB = 'ingest';
/** Items stored per step of a background ingest (one `ingestItems` call, one progress report). */
export const INGEST_CHUNK = 64;
/** How often an overloaded image queue is retried within one chunk before the job fails. */
const OVERLOAD_RETRIES = 20;

export interface IngestJobResult {
  counts: { stored: number; updated: number; failed: number };
  /** One entry per failed item, in request order. */
  errors: { externalId: string; index: number; code: string; message: string }[];
  prototypeVersion: number | null;
  /** Refits (or first fits) the chunks scheduled. */
  scheduledJobIds: string[];
}

const INTERRUPTED_MESSAGE =
  'the process running this ingest stopped before it finished; result.counts shows what was stored (each item listed there is kept), re-send the remaining items';

/**
 * Large ingests in the background: the request's items stay in this process's memory and are stored
 * in chunks of INGEST_CHUNK, each reported as progress (phase `ingest`, done / total items) on a job
 * row of kind `ingest`, so `GET /v1/jobs/{id}` follows it like a refit. The job's result holds the
 * counts so far (written after every chunk) and, per failed item, its code.
 *
 * The payload is not stored durably, so such a job cannot resume: the row is created `running` and
 * kept alive by a heartbeat; if the process dies, the job runner's stale-job requeue hands the row to
 * `failOrphanedIngest` (registered as the `ingest` handler), which fails it with a clear message
 * (at once at the next boot on the embedded database, after JOB_STALE_MS on native PostgreSQL). A
 * shutdown stops running ingests between chunks and fails them the same way.
 */
export class IngestJobs {
  private readonly running = new Map<string, { abort: AbortController; done: Promise<void> }>();
  private stopped = false;

  constructor(
    private readonly ctx: ServiceContext,
    private readonly options: { heartbeatMs: number; chunk?: number },
  ) {}

  /** Validates the dataset, creates the job row and starts storing; resolves with the queued view. */
  async start(datasetName: string, items: readonly AnyItem[], transport = 'rest'): Promise<JobView> {
    if (this.stopped) throw new ServiceError('unavailable', 'SHUTTING_DOWN', 'the server is shutting down');
    const dataset = await getDataset(this.ctx, datasetName);
    if (items.length === 0) throw new ServiceError('invalid', 'NO_ITEMS', 'the request holds no items', { field: 'body' });
    const [row] = await this.ctx.db.query<{ id: string }>(
      `INSERT INTO jobs (id, dataset_id, kind, state, params, phase, progress_done, progress_total, attempts, started_at)
       VALUES (gen_random_uuid(), $1, $2, 'running', $3, 'ingest', 0, $4, 1, now()) RETURNING id`,
      [dataset.id, INGEST_JOB, JSON.stringify({ items: items.length, transport }), items.length],
    );
    const job = (await getJob(this.ctx.db, row.id))!;
    const abort = new AbortController();
    const done = this.run(job, dataset.name, items, transport, abort.signal).finally(() => this.running.delete(job.id));
    this.running.set(job.id, { abort, done });
    return jobView(job, dataset.name);
  }

  /** Jobs still storing. */
  get active(): number {
    return this.running.size;
  }

  /** Stops every running ingest after its current chunk (each ends `failed`, with its counts so far). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const { abort } of this.running.values()) abort.abort();
    await Promise.all([...this.running.values()].map((r) => r.done));
  }

  private async run(job: JobRow, dataset: string, items: readonly AnyItem[], transport: string, signal: AbortSignal): Promise<void> {
    const { ctx } = this;
    const log = ctx.logger.child({ jobId: job.id, kind: INGEST_JOB });
    const started = Date.now();
    const chunk = this.options.chunk ?? INGEST_CHUNK;
    const beat = setInterval(() => void heartbeat(ctx.db, job.id).catch(() => undefined), this.options.heartbeatMs);
    const result: IngestJobResult = { counts: { stored: 0, updated: 0, failed: 0 }, errors: [], prototypeVersion: null, scheduledJobIds: [] };
    const fail = (index: number, code: string, message: string) => {
      result.counts.failed++;
      result.errors.push({ externalId: items[index].externalId, index, code, message });
    };
    // As in one request, an external id repeated in the upload is stored once, from its last occurrence.
    const last = new Map<string, number>();
    items.forEach((item, i) => last.set(item.externalId, i));
    const pending: number[] = [];
    items.forEach((item, i) => {
      if (last.get(item.externalId) === i) pending.push(i);
      else fail(i, 'DUPLICATE_EXTERNAL_ID', 'the same externalId appears later in this upload; the last one is stored');
    });
    let done = items.length - pending.length;
    let state: 'succeeded' | 'failed' = 'succeeded';
    log.info({ items: items.length }, 'ingest job started');
    try {
      await reportProgress(ctx.db, job.id, 'ingest', done, items.length);
      for (let from = 0; from < pending.length; from += chunk) {
        if (signal.aborted) throw new ServiceError('unavailable', 'INGEST_INTERRUPTED', `ingest interrupted by shutdown after ${done} of ${items.length} items; ${INTERRUPTED_MESSAGE}`);
        const at = pending.slice(from, from + chunk);
        const outcomes = await this.ingestChunk(dataset, at.map((i) => items[i]), signal);
        const counts = { stored: 0, updated: 0, failed: 0 };
        outcomes.items.forEach((outcome: ItemOutcome, j) => {
          if (outcome.status === 'error') {
            counts.failed++;
            fail(at[j], outcome.code, outcome.message);
          } else {
            counts[outcome.status]++;
            result.counts[outcome.status]++;
          }
        });
        ctx.metrics?.ingestItems(transport, counts);
        result.prototypeVersion = outcomes.prototypeVersion;
        if (outcomes.scheduledJobId && !result.scheduledJobIds.includes(outcomes.scheduledJobId)) result.scheduledJobIds.push(outcomes.scheduledJobId);
        done += at.length;
        await mergeJobResult(ctx.db, job.id, result);
        await reportProgress(ctx.db, job.id, 'ingest', done, items.length);
      }
      result.errors.sort((a, b) => a.index - b.index);
      await mergeJobResult(ctx.db, job.id, result);
      await finishJob(ctx.db, job.id, 'succeeded');
      log.info({ ms: Date.now() - started, counts: result.counts }, 'ingest job succeeded');
    } catch (error) {
      state = 'failed';
      const message = error instanceof ServiceError ? error.message : `ingest failed: ${(error as Error).message}`;
      result.errors.sort((a, b) => a.index - b.index);
      await mergeJobResult(ctx.db, job.id, result).catch(() => undefined);
      await finishJob(ctx.db, job.id, 'failed', message).catch((e) => log.error({ err: e }, 'could not record the failed ingest job'));
      log.error({ err: error, counts: result.counts }, 'ingest job failed');
    } finally {
      clearInterval(beat);
      ctx.metrics?.jobFinished(INGEST_JOB, state, (Date.now() - started) / 1000);
    }
  }

  /** One chunk through the ordinary ingest; a full image queue is waited out (with its retry hint), not failed. */
  private async ingestChunk(dataset: string, items: readonly AnyItem[], signal: AbortSignal) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await ingestItems(this.ctx, dataset, items);
      } catch (error) {
        if (!(error instanceof ServiceError) || error.kind !== 'overloaded' || attempt >= OVERLOAD_RETRIES || signal.aborted) throw error;
        const wait = Number((error.details as { retryAfterMs?: number } | undefined)?.retryAfterMs ?? 100);
        await new Promise((resolve) => setTimeout(resolve, Math.min(5000, Math.max(20, wait))));
      }
    }
  }
}

/**
 * The job runner's handler for `ingest` rows: it only ever claims one that the stale-job requeue
 * took from a process that died mid-ingest. Its payload is gone, so it fails with a clear error,
 * keeping the counts its result recorded.
 */
export async function failOrphanedIngest(job: JobRow): Promise<object> {
  const done = job.progressDone;
  throw new ServiceError('unavailable', 'INGEST_INTERRUPTED', `ingest interrupted after ${done} of ${job.progressTotal} items: ${INTERRUPTED_MESSAGE}`);
}
