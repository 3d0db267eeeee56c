import pg from 'pg';
import pgvector from 'pgvector';
import { from as copyFromStdin, to as copyToStdout } from 'pg-copy-streams';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { PrismaPg } from '@prisma/adapter-pg';
import { PrismaClient } from '../generated/prisma/client.js';
import { copyStatement, type CopyChunks, type CopyFormat, type Database, type Sql } from './database.js';

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
 * Native PostgreSQL through a pg pool; pgvector's `vector` type is parsed into number[].
 * `?schema=name` in the URL puts protoprune's tables in that schema (default: public).
 */
export async function openNative(url: string, poolMax: number): Promise<Database> {
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
    // pgvector's objects stay reachable when the tables live in another schema.
    ...(schema ? { options: `-c search_path=${quoteIdentifier(schema)},public` } : {}),
  });
  // Heartbeats and readiness probes: a small pool of their own (see Database.control).
  const controlPool = new pg.Pool({
    connectionString,
    max: CONTROL_POOL_MAX,
    types,
    application_name: 'protoprune-control',
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    ...(schema ? { options: `-c search_path=${quoteIdentifier(schema)},public` } : {}),
  });
  // An idle client losing its server (restart, network) must not crash the process; the pool replaces it.
  pool.on('error', () => undefined);
  controlPool.on('error', () => undefined);
  // As `prisma migrate deploy` does, a named schema is created when missing; otherwise search_path
  // would silently fall through to public.
  // (Checked first: CREATE SCHEMA needs the CREATE privilege even when the schema exists.)
  if (schema && (await pool.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema])).rowCount === 0) {
    await pool.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdentifier(schema)}`);
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
    async transaction(fn) {
      const client = await pool.connect();
      let broken = false;
      try {
        await client.query('BEGIN');
        const tx: Sql = { ...clientSql(client), ...copyMethods(client) };
        const result = await fn(tx);
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
    },
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
