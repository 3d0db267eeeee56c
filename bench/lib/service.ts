/**
 * Starts the real protoprune service in this process (the same `startService` that `npm start`
 * runs: database + migrations, encoder, HTTP, gRPC, job worker) on free local ports, for the
 * evaluation and the benchmark suite, and gives a small authenticated REST client for it.
 *
 * Database: `urlFromEnv` (EVAL_DATABASE_URL / BENCH_DATABASE_URL / DATABASE_URL) names a native
 * PostgreSQL; its `?schema=` parameter (created here if missing) keeps the harness's tables apart.
 * Without a URL the embedded PGlite backend is used in a temporary directory, and callers say so.
 *
 * Auth stays ON: the harness mints its own admin key with `mintApiKey` on the service's database and
 * revokes it at `stop()`, so every request goes through the same authentication as production.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { pino } from 'pino';
import { loadConfig, type Config } from '../../src/config/index.js';
import { startService, type RunningService } from '../../src/server.js';
import { mintApiKey, OPERATOR, revokeApiKey } from '../../src/service/auth.js';

export interface HarnessService {
  running: RunningService;
  config: Config;
  /** http://127.0.0.1:<port> */
  base: string;
  /** The minted admin key's secret. */
  key: string;
  backend: 'native' | 'embedded';
  /** The native schema in use (null on the embedded backend). */
  schema: string | null;
  api: ApiClient;
  stop(): Promise<void>;
}

/** Splits `?schema=` off a PostgreSQL URL. */
export function schemaOf(url: string): { base: string; schema: string | null } {
  const parsed = new URL(url);
  const schema = parsed.searchParams.get('schema');
  parsed.searchParams.delete('schema');
  return { base: parsed.toString(), schema };
}

/** Runs one statement on a fresh connection to `url` (without its schema parameter). */
export async function adminQuery(url: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: schemaOf(url).base });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/** `url` with `?schema=<schema>` set. */
export function withSchema(url: string, schema: string): string {
  const parsed = new URL(url);
  parsed.searchParams.set('schema', schema);
  return parsed.toString();
}

export interface StartOptions {
  /** Native PostgreSQL URL (with ?schema=); undefined → embedded PGlite in a temporary directory. */
  databaseUrl?: string;
  /** Extra environment for loadConfig (strings, as in the environment). */
  env?: Record<string, string>;
  logLevel?: string;
}

export async function startHarnessService(options: StartOptions): Promise<HarnessService> {
  const scratch = await mkdtemp(path.join(tmpdir(), 'protoprune-harness-'));
  let schema: string | null = null;
  if (options.databaseUrl) {
    schema = schemaOf(options.databaseUrl).schema;
    if (schema) {
      if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`schema ${schema}: use lower-case letters, digits and _`);
      await adminQuery(options.databaseUrl, `CREATE SCHEMA IF NOT EXISTS ${schema}`);
    }
  }
  const env: Record<string, string | undefined> = {
    ...process.env,
    HOST: '127.0.0.1',
    PORT: '0',
    GRPC_PORT: '0',
    LOG_LEVEL: options.logLevel ?? 'warn',
    DATABASE_URL: options.databaseUrl ?? '',
    DATA_DIR: path.join(scratch, 'data'),
    AUTH_DISABLED: 'false',
    RATE_LIMIT_PER_MINUTE: '0',
    METRICS_ENABLED: 'false',
    ...options.env,
  };
  const config = loadConfig(env);
  const logger = pino({ level: config.logLevel });
  const running = await startService(config, logger);
  const key = await mintApiKey(running.db, { name: `harness-${process.pid}`, scopes: ['admin'] }, OPERATOR);
  const base = `http://127.0.0.1:${running.httpPort}`;
  return {
    running,
    config,
    base,
    key: key.secret,
    backend: running.db.backend,
    schema,
    api: new ApiClient(base, key.secret),
    async stop() {
      try {
        await revokeApiKey(running.db, key.id, OPERATOR);
      } finally {
        await running.stop();
        await rm(scratch, { recursive: true, force: true });
      }
    },
  };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
    what: string,
  ) {
    super(`${what}: HTTP ${status} ${body.slice(0, 500)}`);
  }
}

/** A minimal JSON client over fetch; retries 429 answers after their hint. */
export class ApiClient {
  constructor(
    readonly base: string,
    private readonly key: string,
  ) {}

  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { authorization: `Bearer ${this.key}`, ...extra };
  }

  async request<T>(method: string, url: string, body?: unknown, okStatuses: number[] = [200, 201, 202, 204]): Promise<{ status: number; body: T }> {
    for (let attempt = 0; ; attempt++) {
      const response = await fetch(this.base + url, {
        method,
        headers: this.headers(body === undefined ? {} : { 'content-type': 'application/json' }),
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
      const text = await response.text();
      if (response.status === 429 && attempt < 100) {
        let wait = Number(response.headers.get('retry-after') ?? 0) * 1000;
        try {
          wait = Math.max(wait, Number((JSON.parse(text) as { error?: { details?: { retryAfterMs?: number } } }).error?.details?.retryAfterMs ?? 0));
        } catch {
          /* keep the header's hint */
        }
        await new Promise((resolve) => setTimeout(resolve, Math.max(100, wait)));
        continue;
      }
      if (!okStatuses.includes(response.status)) throw new ApiError(response.status, text, `${method} ${url}`);
      return { status: response.status, body: (text ? JSON.parse(text) : undefined) as T };
    }
  }

  get<T>(url: string, okStatuses?: number[]) {
    return this.request<T>('GET', url, undefined, okStatuses).then((r) => r.body);
  }

  post<T>(url: string, body: unknown) {
    return this.request<T>('POST', url, body).then((r) => r.body);
  }

  async deleteIfExists(url: string): Promise<void> {
    await this.request('DELETE', url, undefined, [200, 202, 204, 404]);
  }

  /** Follows GET /v1/jobs/{id} until it ends; throws unless it succeeded. */
  async waitForJob(id: string, onProgress?: (job: JobView) => void, pollMs = 500): Promise<JobView> {
    for (;;) {
      const job = await this.get<JobView>(`/v1/jobs/${id}`);
      onProgress?.(job);
      if (job.state === 'succeeded') return job;
      if (job.state === 'failed') throw new Error(`job ${id} failed: ${JSON.stringify(job.error ?? job)}`);
      await new Promise((resolve) => setTimeout(resolve, pollMs));
    }
  }

  /** A whole selection as NDJSON (streamed by the server), parsed into external ids. */
  async selection(dataset: string, params: Record<string, string | number>): Promise<{ ids: string[]; version: number }> {
    const query = new URLSearchParams(Object.entries(params).map(([k, v]): [string, string] => [k, String(v)]));
    const response = await fetch(`${this.base}/v1/datasets/${dataset}/selection?${query}`, { headers: this.headers({ accept: 'application/x-ndjson' }) });
    const text = await response.text();
    if (response.status !== 200) throw new ApiError(response.status, text, `selection ${query}`);
    const ids: string[] = [];
    for (const line of text.split('\n')) if (line) ids.push((JSON.parse(line) as { externalId: string }).externalId);
    return { ids, version: Number(response.headers.get('x-prototype-version')) };
  }
}

export interface JobView {
  id: string;
  state: 'queued' | 'running' | 'succeeded' | 'failed';
  phase?: string | null;
  progress?: { done: number; total: number } | null;
  result?: Record<string, unknown> | null;
  error?: unknown;
}
