import type { Logger } from 'pino';
import type { DistanceKernel } from '../kernels/types.js';
import type { Metrics } from '../metrics.js';
import type { Database } from '../store/database.js';
import type { Embedder } from './images.js';
import type { IngestJobs } from './ingest-jobs.js';
import { PrototypeCache } from './prototype-cache.js';

/** What every use case needs: storage, the distance kernel, a logger and a way to wake the job worker. */
export interface ServiceContext {
  db: Database;
  kernel: DistanceKernel;
  logger: Logger;
  prototypes: PrototypeCache;
  /** The image encoder, when this process loaded one. */
  embedder: Embedder | null;
  /** Tells the in-process job worker that a job was queued (it also polls). */
  wakeJobs(): void;
  /** False only when the configuration disables API keys (AUTH_DISABLED=true). */
  authEnabled: boolean;
  /** Where use cases report counters and timings (absent: nothing is recorded). */
  metrics?: Metrics;
  /** Background ingests with progress (set by the service layer). */
  ingestJobs?: IngestJobs;
}

export function createContext(
  db: Database,
  kernel: DistanceKernel,
  logger: Logger,
  embedder: Embedder | null = null,
  wakeJobs: () => void = () => undefined,
  authEnabled = true,
): ServiceContext {
  return { db, kernel, logger, prototypes: new PrototypeCache(), embedder, wakeJobs, authEnabled };
}
