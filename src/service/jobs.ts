import type { Logger } from 'pino';
import { cancelTransaction, transactionIdentity, type Database, type Sql, type TransactionIdentity } from '../store/database.js';
import { findDatasetById, isUuid, lockDataset, type DatasetRow } from '../store/datasets.js';
import {
  claimJobPart,
  claimNextJob,
  countJobParts,
  enqueueJob,
  failJobPart,
  finishJobPart,
  holdPart,
  finishJob,
  getJob,
  holdLease,
  insertRunningJob,
  LeaseLostError,
  PartLostError,
  releaseJobPart,
  renewLease,
  renewPartLease,
  reportProgress,
  requeueExpiredJobs,
  type JobLease,
  type JobOutcome,
  type JobPartRow,
  type JobRow,
  type PartLease,
} from '../store/jobs.js';
import { classifyDatabaseError, ServiceError } from './errors.js';
import {
  hasParts,
  isJobKind,
  JOB_KINDS,
  jobOf,
  PARTED_JOB_KINDS,
  partOf,
  type Job,
  type JobKind,
  type JobParams,
  type JobPart,
  type JobPartResult,
  type JobPayload,
  type JobResult,
  type PartedJobKind,
} from './job-kinds.js';

/** Why a run was told to stop: the process shuts down, or another worker took its job over. */
export type AbortReason = 'shutdown' | 'lease-lost';

/**
 * What a job handler gets besides its job row. Every database write of the run goes through
 * `write`/`writeLocked` (a transaction opened elsewhere starts with `fence`) or `progress`: each is
 * fenced by the run's lease, so once the job was taken over nothing of this run is written anymore
 * (LeaseLostError) and `signal` fires. A checkpoint is `mergeJobResult(tx, lease, …)` inside a
 * write, committed together with what it describes.
 */
export interface JobRun {
  /** The job and this run's fencing token. */
  lease: JobLease;
  /** Aborted on shutdown (the job returns to the queue) or when the lease is lost (the job is someone else's). */
  signal: AbortSignal;
  abortReason(): AbortReason | undefined;
  /** Records progress (throttled). */
  progress(phase: string, done: number, total: number): Promise<void>;
  /** Runs `fn` in a transaction that first checks and locks the lease. */
  write<T>(fn: (tx: Sql) => Promise<T>): Promise<T>;
  /**
   * `write` under the dataset's row lock, taken before the lease check: the lock order of ingest
   * and dataset deletion (dataset row, then job rows), so none of them deadlock with this run.
   */
  writeLocked<T>(datasetId: string, fn: (tx: Sql, dataset: DatasetRow) => Promise<T>): Promise<T>;
  /** Runs a read in a transaction of its own that the abort can cancel (a long scan must not outlive the run). */
  read<T>(fn: (tx: Sql) => Promise<T>): Promise<T>;
  /** The lease check for a transaction opened elsewhere; call it before the transaction's first write. */
  fence(tx: Sql): Promise<void>;
  /**
   * Works on the job's parts (created with createJobParts) until every one is done: claims them
   * one by one like any replica's worker does (the others' workers share the work meanwhile),
   * telling `onProgress` the parts done so far after each. Throws when a part failed, or on abort.
   */
  runParts(onProgress: (done: number, total: number) => Promise<void>): Promise<void>;
}

/** What a part's handler gets: the part's claim, and the one transaction that writes its work. */
export interface PartRun {
  lease: PartLease;
  /** Aborted on shutdown. */
  signal: AbortSignal;
  /**
   * Runs `fn` in a transaction that first checks and locks the part's claim, and marks the part
   * done with `result` in the same transaction: a part's work is written once, by the claim that
   * holds it (PartLostError otherwise).
   */
  finish(fn: (tx: Sql) => Promise<void>, result: object): Promise<void>;
}

