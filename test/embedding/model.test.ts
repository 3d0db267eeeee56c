import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EmbeddingBatcher } from '../../src/embedding/batcher.js';
import { sha256Hex } from '../../src/embedding/convert/default-model.js';
import { ModelSpecError } from '../../src/embedding/errors.js';
import { customModelSpec, defaultModelSpec, loadModel, validateModelSpec, type ModelSpec } from '../../src/embedding/model.js';
import { fromRaw, rawImage } from './images.js';
import { channelMeanNchw, channelMeanNhwc } from './tiny-models.js';

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ModelSpecError) return err.problems;
    throw err;
  }
  throw new Error('expected a ModelSpecError');
}

/** A custom model with the EMBEDDING_MODEL_* defaults (NCHW, RGB, 0-1), 32×32, no normalisation, changed by `overrides`. */
function customSpec(overrides: Partial<ModelSpec> & Pick<ModelSpec, 'path'>): ModelSpec {
  return customModelSpec({ inputHeight: 32, inputWidth: 32, layout: 'NCHW', channelOrder: 'RGB', valueRange: '0-1', mean: [0, 0, 0], std: [1, 1, 1], ...overrides });
}

async function rejectsWith(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ModelSpecError);
  expect((err as Error).message).toMatch(pattern);
}

let dir: string;
let nchwPath: string;
let nhwcPath: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'protoprune-model-'));
  nchwPath = path.join(dir, 'mean_nchw.onnx');
  nhwcPath = path.join(dir, 'mean_nhwc.onnx');
  await writeFile(nchwPath, channelMeanNchw(32, 32));
  await writeFile(nhwcPath, channelMeanNhwc(48, 64));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('ModelSpec', () => {
  it('the default converted MobileNetV2 spec', () => {
    expect(defaultModelSpec('/data/models')).toMatchObject({
      path: '/data/models/mobilenet_v2_140_224.onnx',
      inputName: 'image',
      outputName: 'features',
      inputHeight: 224,
      inputWidth: 224,
      layout: 'NHWC',
      channelOrder: 'RGB',
      valueRange: '0-1',
      mean: [0, 0, 0],
      std: [1, 1, 1],
      outputDim: 1792,
      resizeShorter: 256,
    });
  });

  it('names a custom model after its file unless named, and resolves its path', () => {
    expect(customSpec({ path: 'models/dinov2_vits14.onnx' })).toMatchObject({ name: 'dinov2_vits14', path: path.resolve('models/dinov2_vits14.onnx') });
    expect(customSpec({ path: '/m/clip.ONNX', name: 'clip-vit-b32' })).toMatchObject({ name: 'clip-vit-b32', path: '/m/clip.ONNX' });
    expect(customSpec({ path: '/m/clip.ONNX' }).name).toBe('clip');
  });

  it('checks a custom model across its settings', () => {
    expect(problemsOf(() => customSpec({ path: 'm.onnx', std: [1, 0, 1] }))).toEqual([expect.stringMatching(/std values must be > 0/)]);
    expect(problemsOf(() => customSpec({ path: 'm.onnx', inputHeight: 224, inputWidth: 224, resizeShorter: 200 }))).toEqual([
      expect.stringMatching(/resizeShorter 200 is smaller than the crop/),
    ]);
  });

  it('catches statistics given in the wrong units', () => {
    expect(problemsOf(() => customSpec({ path: 'm.onnx', mean: [123.675, 116.28, 103.53], std: [58.4, 57.1, 57.4] }))).toEqual([
      expect.stringMatching(/outside the 0-1 value range.*need range "0-255"/),
    ]);
    expect(
      problemsOf(() => customSpec({ path: 'm.onnx', valueRange: '0-255', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] })),
    ).toEqual([expect.stringMatching(/look like 0-1 statistics/)]);
  });

  it('validates hand-written specs too', () => {
    const bad = { ...defaultModelSpec('/m'), inputHeight: 0, std: [1, 1, -1] } as unknown as ModelSpec;
    expect(problemsOf(() => validateModelSpec(bad))).toEqual([
      expect.stringMatching(/inputHeight must be an integer/),
      expect.stringMatching(/std values must be > 0/),
    ]);
  });
});

