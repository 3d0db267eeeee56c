import { ModelSpecError } from '../embedding/errors.js';
import { customModelSpec, type ChannelOrder, type ModelSpec, type TensorLayout, type Triple, type ValueRange } from '../embedding/model.js';
import { LOG_LEVELS, VARIABLES, type ImageSize, type VariableName, type VariableSpec } from './spec.js';

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
    /** Bytes the sample a refit fits on may take (REFIT_SAMPLE_MB). */
    refitSampleBytes: number;
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

const SIZE_PATTERN = /^(\d+)(?:\s*[xX×]\s*(\d+))?$/;

/** An integer from `min` to `max`, or undefined (with a problem) for anything else. */
function parseInteger(name: string, value: string, min: number, max: number, problems: string[]): number | undefined {
  const n = /^-?\d+$/.test(value) ? Number(value) : Number.NaN;
  if (Number.isSafeInteger(n) && n >= min && n <= max) return n;
  problems.push(`${name}=${JSON.stringify(value)}: expected an integer from ${min} to ${max}`);
  return undefined;
}

/** A set variable's value; unset ones get their default (or undefined), required ones a problem. */
function parseVariable(name: string, spec: VariableSpec, raw: string | undefined, problems: string[]): unknown {
  const value = raw?.trim();
  if (value === undefined || value === '') {
    if (spec.kind === 'size' || spec.kind === 'triple') {
      problems.push(`${name} is required${spec.requires ? ` with ${spec.requires}` : ''} (e.g. ${spec.example})`);
    }
    return 'default' in spec ? spec.default : undefined;
  }
  switch (spec.kind) {
    case 'int':
      return parseInteger(name, value, spec.min, spec.max, problems) ?? spec.default;
    case 'optional-int':
      return parseInteger(name, value, spec.min, spec.max, problems);
    case 'enum': {
      const text = spec.ignoreCase ? value.toUpperCase() : value;
      const canonical = spec.aliases ? spec.aliases[text.replace(/\s+/g, '')] : text;
      if (canonical === undefined || !spec.values.includes(canonical)) {
        problems.push(`${name}=${JSON.stringify(value)}: expected one of ${spec.values.join(', ')}`);
        return spec.default;
      }
      return canonical;
    }
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
    case 'optional-sha256': {
      const hex = value.toLowerCase();
      if (!/^[0-9a-f]{64}$/.test(hex)) {
        problems.push(`${name}=${JSON.stringify(value)}: expected a SHA-256 as 64 hex digits`);
        return undefined;
      }
      return hex;
    }
    case 'size': {
      const match = SIZE_PATTERN.exec(value);
      const [height, width] = match ? [Number(match[1]), Number(match[2] ?? match[1])] : [0, 0];
      if (!(height >= 1 && height <= spec.max && width >= 1 && width <= spec.max)) {
        problems.push(`${name}=${JSON.stringify(value)}: expected N or HxW (e.g. ${spec.example}), each side from 1 to ${spec.max}`);
        return undefined;
      }
      return { height, width } satisfies ImageSize;
    }
    case 'triple': {
      const parts = value
        .replace(/^\[|\]$/g, '')
        .split(/[\s,]+/)
        .filter((part) => part.length > 0);
      const numbers = parts.map(Number);
      if ((numbers.length !== 1 && numbers.length !== 3) || !numbers.every(Number.isFinite)) {
        problems.push(`${name}=${JSON.stringify(value)}: expected 1 or 3 finite numbers separated by commas (e.g. ${spec.example})`);
        return undefined;
      }
      const [first, second = first, third = first] = numbers;
      return [first, second, third] satisfies Triple;
    }
    case 'string':
    case 'optional-string':
      return value;
  }
}

