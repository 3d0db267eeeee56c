import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { PGlite, type Transaction } from '@electric-sql/pglite';
import { vector } from '@electric-sql/pglite-pgvector';
import pgvector from 'pgvector';
import { PrismaPGlite } from 'pglite-prisma-adapter';
import { PrismaClient } from '../generated/prisma/client.js';
import { copyStatement, type CopyChunks, type Database, type Sql } from './database.js';
import { acquireDirectoryLock } from './lock.js';

async function collect(chunks: CopyChunks): Promise<Blob> {
  const parts: Array<string | Buffer> = [];
  for await (const chunk of chunks) parts.push(chunk);
  return new Blob(parts);
}

function pgliteSql(conn: PGlite | Transaction): Sql {
  return {
    async query<Row>(text: string, params?: unknown[]) {
      return (await conn.query<Row>(text, params)).rows;
    },
    async exec(script: string) {
      await conn.exec(script);
    },
    // PGlite has no COPY STDIN/STDOUT stream: it reads and writes COPY data as a blob attached to the query.
    async copyIn(target, format, chunks) {
      const result = await conn.query(copyStatement('FROM STDIN', target, format).replace(/ FROM STDIN /, " FROM '/dev/blob' "), [], {
        blob: await collect(chunks),
      });
      return result.affectedRows ?? 0;
    },
    async *copyOut(source, format) {
      const result = await conn.query(copyStatement('TO STDOUT', source, format).replace(/ TO STDOUT /, " TO '/dev/blob' "));
      if (result.blob) yield Buffer.from(await result.blob.arrayBuffer());
    },
  };
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Runs tasks one at a time in arrival order. PGlite executes on the main thread and resolves
 * through microtasks only, so back-to-back queries would never let timers, I/O or onnxruntime
 * completions run; each task therefore starts after one turn of the event loop.
 */
class FifoQueue {
  private tail: Promise<unknown> = Promise.resolve();
  /** Tasks queued or running (for metrics). */
  pending = 0;

  run<T>(task: () => Promise<T>): Promise<T> {
    this.pending++;
    const result = this.tail.then(yieldToEventLoop).then(task).finally(() => this.pending--);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

/**
 * Embedded PostgreSQL (PGlite, WASM) with pgvector, persisted under `dataDir`. PGlite is a single
 * connection: it serialises every query and holds all other callers while a transaction runs.
 * A lock file keeps a second process from opening the same directory.
 */
export async function openEmbedded(dataDir: string): Promise<Database> {
  const dir = path.resolve(dataDir);
  await mkdir(dir, { recursive: true });
  const lock = await acquireDirectoryLock(dir);
  let pglite: PGlite;
  try {
    pglite = await PGlite.create(path.join(dir, 'pgdata'), { extensions: { vector } });
  } catch (error) {
    await lock.release();
    throw error;
  }
  const prisma = new PrismaClient({ adapter: new PrismaPGlite(pglite) });
  const direct = pgliteSql(pglite);
  // PGlite's own lock is not fair: a caller issuing queries back to back (a polling dashboard)
  // can starve everyone else. Our calls queue here first, strictly in arrival order.
  const queue = new FifoQueue();
  const sql: Sql = {
    query: (text, params) => queue.run(() => direct.query(text, params)),
    exec: (script) => queue.run(() => direct.exec(script)),
    copyIn: (target, format, chunks) => queue.run(() => direct.copyIn(target, format, chunks)),
    async *copyOut(source, format) {
      const chunks = await queue.run(async () => {
        const all: Buffer[] = [];
        for await (const chunk of direct.copyOut(source, format)) all.push(chunk);
        return all;
      });
      yield* chunks;
    },
  };

  let closed: Promise<void> | undefined;
  return {
    backend: 'embedded',
    prisma,
    ...sql,
    // One process owns the embedded database, so nothing can steal its jobs: the one connection serves.
    control: sql,
    transaction: (fn) => queue.run(() => pglite.transaction((tx) => fn(pgliteSql(tx)))),
    async registerVectorType() {
      const rows = await sql.query<{ oid: number }>("SELECT oid FROM pg_type WHERE typname = 'vector'");
      if (rows.length === 0) throw new Error('the pgvector extension is not installed in this database');
      pglite.parsers[Number(rows[0].oid)] = (value: string) => pgvector.fromSql(value);
    },
    async ping() {
      await sql.query('SELECT 1');
    },
    poolStats: () => ({ total: 1, idle: queue.pending === 0 ? 1 : 0, waiting: Math.max(0, queue.pending - 1) }),
    close() {
      closed ??= (async () => {
        await prisma.$disconnect();
        await pglite.close();
        await lock.release();
      })();
      return closed;
    },
  };
}