/** A parted kind's part handler: does the part's work and ends with `run.finish`. */
export type JobPartHandler<K extends PartedJobKind> = (job: { id: string; datasetId: string | null; kind: K }, part: JobPart<K>, run: PartRun) => Promise<JobPartResult<K>>;

/** One part handler per kind with parts. */
export type JobPartHandlers = { [K in PartedJobKind]: JobPartHandler<K> };

/** A run as its worker holds it: the handler's view (without parts, which the worker adds) plus the lease's lifecycle. */
export interface LeasedRun extends Omit<JobRun, 'runParts'> {
  abort(reason: AbortReason): void;
  /** Ends the run (fenced like every write; works after an abort). */
  finish(outcome: JobOutcome): Promise<void>;
  /** Stops the heartbeat. */
  close(): void;
}

export interface LeaseTiming {
  /** How long a claim or a heartbeat holds the job. */
  leaseMs: number;
  /** How often the heartbeat extends the lease. */
  heartbeatMs: number;
}

export class JobAbortedError extends Error {
  constructor(readonly reason: AbortReason) {
    super(reason === 'shutdown' ? 'job interrupted by shutdown' : 'job taken over by another worker (its lease expired)');
    this.name = 'JobAbortedError';
  }
}

/**
 * Holds a claimed job: a heartbeat on `db.control` (outside the request pool, so request traffic
 * cannot starve it) extends the lease, and aborts the run when the job is no longer its own. Every
 * run of the JobWorker holds its job through this.
 */
export function leaseJob(db: Database, logger: Logger, job: Pick<JobRow, 'id' | 'attempts'>, timing: LeaseTiming): LeasedRun {
  const lease: JobLease = { id: job.id, token: job.attempts };
  const controller = new AbortController();
  let reason: AbortReason | undefined;
  // This run's native transactions in flight (backend pid, transaction start), for cancelling on abort.
  const inFlight = new Set<TransactionIdentity>();
  let lastReport = 0;

  const abort = (why: AbortReason) => {
    if (reason) return;
    reason = why;
    controller.abort(new JobAbortedError(why));
    // A statement in flight runs to its end otherwise: minutes for a bad plan, forever behind a lock.
    // Matching the transaction's start keeps the cancel off a request that reuses the connection
    // after the transaction just ended.
    for (const transaction of inFlight) void cancelTransaction(db.control, transaction).catch(() => undefined);
  };
  const check = () => {
    if (reason) throw new JobAbortedError(reason);
  };
  const lost = (error: unknown): never => {
    if (error instanceof LeaseLostError) abort('lease-lost');
    throw error;
  };
  const transaction = async <T>(fn: (tx: Sql) => Promise<T>): Promise<T> => {
    check();
    return db
      .transaction(async (tx) => {
        // PGlite runs in this thread: nothing to cancel there.
        const self = db.backend === 'native' ? await transactionIdentity(tx) : undefined;
        if (self) inFlight.add(self);
        try {
          check(); // an abort before the transaction was registered
          return await fn(tx);
        } finally {
          if (self) inFlight.delete(self);
        }
      })
      .catch(lost);
  };

  const beat = heartbeat(timing.heartbeatMs, logger, 'job heartbeat failed', async () => {
    if (reason) return;
    if (!(await renewLease(db.control, lease, timing.leaseMs))) {
      logger.warn('job lease lost: another worker took the job over; stopping');
      abort('lease-lost');
    }
  });

  return {
    lease,
    signal: controller.signal,
    abortReason: () => reason,
    abort,
    async progress(phase, done, total) {
      check();
      const now = Date.now();
      if (now - lastReport < 200 && done < total) return;
      lastReport = now;
      await reportProgress(db.control, lease, phase, done, total).catch(lost);
    },
    write: (fn) =>
      transaction(async (tx) => {
        await holdLease(tx, lease);
        return fn(tx);
      }),
    writeLocked: (datasetId, fn) =>
      transaction(async (tx) => {
        const dataset = await lockDataset(tx, datasetId);
        if (!dataset) throw new ServiceError('not_found', 'DATASET_NOT_FOUND', `dataset ${datasetId} was deleted`);
        await holdLease(tx, lease);
        return fn(tx, dataset);
      }),
    read: (fn) => transaction(fn),
    async fence(tx) {
      check();
      await holdLease(tx, lease).catch(lost);
    },
    finish: (outcome) => finishJob(db.control, lease, outcome).catch(lost),
    close: () => clearInterval(beat),
  };
}

