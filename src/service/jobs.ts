import type { Logger } from 'pino';
import type { Database } from '../store/database.js';
import { isUuid } from '../store/datasets.js';
import { claimNextJob, finishJob, getJob, heartbeat, mergeJobResult, reportProgress, requeueStaleJobs, type JobRow } from '../store/jobs.js';
import { ServiceError } from './errors.js';

/** What a job handler gets besides its job row. */
export interface JobRun {
  /** Records progress (throttled); also proves the worker is alive. */
  progress(phase: string, done: number, total: number): Promise<void>;
  /** Merges facts into the job's result immediately (e.g. a checkpoint a restart can resume from). */
  checkpoint(result: object): Promise<void>;
  /** Aborted when the service shuts down; the job goes back to the queue and resumes on next start. */
  signal: AbortSignal;
}

export type JobHandler = (job: JobRow, run: JobRun) => Promise<object>;

export interface JobRunnerOptions {
  /** How often an idle worker looks for queued jobs (a wake() is immediate). */
  pollMs: number;
  /** How often a running job proves it is alive. */
  heartbeatMs: number;
  /** A running job silent for this long belongs to a dead worker and is queued again. */
  staleMs: number;
  /** Work to do when no job is queued (e.g. catching the ANN index up); returns whether it did any. */
  idleWork?: () => Promise<boolean>;
  /**
   * Told when a job run ends: `succeeded` (with its result), `failed`, or `interrupted` (shutdown
   * put it back in the queue). For metrics; must not throw.
   */
  onFinished?: (job: JobRow, state: 'succeeded' | 'failed' | 'interrupted', ms: number, result: object | null) => void;
}

export class JobAbortedError extends Error {
  constructor() {
    super('job interrupted by shutdown');
    this.name = 'JobAbortedError';
  }
}

/**
 * The in-process worker for long work (refits, rescoring). Jobs live in the database, so they
 * survive restarts: a job interrupted by shutdown is re-queued at once, one whose process died is
 * re-queued once its heartbeat is `staleMs` old, and handlers resume from their checkpoints.
 * One job runs at a time per process (the work is CPU-bound on the distance kernel).
 */
export class JobRunner {
  private running = false;
  private loop: Promise<void> | undefined;
  private wakeUp: (() => void) | undefined;
  /** Set by wake(): the next sleep returns at once (a wake while busy is not lost). */
  private wakeRequested = false;
  private abort = new AbortController();

  constructor(
    private readonly db: Database,
    private readonly logger: Logger,
    private readonly handlers: Record<string, JobHandler>,
    private readonly options: JobRunnerOptions,
  ) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.abort = new AbortController();
    this.loop = this.run();
  }

  wake(): void {
    this.wakeRequested = true;
    this.wakeUp?.();
  }

  /** Interrupts the current job (it returns to the queue) and stops the loop. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.abort.abort();
    this.wake();
    await this.loop;
  }

  private async run(): Promise<void> {
    while (this.running) {
      try {
        const requeued = await requeueStaleJobs(this.db, this.options.staleMs);
        if (requeued > 0) this.logger.warn({ requeued }, 're-queued jobs of a worker that stopped');
        const job = await claimNextJob(this.db);
        if (job) {
          await this.execute(job);
          continue;
        }
        if (this.options.idleWork && (await this.options.idleWork())) continue;
      } catch (error) {
        this.logger.error({ err: error }, 'job worker error');
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

  private async execute(job: JobRow): Promise<void> {
    const handler = this.handlers[job.kind];
    const log = this.logger.child({ jobId: job.id, kind: job.kind, attempt: job.attempts });
    if (!handler) {
      await finishJob(this.db, job.id, 'failed', `unknown job kind ${job.kind}`);
      return;
    }
    let lastReport = 0;
    const beat = setInterval(() => void heartbeat(this.db, job.id).catch(() => undefined), this.options.heartbeatMs);
    const run: JobRun = {
      progress: async (phase, done, total) => {
        if (this.abort.signal.aborted) throw new JobAbortedError();
        const now = Date.now();
        if (now - lastReport < 200 && done < total) return;
        lastReport = now;
        await reportProgress(this.db, job.id, phase, done, total);
      },
      checkpoint: (result) => mergeJobResult(this.db, job.id, result),
      signal: this.abort.signal,
    };
    const started = Date.now();
    log.info('job started');
    try {
      const result = await handler(job, run);
      await mergeJobResult(this.db, job.id, result);
      await finishJob(this.db, job.id, 'succeeded');
      log.info({ ms: Date.now() - started }, 'job succeeded');
      this.finished(job, 'succeeded', started, result);
    } catch (error) {
      if (error instanceof JobAbortedError || this.abort.signal.aborted) {
        await finishJob(this.db, job.id, 'queued').catch(() => undefined);
        log.info('job interrupted; queued again');
        this.finished(job, 'interrupted', started, null);
      } else {
        const message = error instanceof ServiceError ? error.message : `${(error as Error).message}`;
        await finishJob(this.db, job.id, 'failed', message);
        log.error({ err: error }, 'job failed');
        this.finished(job, 'failed', started, null);
      }
    } finally {
      clearInterval(beat);
    }
  }

  private finished(job: JobRow, state: 'succeeded' | 'failed' | 'interrupted', started: number, result: object | null): void {
    try {
      this.options.onFinished?.(job, state, Date.now() - started, result);
    } catch (error) {
      this.logger.warn({ err: error }, 'job observer failed');
    }
  }
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
  const [owner] = job.datasetId ? await db.query<{ name: string }>('SELECT name FROM datasets WHERE id = $1', [job.datasetId]) : [];
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
