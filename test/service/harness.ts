import type { Database } from '../../src/store/database.js';
import { openDatabase } from '../../src/store/open.js';
import { watchJob, type JobView } from '../../src/service/jobs.js';
import { startServiceLayer, type ServiceLayer } from '../../src/service/runtime.js';
import type { TestBackend } from '../helpers/backends.js';
import { silentLogger } from '../helpers/logger.js';
import type { EmbedderOptions } from '../../src/embedding/embedder.js';

export interface Harness {
  db: Database;
  layer: ServiceLayer;
  close(): Promise<void>;
}

/** A fresh database with the service layer (kernel, job worker) running on it. */
export async function startHarness(
  backend: TestBackend,
  jobs: Partial<{ pollMs: number; staleMs: number; annIndexBatch: number }> = {},
  embedding: EmbedderOptions | null = null,
): Promise<Harness> {
  const fresh = await backend.fresh();
  const { db } = await openDatabase(fresh.config);
  const layer = await startServiceLayer(db, silentLogger, {
    kernelThreads: 2,
    jobs: { pollMs: 50, staleMs: 60_000, annIndexBatch: 500, ...jobs },
    embedding,
  });
  return {
    db,
    layer,
    async close() {
      await layer.stop();
      await db.close();
      await fresh.cleanup();
    },
  };
}

/** Follows a job to its end and returns its last state. */
export async function waitForJob(db: Database, id: string): Promise<JobView> {
  let last: JobView | undefined;
  for await (const view of watchJob(db, id, 50)) last = view;
  return last!;
}

/** Row i of a row-major matrix as a plain array (what API callers send). */
export function row(matrix: Float32Array, i: number, dim: number): number[] {
  return Array.from(matrix.subarray(i * dim, (i + 1) * dim));
}
