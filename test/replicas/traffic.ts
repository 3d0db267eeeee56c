import { Rng } from '../../src/core/random.js';
import type { Cluster, Replica } from './cluster.js';
import { sleep } from './cluster.js';

/**
 * HTTP clients of the replicas, behind a round-robin "load balancer" that only routes to replicas
 * marked routable. Every answer is accounted per replica: 5xx (a 503 must carry Retry-After, and
 * is then retried after it), transport errors (expected only from a replica that was killed or
 * paused while the request was out), per-item ingest outcomes.
 */

export interface Answer {
  replica: Replica;
  status: number;
  headers: Headers;
  text: string;
  json: unknown;
}

export interface Failure {
  replica: string;
  what: string;
  status?: number;
  retryAfter?: string | null;
  error?: string;
  body?: string;
  /** A transport error from a replica killed/paused while the request was out (not a finding). */
  expected?: boolean;
}

const REQUEST_TIMEOUT_MS = 30_000;
const MAX_TRIES = 12;

export class Traffic {
  /** `r1 200` → count. */
  readonly statuses = new Map<string, number>();
  /** 5xx answers other than a 503 with Retry-After. */
  readonly bad5xx: Failure[] = [];
  /** 503 answers with Retry-After (backpressure, allowed) per replica. */
  readonly backpressure = new Map<string, number>();
  readonly rateLimited = new Map<string, number>();
  /** Transport errors (connection refused/reset, timeout). */
  readonly transport: Failure[] = [];
  /** Requests given up after MAX_TRIES. */
  readonly gaveUp: Failure[] = [];
  /** Other unexpected answers a client could not work with (e.g. 4xx on a valid request). */
  readonly unexpected: Failure[] = [];
  /** Requests still unanswered when the scenario gave up waiting for its clients (see abort()). */
  readonly abandoned: Failure[] = [];
  readonly inFlight = new Map<string, number>();
  private next = 0;
  private readonly aborter = new AbortController();

  constructor(readonly cluster: Cluster) {
    for (const r of cluster.replicas) this.inFlight.set(r.name, 0);
  }

  /** Cuts every request still out and makes clients stop (for a scenario whose requests hang). */
  abort(): void {
    this.aborter.abort();
  }

  get aborted(): boolean {
    return this.aborter.signal.aborted;
  }

  pick(): Replica {
    const candidates = this.cluster.replicas.filter((r) => r.routable);
    if (candidates.length === 0) throw new Error('no routable replica');
    return candidates[this.next++ % candidates.length];
  }

  private count(map: Map<string, number>, key: string): void {
    map.set(key, (map.get(key) ?? 0) + 1);
  }

