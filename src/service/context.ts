import type { Logger } from 'pino';
import type { DistanceKernel } from '../kernels/types.js';
import type { Metrics } from '../metrics.js';
import type { Database } from '../store/database.js';
import { KeyTouches } from './auth.js';
import { ServiceError } from './errors.js';
import type { JobView } from './jobs.js';
import { CentroidFolds } from './centroid-folds.js';
import { PrototypeCache } from './prototype-cache.js';
import { RequestBudgets } from './rate-budget.js';
import { ScoreDistributions } from './score-distributions.js';
import type { AnyItem } from './ingest-items.js';
import type { Embedder } from '../embedding/embedder.js';

/** Large ingests with progress: a job of kind `ingest` whose items stay in this process (see ingest-jobs.ts). */
export interface BackgroundIngest {
  /** Validates the dataset, creates the job and starts storing; resolves with the running job. */
  start(datasetName: string, items: readonly AnyItem[], transport?: string): Promise<JobView>;
}

/**
 * What every use case needs: storage, the distance kernel, a logger, the job system's entry points
 * and the process's caches. Built once (createContext) and frozen: no field changes afterwards.
 */
export interface ServiceContext {
  readonly db: Database;
  readonly kernel: DistanceKernel;
  readonly logger: Logger;
  readonly prototypes: PrototypeCache;
  /** Applies ingest batches' centroid deltas, one folder per dataset across replicas. */
  readonly folds: CentroidFolds;
  /** Score distributions the score calls reuse for a few seconds. */
  readonly scoreDistributions: ScoreDistributions;
  /** The request budgets (RATE_LIMIT_PER_MINUTE) both transports charge. */
  readonly requestBudgets: RequestBudgets;
  /** When each API key's last use was last written (throttles those writes). */
  readonly keyTouches: KeyTouches;
  /** The image encoder, when this process loaded one. */
  readonly embedder: Embedder | null;
  /** Tells the in-process job worker that a job was queued (it also polls). */
  wakeJobs(): void;
  /** False only when the configuration disables API keys (AUTH_DISABLED=true). */
  readonly authEnabled: boolean;
  /** Where use cases report counters and timings (null: nothing is recorded). */
  readonly metrics: Metrics | null;
  /** Background ingests (a context without a job worker refuses them). */
  readonly ingestJobs: BackgroundIngest;
}

const NO_BACKGROUND_INGEST: BackgroundIngest = {
  start: async () => {
    throw new ServiceError('unavailable', 'NO_BACKGROUND_INGEST', 'this server runs no background ingest');
  },
};

/** The service container, frozen; what it is not given defaults to nothing recorded, no background ingest, fresh caches. */
export function createContext(
  db: Database,
  kernel: DistanceKernel,
  logger: Logger,
  embedder: Embedder | null = null,
  wakeJobs: () => void = () => undefined,
  authEnabled = true,
  services: { metrics?: Metrics; ingestJobs?: BackgroundIngest } = {},
): ServiceContext {
  const prototypes = new PrototypeCache();
  return Object.freeze({
    db,
    kernel,
    logger,
    prototypes,
    folds: new CentroidFolds({ db, prototypes, logger, wakeJobs }),
    scoreDistributions: new ScoreDistributions(),
    requestBudgets: new RequestBudgets(db),
    keyTouches: new KeyTouches(),
    embedder,
    wakeJobs,
    authEnabled,
    metrics: services.metrics ?? null,
    ingestJobs: services.ingestJobs ?? NO_BACKGROUND_INGEST,
  });
}
