/**
 * Every environment variable protoprune reads, with its type, default and meaning.
 * `.env.example` and the README's configuration table are checked against this list by tests,
 * so adding a variable here is the one place to document it.
 */

export type VariableSpec =
  | { kind: 'int'; default: number; min: number; max: number; doc: string }
  | { kind: 'enum'; default: string; values: readonly string[]; doc: string }
  | { kind: 'string'; default: string; doc: string }
  | { kind: 'optional-url'; protocols: readonly string[]; doc: string }
  | { kind: 'bool'; default: boolean; doc: string };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export const VARIABLES = {
  HOST: { kind: 'string', default: '0.0.0.0', doc: 'Interface the HTTP and gRPC servers bind to.' },
  PORT: { kind: 'int', default: 8080, min: 0, max: 65535, doc: 'HTTP port (0 picks a free port).' },
  GRPC_PORT: { kind: 'int', default: 50051, min: 0, max: 65535, doc: 'gRPC port (0 picks a free port).' },
  LOG_LEVEL: { kind: 'enum', default: 'info', values: LOG_LEVELS, doc: 'Minimum level of the JSON logs.' },
  DATABASE_URL: {
    kind: 'optional-url',
    protocols: ['postgres:', 'postgresql:'],
    doc: 'Native PostgreSQL (15+, pgvector 0.7+) connection URL. Unset: embedded PGlite under DATA_DIR.',
  },
  DATA_DIR: { kind: 'string', default: './data', doc: 'Directory of the embedded database (used when DATABASE_URL is unset).' },
  DATABASE_POOL_MAX: { kind: 'int', default: 10, min: 1, max: 1000, doc: 'Maximum connections in the native Postgres pool.' },
  SHUTDOWN_GRACE_MS: {
    kind: 'int',
    default: 8000,
    min: 0,
    max: 600000,
    doc: 'On SIGTERM/SIGINT, how long in-flight requests may take before connections are cut.',
  },
  KERNEL_THREADS: {
    kind: 'int',
    default: 2,
    min: 1,
    max: 256,
    doc: 'onnxruntime intra-op threads of the distance kernel (k-means, scoring).',
  },
  JOB_POLL_MS: { kind: 'int', default: 1000, min: 10, max: 600000, doc: 'How often an idle job worker looks for queued jobs.' },
  JOB_STALE_MS: {
    kind: 'int',
    default: 30000,
    min: 1000,
    max: 3600000,
    doc: 'A running job whose worker has been silent this long is re-queued (its process died).',
  },
  ANN_INDEX_BATCH: {
    kind: 'int',
    default: 200,
    min: 0,
    max: 100000,
    doc: 'Items moved into the HNSW index per background step (bounds how long one step holds the database); 0 turns background indexing off.',
  },
} as const satisfies Record<string, VariableSpec>;

export type VariableName = keyof typeof VARIABLES;

/** The default as it would be written in `.env.example` (empty for optional variables). */
export function defaultText(spec: VariableSpec): string {
  return spec.kind === 'optional-url' ? '' : String(spec.default);
}
