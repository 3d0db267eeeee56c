import { LeaseLostError, mergeJobResult, reportProgress } from '../store/jobs.js';
import type { ServiceContext } from './context.js';
import { getDataset, type Dataset } from './datasets.js';
import { ServiceError } from './errors.js';
import type { IngestJobResult, IngestPayload, Job } from './job-kinds.js';
import { isTransientDbError, JobAbortedError, JobFailure, jobView, retryDelayMs, type JobHandler, type JobRun, type JobView, type JobWorker, type RetryPolicy } from './jobs.js';
import { assertImagesAccepted, ingestInto } from './ingest.js';
import { countOutcomes, type AnyItem } from './ingest-items.js';

/** Items stored per step of a background ingest (one `ingestItems` call, one progress report). */
const INGEST_CHUNK = 64;
/** How often an overloaded image queue is retried within one chunk before the job fails. */
const OVERLOAD_RETRIES = 20;

const INTERRUPTED_MESSAGE =
  'the process running this ingest stopped before it finished; result.counts shows what was stored (each item listed there is kept), re-send the remaining items';

/**
 * Large ingests in the background: a job of kind `ingest` submitted to the job worker with the
 * request's items as its payload, which stays in this process's memory. The items are stored in
 * chunks of INGEST_CHUNK, each reported as progress (phase `ingest`, done / total items), so
 * `GET /v1/jobs/{id}` follows it like a refit. The job's result holds the counts so far (written
 * after every chunk, in the same fenced write as the progress) and, per failed item, its code.
 *
 * The payload is not stored durably, so such a job cannot resume: the worker holds it like any
 * other run (leaseJob: heartbeat, fenced writes) but fails it on shutdown (between chunks) instead
 * of re-queueing it. If the process dies, the lease expires and the requeue hands the row to a
 * worker without the payload, which fails it with INGEST_INTERRUPTED (at once at the next boot on
 * the embedded database, after JOB_STALE_MS on native PostgreSQL). Every chunk's transaction,
 * result merge and the finish are fenced by the lease, so an ingest whose job was taken over that
 * way (a stalled process) stores nothing more. A chunk that hit a transient database error is
 * stored again after a backoff (items are upserted, so a retry is harmless).
 */
export async function startIngest(ctx: ServiceContext, worker: JobWorker, datasetName: string, items: readonly AnyItem[], transport = 'rest'): Promise<JobView> {
  const dataset = await getDataset(ctx, datasetName);
  if (items.length === 0) throw new ServiceError('invalid', 'NO_ITEMS', 'the request holds no items', { field: 'body' });
  // What would fail every image item is refused before a job is accepted, as a synchronous ingest refuses it.
  if (items.some((item) => item.image !== undefined)) assertImagesAccepted(ctx, dataset);
  const job = await worker.submit(
    { datasetId: dataset.id, kind: 'ingest', params: { items: items.length, transport }, phase: 'ingest', total: items.length },
    { dataset: dataset.name, items, transport },
  );
  return jobView(job, dataset.name);
}

/** The `ingest` kind's handler: stores a submitted payload, or fails a row whose payload died with its process. */
export function ingestHandler(ctx: ServiceContext, options: { retry: RetryPolicy; chunk?: number }): JobHandler<'ingest'> {
  return (job, run, payload) => (payload ? storeInChunks(ctx, options, run, job.datasetId, payload) : failOrphanedIngest(job));
}

async function storeInChunks(ctx: ServiceContext, options: { retry: RetryPolicy; chunk?: number }, run: JobRun, datasetId: string | null, payload: IngestPayload): Promise<IngestJobResult> {
  const { items, transport } = payload;
  const chunk = options.chunk ?? INGEST_CHUNK;
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
  try {
    await run.progress('ingest', done, items.length);
    // Resolved once for every chunk: the dataset the job was submitted for, not a later one of its name.
    const dataset = await getDataset(ctx, payload.dataset);
    if (dataset.id !== datasetId) throw new ServiceError('not_found', 'DATASET_NOT_FOUND', `dataset ${payload.dataset} was deleted during the ingest`, { name: payload.dataset });
    for (let from = 0; from < pending.length; from += chunk) {
      if (run.signal.aborted) throw new JobAbortedError(run.abortReason()!);
      const at = pending.slice(from, from + chunk);
      const outcomes = await ingestChunk(ctx, options.retry, dataset, at.map((i) => items[i]), run);
      const counts = countOutcomes(outcomes.items);
      outcomes.items.forEach((outcome, j) => {
        if (outcome.status === 'error') fail(at[j], outcome.code, outcome.message);
      });
      result.counts.stored += counts.stored;
      result.counts.updated += counts.updated;
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
  } catch (error) {
    // Another process failed the job as orphaned: its row is not this run's to write anymore.
    if (error instanceof LeaseLostError || run.abortReason() === 'lease-lost') throw error;
    const message =
      run.abortReason() === 'shutdown'
        ? `ingest interrupted by shutdown after ${done} of ${items.length} items; ${INTERRUPTED_MESSAGE}`
        : error instanceof ServiceError
          ? error.message
          : `ingest failed: ${(error as Error).message}`;
    result.errors.sort((a, b) => a.index - b.index);
    throw new JobFailure<'ingest'>(message, result, { cause: error });
  }
  result.errors.sort((a, b) => a.index - b.index);
  return result;
}

/**
 * One chunk through the ordinary ingest, its transaction fenced by the run's lease. A full image
 * queue is waited out (with its retry hint) and a transient database error retried with backoff,
 * instead of failing the job.
 */
async function ingestChunk(ctx: ServiceContext, retry: RetryPolicy, dataset: Dataset, items: readonly AnyItem[], run: JobRun) {
  for (let overloaded = 0, transient = 0; ; ) {
    try {
      return await ingestInto(ctx, dataset, items, run.fence);
    } catch (error) {
      if (run.signal.aborted) throw error;
      let wait: number;
      if (error instanceof ServiceError && error.kind === 'overloaded' && overloaded < OVERLOAD_RETRIES) {
        overloaded++;
        wait = Math.min(5000, Math.max(20, Number((error.details as { retryAfterMs?: number } | undefined)?.retryAfterMs ?? 100)));
      } else if (isTransientDbError(error) && transient < retry.limit) {
        wait = retryDelayMs(retry, transient++);
        ctx.logger.warn({ err: error, jobId: run.lease.id, retryInMs: wait }, 'ingest chunk hit a transient database error; retrying');
      } else {
        throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}

/**
 * An `ingest` row claimed from the queue: its process died (or stalled past its lease) mid-ingest
 * and the payload is gone, so it fails with a clear error, keeping the counts its result recorded.
 */
async function failOrphanedIngest(job: Job<'ingest'>): Promise<never> {
  throw new ServiceError('unavailable', 'INGEST_INTERRUPTED', `ingest interrupted after ${job.progressDone} of ${job.progressTotal} items: ${INTERRUPTED_MESSAGE}`);
}
