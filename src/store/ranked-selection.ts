import { randomUUID } from 'node:crypto';
import { cancelTransaction, transactionIdentity, type Database, type Sql } from './database.js';
import { uuidLiteral } from './datasets.js';
import { andFilter, type ItemFilter } from './metadata-filter.js';
import type { SelectionSummary } from './selections.js';
import { decodeCopyRows } from './pgcopy.js';

/**
 * Selections served straight from the score index: `hardest` (score descending) and `easiest`
 * (ascending), ties by external id in byte order (COLLATE "C") — the order the in-memory core
 * breaks ties in, since it ranks items sorted that way with a stable sort.
 */
export type RankedOrder = 'hardest' | 'easiest';

export interface RankedQuery {
  datasetId: string;
  version: number;
  order: RankedOrder;
  /** Items to keep. */
  size: number;
  /** `balance: cluster`: items each cluster keeps (clusters absent or at 0 keep none); null: no balance. */
  quotas: { cluster: number; quota: number }[] | null;
  /** Only items whose metadata matches (null: every item). */
  filter: ItemFilter | null;
}

function intLiteral(value: number): string {
  if (!Number.isSafeInteger(value)) throw new Error(`not an integer: ${value}`);
  return String(value);
}

/**
 * The selection as a query over (score, item_id, external_id) in policy order. With quotas, each
 * cluster's last kept item (its boundary: score and external id) is found with index-only range
 * scans of (dataset_id, version, cluster, score), and the selection is every item at or before its
 * cluster's boundary: the per-cluster prefixes of the one ranking, in that ranking's order, which
 * is what the core's walk of the global ranking under quotas keeps. Only validated literals (COPY
 * takes no parameters).
 */
function rankedSource(q: RankedQuery): string {
  const desc = q.order === 'hardest';
  const dir = desc ? 'DESC' : 'ASC';
  const better = desc ? '>' : '<';
  const scope = `s.dataset_id = ${uuidLiteral(q.datasetId)} AND s.version = ${intLiteral(q.version)}${andFilter(q.filter)}`;
  // The index-only scans of the score index read items too when a filter must see their metadata.
  const scores = q.filter === null ? 'item_scores s' : 'item_scores s JOIN items i ON i.id = s.item_id';
  const rank = `ORDER BY s.score ${dir}, i.external_id COLLATE "C"`;
  const columns = 's.score, s.item_id, i.external_id, s.cluster';
  if (q.quotas === null) {
    return `SELECT ${columns} FROM item_scores s JOIN items i ON i.id = s.item_id WHERE ${scope} ${rank} LIMIT ${intLiteral(q.size)}`;
  }
  const kept = q.quotas.filter((c) => c.quota > 0);
  const clusters = kept.map((c) => intLiteral(c.cluster)).join(',');
  const quotas = kept.map((c) => intLiteral(c.quota)).join(',');
  return `WITH quota AS (SELECT * FROM unnest('{${clusters}}'::int[], '{${quotas}}'::int[]) AS q(cluster, quota)),
  bound AS MATERIALIZED (
    SELECT q.cluster, b.score,
      (SELECT i.external_id FROM item_scores s JOIN items i ON i.id = s.item_id
        WHERE ${scope} AND s.cluster = q.cluster AND s.score = b.score
        ORDER BY i.external_id COLLATE "C"
        OFFSET q.quota - 1 - (SELECT count(*) FROM ${scores} WHERE ${scope} AND s.cluster = q.cluster AND s.score ${better} b.score)
        LIMIT 1) AS external_id
    FROM quota q CROSS JOIN LATERAL
      (SELECT s.score FROM ${scores} WHERE ${scope} AND s.cluster = q.cluster ORDER BY s.score ${dir} OFFSET q.quota - 1 LIMIT 1) b)
  SELECT ${columns} FROM item_scores s JOIN bound b ON b.cluster = s.cluster JOIN items i ON i.id = s.item_id
   WHERE ${scope} AND s.score ${better}= b.score AND s.score ${better}= (SELECT ${desc ? 'min' : 'max'}(score) FROM bound)
     AND (s.score ${better} b.score OR i.external_id COLLATE "C" <= b.external_id)
   ${rank} LIMIT ${intLiteral(q.size)}`;
}

/**
 * Items scored under `version` (every score row of the active version has its item: an item's
 * scores are deleted with it, and a switch drops the new version's rows of items deleted during
 * the refit). Without a filter an index-only count: no join with items.
 */
export async function countScores(db: Sql, datasetId: string, version: number, filter: ItemFilter | null = null): Promise<number> {
  const sql =
    filter === null
      ? 'SELECT count(*) AS n FROM item_scores WHERE dataset_id = $1 AND version = $2'
      : `SELECT count(*) AS n FROM item_scores s JOIN items i ON i.id = s.item_id WHERE s.dataset_id = $1 AND s.version = $2${andFilter(filter)}`;
  const [row] = await db.query<{ n: string }>(sql, [datasetId, version]);
  return Number(row.n);
}

