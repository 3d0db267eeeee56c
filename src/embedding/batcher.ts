import { availableParallelism } from 'node:os';
import { BatcherClosedError, ImageError, OverloadedError, type EmbedErrorInfo } from './errors.js';
import type { ImageEncoder } from './model.js';
import {
  decodeImage,
  geometryOf,
  resolvePreprocessOptions,
  tensorWriter,
  type CropGeometry,
  type PreprocessOptions,
  type TensorWriter,
} from './preprocess.js';

/**
 * Micro-batcher: concurrent `embed(images)` calls share ORT runs.
 *
 * Pipeline per image: queue → decode/preprocess on sharp's (libuv) thread pool with at most
 * `decodeConcurrency` in flight → written straight into a slot of a batch tensor → ORT run of up to
 * `maxBatch` images → L2-normalised embedding. Decoding keeps running while a batch is being inferred,
 * so decode of the next batch overlaps inference of the current one.
 *
 * Batching rule: one ORT run at a time. When the model is free, a full batch runs at once; a partial
 * batch runs once its first image has waited `maxWaitMs` (so a lone request is not held back longer
 * than that). While the model is busy, the filling batch keeps filling.
 *
 * Memory is bounded: at most `maxQueuedImages` images are accepted (beyond that, calls are rejected
 * with OverloadedError carrying a retry hint), and decoded tensors live only in a fixed pool of three
 * batch buffers (running, waiting, filling) — decoding pauses when all are in use.
 *
 * Failures are per image: an image that cannot be decoded gets `{ error: { code, message } }` and the
 * other images of the same call are unaffected; a failed ORT run fails only the images of that batch
 * (INFERENCE_FAILED).
 */

export interface BatcherOptions {
  /** Images per ORT run (default 32). */
  maxBatch?: number;
  /** Longest time a decoded image waits for more images while the model is idle (default 10 ms). */
  maxWaitMs?: number;
  /** Accepted-but-unfinished images beyond which new calls are rejected (default 1024). */
  maxQueuedImages?: number;
  /** Images decoded concurrently (default: available parallelism, at least 2). */
  decodeConcurrency?: number;
  /** Decoding options (pixel limit, alpha background, strictness, resize kernel). */
  preprocess?: PreprocessOptions;
}

export type EmbedItemResult = { embedding: Float32Array } | { error: EmbedErrorInfo };

export interface BatcherStats {
  /** Accepted images not finished yet. */
  queued: number;
  /** Accepted images not yet being decoded. */
  waiting: number;
  decoding: number;
  /** Decoded images waiting in batch buffers (not counting the running batch). */
  ready: number;
  running: boolean;
  batches: number;
  embedded: number;
  failed: number;
  /** Recent inference throughput (images/s), 0 before the first batch. */
  imagesPerSecond: number;
}

/** Told about every encoder run once it ends (successful or not); must not throw. */
export type BatchObserver = (batch: { size: number; ms: number; ok: boolean }) => void;

interface Call {
  results: EmbedItemResult[];
  remaining: number;
  resolve: (results: EmbedItemResult[]) => void;
}

interface Job {
  bytes: Uint8Array | null;
  call: Call;
  index: number;
}

interface Batch {
  buf: Float32Array;
  jobs: Job[];
  firstAt: number;
}

const BUFFERS = 3;

