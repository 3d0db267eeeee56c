import type { Logger } from 'pino';
import { OrtDistanceKernel } from '../kernels/ort.js';
import type { Database } from '../store/database.js';
import { requeueStaleJobs } from '../store/jobs.js';
import { createContext, type ServiceContext } from './context.js';
import { indexPendingVectors } from './duplicates.js';
import { JobRunner } from './jobs.js';
import { REFIT_JOB } from './ingest.js';
import { runRefit } from './refit.js';
import { startEmbedder, type EmbedderOptions } from './images.js';

export interface ServiceLayerOptions {
  kernelThreads: number;
  jobs: { pollMs: number; staleMs: number; annIndexBatch: number };
  /** The image encoder to load; null for a process that only takes precomputed embeddings. */
  embedding: EmbedderOptions | null;
  /** API keys required (default true); only an explicit configuration turns them off. */
  authEnabled?: boolean;
}

export interface ServiceLayer {
  ctx: ServiceContext;
  runner: JobRunner;
  /** Interrupts background work (jobs return to the queue) and frees the kernel. */
  stop(): Promise<void>;
}

/** The use cases' shared context plus the background worker (jobs, HNSW catch-up). */
export async function startServiceLayer(db: Database, logger: Logger, options: ServiceLayerOptions): Promise<ServiceLayer> {
  const kernel = await OrtDistanceKernel.create({ intraOpNumThreads: options.kernelThreads });
  const embedder = options.embedding ? await startEmbedder(options.embedding) : null;
  if (embedder) logger.info({ model: embedder.identity, dim: embedder.dim }, 'image encoder loaded');
  const wake = { fn: () => undefined as void };
  const ctx = createContext(db, kernel, logger, embedder, () => wake.fn(), options.authEnabled ?? true);
  const runner = new JobRunner(
    db,
    logger,
    { [REFIT_JOB]: (job, run) => runRefit(ctx, job, run) },
    {
      pollMs: options.jobs.pollMs,
      staleMs: options.jobs.staleMs,
      heartbeatMs: Math.max(100, Math.floor(options.jobs.staleMs / 3)),
      idleWork: options.jobs.annIndexBatch > 0 ? async () => (await indexPendingVectors(ctx, options.jobs.annIndexBatch)) > 0 : undefined,
    },
  );
  wake.fn = () => runner.wake();
  // The embedded database is locked to this process: a job still marked running was left by a
  // process that died, so it can be resumed at once instead of after the stale timeout.
  if (db.backend === 'embedded') await requeueStaleJobs(db, 0);
  runner.start();
  return {
    ctx,
    runner,
    async stop() {
      await runner.stop();
      await embedder?.close();
      await kernel.dispose();
    },
  };
}
