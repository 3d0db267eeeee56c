import pg from 'pg';
import pgvector from 'pgvector';
import { from as copyFromStdin, to as copyToStdout } from 'pg-copy-streams';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { PrismaPg } from '@prisma/adapter-pg';
import { PrismaClient } from '../generated/prisma/client.js';
import { copyStatement, type CopyChunks, type CopyFormat, type Database, type Sql } from './database.js';
import { PRISMA_ADVISORY_LOCK } from './migrations.js';

/**
 * Told about the pools' connections, so database outages can be logged once per transition rather
 * than once per failed request: `connected` on every new connection made, `failed` when one could
 * not be made (or the pool gave up waiting for one) or an established one broke.
 */
export interface ConnectionObserver {
  connected(): void;
  failed(error: unknown): void;
}

/** Reports `pool`'s connection outcomes to `observer` (pg-pool emits no event for a failed connect). */
function observe(pool: pg.Pool, observer: ConnectionObserver): void {
  pool.on('connect', (client) => {
    // pg-pool listens for errors only on idle clients: a checked-out client (a transaction, a COPY)
    // whose server ends the connection would otherwise raise an uncaught 'error' and end the
    // process. Its query in flight rejects either way; this only keeps the process alive.
    client.on('error', (error) => observer.failed(error));
    observer.connected();
  });
  // An idle client losing its server (restart, network) must not crash the process; the pool replaces it.
  pool.on('error', (error) => observer.failed(error));
  const connect = pool.connect.bind(pool) as (callback?: (err: Error | undefined, client: pg.PoolClient | undefined, done: (release?: unknown) => void) => void) => unknown;
  // pool.query() checks out through this.connect(callback), Prisma's adapter through pool.connect().
  (pool as { connect: unknown }).connect = (callback?: (err: Error | undefined, client: pg.PoolClient | undefined, done: (release?: unknown) => void) => void) => {
    if (callback) {
      return connect((err, client, done) => {
        if (err) observer.failed(err);
        callback(err, client, done);
      });
    }
    return (connect() as Promise<pg.PoolClient>).catch((error: unknown) => {
      observer.failed(error);
      throw error;
    });
  };
}

const IGNORE: ConnectionObserver = { connected: () => undefined, failed: () => undefined };

function clientSql(client: pg.PoolClient | pg.Pool): Pick<Sql, 'query' | 'exec'> {
  return {
    async query<Row>(text: string, params?: unknown[]) {
      const result = await client.query(text, params as unknown[] | undefined);
      return result.rows as Row[];
    },
    async exec(script: string) {
      // Without parameters pg uses the simple query protocol, which accepts several statements.
      await client.query(script);
    },
  };
}

async function copyInOn(client: pg.PoolClient, target: string, format: CopyFormat, chunks: CopyChunks): Promise<number> {
  const stream = client.query(copyFromStdin(copyStatement('FROM STDIN', target, format)));
  await pipeline(Readable.from(chunks), stream);
  return Number(stream.rowCount ?? 0);
}

async function* copyOutOn(client: pg.PoolClient, source: string, format: CopyFormat): AsyncGenerator<Buffer> {
  const stream = client.query(copyToStdout(copyStatement('TO STDOUT', source, format)));
  for await (const chunk of stream) yield chunk as Buffer;
}

function copyMethods(client: pg.PoolClient): Pick<Sql, 'copyIn' | 'copyOut'> {
  return {
    copyIn: (target, format, chunks) => copyInOn(client, target, format, chunks),
    copyOut: (source, format) => copyOutOn(client, source, format),
  };
}

const CONNECT_TIMEOUT_MS = 5000;
/** Connections outside the request pool: job heartbeats and lease checks, readiness probes. */
const CONTROL_POOL_MAX = 2;

/**
 * A transaction left open by a process that stopped (SIGSTOP, a frozen VM) would hold its row
 * locks — e.g. a dataset's, which every ingest of that dataset waits for — until the process came
 * back. Postgres ends such a session after this long; the process's transaction then fails (its
 * job's fence refuses the rest). No transaction of ours idles between statements for near this long.
 */
const IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000;

/** Per-session settings: the idle-in-transaction bound and, for `?schema=`, the search path (pgvector's objects stay reachable in public). */
function sessionOptions(schema: string | undefined): string {
  const options = [`-c idle_in_transaction_session_timeout=${IDLE_IN_TRANSACTION_TIMEOUT_MS}`];
  if (schema) options.push(`-c search_path=${quoteIdentifier(schema)},public`);
  return options.join(' ');
}

function quoteIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * Prisma's convention: `?schema=name` in the URL selects the schema. pg does not know the
 * parameter, so it is taken out of the URL and applied as the connection's search_path.
 */
