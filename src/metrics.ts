import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/**
 * What the service layer and the transports report. Only this interface is seen outside this
 * module, so nothing but here depends on prom-client; every method is cheap and never throws.
 */
export interface Metrics {
  /** One HTTP request answered: its route pattern (never the raw URL), method and status. */
  httpRequest(route: string, method: string, status: number, seconds: number): void;
  /** One gRPC call finished: its method and status code name (OK, INVALID_ARGUMENT, …). */
  grpcCall(method: string, code: string, seconds: number): void;
  /** Items one ingest stored, updated or failed, by transport (rest, grpc). */
  ingestItems(transport: string, counts: { stored: number; updated: number; failed: number }): void;
  /** Payload bytes an ingest received: image files and embedding vectors (decoded), by transport. */
  ingestBytes(transport: string, bytes: number): void;
  /** One encoder run of `size` images that took `seconds`. */
  embeddingBatch(size: number, seconds: number): void;
  /** A job run ended: a final state, or `interrupted` / `retried` (re-queued) or `lost` (taken over by another worker). */
  jobFinished(kind: string, state: string, seconds: number): void;
  /** A refit's phase durations, in milliseconds, as its result's `timings` reports them. */
  refitTimings(timings: Record<string, unknown>): void;
  /** Reads a gauge's value whenever /metrics is scraped (the image queue depth, the database pool). */
  setSources(sources: MetricSources): void;
}

export interface MetricSources {
  /** Images accepted by the encoder's batcher and not finished yet. */
  embeddingQueueDepth?: () => number;
  /** Connections of the database: total open, idle, and callers waiting for one. */
  dbPool?: () => { backend: string; total: number; idle: number; waiting: number };
}

/** The refit `timings` keys and the phase label each becomes. */
const REFIT_PHASES: Record<string, string> = {
  readMs: 'read',
  fitMs: 'fit',
  rescoreWriteMs: 'rescore_write',
  switchMs: 'switch',
  totalMs: 'total',
};

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
const JOB_BUCKETS = [0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];

/** Prometheus metrics of one running service, on a registry of its own (not prom-client's global one). */
export class PromMetrics implements Metrics {
  readonly registry = new Registry();
  private sources: MetricSources = {};
  private readonly http: Histogram<'route' | 'method' | 'status_code'>;
  private readonly grpc: Histogram<'method' | 'code'>;
  private readonly items: Counter<'transport' | 'outcome'>;
  private readonly bytes: Counter<'transport'>;
  private readonly batchSize: Histogram;
  private readonly batchSeconds: Histogram;
  private readonly jobs: Counter<'kind' | 'state'>;
  private readonly jobSeconds: Histogram<'kind' | 'state'>;
  private readonly refit: Histogram<'phase'>;

