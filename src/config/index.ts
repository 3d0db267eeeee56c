import { MODEL_ENV_VARS, modelSpecFromEnv, type ModelSpec } from '../embedding/model.js';
import { ModelSpecError } from '../embedding/errors.js';
import { LOG_LEVELS, VARIABLES, type VariableSpec } from './spec.js';

export type LogLevel = (typeof LOG_LEVELS)[number];

export type DatabaseConfig = { backend: 'embedded'; dataDir: string } | { backend: 'native'; url: string; poolMax: number };

export interface Config {
  host: string;
  port: number;
  grpcPort: number;
  logLevel: LogLevel;
  database: DatabaseConfig;
  /** Where the embedded database and the initial admin key file live. */
  dataDir: string;
  /** The admission limit (0 = auto-sized; see src/service/admission.ts). */
  admission: { maxInFlight: number; maxQueued: number; queueTimeoutMs: number };
  shutdownGraceMs: number;
  kernelThreads: number;
  jobs: {
    pollMs: number;
    /** Lease of a running job (JOB_STALE_MS). */
    staleMs: number;
    annIndexBatch: number;
    /** Transient database errors: retries, first and longest backoff. */
    retry: { limit: number; baseMs: number; maxMs: number };
  };
  api: { authDisabled: boolean; rateLimitPerMinute: number; bodyLimitBytes: number; maxItemsPerRequest: number; requestTimeoutMs: number };
  /** Prometheus metrics: off, on the HTTP port behind an admin key (port 0), or on a separate plain listener. */
  metrics: { enabled: boolean; port: number };
  embedding: {
    modelsDir: string;
    /** A user-supplied ONNX model; null means the default (converted on first start). */
    custom: ModelSpec | null;
    threads: number;
    maxBatch: number;
    maxWaitMs: number;
    queueLimit: number;
    maxPixels: number;
  };
}

/** All invalid variables of one boot, each named with what it accepts. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

function parseVariable(name: string, spec: VariableSpec, raw: string | undefined, problems: string[]): unknown {
  const value = raw?.trim();
  if (value === undefined || value === '') {
    return spec.kind === 'optional-url' || spec.kind === 'optional-string' ? undefined : spec.default;
  }
  switch (spec.kind) {
    case 'int': {
      const n = /^-?\d+$/.test(value) ? Number(value) : Number.NaN;
      if (!Number.isSafeInteger(n) || n < spec.min || n > spec.max) {
        problems.push(`${name}=${JSON.stringify(value)}: expected an integer from ${spec.min} to ${spec.max}`);
        return spec.default;
      }
      return n;
    }
    case 'enum':
      if (!spec.values.includes(value)) {
        problems.push(`${name}=${JSON.stringify(value)}: expected one of ${spec.values.join(', ')}`);
        return spec.default;
      }
      return value;
    case 'bool':
      if (!['true', 'false', '1', '0'].includes(value)) {
        problems.push(`${name}=${JSON.stringify(value)}: expected true or false`);
        return spec.default;
      }
      return value === 'true' || value === '1';
    case 'optional-url': {
      let url: URL | undefined;
      try {
        url = new URL(value);
      } catch {
        url = undefined;
      }
      if (!url || !spec.protocols.includes(url.protocol)) {
        problems.push(`${name}: expected a URL starting with ${spec.protocols.map((p) => `${p}//`).join(' or ')}`);
        return undefined;
      }
      return value;
    }
    case 'string':
    case 'optional-string':
      return value;
  }
}

/** Reads and validates the whole configuration once; throws ConfigError listing every bad variable. */
export function loadConfig(env: Env = process.env): Config {
  const problems: string[] = [];
  const v = Object.fromEntries(
    Object.entries(VARIABLES).map(([name, spec]) => [name, parseVariable(name, spec, env[name], problems)]),
  ) as Record<keyof typeof VARIABLES, unknown>;
  const modelsDir = v.MODELS_DIR as string;
  let custom: ModelSpec | null = null;
  if (env[MODEL_ENV_VARS.path]?.trim()) {
    try {
      custom = modelSpecFromEnv(env, modelsDir);
    } catch (error) {
      if (!(error instanceof ModelSpecError)) throw error;
      problems.push(...error.problems);
    }
  } else {
    const stray = Object.values(MODEL_ENV_VARS).filter((name) => env[name]?.trim());
    if (stray.length > 0) problems.push(`${stray.join(', ')}: only apply together with ${MODEL_ENV_VARS.path}`);
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const databaseUrl = v.DATABASE_URL as string | undefined;
  return {
    host: v.HOST as string,
    port: v.PORT as number,
    grpcPort: v.GRPC_PORT as number,
    logLevel: v.LOG_LEVEL as LogLevel,
    database: databaseUrl
      ? { backend: 'native', url: databaseUrl, poolMax: v.DATABASE_POOL_MAX as number }
      : { backend: 'embedded', dataDir: v.DATA_DIR as string },
    dataDir: v.DATA_DIR as string,
    admission: {
      maxInFlight: v.ADMISSION_MAX_IN_FLIGHT as number,
      maxQueued: v.ADMISSION_MAX_QUEUED as number,
      queueTimeoutMs: v.ADMISSION_QUEUE_TIMEOUT_MS as number,
    },
    shutdownGraceMs: v.SHUTDOWN_GRACE_MS as number,
    kernelThreads: v.KERNEL_THREADS as number,
    jobs: {
      pollMs: v.JOB_POLL_MS as number,
      staleMs: v.JOB_STALE_MS as number,
      annIndexBatch: v.ANN_INDEX_BATCH as number,
      retry: { limit: v.JOB_RETRY_LIMIT as number, baseMs: v.JOB_RETRY_BASE_MS as number, maxMs: v.JOB_RETRY_MAX_MS as number },
    },
    api: {
      authDisabled: v.AUTH_DISABLED as boolean,
      rateLimitPerMinute: v.RATE_LIMIT_PER_MINUTE as number,
      bodyLimitBytes: v.BODY_LIMIT_BYTES as number,
      maxItemsPerRequest: v.MAX_ITEMS_PER_REQUEST as number,
      requestTimeoutMs: v.REQUEST_TIMEOUT_MS as number,
    },
    metrics: { enabled: v.METRICS_ENABLED as boolean, port: v.METRICS_PORT as number },
    embedding: {
      modelsDir,
      custom,
      threads: v.EMBEDDING_THREADS as number,
      maxBatch: v.EMBEDDING_MAX_BATCH as number,
      maxWaitMs: v.EMBEDDING_MAX_WAIT_MS as number,
      queueLimit: v.EMBEDDING_QUEUE_LIMIT as number,
      maxPixels: v.IMAGE_MAX_PIXELS as number,
    },
  };
}