/** A kind's handler: `payload` is what the submitting process holds, undefined for a job claimed from the queue. */
export type JobHandler<K extends JobKind> = (job: Job<K>, run: JobRun, payload: JobPayload<K> | undefined) => Promise<JobResult<K>>;

/** One handler per job kind (a kind without one does not compile; JobWorker checks again at boot). */
export type JobHandlers = { [K in JobKind]: JobHandler<K> };

/** A handler's failure that also records what the run got done (merged into the job's result). */
export class JobFailure<K extends JobKind> extends Error {
  constructor(
    message: string,
    readonly result: Partial<JobResult<K>>,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = 'JobFailure';
  }
}

/** Queues a job of `kind` for the dataset, or returns the one of that kind already queued or running (see enqueueJob). */
export function queueJob<K extends JobKind>(tx: Sql, datasetId: string, kind: K, params: JobParams<K>): Promise<{ job: JobRow; created: boolean }> {
  return enqueueJob(tx, datasetId, kind, params);
}

/** Codes with which the server (SQLSTATE) or Prisma asks for the transaction to be tried again. */
const RETRY_CODES = new Set(['40001', '40P01', 'P2034']); // serialization failure, deadlock; Prisma's write conflict or deadlock

/**
 * Whether a job should be tried again after `error`: the database was unreachable, lost, shutting
 * down, or the pool had no connection in time (classifyDatabaseError, the service's one classifier
 * of driver errors), or the server asked for a retry (serialization failure, deadlock).
 */
export function isTransientDbError(error: unknown): boolean {
  if (classifyDatabaseError(error)) return true;
  for (let e = error, depth = 0; e !== null && typeof e === 'object' && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && RETRY_CODES.has(code)) return true;
  }
  return false;
}

/** Transient database errors: how often a job is queued again, and how long it waits before each retry. */
export interface RetryPolicy {
  /** Retries before the job fails with the last error. */
  limit: number;
  /** Wait before the first retry; doubled for each further one. */
  baseMs: number;
  /** Longest wait. */
  maxMs: number;
}

export function retryDelayMs(policy: RetryPolicy, retries: number): number {
  return Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(retries, 30));
}

/**
 * How a run ended: `succeeded`, `failed`, `interrupted` (shutdown put it back in the queue),
 * `retried` (a transient database error put it back with a delay) or `lost` (another worker took
 * the job over; this run wrote nothing more).
 */
export type RunEnd = 'succeeded' | 'failed' | 'interrupted' | 'retried' | 'lost';

export interface JobWorkerOptions extends LeaseTiming {
  /** How often an idle worker looks for queued jobs (a wake() is immediate). */
  pollMs: number;
  /** How often a job waiting on parts other workers hold looks again (default 100 ms). */
  partPollMs?: number;
  retry: RetryPolicy;
  /** Work to do when no job is queued (e.g. catching the ANN index up); returns whether it did any. */
  idleWork?: () => Promise<boolean>;
  /** Told when a job run ends, with the handler's result when it succeeded. For metrics; must not throw. */
  onFinished?: (job: JobRow, state: RunEnd, ms: number, result: JobResult<JobKind> | null) => void;
}

/** A job submitted with its payload: the row it starts as (running, held by this process). */
export interface Submission<K extends JobKind> {
  datasetId: string;
  kind: K;
  params: JobParams<K>;
  /** The progress the row starts with (phase, 0 of `total`). */
  phase: string;
  total: number;
}

