import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EmbeddingBatcher, type EmbedItemResult } from '../../src/embedding/batcher.js';
import { BatcherClosedError, OverloadedError } from '../../src/embedding/errors.js';
import { loadDefaultEncoder, type ImageEncoder } from '../../src/embedding/model.js';
import { preprocessImage } from '../../src/embedding/preprocess.js';
import { fromRaw, jpeg, sceneRaw, variedImages } from './images.js';

let dir: string;
let encoder: ImageEncoder;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'protoprune-batcher-'));
  encoder = await loadDefaultEncoder(dir, { intraOpNumThreads: 2 });
});

afterAll(async () => {
  await encoder?.close();
  await rm(dir, { recursive: true, force: true });
});

/** Reference embedding: the image alone, preprocessed and run outside the batcher. */
async function reference(bytes: Uint8Array): Promise<Float32Array> {
  return encoder.embed(await preprocessImage(bytes, encoder.spec), 1);
}

function dot(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

const codes = (results: EmbedItemResult[]): string[] => results.map((r) => ('error' in r ? r.error.code : 'OK'));

async function scenes(n: number, seed: number, size: [number, number] = [160, 120]): Promise<Buffer[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => jpeg(size[0], size[1], sceneRaw(size[0], size[1], seed + i), 85)));
}