/** External ids of the first `limit` items of the selection, in policy order. */
export async function rankedExternalIds(db: Sql, q: RankedQuery, limit: number): Promise<string[]> {
  const rows = await db.query<{ external_id: string }>(`SELECT external_id FROM (${rankedSource(q)}) r LIMIT $1`, [limit]);
  return rows.map((r) => r.external_id);
}

/**
 * Items an unbalanced selection keeps per cluster (clusters keeping none left out), without running
 * it: its boundary score (an index-only OFFSET scan), the items strictly beyond it per cluster, and
 * of the items at it the first by external id — the ranked query's tie-break — for the rest.
 */
export async function rankedClusterCounts(db: Sql, q: RankedQuery): Promise<{ cluster: number; n: number }[]> {
  if (q.quotas !== null) throw new Error('rankedClusterCounts is for unbalanced selections: a balanced one keeps its quotas');
  if (q.size === 0) return [];
  const desc = q.order === 'hardest';
  const better = desc ? '>' : '<';
  const scope = `s.dataset_id = ${uuidLiteral(q.datasetId)} AND s.version = ${intLiteral(q.version)}${andFilter(q.filter)}`;
  const scores = q.filter === null ? 'item_scores s' : 'item_scores s JOIN items i ON i.id = s.item_id';
  return db.query<{ cluster: number; n: number }>(
    `WITH b AS MATERIALIZED (SELECT s.score FROM ${scores} WHERE ${scope} ORDER BY s.score ${desc ? 'DESC' : 'ASC'} OFFSET ${intLiteral(q.size - 1)} LIMIT 1),
     beyond AS MATERIALIZED (SELECT s.cluster, count(*)::int AS n FROM ${scores} CROSS JOIN b WHERE ${scope} AND s.score ${better} b.score GROUP BY s.cluster),
     ties AS (
       SELECT t.cluster, count(*)::int AS n FROM (
         SELECT s.cluster FROM item_scores s JOIN items i ON i.id = s.item_id CROSS JOIN b WHERE ${scope} AND s.score = b.score
          ORDER BY i.external_id COLLATE "C" LIMIT ${intLiteral(q.size)} - (SELECT coalesce(sum(n), 0) FROM beyond)) t
        GROUP BY t.cluster)
     SELECT cluster, sum(n)::int AS n FROM (SELECT * FROM beyond UNION ALL SELECT * FROM ties) x GROUP BY cluster`,
  );
}

/** Binary COPY of the selection's external ids, in policy order. */
export function copyRankedExternalIds(db: Sql, q: RankedQuery): AsyncIterable<Buffer> {
  return db.copyOut(`(SELECT external_id FROM (${rankedSource(q)}) r)`, 'binary');
}

/** Decodes a binary COPY of one text column into arrays of strings, 64 KiB of COPY data at a time. */
export function decodeTextColumn(chunks: AsyncIterable<Buffer>): AsyncGenerator<string[]> {
  return decodeCopyRows(chunks, (fields) => fields[0]!.toString('utf8'), 64 * 1024);
}

export interface StoredRankedSelection {
  datasetId: string;
  version: number;
  /** SHA-256 (hex) of the request's parameters. */
  requestHash: string;
  total: number;
  summary: SelectionSummary;
}

/**
 * Stores the selection's item ids set-based (as `saveSelection` lays them out: 8 bytes big-endian
 * per id, the same digest), without shipping them through Node; an identical stored selection is
 * extended instead. Returns the row's id. The ids are aggregated in the ranked subquery's order
 * (a LIMIT subquery feeding a plain aggregate keeps its order).
 */
export async function storeRankedSelection(db: Sql, q: RankedQuery, s: StoredRankedSelection, ttlMs: number): Promise<string> {
  const [row] = await db.query<{ id: string }>(
    `INSERT INTO selections (id, dataset_id, version, request_hash, digest, total, size, item_ids, summary, expires_at)
     SELECT $1::uuid, $2::uuid, $3::int, $4::text,
            encode(sha256(convert_to($4::text || E'\\n' || $3::int || E'\\n' || $5::int || E'\\n', 'UTF8') || a.ids), 'hex'),
            $5::int, length(a.ids) / 8, a.ids, $7::jsonb, now() + $6::float8 * interval '1 millisecond'
       FROM (SELECT coalesce(string_agg(int8send(r.item_id), ''::bytea), ''::bytea) AS ids FROM (${rankedSource(q)}) r) a
     ON CONFLICT (dataset_id, digest) DO UPDATE SET expires_at = EXCLUDED.expires_at, summary = EXCLUDED.summary
     RETURNING id::text`,
    [randomUUID(), s.datasetId, s.version, s.requestHash, s.total, ttlMs, JSON.stringify(s.summary)],
  );
  return row.id;
}

/** Whether `error` is the server's "could not serialize access" (a REPEATABLE READ write met a newer row). */
export function isSerializationFailure(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === '40001';
}