describe('loading pluggable ONNX encoders', () => {
  it('runs an NCHW / BGR / 0-255 model end to end with hand-derivable output', async () => {
    const spec = customSpec({
      path: nchwPath,
      name: 'channel-mean',
      layout: 'NCHW',
      channelOrder: 'BGR',
      valueRange: '0-255',
      mean: [1, 2, 3],
      std: [2, 4, 8],
      resizeShorter: 32,
    });
    const encoder = await loadModel(spec, { intraOpNumThreads: 1 });
    try {
      expect(encoder.dim).toBe(3); // read from the model's [N,3,1,1] output
      expect(encoder.identity).toEqual({ name: 'channel-mean', sha256: sha256Hex(channelMeanNchw(32, 32)) });
      expect(encoder.spec.inputName).toBe('pixel_values');
      // Uniform (R,G,B) = (10,20,30) → tensor channels in BGR order: (30−1)/2, (20−2)/4, (10−3)/8.
      const png = await fromRaw(rawImage(50, 40, 3, () => [10, 20, 30]), 50, 40, 3).png().toBuffer();
      const batcher = new EmbeddingBatcher(encoder, { maxBatch: 4, maxWaitMs: 1 });
      const [result] = await batcher.embed([png]);
      await batcher.close();
      const raw = [14.5, 4.5, 0.875];
      const norm = Math.hypot(...raw);
      expect('embedding' in result).toBe(true);
      const embedding = (result as { embedding: Float32Array }).embedding;
      expect(Array.from(embedding)).toEqual(raw.map((v) => expect.closeTo(v / norm, 6)));
    } finally {
      await encoder.close();
    }
  });

  it('runs an NHWC model with a non-square input and picks the named output', async () => {
    const spec = customSpec({ path: nhwcPath, inputHeight: 48, inputWidth: 64, layout: 'NHWC', mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25], outputName: 'y' });
    const encoder = await loadModel(spec, { intraOpNumThreads: 1 });
    try {
      expect(encoder.dim).toBe(3);
      expect(encoder.inputDims(2)).toEqual([2, 48, 64, 3]);
      // (R,G,B) = (255, 0, 51) → (1−0.5)/0.25, (0−0.5)/0.25, (0.2−0.5)/0.25 = 2, −2, −1.2.
      const jpg = await fromRaw(rawImage(64, 48, 3, () => [255, 0, 51]), 64, 48, 3).png().toBuffer();
      const batcher = new EmbeddingBatcher(encoder, { maxWaitMs: 1 });
      const [result] = await batcher.embed([jpg]);
      await batcher.close();
      const norm = Math.hypot(2, -2, -1.2);
      expect(Array.from((result as { embedding: Float32Array }).embedding)).toEqual(
        // ReduceMean accumulates 3072 floats in float32: agree to ~1e-5.
        [2 / norm, -2 / norm, -1.2 / norm].map((v) => expect.closeTo(v, 4)),
      );
    } finally {
      await encoder.close();
    }
  });

  it('runs the same on the main thread (worker: false) and rejects use after close', async () => {
    const spec = customSpec({ path: nchwPath, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] });
    const onWorker = await loadModel(spec, { intraOpNumThreads: 1 });
    const inProcess = await loadModel(spec, { intraOpNumThreads: 1, worker: false });
    const batch = onWorker.createBatchBuffer(2);
    expect(batch.buffer).toBeInstanceOf(SharedArrayBuffer); // handed to the worker without a copy
    expect(inProcess.createBatchBuffer(2).buffer).toBeInstanceOf(ArrayBuffer);
    for (let i = 0; i < batch.length; i++) batch[i] = Math.sin(i);
    const a = await onWorker.embed(batch, 2);
    const b = await inProcess.embed(new Float32Array(batch), 2);
    expect(Array.from(a)).toEqual(Array.from(b));
    await expect(onWorker.embed(batch, 3)).rejects.toThrow(RangeError);
    await onWorker.close();
    await inProcess.close();
    await expect(onWorker.embed(batch, 2)).rejects.toThrow(/closed/);
    await expect(inProcess.embed(batch, 2)).rejects.toThrow(/closed/);
  });

  it('reports INVALID_EMBEDDING when the model outputs a zero vector', async () => {
    // Mean 128 in 0-255 units: a uniform grey-128 image becomes an all-zero tensor, so the
    // channel-mean model outputs [0, 0, 0], which has no direction.
    const spec = customSpec({ path: nchwPath, valueRange: '0-255', mean: [128, 128, 128], std: [1, 1, 1], resizeShorter: 32 });
    const encoder = await loadModel(spec, { intraOpNumThreads: 1 });
    const batcher = new EmbeddingBatcher(encoder, { maxWaitMs: 1 });
    const grey = await fromRaw(rawImage(32, 32, 3, () => [128, 128, 128]), 32, 32, 3).png().toBuffer();
    const other = await fromRaw(rawImage(32, 32, 3, () => [130, 128, 128]), 32, 32, 3).png().toBuffer();
    const results = await batcher.embed([grey, other]);
    await batcher.close();
    await encoder.close();
    expect(results[0]).toEqual({ error: { code: 'INVALID_EMBEDDING', message: expect.any(String) } });
    expect(Array.from((results[1] as { embedding: Float32Array }).embedding)).toEqual([1, 0, 0]);
  });

  it('explains mismatches between a spec and its model', async () => {
    const base = { path: nchwPath };
    await rejectsWith(loadModel(customSpec({ ...base, inputName: 'images' })), /input "images" not found; .* has inputs: pixel_values/);
    await rejectsWith(loadModel(customSpec({ ...base, inputHeight: 64, inputWidth: 64 })), /has shape \[N,3,32,32\] but the spec \(NCHW 64x64\) needs \[N,3,64,64\]/);
    await rejectsWith(loadModel(customSpec({ ...base, layout: 'NHWC' })), /needs \[N,32,32,3\]/);
    await rejectsWith(loadModel(customSpec({ ...base, outputDim: 512 })), /3 values per image, spec says outputDim 512/);
    await rejectsWith(loadModel(customSpec({ ...base, sha256: 'a'.repeat(64) })), /has SHA-256 [0-9a-f]{64}, expected a{64}/);
    await rejectsWith(loadModel(customSpec({ ...base, path: path.join(dir, 'missing.onnx') })), /does not exist/);
    await rejectsWith(loadModel(customSpec({ path: nhwcPath, inputHeight: 48, inputWidth: 64, layout: 'NHWC' })), /has 2 outputs \(y, extra\); set outputName/);
    const garbage = path.join(dir, 'garbage.onnx');
    await writeFile(garbage, 'not a model');
    await rejectsWith(loadModel(customSpec({ ...base, path: garbage })), /onnxruntime cannot load/);
  });
});