/** Variables set although the variable they require is not, grouped by that variable. */
function strayVariables(env: Env): string[] {
  const stray = new Map<string, string[]>();
  for (const [name, spec] of Object.entries(VARIABLES) as [string, VariableSpec][]) {
    if (spec.requires && !env[spec.requires]?.trim() && env[name]?.trim()) stray.set(spec.requires, [...(stray.get(spec.requires) ?? []), name]);
  }
  return [...stray].map(([required, names]) => `${names.join(', ')}: only apply together with ${required}`);
}

/**
 * Words validateModelSpec uses for what a model variable sets: they name the variables in the
 * problems it finds across them (e.g. a mean outside the pixel range).
 */
const MODEL_SPEC_WORDS: readonly (readonly [RegExp, VariableName])[] = [
  [/\bmean\b/, 'EMBEDDING_MODEL_MEAN'],
  [/\bstd\b/, 'EMBEDDING_MODEL_STD'],
  [/\brange\b/, 'EMBEDDING_MODEL_RANGE'],
  [/\bcrop\b/, 'EMBEDDING_MODEL_SIZE'],
  [/\bresizeShorter\b/, 'EMBEDDING_MODEL_RESIZE'],
];

/** The custom model the EMBEDDING_MODEL_* values describe, or null without EMBEDDING_MODEL_PATH. */
function customModel(v: Record<VariableName, unknown>, problems: string[]): ModelSpec | null {
  const modelPath = v.EMBEDDING_MODEL_PATH as string | undefined;
  if (!modelPath) return null;
  const size = v.EMBEDDING_MODEL_SIZE as ImageSize;
  try {
    return customModelSpec({
      path: modelPath,
      name: v.EMBEDDING_MODEL_NAME as string | undefined,
      inputName: v.EMBEDDING_MODEL_INPUT as string | undefined,
      outputName: v.EMBEDDING_MODEL_OUTPUT as string | undefined,
      inputHeight: size.height,
      inputWidth: size.width,
      layout: v.EMBEDDING_MODEL_LAYOUT as TensorLayout,
      channelOrder: v.EMBEDDING_MODEL_CHANNELS as ChannelOrder,
      valueRange: v.EMBEDDING_MODEL_RANGE as ValueRange,
      mean: v.EMBEDDING_MODEL_MEAN as Triple,
      std: v.EMBEDDING_MODEL_STD as Triple,
      outputDim: v.EMBEDDING_MODEL_DIM as number | undefined,
      resizeShorter: v.EMBEDDING_MODEL_RESIZE as number | undefined,
      sha256: v.EMBEDDING_MODEL_SHA256 as string | undefined,
    });
  } catch (error) {
    if (!(error instanceof ModelSpecError)) throw error;
    for (const problem of error.problems) {
      const names = MODEL_SPEC_WORDS.filter(([word]) => word.test(problem)).map(([, name]) => name);
      problems.push(`${names.join(', ')}: ${problem}`);
    }
    return null;
  }
}

/** Reads and validates the whole configuration once; throws ConfigError listing every bad variable. */
export function loadConfig(env: Env = process.env): Config {
  const problems: string[] = strayVariables(env);
  const v = Object.fromEntries(
    (Object.entries(VARIABLES) as [VariableName, VariableSpec][]).map(([name, spec]) => {
      const applies = !spec.requires || Boolean(env[spec.requires]?.trim());
      return [name, applies ? parseVariable(name, spec, env[name], problems) : undefined];
    }),
  ) as Record<VariableName, unknown>;
  const custom = problems.length === 0 ? customModel(v, problems) : null;
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
      refitSampleBytes: (v.REFIT_SAMPLE_MB as number) * 1024 * 1024,
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
      modelsDir: v.MODELS_DIR as string,
      custom,
      threads: v.EMBEDDING_THREADS as number,
      maxBatch: v.EMBEDDING_MAX_BATCH as number,
      maxWaitMs: v.EMBEDDING_MAX_WAIT_MS as number,
      queueLimit: v.EMBEDDING_QUEUE_LIMIT as number,
      maxPixels: v.IMAGE_MAX_PIXELS as number,
    },
  };
}
