/**
 * Embedding pipeline benchmark.
 *
 *   npx tsx bench/embedding.ts [--images=512] [--batch=32] [--size=500x375] [--quality=90]
 *                              [--rounds=5] [--stream=10000] [--threads=2] [--decode=N] [--spin=0|1] [--models=DIR]
 *
 * 1. Whole path (JPEG bytes → decode → preprocess → infer → L2-normalise) through the micro-batcher,
 *    fed by concurrent callers, vs raw ORT inference of the same model at the same batch size on
 *    pre-decoded tensors. Each round measures raw then whole back to back; the headline ratio is the
 *    median of the per-round ratios (robust to the machine's speed drifting), and CPU use per image is
 *    printed for both paths.
 * 2. Streams `--stream` images through the whole path and reports RSS at start / middle / end.
 *
 * Images are synthetic photo-like pictures (colour fields, discs, fine noise) encoded as JPEG, all distinct; the
 * default 500×375 is the typical ImageNet photo size. sharp's operation cache is disabled so repeated
 * buffers in the stream cannot hit it.
 */
import { mkdir } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { EmbeddingBatcher } from '../src/embedding/batcher.js';
import { ensureDefaultModel } from '../src/embedding/convert/default-model.js';
import { defaultModelSpec, loadModel, type ImageEncoder } from '../src/embedding/model.js';
import { preprocessImage } from '../src/embedding/preprocess.js';
import { jpeg, photoLikeRaw } from '../test/embedding/images.js';

function arg(name: string, fallback: string): string {
  const hit = process.argv.find((a) => a.startsWith(`--${name}=`));
  return hit ? hit.slice(name.length + 3) : fallback;
}
const intArg = (name: string, fallback: number): number => {
  const v = Number(arg(name, String(fallback)));
  if (!Number.isInteger(v) || v < 0) throw new Error(`--${name} must be a non-negative integer`);
  return v;
};

const IMAGES = intArg('images', 512);
const BATCH = intArg('batch', 32);
const ROUNDS = intArg('rounds', 5);
const STREAM = intArg('stream', 10_000);
const THREADS = intArg('threads', availableParallelism());
const QUALITY = intArg('quality', 90);
const DECODE = intArg('decode', 0) || undefined;
const SPIN = intArg('spin', 0) === 1;
const [W, H] = arg('size', '500x375').split('x').map(Number);
const MODELS = arg('models', path.join(tmpdir(), 'protoprune-bench-models'));

const mb = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

sharp.cache(false);