describe('EmbeddingBatcher', () => {
  it('a mixed call returns embeddings for exactly the valid images and the right code for each bad one', async () => {
    const valid = (await variedImages()).map((i) => i.bytes);
    const png = await fromRaw(sceneRaw(300, 200, 9), 300, 200, 3).png().toBuffer();
    const oversized = await jpeg(1000, 500, sceneRaw(1000, 500, 10)); // 500,000 px > 400,000 limit
    const corrupt = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(2000, 0x5a)]);
    const truncated = png.subarray(0, Math.floor(png.length * 0.6));
    const inputs: Buffer[] = [
      valid[0],
      corrupt,
      valid[1],
      valid[2],
      truncated,
      valid[3],
      oversized,
      valid[4],
      Buffer.alloc(0),
      valid[5],
      Buffer.from('%PDF-1.7 not an image'),
      valid[6],
      valid[7],
    ];
    const batcher = new EmbeddingBatcher(encoder, { maxBatch: 4, maxWaitMs: 5, preprocess: { limitInputPixels: 400_000 } });
    const results = await batcher.embed(inputs);
    await batcher.close();
    expect(codes(results)).toEqual([
      'OK',
      'CORRUPT_IMAGE',
      'OK',
      'OK',
      'CORRUPT_IMAGE',
      'OK',
      'IMAGE_TOO_LARGE',
      'OK',
      'EMPTY_IMAGE',
      'OK',
      'UNSUPPORTED_FORMAT',
      'OK',
      'OK',
    ]);
    for (const r of results) if ('error' in r) expect(r.error.message.length).toBeGreaterThan(0);
    // Each valid image's embedding is the one it gets alone (batching and neighbours change nothing).
    for (let i = 0; i < inputs.length; i++) {
      const r = results[i];
      if (!('embedding' in r)) continue;
      expect(r.embedding.length).toBe(1792);
      expect(dot(r.embedding, r.embedding)).toBeCloseTo(1, 5);
      expect(dot(r.embedding, await reference(inputs[i])), `item ${i}`).toBeGreaterThan(0.99999);
    }
    expect(batcher.stats()).toMatchObject({ queued: 0, embedded: 8, failed: 5 });
  });

  it('coalesces concurrent calls into shared batches and returns each call its own results in order', async () => {
    const calls = await Promise.all([0, 1, 2, 3, 4].map((c) => scenes(6, 100 + 10 * c)));
    const batcher = new EmbeddingBatcher(encoder, { maxBatch: 32, maxWaitMs: 200 });
    const results = await Promise.all(calls.map((images) => batcher.embed(images)));
    const stats = batcher.stats();
    await batcher.close();
    expect(stats.embedded).toBe(30);
    // 30 images from 5 callers in far fewer runs than calls (typically 1–2).
    expect(stats.batches).toBeLessThan(5);
    for (let c = 0; c < calls.length; c++) {
      for (let i = 0; i < 6; i++) {
        const r = results[c][i];
        expect('embedding' in r).toBe(true);
        expect(dot((r as { embedding: Float32Array }).embedding, await reference(calls[c][i]))).toBeGreaterThan(0.99999);
      }
    }
  });

  it('overlaps decoding of the next batch with inference of the current one', async () => {
    const images = await scenes(48, 300, [320, 240]);
    const batcher = new EmbeddingBatcher(encoder, { maxBatch: 8, maxWaitMs: 1, decodeConcurrency: 2 });
    let overlapped = 0;
    let maxReady = 0;
    const poll = setInterval(() => {
      const s = batcher.stats();
      if (s.running && s.decoding > 0) overlapped++;
      maxReady = Math.max(maxReady, s.ready);
    }, 1);
    const results = await batcher.embed(images);
    clearInterval(poll);
    await batcher.close();
    expect(codes(results).every((c) => c === 'OK')).toBe(true);
    expect(overlapped).toBeGreaterThan(0);
    // Decoded tensors are bounded by the three-buffer pool, never the whole call.
    expect(maxReady).toBeLessThanOrEqual(2 * 8);
  });

  it('rejects calls past the queue bound with OverloadedError instead of queueing them', async () => {
    const images = await scenes(11, 500);
    const batcher = new EmbeddingBatcher(encoder, { maxBatch: 4, maxWaitMs: 1, maxQueuedImages: 10 });
    const first = batcher.embed(images.slice(0, 8));
    expect(batcher.stats().queued).toBe(8);
    const overloaded = await batcher.embed(images.slice(8, 11)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(overloaded).toBeInstanceOf(OverloadedError);
    expect((overloaded as OverloadedError).code).toBe('OVERLOADED');
    expect((overloaded as OverloadedError).retryAfterMs).toBeGreaterThanOrEqual(50);
    expect((overloaded as OverloadedError).retryAfterMs).toBeLessThanOrEqual(30_000);
    expect(batcher.stats().queued).toBe(8); // nothing of the rejected call was accepted
    // Exactly up to the bound is still accepted.
    const second = batcher.embed(images.slice(8, 10));
    expect(batcher.stats().queued).toBe(10);
    // A single call larger than the bound can never fit.
    await expect(batcher.embed(images.concat(images))).rejects.toThrow(RangeError);
    expect(codes(await first).every((c) => c === 'OK')).toBe(true);
    expect(codes(await second)).toEqual(['OK', 'OK']);
    // Once drained, the same call goes through.
    expect(codes(await batcher.embed(images.slice(8, 11)))).toEqual(['OK', 'OK', 'OK']);
    await batcher.close();
  });

  it('close() drains accepted work, then refuses new calls', async () => {
    const images = await scenes(5, 700);
    const batcher = new EmbeddingBatcher(encoder, { maxBatch: 2, maxWaitMs: 1 });
    const pending = batcher.embed(images);
    await batcher.close();
    expect(batcher.stats().queued).toBe(0);
    expect(codes(await pending)).toEqual(['OK', 'OK', 'OK', 'OK', 'OK']);
    await expect(batcher.embed(images)).rejects.toBeInstanceOf(BatcherClosedError);
    await batcher.close(); // idempotent
  });

  it('validates its arguments', async () => {
    expect(() => new EmbeddingBatcher(encoder, { maxBatch: 0 })).toThrow(RangeError);
    expect(() => new EmbeddingBatcher(encoder, { maxWaitMs: -1 })).toThrow(RangeError);
    expect(() => new EmbeddingBatcher(encoder, { preprocess: { limitInputPixels: 0 } })).toThrow(RangeError);
    expect(() => new EmbeddingBatcher(encoder, { preprocess: { background: { r: 300, g: 0, b: 0 } } })).toThrow(RangeError);
    const batcher = new EmbeddingBatcher(encoder);
    await expect(batcher.embed(['x' as unknown as Uint8Array])).rejects.toThrow(TypeError);
    expect(await batcher.embed([])).toEqual([]);
    await batcher.close();
  });
});
