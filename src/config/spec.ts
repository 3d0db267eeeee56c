/**
 * Every environment variable protoprune reads, with its type, default and meaning.
 * `.env.example` and the README's configuration table are checked against this list by tests,
 * so adding a variable here is the one place to document it.
 */

export type VariableSpec = (
  | { kind: 'int'; default: number; min: number; max: number; doc: string }
  | { kind: 'optional-int'; min: number; max: number; doc: string }
  /**
   * One of `values`; `ignoreCase` accepts any case (values are upper case), `aliases` maps other
   * spellings (written without whitespace) to a value.
   */
  | { kind: 'enum'; default: string; values: readonly string[]; ignoreCase?: boolean; aliases?: Readonly<Record<string, string>>; doc: string }
  | { kind: 'string'; default: string; doc: string }
  | { kind: 'optional-url'; protocols: readonly string[]; doc: string }
  | { kind: 'optional-string'; doc: string }
  /** 64 hex digits, read in lower case. */
  | { kind: 'optional-sha256'; doc: string }
  /** Required: `N` or `HxW`, each side from 1 to `max`; read as { height, width }. */
  | { kind: 'size'; max: number; example: string; doc: string }
  /** Required: 1 or 3 finite numbers (one is used for all three); read as a triple. */
  | { kind: 'triple'; example: string; doc: string }
  | { kind: 'bool'; default: boolean; doc: string }
) & {
  /** The variable only applies when this one is set: alone it is refused, and required kinds are required only then. */
  requires?: string;
};