/**
 * The in-process worker of every job. Jobs live in the database, so they survive restarts and
 * replicas share them; each run holds its job through leaseJob (lease, heartbeat, fenced writes)
 * and ends through one path (finish, log line, onFinished).
 *
 * Queued jobs: the worker claims one with a lease (JOB_STALE_MS) and its heartbeat extends it; a
 * job interrupted by shutdown is re-queued at once, one that hit a transient database error after
 * a backoff. On native PostgreSQL a job whose lease expired (its process died or stalled) is
 * re-queued and claimed again with a new fencing token, which makes every later write of the old
 * run fail; handlers resume from their checkpoints. One claimed job runs at a time per process
 * (the work is CPU-bound on the distance kernel).
 *
 * Submitted jobs (`submit`) carry a payload only this process has (a background ingest's items):
 * their row is created running, leased to this process with token 1, and they start at once,
 * beside the claimed job. Such a run cannot be resumed elsewhere, so shutdown and transient errors
 * fail it instead of re-queueing it; a row whose process died is claimed later without a payload,
 * and its kind's handler fails it.
 */
export class JobWorker {
  private running = false;
  private loop: Promise<void> | undefined;
  private wakeUp: (() => void) | undefined;
  /** Set by wake(): the next sleep returns at once (a wake while busy is not lost). */
  private wakeRequested = false;
  private current: LeasedRun | undefined;
  private readonly submitted = new Map<string, { run: LeasedRun; done: Promise<void> }>();
  /** Submissions whose row is still being created: stop() waits for them, then for their runs. */
  private readonly submitting = new Set<Promise<unknown>>();

  /** Aborted by stop(): a part in progress stops (and is given back) with the worker. */
  private partsAbort = new AbortController();

  constructor(
    private readonly db: Database,
    private readonly logger: Logger,
    private readonly handlers: JobHandlers,
    private readonly partHandlers: JobPartHandlers,
    private readonly options: JobWorkerOptions,
  ) {
    const missing: string[] = JOB_KINDS.filter((kind) => typeof handlers[kind] !== 'function');
    missing.push(...PARTED_JOB_KINDS.filter((kind) => typeof partHandlers[kind] !== 'function').map((kind) => `${kind} (parts)`));
    if (missing.length > 0) throw new Error(`the job worker has no handler for job kind ${missing.join(', ')}`);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.partsAbort = new AbortController();
    this.loop = this.run();
  }

  wake(): void {
    this.wakeRequested = true;
    this.wakeUp?.();
  }