  constructor(options: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (options.defaultMetrics ?? true) {
      collectDefaultMetrics({ register: this.registry, prefix: 'protoprune_' });
      // prom-client names three gauges *_total, which Prometheus reserves for counters (promtool rejects them);
      // each is the sum over the `type` label of the gauge of the same name without the suffix, which stays.
      for (const family of ['handles', 'requests', 'resources']) this.registry.removeSingleMetric(`protoprune_nodejs_active_${family}_total`);
    }
    this.http = new Histogram({
      name: 'protoprune_http_request_duration_seconds',
      help: 'HTTP request latency by route pattern, method and status code',
      labelNames: ['route', 'method', 'status_code'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.grpc = new Histogram({
      name: 'protoprune_grpc_call_duration_seconds',
      help: 'gRPC call latency by method and status code',
      labelNames: ['method', 'code'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.items = new Counter({
      name: 'protoprune_ingest_items_total',
      help: 'Ingested items by transport and outcome (stored, updated, failed)',
      labelNames: ['transport', 'outcome'],
      registers,
    });
    this.bytes = new Counter({
      name: 'protoprune_ingest_payload_bytes_total',
      help: 'Bytes of image files and embedding vectors received for ingest (decoded; 4 bytes per float), by transport',
      labelNames: ['transport'],
      registers,
    });
    this.batchSize = new Histogram({
      name: 'protoprune_embedding_batch_size',
      help: 'Images per image-encoder run',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
      registers,
    });
    this.batchSeconds = new Histogram({
      name: 'protoprune_embedding_batch_duration_seconds',
      help: 'Duration of one image-encoder run',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    const sources = () => this.sources;
    new Gauge({
      name: 'protoprune_embedding_queue_depth',
      help: 'Images accepted by the image encoder and not finished yet',
      registers,
      collect() {
        this.set(sources().embeddingQueueDepth?.() ?? 0);
      },
    });
    this.jobs = new Counter({
      name: 'protoprune_jobs_finished_total',
      help: 'Job runs that ended, by kind and state (succeeded, failed; interrupted: re-queued by a shutdown; retried: re-queued after a transient database error; lost: taken over by another worker)',
      labelNames: ['kind', 'state'],
      registers,
    });
    this.jobSeconds = new Histogram({
      name: 'protoprune_job_duration_seconds',
      help: 'Duration of a job run, by kind and final state',
      labelNames: ['kind', 'state'],
      buckets: JOB_BUCKETS,
      registers,
    });
    this.refit = new Histogram({
      name: 'protoprune_refit_phase_duration_seconds',
      help: 'Refit durations by phase: read, fit, rescore_write (writing every item’s new score), switch, total',
      labelNames: ['phase'],
      buckets: JOB_BUCKETS,
      registers,
    });
    const pool = (name: string, help: string, pick: (s: { total: number; idle: number; waiting: number }) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['backend'],
        registers,
        collect() {
          this.reset();
          const stats = sources().dbPool?.();
          if (stats) this.set({ backend: stats.backend }, pick(stats));
        },
      });
    pool('protoprune_db_pool_connections', 'Open database connections (the embedded database has one)', (s) => s.total);
    pool('protoprune_db_pool_idle_connections', 'Idle database connections', (s) => s.idle);
    pool('protoprune_db_pool_waiting', 'Calls waiting for a database connection (embedded: queued behind the single connection)', (s) => s.waiting);
  }

  httpRequest(route: string, method: string, status: number, seconds: number): void {
    this.http.observe({ route, method, status_code: String(status) }, seconds);
  }

  grpcCall(method: string, code: string, seconds: number): void {
    this.grpc.observe({ method, code }, seconds);
  }

  ingestItems(transport: string, counts: { stored: number; updated: number; failed: number }): void {
    for (const outcome of ['stored', 'updated', 'failed'] as const) {
      if (counts[outcome] > 0) this.items.inc({ transport, outcome }, counts[outcome]);
    }
  }

  ingestBytes(transport: string, bytes: number): void {
    if (bytes > 0) this.bytes.inc({ transport }, bytes);
  }

  embeddingBatch(size: number, seconds: number): void {
    this.batchSize.observe(size);
    this.batchSeconds.observe(seconds);
  }

  jobFinished(kind: string, state: string, seconds: number): void {
    this.jobs.inc({ kind, state });
    this.jobSeconds.observe({ kind, state }, seconds);
  }

  refitTimings(timings: Record<string, unknown>): void {
    for (const [key, phase] of Object.entries(REFIT_PHASES)) {
      const ms = timings[key];
      if (typeof ms === 'number' && Number.isFinite(ms)) this.refit.observe({ phase }, ms / 1000);
    }
  }

  setSources(sources: MetricSources): void {
    this.sources = { ...this.sources, ...sources };
  }

  /** The Prometheus text exposition of every metric. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** Bytes of an ingest item's payload: a decoded image or vector (a JSON number array counts 4 bytes per value). */
export function payloadBytes(item: { image?: Uint8Array | string; embedding?: ArrayLike<number> | string | Uint8Array }): number {
  const bytesOf = (value: Uint8Array | string) => (typeof value === 'string' ? Buffer.byteLength(value, 'base64') : value.byteLength);
  if (item.image !== undefined) return bytesOf(item.image);
  const e = item.embedding;
  if (e === undefined) return 0;
  if (typeof e === 'string' || e instanceof Uint8Array) return bytesOf(e);
  return e.length * 4;
}