async function main(): Promise<void> {
  console.log(`node ${process.version}, ${availableParallelism()} cores, ORT intra-op threads ${THREADS}, batch ${BATCH}`);
  await mkdir(MODELS, { recursive: true });
  const t0 = performance.now();
  const ensured = await ensureDefaultModel(MODELS);
  console.log(`model ${ensured.path} (${ensured.converted ? `converted in ${(performance.now() - t0).toFixed(0)} ms` : 'cached'}), sha256 ${ensured.sha256.slice(0, 16)}…`);
  const spec = { ...defaultModelSpec(MODELS), sha256: ensured.sha256 };
  // The pipeline's encoder (ORT on a worker thread) and, for the baseline, a plain in-process ORT
  // session of the same model with the same options (session.run() straight on this thread).
  const encoder = await loadModel(spec, { intraOpNumThreads: THREADS, allowSpinning: SPIN });
  const rawEncoder = await loadModel(spec, { intraOpNumThreads: THREADS, allowSpinning: SPIN, worker: false });

  const g0 = performance.now();
  const images: Buffer[] = [];
  for (let i = 0; i < IMAGES; i++) images.push(await jpeg(W, H, await photoLikeRaw(W, H, 1000 + i), QUALITY));
  const avgBytes = images.reduce((s, b) => s + b.length, 0) / images.length;
  console.log(`${IMAGES} distinct ${W}×${H} JPEGs (q${QUALITY}, avg ${(avgBytes / 1024).toFixed(1)} KiB) generated in ${((performance.now() - g0) / 1000).toFixed(1)} s`);

  // Pre-decoded batch for the raw ORT measurement.
  const tensor = new Float32Array(BATCH * encoder.inputElements);
  for (let i = 0; i < BATCH; i++) tensor.set(await preprocessImage(images[i % images.length], encoder.spec), i * encoder.inputElements);

  const batcher = new EmbeddingBatcher(encoder, { maxBatch: BATCH, maxWaitMs: 10, maxQueuedImages: 8 * BATCH, decodeConcurrency: DECODE });
  console.log(`batcher: maxBatch ${batcher.maxBatch}, maxWaitMs ${batcher.maxWaitMs}, maxQueuedImages ${batcher.maxQueuedImages}, decodeConcurrency ${batcher.decodeConcurrency}`);

  // Warm-up both paths.
  await rawEncoder.embed(tensor, BATCH);
  await feed(batcher, images, Math.min(images.length, 2 * BATCH));

  const raw: number[] = [];
  const whole: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const rawCpu = cpuMeter();
    raw.push(await rawThroughput(rawEncoder, tensor, IMAGES));
    const rc = rawCpu(IMAGES);
    const wholeCpu = cpuMeter();
    const before = batcher.stats();
    whole.push(await feed(batcher, images, IMAGES));
    const wc = `${wholeCpu(IMAGES)}, mean batch ${(IMAGES / (batcher.stats().batches - before.batches)).toFixed(1)}`;
    console.log(
      `round ${r + 1}: raw ORT ${raw[r].toFixed(1)} img/s (${rc}), whole path ${whole[r].toFixed(1)} img/s (${wc}) → ${((whole[r] / raw[r]) * 100).toFixed(1)}%`,
    );
  }
  const rawMed = median(raw);
  const wholeMed = median(whole);
  // Each round measures both paths back to back, so the per-round ratio cancels slow drifts in machine speed.
  const ratio = median(raw.map((r, i) => whole[i] / r));
  console.log(
    `\nRESULT batch ${BATCH}: raw ORT ${rawMed.toFixed(1)} img/s | whole path ${wholeMed.toFixed(1)} img/s (medians of ${ROUNDS} rounds) | ` +
      `whole/raw ${(ratio * 100).toFixed(1)}% | overhead ${((1 - ratio) * 100).toFixed(1)}% (median of paired rounds)`,
  );

  await rawEncoder.close();

  if (STREAM > 0) {
    console.log(`\nstreaming ${STREAM} images through the whole path…`);
    const samples: string[] = [];
    const sample = (label: string): void => {
      const m = process.memoryUsage();
      samples.push(`${label}: rss ${mb(m.rss)}, heap ${mb(m.heapUsed)}, external+arrayBuffers ${mb(m.external + m.arrayBuffers)}`);
      console.log(`  ${samples[samples.length - 1]}`);
    };
    sample('start');
    let peak = process.memoryUsage().rss;
    const peakTimer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 100);
    const s0 = performance.now();
    const rate = await feed(batcher, images, STREAM, (done) => {
      if (done === Math.floor(STREAM / 2)) sample(`middle (${done})`);
    });
    clearInterval(peakTimer);
    sample(`end (${STREAM})`);
    console.log(`  ${STREAM} images in ${((performance.now() - s0) / 1000).toFixed(1)} s (${rate.toFixed(1)} img/s), peak rss ${mb(peak)}`);
  }
  await batcher.close();
  await encoder.close();
}

/** Process CPU use over an interval: cores busy on average and CPU milliseconds per image. */
function cpuMeter(): (images: number) => string {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  return (images) => {
    const c = process.cpuUsage(c0);
    const cpuMs = (c.user + c.system) / 1000;
    return `${(cpuMs / (performance.now() - t0)).toFixed(2)} cores, ${(cpuMs / images).toFixed(1)} CPU-ms/img`;
  };
}

async function rawThroughput(encoder: ImageEncoder, tensor: Float32Array, count: number): Promise<number> {
  const runs = Math.max(1, Math.round(count / BATCH));
  const t0 = performance.now();
  for (let i = 0; i < runs; i++) await encoder.embed(tensor, BATCH);
  return (runs * BATCH * 1000) / (performance.now() - t0);
}

/**
 * Pushes `count` images (cycling through `images`) through the batcher as concurrent calls of 8,
 * keeping up to the queue bound in flight like a busy service. Returns images/s.
 */
async function feed(batcher: EmbeddingBatcher, images: Buffer[], count: number, progress?: (done: number) => void): Promise<number> {
  const CALL = 8;
  const maxInFlight = batcher.maxQueuedImages;
  let submitted = 0;
  let done = 0;
  let inFlight = 0;
  let failures = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    const submit = (): void => {
      while (submitted < count && inFlight + CALL <= maxInFlight) {
        const n = Math.min(CALL, count - submitted);
        const call = Array.from({ length: n }, (_, k) => images[(submitted + k) % images.length]);
        submitted += n;
        inFlight += n;
        batcher.embed(call).then((results) => {
          inFlight -= n;
          for (const r of results) if ('error' in r) failures++;
          const before = done;
          done += n;
          if (progress) for (let d = before + 1; d <= done; d++) progress(d);
          if (done === count) resolve();
          else submit();
        }, reject);
      }
    };
    submit();
  });
  if (failures) throw new Error(`${failures} images failed`);
  return (count * 1000) / (performance.now() - t0);
}

await main();
