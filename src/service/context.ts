import type { Logger } from 'pino';
import type { DistanceKernel } from '../kernels/types.js';
import type { Database } from '../store/database.js';
import { PrototypeCache } from './prototype-cache.js';

/** What every use case needs: storage, the distance kernel, a logger and a way to wake the job worker. */
export interface ServiceContext {
  db: Database;
  kernel: DistanceKernel;
  logger: Logger;
  prototypes: PrototypeCache;
  /** Tells the in-process job worker that a job was queued (it also polls). */
  wakeJobs(): void;
}

export function createContext(db: Database, kernel: DistanceKernel, logger: Logger, wakeJobs: () => void = () => undefined): ServiceContext {
  return { db, kernel, logger, prototypes: new PrototypeCache(), wakeJobs };
}