function splitSchema(url: string): { connectionString: string; schema?: string } {
  const parsed = new URL(url);
  const schema = parsed.searchParams.get('schema') ?? undefined;
  parsed.searchParams.delete('schema');
  return { connectionString: parsed.toString(), schema };
}

/**
 * As `prisma migrate deploy` does, a named schema is created when missing; otherwise search_path
 * would silently fall through to public. Checked first (CREATE SCHEMA needs the CREATE privilege
 * even when the schema exists), then created under the migrations' advisory lock: concurrent
 * CREATE SCHEMA IF NOT EXISTS is not safe (a duplicate key on pg_namespace when processes boot together).
 *
 * On a connection of its own, closed before the pools open any: a pooled session that resolved
 * its search_path while the schema did not exist yet was seen to keep resolving it without the
 * schema, so its statements (the migrations among them) went to public.
 */
async function ensureSchema(connectionString: string, schema: string, observer: ConnectionObserver): Promise<void> {
  const client = new pg.Client({ connectionString, application_name: 'protoprune-setup', connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
  client.on('error', (error) => observer.failed(error)); // a lost connection fails the query in flight, not the process
  try {
    await client.connect();
  } catch (error) {
    observer.failed(error);
    throw error;
  }
  observer.connected();
  try {
    const exists = async () => ((await client.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema])).rowCount ?? 0) > 0;
    if (await exists()) return;
    await client.query('BEGIN');
    try {
      await client.query('SELECT pg_advisory_xact_lock($1)', [PRISMA_ADVISORY_LOCK]);
      if (!(await exists())) await client.query(`CREATE SCHEMA ${quoteIdentifier(schema)}`);
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Runs `fn` in one transaction on a pooled connection; a connection whose ROLLBACK failed is discarded. */
async function inTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken = false;
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {
      broken = true;
    });
    throw error;
  } finally {
    client.release(broken);
  }
}

/**
 * Native PostgreSQL through a pg pool; pgvector's `vector` type is parsed into number[].
 * `?schema=name` in the URL puts protoprune's tables in that schema (default: public).
 */
export async function openNative(url: string, poolMax: number, observer: ConnectionObserver = IGNORE): Promise<Database> {
  const parsers = new Map<number, (value: string) => unknown>();
  const types = {
    getTypeParser: ((oid: number, format?: string) =>
      (format ?? 'text') === 'text' && parsers.has(oid)
        ? parsers.get(oid)
        : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
  };
  const { connectionString, schema } = splitSchema(url);
  const pool = new pg.Pool({
    connectionString,
    max: poolMax,
    types,
    application_name: 'protoprune',
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    options: sessionOptions(schema),
  });
  // Heartbeats and readiness probes: a small pool of their own (see Database.control).
  const controlPool = new pg.Pool({
    connectionString,
    max: CONTROL_POOL_MAX,
    types,
    application_name: 'protoprune-control',
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    options: sessionOptions(schema),
  });
  observe(pool, observer);
  observe(controlPool, observer);
  try {
    if (schema) await ensureSchema(connectionString, schema, observer);
  } catch (error) {
    await Promise.all([pool.end(), controlPool.end()]).catch(() => undefined);
    throw error;
  }
  const prisma = new PrismaClient({ adapter: new PrismaPg(pool, schema ? { schema } : undefined) });
  const sql = clientSql(pool);

  async function withClient<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await pool.connect();
    try {
      return await fn(client);
    } finally {
      client.release();
    }
  }

  let closed: Promise<void> | undefined;
  return {
    backend: 'native',
    prisma,
    ...sql,
    control: clientSql(controlPool),
    copyIn: (target, format, chunks) => withClient((client) => copyInOn(client, target, format, chunks)),
    async *copyOut(source, format) {
      const client = await pool.connect();
      try {
        yield* copyOutOn(client, source, format);
      } finally {
        client.release();
      }
    },
    transaction: (fn) => inTransaction(pool, (client) => fn({ ...clientSql(client), ...copyMethods(client) })),
    async registerVectorType() {
      const rows = await sql.query<{ oid: number }>("SELECT oid FROM pg_type WHERE typname = 'vector'");
      if (rows.length === 0) throw new Error('the pgvector extension is not installed in this database');
      parsers.set(Number(rows[0].oid), (value) => pgvector.fromSql(value));
    },
    async ping() {
      await pool.query('SELECT 1');
    },
    poolStats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
    close() {
      closed ??= (async () => {
        await prisma.$disconnect();
        await Promise.all([pool.end(), controlPool.end()]);
      })();
      return closed;
    },
  };
}