export interface ImageSize {
  height: number;
  width: number;
}

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
  DATA_DIR: { kind: 'string', default: './data', doc: 'Directory of the embedded database (used when DATABASE_URL is unset) and of the initial admin key file.' },
  DATABASE_POOL_MAX: { kind: 'int', default: 10, min: 1, max: 1000, doc: 'Maximum connections in the native Postgres pool.' },
  ADMISSION_MAX_IN_FLIGHT: {
    kind: 'int',
    default: 0,
    min: 0,
    max: 100000,
    doc: 'Database-using API requests (REST and gRPC together) served at once; more wait in line (ADMISSION_MAX_QUEUED). 0: 2 × DATABASE_POOL_MAX on native PostgreSQL, 8 on the embedded backend.',
  },
  ADMISSION_MAX_QUEUED: {
    kind: 'int',
    default: 0,
    min: 0,
    max: 1000000,
    doc: 'Requests that may wait for a slot; beyond them a request is refused at once with 503 SERVER_BUSY (gRPC UNAVAILABLE) and Retry-After. 0: 4 × the in-flight limit.',
  },
  ADMISSION_QUEUE_TIMEOUT_MS: {
    kind: 'int',
    default: 2000,
    min: 0,
    max: 60000,
    doc: 'Longest wait in line for a slot before 503 SERVER_BUSY; 0: no waiting (refuse at once when every slot is taken).',
  },
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
    doc: "Lease of a running job: its worker's heartbeat renews it every third of this; on native PostgreSQL a job whose lease expired (its process died or stalled) is re-queued and the old run's writes are refused.",
  },
  JOB_RETRY_LIMIT: {
    kind: 'int',
    default: 5,
    min: 0,
    max: 1000,
    doc: 'Times a job that hit a transient database error (connection lost, pool timeout, serialization failure, deadlock, server shutting down) is queued again before it fails with that error.',
  },
  JOB_RETRY_BASE_MS: { kind: 'int', default: 1000, min: 0, max: 3600000, doc: 'Wait before the first such retry; doubled for each further one.' },
  JOB_RETRY_MAX_MS: { kind: 'int', default: 60000, min: 0, max: 3600000, doc: 'Longest wait between such retries.' },
  REFIT_SAMPLE_MB: {
    kind: 'int',
    default: 512,
    min: 1,
    max: 65536,
    doc: 'Most memory the sample a refit fits on may take: a refit reads about 512 items per centroid (twice faiss\'s rule: within 1% of fitting on all items), fewer when their vectors would exceed this; assignment and rescoring then stream over every item in bounded pages, so a refit\'s memory does not grow with the dataset.',
  },
  ANN_INDEX_BATCH: {
    kind: 'int',
    default: 200,
    min: 0,
    max: 100000,
    doc: 'Items moved into the HNSW index per background step (bounds how long one step holds the database); 0 turns background indexing off.',
  },
  AUTH_DISABLED: {
    kind: 'bool',
    default: false,
    doc: 'Serve without API keys (every caller is an admin). Only for a trusted network; the server warns at boot.',
  },
  RATE_LIMIT_PER_MINUTE: { kind: 'int', default: 600, min: 0, max: 10000000, doc: 'Requests per minute per API key (per client address without auth); 0 turns the limit off.' },
  BODY_LIMIT_BYTES: { kind: 'int', default: 67108864, min: 1024, max: 2147483647, doc: 'Largest request body (JSON or multipart) or gRPC message accepted, in bytes.' },
  MAX_ITEMS_PER_REQUEST: { kind: 'int', default: 1000, min: 1, max: 1000000, doc: 'Most items one JSON or multipart ingest, one score request or one gRPC ingest message may carry (a binary frame body is bounded by BODY_LIMIT_BYTES and stored in batches).' },
  REQUEST_TIMEOUT_MS: { kind: 'int', default: 120000, min: 0, max: 3600000, doc: 'Time a client has to send a whole request (0: no limit); guards against slow uploads holding connections.' },
  METRICS_ENABLED: { kind: 'bool', default: true, doc: 'Serve Prometheus metrics at /metrics (see METRICS_PORT).' },
  METRICS_PORT: {
    kind: 'int',
    default: 0,
    min: 0,
    max: 65535,
    doc: '0: /metrics on the HTTP port, needing an admin API key (unless AUTH_DISABLED). N: a separate listener on HOST:N serving only /metrics, without auth (for a private network).',
  },
  MODELS_DIR: { kind: 'string', default: './models', doc: 'Where the default encoder is converted to ONNX on first start and cached.' },
  EMBEDDING_THREADS: { kind: 'int', default: 2, min: 1, max: 256, doc: 'onnxruntime intra-op threads of the image encoder.' },
  EMBEDDING_MAX_BATCH: { kind: 'int', default: 32, min: 1, max: 1024, doc: 'Images per encoder run (concurrent requests are micro-batched).' },
  EMBEDDING_MAX_WAIT_MS: { kind: 'int', default: 10, min: 0, max: 10000, doc: 'How long a decoded image waits for more images to fill a batch.' },
  EMBEDDING_QUEUE_LIMIT: {
    kind: 'int',
    default: 1024,
    min: 1,
    max: 1000000,
    doc: 'Images accepted but not yet embedded beyond which requests are refused (429 / RESOURCE_EXHAUSTED).',
  },
  IMAGE_MAX_PIXELS: { kind: 'int', default: 64000000, min: 1, max: 1000000000, doc: 'Images declaring more pixels are rejected (IMAGE_TOO_LARGE).' },
  EMBEDDING_MODEL_PATH: { kind: 'optional-string', doc: 'An ONNX image model to use instead of the default (then SIZE, MEAN and STD are required).' },
  EMBEDDING_MODEL_NAME: {
    kind: 'optional-string',
    requires: 'EMBEDDING_MODEL_PATH',
    doc: 'Name recorded with datasets for the custom model (default: the file name).',
  },
  EMBEDDING_MODEL_INPUT: { kind: 'optional-string', requires: 'EMBEDDING_MODEL_PATH', doc: "Input tensor name (default: the model's only input)." },
  EMBEDDING_MODEL_OUTPUT: { kind: 'optional-string', requires: 'EMBEDDING_MODEL_PATH', doc: "Output tensor name (default: the model's first output)." },
  EMBEDDING_MODEL_SIZE: { kind: 'size', max: 8192, example: '"224" or "224x224" as HxW', requires: 'EMBEDDING_MODEL_PATH', doc: 'Input size, `224` or `HxW`.' },
  EMBEDDING_MODEL_LAYOUT: {
    kind: 'enum',
    default: 'NCHW',
    values: ['NCHW', 'NHWC'],
    ignoreCase: true,
    requires: 'EMBEDDING_MODEL_PATH',
    doc: '`NCHW` (default for custom models) or `NHWC`.',
  },
  EMBEDDING_MODEL_CHANNELS: {
    kind: 'enum',
    default: 'RGB',
    values: ['RGB', 'BGR'],
    ignoreCase: true,
    requires: 'EMBEDDING_MODEL_PATH',
    doc: '`RGB` (default) or `BGR`.',
  },
  EMBEDDING_MODEL_RANGE: {
    kind: 'enum',
    default: '0-1',
    values: ['0-1', '0-255'],
    aliases: { '0-1': '0-1', '[0,1]': '0-1', '0..1': '0-1', '1': '0-1', '0-255': '0-255', '[0,255]': '0-255', '0..255': '0-255', '255': '0-255' },
    requires: 'EMBEDDING_MODEL_PATH',
    doc: 'Pixel range before normalisation: `0-1` (default) or `0-255`.',
  },
  EMBEDDING_MODEL_MEAN: {
    kind: 'triple',
    example: '"0.485,0.456,0.406"; "0" for none',
    requires: 'EMBEDDING_MODEL_PATH',
    doc: 'Per-channel mean, e.g. `0.485,0.456,0.406`.',
  },
  EMBEDDING_MODEL_STD: {
    kind: 'triple',
    example: '"0.229,0.224,0.225"; "1" for none',
    requires: 'EMBEDDING_MODEL_PATH',
    doc: 'Per-channel std, e.g. `0.229,0.224,0.225`.',
  },
  EMBEDDING_MODEL_DIM: { kind: 'optional-int', min: 1, max: 1 << 20, requires: 'EMBEDDING_MODEL_PATH', doc: 'Output dimension (default: read from the model).' },
  EMBEDDING_MODEL_RESIZE: {
    kind: 'optional-int',
    min: 1,
    max: 16384,
    requires: 'EMBEDDING_MODEL_PATH',
    doc: 'Shorter side before the centre crop (default: size × 256/224).',
  },
  EMBEDDING_MODEL_SHA256: { kind: 'optional-sha256', requires: 'EMBEDDING_MODEL_PATH', doc: 'Expected SHA-256 of the model file (boot fails on a mismatch).' },
} as const satisfies Record<string, VariableSpec>;

export type VariableName = keyof typeof VARIABLES;

