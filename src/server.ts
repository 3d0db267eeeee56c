import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from './config/index.js';
import { buildApp } from './http/app.js';
import { startGrpcServer, type GrpcServer } from './grpc/server.js';
import type { Database } from './store/database.js';
import { migrationsUpToDate } from './store/migrations.js';
import { openDatabase } from './store/open.js';
import { mintInitialAdminKey } from './service/auth.js';
import { startServiceLayer, type ServiceLayer } from './service/runtime.js';
import { AdmissionLimiter, admissionConfig } from './service/admission.js';
import { DatabaseAvailability } from './service/errors.js';
import { PromMetrics } from './metrics.js';
import { startMetricsListener, type MetricsListener } from './http/plugins/metrics.js';

export interface RunningService {
  config: Config;
  db: Database;
  http: FastifyInstance;
  grpc: GrpcServer;
  services: ServiceLayer;
  /** The bound HTTP port (useful when PORT=0). */
  httpPort: number;
  /** This service's metrics registry (null with METRICS_ENABLED=false). */
  metrics: PromMetrics | null;
  /** The separate /metrics listener's port (METRICS_PORT > 0), else null. */
  metricsPort: number | null;
  /** The admission limit shared by REST and gRPC. */
  admission: AdmissionLimiter;
  /** Database outage tracking (logs "database unavailable" / "database reachable again" once per transition). */
  availability: DatabaseAvailability;
  /** Stops accepting, lets in-flight work finish (up to the grace period), closes the database. */
  stop(): Promise<void>;
}

const READINESS_TIMEOUT_MS = 2000;

class TimeoutError extends Error {}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * /readyz: 503 only when shutting down, when the database is unreachable, or when a migration is
 * not applied. The check runs on the database's control connection (native: a pool of its own,
 * outside the request pool), so an instance that is merely busy — every request connection in
 * use, the admission limit refusing work — stays ready and is not pulled from its load balancer.
 * Concurrent probes share one check. On the embedded backend the control connection is the one
 * in-process connection, shared with requests: a check that only waits there (busy) counts as ready.
 */
function readinessOf(db: Database, migrations: Awaited<ReturnType<typeof openDatabase>>['migrations'], availability: DatabaseAvailability, stopping: () => boolean) {
  let running: Promise<string | null> | null = null;
  async function probe(): Promise<string | null> {
    try {
      const current = await withTimeout(migrationsUpToDate(db.control, migrations), READINESS_TIMEOUT_MS, 'database');
      availability.reachable();
      return current ? null : 'database migrations are not applied';
    } catch (error) {
      if (error instanceof TimeoutError && db.backend === 'embedded') return null;
      const classified = availability.failed(error);
      return `database unreachable: ${classified ? String(classified.details.reason) : (error as Error).message}`;
    }
  }
  return {
    async check(): Promise<string | null> {
      if (stopping()) return 'shutting down';
      running ??= probe().finally(() => {
        running = null;
      });
      return running;
    },
  };
}

export const INITIAL_ADMIN_KEY_FILE = 'initial-admin-key';

/**
 * A database that never had an API key gets one admin key at first boot, its secret written to
 * DATA_DIR/initial-admin-key (mode 0600) — never to the log — so a fresh install is usable at once.
 * Revoke it once you have minted your own keys; it is not recreated while any key exists.
 */
async function ensureInitialAdminKey(db: Database, dataDir: string, logger: Logger): Promise<void> {
  const key = await mintInitialAdminKey(db);
  if (!key) return;
  const file = path.resolve(dataDir, INITIAL_ADMIN_KEY_FILE);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, `${key.secret}\n`, { mode: 0o600 });
  logger.warn({ keyId: key.id, file }, 'no API key existed: minted an admin key; its secret is in this file (revoke it once you have your own keys)');
}

/** Boots everything in order: database (+migrations) → HTTP → gRPC. Shutdown runs in reverse. */
export async function startService(config: Config, logger: Logger): Promise<RunningService> {
  const availability = new DatabaseAvailability(logger);
  const { db, migrations, appliedNow } = await openDatabase(config.database, undefined, {
    observer: { connected: () => availability.reachable(), failed: (error) => availability.failed(error) },
  });
  const admission = new AdmissionLimiter(admissionConfig(config.admission, config.database));
  logger.info({ backend: db.backend, appliedMigrations: appliedNow, admission: admission.config }, 'database ready');
  if (config.api.authDisabled) {
    logger.warn('AUTH_DISABLED=true: API keys are not checked and every caller is an admin; use this only on a trusted network');
  } else {
    await ensureInitialAdminKey(db, config.dataDir, logger);
  }
  const metrics = config.metrics.enabled ? new PromMetrics() : null;
  let services: ServiceLayer;
  try {
    services = await startServiceLayer(db, logger, {
      kernelThreads: config.kernelThreads,
      jobs: config.jobs,
      embedding: config.embedding,
      authEnabled: !config.api.authDisabled,
      metrics: metrics ?? undefined,
    });
  } catch (error) {
    await db.close();
    throw error;
  }

  let stopping = false;
  const readiness = readinessOf(db, migrations, availability, () => stopping);

  const http = await buildApp({
    logger,
    readiness,
    ctx: services.ctx,
    api: config.api,
    metrics: metrics ? { recorder: metrics, exposition: config.metrics.port === 0 ? metrics : null } : undefined,
    admission,
    availability,
  });
  let grpc: GrpcServer | undefined;
  let metricsListener: MetricsListener | undefined;
  try {
    await http.listen({ host: config.host, port: config.port });
    grpc = await startGrpcServer(config.host, config.grpcPort, logger, {
      ctx: services.ctx,
      api: config.api,
      metrics: metrics ?? undefined,
      admission,
      availability,
    });
    if (metrics && config.metrics.port > 0) metricsListener = await startMetricsListener(config.host, config.metrics.port, metrics, logger);
  } catch (error) {
    await grpc?.shutdown(0);
    await http.close();
    await services.stop();
    await db.close();
    throw error;
  }
  const address = http.server.address();
  const httpPort = typeof address === 'object' && address ? address.port : config.port;
  const grpcServer = grpc;

  let stopped: Promise<void> | undefined;
  return {
    config,
    db,
    http,
    grpc: grpcServer,
    services,
    httpPort,
    metrics,
    metricsPort: metricsListener?.port ?? null,
    admission,
    availability,
    stop() {
      stopped ??= (async () => {
        stopping = true;
        const force = setTimeout(() => {
          logger.warn('grace period over: closing remaining HTTP connections');
          http.server.closeAllConnections();
        }, config.shutdownGraceMs);
        try {
          await Promise.all([http.close(), grpcServer.shutdown(config.shutdownGraceMs), metricsListener?.close()]);
        } finally {
          clearTimeout(force);
          await services.stop();
          await db.close();
        }
      })();
      return stopped;
    },
  };
}
