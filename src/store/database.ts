import type { PrismaClient } from '../generated/prisma/client.js';

/** Anything that runs one parameterised statement and returns its rows. */
export interface Sql {
  query<Row = Record<string, unknown>>(text: string, params?: unknown[]): Promise<Row[]>;
  /** Runs a script of several statements (no parameters), e.g. a migration. */
  exec(script: string): Promise<void>;
  /**
   * Bulk load: `COPY <target> FROM STDIN (FORMAT <format>)`. `target` is a table with its column
   * list, e.g. `"items" ("dataset_id", "embedding")`; `chunks` are the raw stream bytes (text rows
   * end with a newline; binary streams carry header and trailer, see pgcopy.ts). Returns rows copied.
   */
  copyIn(target: string, format: CopyFormat, chunks: CopyChunks): Promise<number>;
  /**
   * Bulk read: `COPY <source> TO STDOUT (FORMAT <format>)`, where `source` is a table or a
   * parenthesised query (COPY takes no parameters: only trusted, validated literals in it).
   */
  copyOut(source: string, format: CopyFormat): AsyncIterable<Buffer>;
}

export type Backend = 'embedded' | 'native';
export interface PoolStats {
  total: number;
  idle: number;
  waiting: number;
}
export type CopyFormat = 'text' | 'binary';
export type CopyChunks = Iterable<string | Buffer> | AsyncIterable<string | Buffer>;

/**
 * The one storage interface the rest of protoprune sees. Two implementations: embedded PGlite
 * (one in-process connection, every call serialised) and native Postgres (a pg pool).
 * Relational CRUD goes through `prisma`; vector-heavy paths use the raw SQL methods on the same
 * connection(s).
 */
export interface Database extends Sql {
  readonly backend: Backend;
  readonly prisma: PrismaClient;
  /**
   * Connections of their own, outside the pool requests use, so request traffic can never starve
   * what must keep running under load: job heartbeats and lease checks, and readiness probes.
   * Native: a separate pool of CONTROL_POOL_MAX connections; embedded: its one connection (one process).
   */
  readonly control: Pick<Sql, 'query' | 'exec'>;
  /** Runs `fn` inside one transaction on one connection; commits on success, rolls back on throw. */
  transaction<T>(fn: (tx: Sql) => Promise<T>): Promise<T>;
  /** Makes `vector` columns come back as number[] (call once the extension exists). */
  registerVectorType(): Promise<void>;
  /** Resolves when a trivial query succeeds. */
  ping(): Promise<void>;
  /**
   * Connection usage, for metrics: native — the pg pool's open, idle and waiting counts; embedded —
   * its single connection (idle when no call runs) and the calls queued behind it.
   */
  poolStats(): PoolStats;
  close(): Promise<void>;
}

/** A native PostgreSQL transaction: its server process and its start, which tell it apart from later transactions on the same connection. */
export interface TransactionIdentity {
  pid: number;
  started: string;
}

/** The identity of the transaction `tx` runs in (native PostgreSQL). */
export async function transactionIdentity(tx: Pick<Sql, 'query'>): Promise<TransactionIdentity> {
  const [row] = await tx.query<TransactionIdentity>('SELECT pg_backend_pid() AS pid, now()::text AS started');
  return row;
}

/**
 * Cancels the statement in flight in `transaction`, only while that transaction is still the one in
 * progress on its server process (once it ended, the connection may serve an unrelated request).
 */
export async function cancelTransaction(db: Pick<Sql, 'query'>, transaction: TransactionIdentity): Promise<void> {
  await db.query('SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND xact_start = $2::timestamptz', [transaction.pid, transaction.started]);
}

/** Escapes one value for COPY's text format (null becomes \N). */
export function copyField(value: string | number | null): string {
  if (value === null) return '\\N';
  if (typeof value === 'number') return String(value);
  return value.replace(/[\\\n\r\t]/g, (c) => (c === '\\' ? '\\\\' : c === '\n' ? '\\n' : c === '\r' ? '\\r' : '\\t'));
}

export function copyStatement(direction: 'FROM STDIN' | 'TO STDOUT', subject: string, format: CopyFormat): string {
  return `COPY ${subject} ${direction} (FORMAT ${format})`;
}

/** Text-format COPY rows (escaped with copyField, tab-separated) as stream chunks. */
export async function* textRows(rows: Iterable<readonly (string | number | null)[]> | AsyncIterable<readonly (string | number | null)[]>): AsyncGenerator<string> {
  for await (const row of rows) yield `${row.map(copyField).join('\t')}\n`;
}

/** pgvector's text form of a vector. */
export function vectorLiteral(values: ArrayLike<number>): string {
  return `[${Array.prototype.join.call(values, ',')}]`;
}