  /**
   * Interrupts every run (statements in flight are cancelled; a claimed job returns to the queue,
   * a submitted one fails) and stops the loop; submit() is refused until the next start().
   */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.partsAbort.abort();
    this.current?.abort('shutdown');
    for (const { run } of this.submitted.values()) run.abort('shutdown');
    this.wake();
    await Promise.allSettled([...this.submitting]);
    await Promise.all([this.loop, ...[...this.submitted.values()].map((s) => s.done)]);
  }

  /** Creates the job's row (running, leased to this process) and starts its run with `payload`; resolves with the row. */
  async submit<K extends JobKind>(job: Submission<K>, payload: JobPayload<K>): Promise<JobRow> {
    if (!this.running) throw new ServiceError('unavailable', 'SHUTTING_DOWN', 'the server is shutting down');
    const registered = (async () => {
      const row = await insertRunningJob(this.db, job, this.options.leaseMs);
      const log = this.logger.child({ jobId: row.id, kind: row.kind, attempt: row.attempts });
      const run = leaseJob(this.db, log, row, this.options);
      if (!this.running) run.abort('shutdown'); // stop() came while the row was being created
      const done = this.execute(row, run, log, payload).finally(() => this.submitted.delete(row.id));
      this.submitted.set(row.id, { run, done });
      return row;
    })();
    this.submitting.add(registered);
    try {
      return await registered;
    } finally {
      this.submitting.delete(registered);
    }
  }

  private async run(): Promise<void> {
    while (this.running) {
      try {
        // Only native PostgreSQL can have other workers. The embedded database is this process's
        // alone: a job of its own whose heartbeat is late (PGlite runs on the main thread) must
        // not be handed to itself again; what a dead process left is re-queued at boot.
        if (this.db.backend === 'native') {
          const requeued = await requeueExpiredJobs(this.db, this.options.leaseMs);
          if (requeued > 0) this.logger.warn({ requeued }, 're-queued jobs whose lease expired');
        }
        // Parts first: they belong to jobs already running, which wait for them.
        const part = await claimJobPart(this.db, this.options.leaseMs);
        if (part) {
          await this.executePart(part, this.partsAbort.signal);
          continue;
        }
        const job = await claimNextJob(this.db, this.options.leaseMs);
        if (job) {
          const log = this.logger.child({ jobId: job.id, kind: job.kind, attempt: job.attempts });
          const run = leaseJob(this.db, log, job, this.options);
          this.current = run;
          if (!this.running) run.abort('shutdown'); // stop() came while this job was being claimed
          await this.execute(job, run, log, undefined).finally(() => (this.current = undefined));
          continue;
        }
        if (this.options.idleWork && (await this.options.idleWork())) continue;
      } catch (error) {
        // A database outage is logged once, at its start and end, by DatabaseAvailability.
        if (classifyDatabaseError(error)) this.logger.debug({ err: error }, 'job worker waiting for the database');
        else this.logger.error({ err: error }, 'job worker error');
      }
      await this.sleep(this.options.pollMs);
    }
  }

  private sleep(ms: number): Promise<void> {
    if (this.wakeRequested) {
      this.wakeRequested = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wakeUp = undefined;
        this.wakeRequested = false;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakeUp = done;
    });
  }

  /** One run of `job`, claimed (no payload: durable) or submitted (with its payload). */
  private async execute(job: JobRow, run: LeasedRun, log: Logger, payload: JobPayload<JobKind> | undefined): Promise<void> {
    const durable = payload === undefined;
    const started = Date.now();
    try {
      const kind = job.kind;
      if (!isJobKind(kind)) {
        await this.end(job, run, log, started, { state: 'failed', error: `unknown job kind ${kind}` }, 'failed', null);
        return;
      }
      log.info('job started');
      let result: JobResult<JobKind>;
      try {
        // The handler of the row's own kind, with the payload submitted for that kind.
        const handler = this.handlers[kind] as JobHandler<JobKind>;
        result = await handler(jobOf(kind, job), this.jobRun(job, run), payload);
      } catch (error) {
        await this.settle(job, run, log, started, error, durable);
        return;
      }
      if (run.abortReason() === 'lease-lost') {
        log.warn('job taken over by another worker before this run could record its end');
        this.finished(job, 'lost', started, null);
        return;
      }
      await this.end(job, run, log, started, { state: 'succeeded', result }, 'succeeded', result);
    } finally {
      run.close();
    }
  }

  /** The handler's view of a run of `job`: the lease's, plus its parts run through this worker. */
  jobRun(job: JobRow, run: LeasedRun): JobRun {
    return { ...run, runParts: (onProgress) => this.runParts(job, run, onProgress) };
  }

  /** JobRun.runParts of `run`: this job's parts, claimed one by one, until all are done. */
  private async runParts(job: JobRow, run: LeasedRun, onProgress: (done: number, total: number) => Promise<void>): Promise<void> {
    const pollMs = this.options.partPollMs ?? 100;
    for (;;) {
      if (run.signal.aborted) throw new JobAbortedError(run.abortReason()!);
      const part = await claimJobPart(this.db, this.options.leaseMs, job.id);
      if (part) await this.executePart(part, run.signal);
      if (run.signal.aborted) throw new JobAbortedError(run.abortReason()!);
      const { total, done, failed } = await countJobParts(this.db, job.id);
      await onProgress(done, total);
      if (failed) throw new Error(`part ${failed.part} of the job failed: ${failed.error}`);
      if (done === total) return;
      if (!part) await new Promise((resolve) => setTimeout(resolve, pollMs)); // the open parts are other workers'
    }
  }

  /**
   * Runs one claimed part. A part whose claim was lost wrote nothing and is someone else's; one
   * stopped by an abort or a transient database error goes back to the queue; any other error
   * fails the part, and its job with it.
   */
  private async executePart(row: JobPartRow, signal: AbortSignal): Promise<void> {
    const lease: PartLease = { jobId: row.jobId, part: row.part, token: row.token };
    const log = this.logger.child({ jobId: row.jobId, kind: row.kind, part: row.part, claim: row.token });
    // A heartbeat on the control connection, as a job run's: a part that runs longer than its lease
    // (a large cluster's SemDeDup) is not claimed again meanwhile. A paused process's lease runs out.
    const beat = heartbeat(this.options.heartbeatMs, log, 'job part heartbeat failed', async () => {
      await renewPartLease(this.db.control, lease, this.options.leaseMs);
    });
    const run: PartRun = {
      lease,
      signal,
      finish: (fn, result) =>
        this.db.transaction(async (tx) => {
          // An abort cancels the write in flight (it may wait behind a lock for long), as a job run's.
          const self = this.db.backend === 'native' ? await transactionIdentity(tx) : undefined;
          const cancel = () => void (self && cancelTransaction(this.db.control, self).catch(() => undefined));
          signal.addEventListener('abort', cancel);
          try {
            if (signal.aborted) throw new JobAbortedError('shutdown');
            await holdPart(tx, lease);
            await fn(tx);
            await finishJobPart(tx, lease, result);
          } finally {
            signal.removeEventListener('abort', cancel);
          }
        }),
    };
    try {
      if (!hasParts(row.kind)) throw new Error(`job kind ${row.kind} has no parts`);
      const kind = row.kind;
      const handler = this.partHandlers[kind] as JobPartHandler<PartedJobKind>;
      await handler({ id: row.jobId, datasetId: row.datasetId, kind }, partOf(kind, row.params), run);
    } catch (error) {
      if (error instanceof PartLostError) {
        log.warn('job part taken over by another worker; this run wrote nothing');
      } else if (signal.aborted || error instanceof JobAbortedError || isTransientDbError(error)) {
        await releaseJobPart(this.db, lease).catch(() => undefined); // else it waits for its lease to expire
        // The caller sees its own abort (and its reason) when it looks at its signal next.
        if (!signal.aborted) log.warn({ err: error }, 'job part hit a transient error; given back to the queue');
      } else {
        log.error({ err: error }, 'job part failed');
        await failJobPart(this.db, lease, messageOf(error)).catch(() => undefined);
      }
    } finally {
      clearInterval(beat);
    }
  }

  /**
   * What a handler's error means for its job: requeued (a durable job's shutdown or transient
   * error), failed, or nothing (lease lost).
   */
  private async settle(job: JobRow, run: LeasedRun, log: Logger, started: number, error: unknown, durable: boolean): Promise<void> {
    const reason = run.abortReason();
    if (reason === 'shutdown' && durable) {
      await this.end(job, run, log, started, { state: 'queued' }, 'interrupted', null);
    } else if (reason === 'lease-lost' || error instanceof LeaseLostError) {
      log.warn({ err: error }, 'job taken over by another worker; this run stopped');
      this.finished(job, 'lost', started, null);
    } else if (durable && isTransientDbError(error) && job.retries < this.options.retry.limit) {
      const retryInMs = retryDelayMs(this.options.retry, job.retries);
      log.warn({ err: error, retryInMs, retry: job.retries + 1 }, 'job hit a transient database error; queued again');
      await this.end(job, run, log, started, { state: 'queued', error: messageOf(error), retryInMs }, 'retried', null);
    } else {
      log.error({ err: error }, 'job failed');
      const result = error instanceof JobFailure ? (error.result as object) : undefined;
      await this.end(job, run, log, started, { state: 'failed', error: messageOf(error), result }, 'failed', null);
    }
  }

  private async end(job: JobRow, run: LeasedRun, log: Logger, started: number, outcome: JobOutcome, state: RunEnd, result: JobResult<JobKind> | null): Promise<void> {
    try {
      await run.finish(outcome);
    } catch (error) {
      if (error instanceof LeaseLostError) {
        log.warn('job taken over by another worker before this run could record its end');
        this.finished(job, 'lost', started, null);
      } else {
        // The lease expires and the job is re-queued (native) or recovered at the next boot (embedded).
        log.error({ err: error, outcome: outcome.state }, 'could not record the end of the job');
      }
      return;
    }
    log.info({ ms: Date.now() - started, state }, `job ${state}`);
    this.finished(job, state, started, result);
  }

  private finished(job: JobRow, state: RunEnd, started: number, result: JobResult<JobKind> | null): void {
    try {
      this.options.onFinished?.(job, state, Date.now() - started, result);
    } catch (error) {
      this.logger.warn({ err: error }, 'job observer failed');
    }
  }
}

