import type { Logger } from 'pino';
import { insertRunningJob, LeaseLostError, mergeJobResult, reportProgress, type JobRow } from '../store/jobs.js';
import type { ServiceContext } from './context.js';
import { getDataset } from './datasets.js';
import { ServiceError } from './errors.js';
import { ingestItems, type AnyItem } from './images.js';
import type { ItemOutcome } from './ingest.js';
import { isTransientDbError, JobAbortedError, jobView, leaseJob, retryDelayMs, type JobView, type LeasedRun, type LeaseTiming, type RetryPolicy } from './jobs.js';

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
 * The payload is not stored durably, so such a job cannot resume: the row is created `running`,
 * leased to this process (token 1) and held like a runner's job (leaseJob: heartbeat, fenced
 * writes). If the process dies, the lease expires and the job runner's requeue hands the row to
 * `failOrphanedIngest` (registered as the `ingest` handler), which fails it with a clear message
 * (at once at the next boot on the embedded database, after JOB_STALE_MS on native PostgreSQL).
 * Every chunk's transaction, result merge and the finish are fenced by the lease, so an ingest
 * whose job was taken over that way (a stalled process) stores nothing more. A shutdown stops
 * running ingests between chunks and fails them the same way. A chunk that hit a transient
 * database error is stored again after a backoff (items are upserted, so a retry is harmless).
 */
export class IngestJobs {
  private readonly running = new Map<string, { run: LeasedRun; done: Promise<void> }>();
  private stopped = false;

  constructor(
    private readonly ctx: ServiceContext,
    private readonly options: LeaseTiming & { retry: RetryPolicy; chunk?: number },
  ) {}

  /** Validates the dataset, creates the job row and starts storing; resolves with the running view. */
  async start(datasetName: string, items: readonly AnyItem[], transport = 'rest'): Promise<JobView> {
    if (this.stopped) throw new ServiceError('unavailable', 'SHUTTING_DOWN', 'the server is shutting down');
    const dataset = await getDataset(this.ctx, datasetName);
    if (items.length === 0) throw new ServiceError('invalid', 'NO_ITEMS', 'the request holds no items', { field: 'body' });
    const job = await insertRunningJob(
      this.ctx.db,
      { datasetId: dataset.id, kind: INGEST_JOB, params: { items: items.length, transport }, phase: 'ingest', total: items.length },
      this.options.leaseMs,
    );
    const log = this.ctx.logger.child({ jobId: job.id, kind: INGEST_JOB });
    const run = leaseJob(this.ctx.db, log, job, this.options);
    const done = this.run(run, log, dataset.name, items, transport).finally(() => {
      run.close();
      this.running.delete(job.id);
    });
    this.running.set(job.id, { run, done });
    return jobView(job, dataset.name);
  }

  /** Jobs still storing. */
  get active(): number {
    return this.running.size;
  }

  /** Stops every running ingest after its current chunk (each ends `failed`, with its counts so far). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const { run } of this.running.values()) run.abort('shutdown');
    await Promise.all([...this.running.values()].map((r) => r.done));
  }

  private async run(run: LeasedRun, log: Logger, dataset: string, items: readonly AnyItem[], transport: string): Promise<void> {
    const { ctx } = this;
    const started = Date.now();
    const chunk = this.options.chunk ?? INGEST_CHUNK;
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
    let state: 'succeeded' | 'failed' | 'lost' = 'succeeded';
    log.info({ items: items.length }, 'ingest job started');
    try {
      await run.progress('ingest', done, items.length);
      for (let from = 0; from < pending.length; from += chunk) {
        if (run.signal.aborted) throw new JobAbortedError(run.abortReason()!);
        const at = pending.slice(from, from + chunk);
        const outcomes = await this.ingestChunk(dataset, at.map((i) => items[i]), run);
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
        // Counts and progress in one fenced write, so they always agree (an orphaned job's error quotes the progress).
        await run.write(async (tx) => {
          await mergeJobResult(tx, run.lease, result);
          await reportProgress(tx, run.lease, 'ingest', done, items.length);
        });
      }
      result.errors.sort((a, b) => a.index - b.index);
      await run.finish({ state: 'succeeded', result });
      log.info({ ms: Date.now() - started, counts: result.counts }, 'ingest job succeeded');
    } catch (error) {
      if (error instanceof LeaseLostError || run.abortReason() === 'lease-lost') {
        // Another process failed the job as orphaned: its row is not this run's to write anymore.
        state = 'lost';
        log.warn({ err: error, counts: result.counts }, 'ingest job taken over by another worker; stopped');
        return;
      }
      state = 'failed';
      const message =
        run.abortReason() === 'shutdown'
          ? `ingest interrupted by shutdown after ${done} of ${items.length} items; ${INTERRUPTED_MESSAGE}`
          : error instanceof ServiceError
            ? error.message
            : `ingest failed: ${(error as Error).message}`;
      result.errors.sort((a, b) => a.index - b.index);
      await run.finish({ state: 'failed', error: message, result }).catch((e) => log.error({ err: e }, 'could not record the failed ingest job'));
      log.error({ err: error, counts: result.counts }, 'ingest job failed');
    } finally {
      ctx.metrics?.jobFinished(INGEST_JOB, state, (Date.now() - started) / 1000);
    }
  }

  /**
   * One chunk through the ordinary ingest, its transaction fenced by the run's lease. A full image
   * queue is waited out (with its retry hint) and a transient database error retried with backoff,
   * instead of failing the job.
   */
  private async ingestChunk(dataset: string, items: readonly AnyItem[], run: LeasedRun) {
    for (let overloaded = 0, transient = 0; ; ) {
      try {
        return await ingestItems(this.ctx, dataset, items, run.fence);
      } catch (error) {
        if (run.signal.aborted) throw error;
        let wait: number;
        if (error instanceof ServiceError && error.kind === 'overloaded' && overloaded < OVERLOAD_RETRIES) {
          overloaded++;
          wait = Math.min(5000, Math.max(20, Number((error.details as { retryAfterMs?: number } | undefined)?.retryAfterMs ?? 100)));
        } else if (isTransientDbError(error) && transient < this.options.retry.limit) {
          wait = retryDelayMs(this.options.retry, transient++);
          this.ctx.logger.warn({ err: error, jobId: run.lease.id, retryInMs: wait }, 'ingest chunk hit a transient database error; retrying');
        } else {
          throw error;
        }
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
  }
}

/**
 * The job runner's handler for `ingest` rows: it only ever claims one whose process died (or
 * stalled past its lease) mid-ingest. Its payload is gone, so it fails with a clear error, keeping
 * the counts its result recorded.
 */
export async function failOrphanedIngest(job: JobRow): Promise<object> {
  const done = job.progressDone;
  throw new ServiceError('unavailable', 'INGEST_INTERRUPTED', `ingest interrupted after ${done} of ${job.progressTotal} items: ${INTERRUPTED_MESSAGE}`);
}
