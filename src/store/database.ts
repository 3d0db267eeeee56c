import type { PrismaClient } from '../generated/prisma/client.js';

/** Anything that runs one parameterised statement and returns its rows. */
export interface Sql {
  query<Row = Record<string, unknown>>(text: string, params?: unknown[]): Promise<Row[]>;
  /** Runs a script of several statements (no parameters), e.g. a migration. */
  exec(script: string): Promise<void>;
  /**
   * Bulk-loads rows with COPY ... FROM STDIN (text format). Each element of `lines` is one row,
   * fields already escaped with `copyField` and joined by tabs, without the trailing newline.
   */
  copyFrom(table: string, columns: readonly string[], lines: Iterable<string> | AsyncIterable<string>): Promise<number>;
}

export type Backend = 'embedded' | 'native';

/**
 * The one storage interface the rest of protoprune sees. Two implementations: embedded PGlite
 * (one in-process connection, every call serialised) and native Postgres (a pg pool).
 * Relational CRUD goes through `prisma`; vector-heavy paths use the raw SQL methods on the same
 * connection(s).
 */
export interface Database extends Sql {
  readonly backend: Backend;
  readonly prisma: PrismaClient;
  /** Runs `fn` inside one transaction on one connection; commits on success, rolls back on throw. */
  transaction<T>(fn: (tx: Sql) => Promise<T>): Promise<T>;
  /** Makes `vector` columns come back as number[] (call once the extension exists). */
  registerVectorType(): Promise<void>;
  /** Resolves when a trivial query succeeds. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** Escapes one value for COPY's text format (null becomes \N). */
export function copyField(value: string | number | null): string {
  if (value === null) return '\\N';
  if (typeof value === 'number') return String(value);
  return value.replace(/[\\\n\r\t]/g, (c) => (c === '\\' ? '\\\\' : c === '\n' ? '\\n' : c === '\r' ? '\\r' : '\\t'));
}

export function copyStatement(table: string, columns: readonly string[], source: string): string {
  const quoted = columns.map((c) => `"${c}"`).join(', ');
  return `COPY "${table}" (${quoted}) FROM ${source}`;
}

/** pgvector's text form of a vector. */
export function vectorLiteral(values: ArrayLike<number>): string {
  return `[${Array.prototype.join.call(values, ',')}]`;
}