  /** One attempt; transport errors are returned, not thrown. */
  async once(replica: Replica, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer | { replica: Replica; error: string; expected: boolean }> {
    const sentAt = Date.now();
    this.inFlight.set(replica.name, this.inFlight.get(replica.name)! + 1);
    try {
      const res = await fetch(`${replica.base}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.cluster.adminKey}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          ...headers,
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.any([AbortSignal.timeout(REQUEST_TIMEOUT_MS), this.aborter.signal]),
      });
      const text = await res.text();
      this.count(this.statuses, `${replica.name} ${res.status}`);
      let json: unknown = null;
      try {
        json = text ? JSON.parse(text) : null;
      } catch {
        json = null;
      }
      return { replica, status: res.status, headers: res.headers, text, json };
    } catch (error) {
      const e = error as Error & { cause?: { code?: string; message?: string } };
      const message = `${e.name}: ${e.cause?.code ?? e.cause?.message ?? e.message}`;
      if (this.aborted) {
        this.abandoned.push({ replica: replica.name, what: `${method} ${path.replace(/\?.*/, '')}`, error: `unanswered after ${Date.now() - sentAt} ms` });
        return { replica, error: message, expected: true };
      }
      // Killed while the request was out (or before it connected), or paused meanwhile.
      const expected =
        (replica.killedAt !== null && replica.killedAt <= Date.now()) ||
        (replica.pausedAt !== null && (replica.resumedAt === null || replica.resumedAt >= sentAt));
      this.transport.push({ replica: replica.name, what: `${method} ${path}`, error: message, expected });
      return { replica, error: message, expected };
    } finally {
      this.inFlight.set(replica.name, this.inFlight.get(replica.name)! - 1);
    }
  }

  /**
   * A request as a well-behaved client sends it: to the next routable replica; 503 + Retry-After
   * and 429 are retried after the delay; other 5xx and transport errors are recorded and retried
   * on the next replica. `onAmbiguous` is told when an attempt may or may not have been applied.
   */
  async send(method: string, path: string, body?: unknown, options: { replica?: Replica; headers?: Record<string, string>; onAmbiguous?: () => void } = {}): Promise<Answer | null> {
    let last: Failure | null = null;
    for (let attempt = 0; attempt < MAX_TRIES; attempt++) {
      if (this.aborted) return null;
      let replica: Replica;
      try {
        replica = options.replica && attempt === 0 ? options.replica : this.pick();
      } catch {
        await sleep(200);
        continue;
      }
      const answer = await this.once(replica, method, path, body, options.headers);
      if ('error' in answer) {
        options.onAmbiguous?.();
        last = { replica: replica.name, what: `${method} ${path}`, error: answer.error, expected: answer.expected };
        await sleep(answer.expected ? 50 : 250);
        continue;
      }
      if (answer.status === 503 && answer.headers.get('retry-after')) {
        this.count(this.backpressure, replica.name);
        const seconds = Number(answer.headers.get('retry-after'));
        await sleep(Math.min(3000, Number.isFinite(seconds) ? seconds * 1000 : 1000) + Math.random() * 100);
        continue;
      }
      if (answer.status === 429) {
        this.count(this.rateLimited, replica.name);
        await sleep(500);
        continue;
      }
      if (answer.status >= 500) {
        const failure: Failure = {
          replica: replica.name,
          what: `${method} ${path.replace(/\?.*/, '')}`,
          status: answer.status,
          retryAfter: answer.headers.get('retry-after'),
          body: answer.text.slice(0, 300),
        };
        this.bad5xx.push(failure);
        last = failure;
        options.onAmbiguous?.();
        await sleep(250);
        continue;
      }
      return answer;
    }
    if (this.aborted) return null;
    this.gaveUp.push(last ?? { replica: '-', what: `${method} ${path}`, error: 'no replica routable' });
    return null;
  }

  /** Resolves once no request is out to `replica` (for draining it before a SIGSTOP). */
  async drained(replica: Replica, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.inFlight.get(replica.name)! > 0) {
      if (Date.now() > deadline) throw new Error(`${replica.name} still has ${this.inFlight.get(replica.name)} requests in flight`);
      await sleep(20);
    }
  }
}

/**
 * Embedding-only items: `clusters` planted unit centres in `dim` dimensions, each item a centre
 * plus Gaussian noise. Remembers which ids were acknowledged (200 with stored/updated), and which
 * were sent in an attempt whose fate the client cannot know (transport error, 5xx).
 */
export class Corpus {
  private readonly rng: Rng;
  private readonly centres: Float64Array[];
  private nextId = 0;
  readonly acked = new Set<string>();
  readonly ackedList: string[] = [];
  readonly ambiguous = new Set<string>();
  /** Per-item anomalies in answers: id kinds that contradict what the client knows. */
  readonly anomalies: string[] = [];
  itemErrors = 0;
  itemErrorSamples: string[] = [];
  writes = 0;
  replacedWrites = 0;

  constructor(readonly dim: number, clusters: number, seed: number, private readonly prefix = 'item') {
    this.rng = new Rng(seed);
    this.centres = Array.from({ length: clusters }, () => this.unit(Array.from({ length: dim }, () => this.gauss())));
  }

  private gauss(): number {
    const u = 1 - this.rng.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.rng.next());
  }

  private unit(v: number[]): Float64Array {
    const norm = Math.hypot(...v);
    return Float64Array.from(v, (x) => x / norm);
  }

  vector(): number[] {
    const c = this.centres[Math.floor(this.rng.next() * this.centres.length)];
    const sigma = 0.35 / Math.sqrt(this.dim);
    return Array.from(c, (x) => Math.round((x + sigma * this.gauss()) * 1e6) / 1e6);
  }

  /** `size` items: a `resend` fraction re-sends acknowledged ids with new vectors, the rest are new. */
  batch(size: number, resend: number): Array<{ externalId: string; embedding: number[] }> {
    const ids = new Set<string>();
    const items: Array<{ externalId: string; embedding: number[] }> = [];
    for (let i = 0; i < size; i++) {
      let id: string | undefined;
      if (this.ackedList.length > 0 && this.rng.next() < resend) {
        for (let t = 0; t < 5 && (id === undefined || ids.has(id)); t++) id = this.ackedList[Math.floor(this.rng.next() * this.ackedList.length)];
        if (ids.has(id!)) id = undefined;
      }
      id ??= `${this.prefix}-${String(this.nextId++).padStart(7, '0')}`;
      ids.add(id);
      items.push({ externalId: id, embedding: this.vector() });
    }
    return items;
  }

  /** Every id ever sent. */
  get attempted(): number {
    return this.nextId;
  }
}

/** POSTs one batch (with the Traffic's retries) and checks each item's outcome against what the client knows. */
export async function ingestBatch(traffic: Traffic, dataset: string, corpus: Corpus, items: Array<{ externalId: string; embedding: number[] }>): Promise<boolean> {
  const knownBefore = items.map((it) => corpus.acked.has(it.externalId));
  let ambiguous = false;
  const answer = await traffic.send('POST', `/v1/datasets/${encodeURIComponent(dataset)}/items`, { items }, { onAmbiguous: () => (ambiguous = true) });
  if (ambiguous) for (const it of items) corpus.ambiguous.add(it.externalId);
  if (!answer) return false;
  if (answer.status !== 200) {
    traffic.unexpected.push({ replica: answer.replica.name, what: 'POST items', status: answer.status, body: answer.text.slice(0, 300) });
    return false;
  }
  const outcomes = (answer.json as { items: Array<{ externalId: string; status: string; code?: string; message?: string }> }).items;
  corpus.writes += items.length;
  outcomes.forEach((o, i) => {
    const id = items[i].externalId;
    if (o.status === 'error') {
      corpus.itemErrors++;
      if (corpus.itemErrorSamples.length < 3) corpus.itemErrorSamples.push(`${id}: ${o.code} ${o.message}`);
      return;
    }
    if (knownBefore[i]) corpus.replacedWrites++;
    if (knownBefore[i] && o.status === 'stored') corpus.anomalies.push(`${id} was acknowledged before but a re-send answered "stored" (a second row?)`);
    if (!knownBefore[i] && o.status === 'updated' && !corpus.ambiguous.has(id)) corpus.anomalies.push(`${id} was never sent before but answered "updated"`);
    if (!corpus.acked.has(id)) {
      corpus.acked.add(id);
      corpus.ackedList.push(id);
    }
  });
  return true;
}

/** `clients` concurrent ingest loops until `stop()` says so or each sent `batches` batches. */
export async function ingestLoad(
  traffic: Traffic,
  dataset: string,
  corpus: Corpus,
  options: { clients: number; batchSize: number; resend: number; batches?: number; stop?: () => boolean; pauseMs?: number },
): Promise<void> {
  await Promise.all(
    Array.from({ length: options.clients }, async () => {
      for (let b = 0; options.batches === undefined || b < options.batches; b++) {
        if (options.stop?.() || traffic.aborted) return;
        await ingestBatch(traffic, dataset, corpus, corpus.batch(options.batchSize, options.resend));
        if (options.pauseMs) await sleep(options.pauseMs);
      }
    }),
  );
}

/**
 * A reader paging through selections on every replica while writes go on (as a dashboard or an
 * export would); 409 before the first fit or on a stale cursor is a valid answer here.
 */
export async function readerLoad(traffic: Traffic, dataset: string, stop: () => boolean, everyMs = 150): Promise<number> {
  let reads = 0;
  while (!stop() && !traffic.aborted) {
    const answer = await traffic.send('GET', `/v1/datasets/${encodeURIComponent(dataset)}/selection?fraction=1&limit=50`);
    if (answer && answer.status !== 200 && answer.status !== 409) {
      traffic.unexpected.push({ replica: answer.replica.name, what: 'GET selection', status: answer.status, body: answer.text.slice(0, 300) });
    }
    reads++;
    await sleep(everyMs);
  }
  return reads;
}
