import type { Logger } from 'pino';
import { OrtDistanceKernel } from '../kernels/ort.js';
import type { Database } from '../store/database.js';
import { requeueRunningJobs } from '../store/jobs.js';
import { VARIABLES } from '../config/spec.js';
import { createContext, type ServiceContext } from './context.js';
import { indexPendingVectors } from './duplicates.js';
import { JobWorker, type RetryPolicy } from './jobs.js';
import { ingestHandler, startIngest } from './ingest-jobs.js';
import type { Metrics } from '../metrics.js';
import { REFIT_DEFAULTS, rescorePart, runRefit } from './refit.js';
import { dedupPart, runDedup } from './dedup.js';
import { startEmbedder, type EmbedderOptions } from '../embedding/embedder.js';

export interface ServiceLayerOptions {
  kernelThreads: number;
  /** `staleMs`: the lease of a running job (JOB_STALE_MS); `retry`: transient database errors (default: JOB_RETRY_*'s defaults). */
  jobs: { pollMs: number; staleMs: number; annIndexBatch: number; retry?: RetryPolicy; refitSampleBytes?: number };
  /** The image encoder to load; null for a process that only takes precomputed embeddings. */
  embedding: EmbedderOptions | null;
  /** API keys required (default true); only an explicit configuration turns them off. */
  authEnabled?: boolean;
  /** Where counters and timings go (absent: nothing is recorded). */
  metrics?: Metrics;
}

export interface ServiceLayer {
  ctx: ServiceContext;
  worker: JobWorker;
  /** Interrupts background work (jobs return to the queue or fail, statements in flight are cancelled) and frees the kernel. */
  stop(): Promise<void>;
}

/** The use cases' container, built here once, plus the background worker (jobs, HNSW catch-up). */
export async function startServiceLayer(db: Database, logger: Logger, options: ServiceLayerOptions): Promise<ServiceLayer> {
  const kernel = await OrtDistanceKernel.create({ intraOpNumThreads: options.kernelThreads });
  const embedder = options.embedding ? await startEmbedder(options.embedding) : null;
  if (embedder) logger.info({ model: embedder.identity, dim: embedder.dim }, 'image encoder loaded');
  const leaseMs = options.jobs.staleMs;
  const heartbeatMs = Math.max(100, Math.floor(leaseMs / 3));
  const retry = options.jobs.retry ?? {
    limit: VARIABLES.JOB_RETRY_LIMIT.default,
    baseMs: VARIABLES.JOB_RETRY_BASE_MS.default,
    maxMs: VARIABLES.JOB_RETRY_MAX_MS.default,
  };
  const refit = { ...REFIT_DEFAULTS, sampleBytes: options.jobs.refitSampleBytes ?? REFIT_DEFAULTS.sampleBytes };
  const metrics = options.metrics;
  if (metrics) {
    embedder?.batcher.observe(({ size, ms }) => metrics.embeddingBatch(size, ms / 1000));
    metrics.setSources({
      embeddingQueueDepth: embedder ? () => embedder.batcher.stats().queued : undefined,
      dbPool: () => ({ backend: db.backend, ...db.poolStats() }),
    });
  }
  // The container and the worker need each other: the closures below reach the worker, which is
  // built right after, and run only once requests or jobs arrive.
  const ctx = createContext(db, kernel, logger, embedder, () => worker.wake(), options.authEnabled ?? true, {
    metrics,
    ingestJobs: { start: (datasetName, items, transport) => startIngest(ctx, worker, datasetName, items, transport) },
  });
  const worker = new JobWorker(
    db,
    logger,
    { refit: (job, run) => runRefit(ctx, job, run, refit), ingest: ingestHandler(ctx, { retry }), dedup: (job, run) => runDedup(ctx, job, run) },
    { refit: (job, part, run) => rescorePart(ctx, job, part, run, refit), dedup: (job, part, run) => dedupPart(ctx, job, part, run) },
    {
      pollMs: options.jobs.pollMs,
      leaseMs,
      heartbeatMs,
      retry,
      // Centroid deltas whose folder died are swept up here; the HNSW index catches up.
      idleWork: async () => (await ctx.folds.sweep()) || (options.jobs.annIndexBatch > 0 && (await indexPendingVectors(ctx, options.jobs.annIndexBatch)) > 0),
      onFinished: metrics
        ? (job, state, ms, result) => {
            metrics.jobFinished(job.kind, state, ms / 1000);
            if (job.kind === 'refit' && state === 'succeeded' && result && 'timings' in result) metrics.refitTimings(result.timings);
          }
        : undefined,
    },
  );
  // The embedded database is locked to this process: a job still marked running was left by a
  // process that died, so it can be resumed at once instead of after its lease.
  if (db.backend === 'embedded') await requeueRunningJobs(db);
  worker.start();
  return {
    ctx,
    worker,
    async stop() {
      ctx.folds.stop();
      await worker.stop();
      await embedder?.close();
      await kernel.dispose();
    },
  };
}