/** A stream read in one snapshot: what `open` answered before the first chunk, then the chunks. */
export interface SnapshotStream<H> {
  version: number;
  head: H;
  chunks: AsyncGenerator<Buffer>;
  /**
   * Gives the stream up now: its transaction ends (a native COPY in flight is cancelled) and
   * `chunks` ends. For a consumer that goes away, even before its first read — an async
   * generator never started runs no cleanup on `return()`, so this is the only way out then.
   */
  cancel: () => void;
}

/** A stream nobody reads for this long is given up: its transaction ends, reading it later fails. */
export const STREAM_STALL_MS = 60_000;

const ABANDONED = Symbol('abandoned');

/**
 * Runs `open` against the dataset's active version in one REPEATABLE READ snapshot (as
 * `readAtActiveVersion`) and keeps that transaction open while the caller reads the chunks it
 * returned, one chunk handed over at a time (the database waits for a slow reader). The
 * transaction ends when the chunks end, when the reader stops early (`return()`: a native COPY in
 * flight is cancelled, so the connection goes back clean), or after STREAM_STALL_MS without a
 * read. Undefined when the dataset has no active version or no longer exists.
 */
export async function streamAtActiveVersion<H>(
  db: Database,
  datasetId: string,
  open: (tx: Sql, version: number) => Promise<{ head: H; chunks: AsyncIterable<Buffer> }>,
  stallMs = STREAM_STALL_MS,
): Promise<SnapshotStream<H> | undefined> {
  const handoff = new Handoff<Buffer>(stallMs);
  let opened!: (value: { version: number; head: H } | undefined) => void;
  let failed!: (error: unknown) => void;
  const started = new Promise<{ version: number; head: H } | undefined>((resolve, reject) => ((opened = resolve), (failed = reject)));
  const run = db.transaction(async (tx) => {
    await tx.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
    const [row] = await tx.query<{ version: number | null }>('SELECT active_version AS version FROM datasets WHERE id = $1', [datasetId]);
    if (!row || row.version === null) return opened(undefined);
    const identity = db.backend === 'native' ? await transactionIdentity(tx) : null;
    const { head, chunks } = await open(tx, row.version);
    opened({ version: row.version, head });
    const copy = chunks[Symbol.asyncIterator]();
    for (let next = await copy.next(); !next.done; next = await copy.next()) {
      if (await handoff.put(next.value)) continue;
      if (identity) await cancelTransaction(db.control, identity).catch(() => undefined);
      try {
        while (!(await copy.next()).done);
      } catch {
        // the cancelled statement
      }
      throw ABANDONED;
    }
    handoff.end();
  });
  run.catch((error: unknown) => {
    if (error === ABANDONED) return;
    failed(error);
    handoff.fail(error);
  });
  const start = await started;
  if (!start) return undefined;
  return { ...start, chunks: handoff.reader(), cancel: () => handoff.close() };
}

/**
 * One value at a time from a producer to a consumer: `put` resolves true once the consumer took
 * the value, false when it stopped reading or did not read for `stallMs`.
 */
class Handoff<T> {
  private offered: { value: T; taken: (ok: boolean) => void } | null = null;
  private waiting: ((result: IteratorResult<T> | Error) => void) | null = null;
  private state: 'open' | 'ended' | 'closed' = 'open';
  private error: Error | null = null;

  constructor(private readonly stallMs: number) {}

  put(value: T): Promise<boolean> {
    if (this.state !== 'open') return Promise.resolve(false);
    if (this.waiting) {
      const wake = this.waiting;
      this.waiting = null;
      wake({ value, done: false });
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.offered = null;
        this.state = 'closed';
        this.error = new Error(`selection stream not read for ${this.stallMs} ms: given up`);
        resolve(false);
      }, this.stallMs);
      this.offered = { value, taken: (ok) => (clearTimeout(timer), resolve(ok)) };
    });
  }

  end(): void {
    this.finish(null);
  }

  fail(error: unknown): void {
    this.finish(error instanceof Error ? error : new Error(String(error)));
  }

  private finish(error: Error | null): void {
    if (this.state === 'open') this.state = 'ended';
    this.error ??= error;
    const wake = this.waiting;
    this.waiting = null;
    wake?.(this.error ?? { value: undefined, done: true });
  }

  private take(): Promise<IteratorResult<T> | Error> {
    if (this.offered) {
      const { value, taken } = this.offered;
      this.offered = null;
      taken(true);
      return Promise.resolve({ value, done: false });
    }
    if (this.error) return Promise.resolve(this.error);
    if (this.state !== 'open') return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => (this.waiting = resolve));
  }

  /** The consumer is gone: a pending or later `put` answers false. */
  close(): void {
    if (this.state === 'open') this.state = 'closed';
    this.offered?.taken(false);
    this.offered = null;
  }

  async *reader(): AsyncGenerator<T> {
    try {
      for (;;) {
        const next = await this.take();
        if (next instanceof Error) throw next;
        if (next.done) return;
        yield next.value;
      }
    } finally {
      this.close();
    }
  }
}