/**
 * Runs `renew` every `intervalMs` until the returned timer is cleared; a renewal still waiting (an
 * unreachable database) is not stacked with more, and a failed one is logged.
 */
function heartbeat(intervalMs: number, logger: Logger, failure: string, renew: () => Promise<void>): NodeJS.Timeout {
  let beating = false;
  return setInterval(() => {
    if (beating) return;
    beating = true;
    renew()
      .catch((error) => logger.warn({ err: error }, failure))
      .finally(() => {
        beating = false;
      });
  }, intervalMs);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A job as callers see it: its row without internals, progress as done / total / fraction. */
export type JobView = Pick<JobRow, 'id' | 'kind' | 'state' | 'phase' | 'result' | 'error' | 'attempts' | 'createdAt' | 'startedAt' | 'finishedAt'> & {
  /** Name of the dataset the job works on (null when it was deleted). */
  dataset: string | null;
  progress: { done: number; total: number; fraction: number };
};

export function jobView(job: JobRow, dataset: string | null): JobView {
  return {
    id: job.id,
    dataset,
    kind: job.kind,
    state: job.state,
    phase: job.phase,
    progress: { done: job.progressDone, total: job.progressTotal, fraction: job.progressTotal > 0 ? job.progressDone / job.progressTotal : 0 },
    result: job.result,
    error: job.error,
    attempts: job.attempts,
    createdAt: job.createdAt,
    startedAt: job.startedAt,
    finishedAt: job.finishedAt,
  };
}

export async function getJobView(db: Database, id: string): Promise<JobView> {
  const job = isUuid(id) ? await getJob(db, id) : undefined;
  if (!job) throw new ServiceError('not_found', 'JOB_NOT_FOUND', `job ${id} does not exist`, { id });
  const owner = job.datasetId ? await findDatasetById(db, job.datasetId) : undefined;
  return jobView(job, owner?.name ?? null);
}

/** Yields the job's state whenever it changes, until it succeeds or fails. */
export async function* watchJob(db: Database, id: string, intervalMs = 250, signal?: AbortSignal): AsyncGenerator<JobView> {
  let last = '';
  for (;;) {
    const view = await getJobView(db, id);
    const key = `${view.state}/${view.phase}/${view.progress.done}/${view.progress.total}`;
    if (key !== last) {
      last = key;
      yield view;
    }
    if (view.state === 'succeeded' || view.state === 'failed' || view.state === 'cancelled' || signal?.aborted) return;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