function positiveInt(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer, got ${value}`);
  return value;
}

export class EmbeddingBatcher {
  readonly maxBatch: number;
  readonly maxWaitMs: number;
  readonly maxQueuedImages: number;
  readonly decodeConcurrency: number;

  private readonly geometry: CropGeometry;
  private readonly writer: TensorWriter;
  private readonly preprocess: PreprocessOptions;

  private readonly waiting: Job[] = [];
  private waitingHead = 0;
  private decoding = 0;
  private queued = 0;
  private readonly free: Float32Array[] = [];
  private allocated = 0;
  private filling: Batch | null = null;
  private readonly sealed: Batch[] = [];
  private running = false;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private drained: (() => void) | null = null;
  private batches = 0;
  private embedded = 0;
  private failed = 0;
  /** Exponentially weighted inference throughput, images per millisecond. */
  private rate = 0;
  private readonly observers = new Set<BatchObserver>();

  constructor(
    private readonly encoder: ImageEncoder,
    options: BatcherOptions = {},
  ) {
    this.maxBatch = positiveInt('maxBatch', options.maxBatch ?? 32);
    this.maxWaitMs = options.maxWaitMs ?? 10;
    if (!Number.isFinite(this.maxWaitMs) || this.maxWaitMs < 0) throw new RangeError(`maxWaitMs must be ≥ 0, got ${this.maxWaitMs}`);
    this.maxQueuedImages = positiveInt('maxQueuedImages', options.maxQueuedImages ?? 1024);
    this.decodeConcurrency = positiveInt('decodeConcurrency', options.decodeConcurrency ?? Math.max(2, availableParallelism()));
    this.geometry = geometryOf(encoder.spec);
    this.writer = tensorWriter(encoder.spec);
    this.preprocess = resolvePreprocessOptions(options.preprocess ?? {});
  }

  /**
   * Embeds the images; resolves with one result per image, in order. Rejects (without accepting any
   * image) with OverloadedError when the queue cannot take them all, BatcherClosedError after close(),
   * RangeError when the call alone exceeds maxQueuedImages and TypeError for non-byte items.
   */
  embed(images: readonly Uint8Array[]): Promise<EmbedItemResult[]> {
    if (this.closed) return Promise.reject(new BatcherClosedError());
    if (!Array.isArray(images)) return Promise.reject(new TypeError('images must be an array of Buffers/Uint8Arrays'));
    const bad = images.findIndex((img) => !(img instanceof Uint8Array));
    if (bad >= 0) return Promise.reject(new TypeError(`image ${bad} is not a Buffer/Uint8Array`));
    if (images.length === 0) return Promise.resolve([]);
    if (images.length > this.maxQueuedImages) {
      return Promise.reject(new RangeError(`a call of ${images.length} images exceeds maxQueuedImages (${this.maxQueuedImages}); split it`));
    }
    if (this.queued + images.length > this.maxQueuedImages) {
      return Promise.reject(new OverloadedError(this.retryAfterMs(this.queued + images.length - this.maxQueuedImages)));
    }
    return new Promise<EmbedItemResult[]>((resolve) => {
      const call: Call = { results: new Array<EmbedItemResult>(images.length), remaining: images.length, resolve };
      for (let i = 0; i < images.length; i++) this.waiting.push({ bytes: images[i], call, index: i });
      this.queued += images.length;
      this.pump();
    });
  }

  stats(): BatcherStats {
    return {
      queued: this.queued,
      waiting: this.waiting.length - this.waitingHead,
      decoding: this.decoding,
      ready: (this.filling?.jobs.length ?? 0) + this.sealed.reduce((s, b) => s + b.jobs.length, 0),
      running: this.running,
      batches: this.batches,
      embedded: this.embedded,
      failed: this.failed,
      imagesPerSecond: this.rate * 1000,
    };
  }

  /** Registers an observer of encoder runs (e.g. metrics); returns a function that removes it. */
  observe(observer: BatchObserver): () => void {
    this.observers.add(observer);
    return () => this.observers.delete(observer);
  }

  /** Stops accepting calls and resolves once every accepted image has its result. Idempotent. */
  close(): Promise<void> {
    this.closed = true;
    if (this.queued === 0) {
      this.clearTimer();
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const previous = this.drained;
      this.drained = () => {
        previous?.();
        resolve();
      };
    });
  }

  /** Time for the model to work through `excess` images at the recent rate (bounded to [50 ms, 30 s]). */
  private retryAfterMs(excess: number): number {
    const perMs = this.rate > 0 ? this.rate : 0.05; // assume 50 images/s before the first measurement
    return Math.min(30_000, Math.max(50, Math.ceil(excess / perMs)));
  }

  /** Decoded images that can still be placed without allocating beyond the buffer pool. */
  private slotCapacity(): number {
    const inFilling = this.filling ? this.maxBatch - this.filling.jobs.length : 0;
    return inFilling + this.maxBatch * (this.free.length + (BUFFERS - this.allocated));
  }

  private pump(): void {
    while (this.waitingHead < this.waiting.length && this.decoding < this.decodeConcurrency && this.decoding < this.slotCapacity()) {
      const job = this.waiting[this.waitingHead];
      this.waiting[this.waitingHead++] = undefined as unknown as Job;
      if (this.waitingHead > 1024 && this.waitingHead * 2 > this.waiting.length) {
        this.waiting.splice(0, this.waitingHead);
        this.waitingHead = 0;
      }
      this.startDecode(job);
    }
  }

  private startDecode(job: Job): void {
    this.decoding++;
    const bytes = job.bytes!;
    job.bytes = null;
    decodeImage(bytes, this.geometry, this.preprocess).then(
      (image) => {
        this.decoding--;
        this.place(job, image.data);
      },
      (err: unknown) => {
        this.decoding--;
        const error =
          err instanceof ImageError
            ? { code: err.code, message: err.message }
            : { code: 'CORRUPT_IMAGE' as const, message: `cannot decode image: ${(err as Error)?.message ?? String(err)}` };
        this.finish(job, { error });
        this.pump();
        this.dispatch();
      },
    );
  }

  private takeBuffer(): Float32Array {
    const buf = this.free.pop();
    if (buf) return buf;
    if (this.allocated >= BUFFERS) throw new Error('internal: batch buffer pool exhausted');
    this.allocated++;
    return this.encoder.createBatchBuffer(this.maxBatch);
  }

  private place(job: Job, rgb: Uint8Array): void {
    if (!this.filling) this.filling = { buf: this.takeBuffer(), jobs: [], firstAt: performance.now() };
    const batch = this.filling;
    try {
      this.writer.write(rgb, batch.buf, batch.jobs.length);
    } catch (err) {
      this.finish(job, { error: { code: 'CORRUPT_IMAGE', message: `cannot preprocess image: ${(err as Error).message}` } });
      this.pump();
      this.dispatch();
      return;
    }
    batch.jobs.push(job);
    if (batch.jobs.length === this.maxBatch) {
      this.sealed.push(batch);
      this.filling = null;
    }
    this.pump();
    this.dispatch();
  }

  private clearTimer(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  private dispatch(): void {
    if (this.running) return;
    let batch = this.sealed.shift();
    if (!batch && this.filling && this.filling.jobs.length > 0) {
      const age = performance.now() - this.filling.firstAt;
      if (age >= this.maxWaitMs) {
        batch = this.filling;
        this.filling = null;
      } else if (!this.timer) {
        this.timer = setTimeout(() => {
          this.timer = null;
          this.dispatch();
        }, Math.ceil(this.maxWaitMs - age));
      }
    }
    if (!batch) return;
    this.clearTimer();
    void this.run(batch);
  }

  private async run(batch: Batch): Promise<void> {
    this.running = true;
    const n = batch.jobs.length;
    const started = performance.now();
    let ok = false;
    try {
      const out = await this.encoder.embed(batch.buf.subarray(0, n * this.writer.elements), n);
      const dim = this.encoder.dim;
      for (let i = 0; i < n; i++) {
        const embedding = out.slice(i * dim, (i + 1) * dim);
        let nonZero = false;
        for (let j = 0; j < dim && !nonZero; j++) nonZero = embedding[j] !== 0;
        this.finish(
          batch.jobs[i],
          nonZero ? { embedding } : { error: { code: 'INVALID_EMBEDDING', message: 'the model produced a zero or non-finite feature vector' } },
        );
      }
      const perMs = n / Math.max(1e-3, performance.now() - started);
      this.rate = this.rate === 0 ? perMs : 0.8 * this.rate + 0.2 * perMs;
      ok = true;
    } catch (err) {
      const message = `inference failed: ${(err as Error)?.message ?? String(err)}`;
      for (const job of batch.jobs) this.finish(job, { error: { code: 'INFERENCE_FAILED', message } });
    } finally {
      const ms = performance.now() - started;
      for (const observer of this.observers) {
        try {
          observer({ size: n, ms, ok });
        } catch {
          // an observer's failure must not disturb the batcher
        }
      }
      this.batches++;
      batch.jobs = [];
      this.free.push(batch.buf);
      this.running = false;
      this.pump();
      this.dispatch();
    }
  }

  private finish(job: Job, result: EmbedItemResult): void {
    if ('error' in result) this.failed++;
    else this.embedded++;
    const call = job.call;
    call.results[job.index] = result;
    this.queued--;
    if (--call.remaining === 0) call.resolve(call.results);
    if (this.queued === 0 && this.drained) {
      this.clearTimer();
      const done = this.drained;
      this.drained = null;
      done();
    }
  }
}
