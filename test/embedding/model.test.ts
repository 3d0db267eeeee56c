import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EmbeddingBatcher } from '../../src/embedding/batcher.js';
import { sha256Hex } from '../../src/embedding/convert/default-model.js';
import { ModelSpecError } from '../../src/embedding/errors.js';
import {
  defaultModelSpec,
  loadModel,
  modelSpecFromEnv,
  modelSpecFromOptions,
  validateModelSpec,
  type ModelSpec,
} from '../../src/embedding/model.js';
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

describe('ModelSpec from environment-style options', () => {
  it('no options → the default converted MobileNetV2 spec', () => {
    const spec = modelSpecFromOptions({}, '/data/models');
    expect(spec).toEqual(defaultModelSpec('/data/models'));
    expect(spec).toMatchObject({
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

  it('parses a full custom spec', () => {
    const spec = modelSpecFromOptions({
      path: 'models/dinov2_vits14.onnx',
      inputName: 'pixel_values',
      outputName: 'embedding',
      size: '224x196',
      layout: 'nchw',
      channelOrder: 'bgr',
      range: '[0,255]',
      mean: '103.53, 116.28, 123.675',
      std: '57.375 57.12 58.395',
      outputDim: '384',
      resizeShorter: '256',
    });
    expect(spec).toEqual({
      name: 'dinov2_vits14',
      path: path.resolve('models/dinov2_vits14.onnx'),
      inputName: 'pixel_values',
      outputName: 'embedding',
      inputHeight: 224,
      inputWidth: 196,
      layout: 'NCHW',
      channelOrder: 'BGR',
      valueRange: '0-255',
      mean: [103.53, 116.28, 123.675],
      std: [57.375, 57.12, 58.395],
      outputDim: 384,
      resizeShorter: 256,
      sha256: undefined,
    });
    // A single number applies to all channels; layout/order/range default to the PyTorch convention.
    expect(modelSpecFromOptions({ path: 'm.onnx', size: '336', mean: '0.5', std: '0.5' })).toMatchObject({
      inputHeight: 336,
      inputWidth: 336,
      layout: 'NCHW',
      channelOrder: 'RGB',
      valueRange: '0-1',
      mean: [0.5, 0.5, 0.5],
      std: [0.5, 0.5, 0.5],
    });
  });

  it('lists every problem with a clear message', () => {
    expect(problemsOf(() => modelSpecFromOptions({ path: 'm.onnx' }))).toEqual([
      expect.stringMatching(/^size is required/),
      expect.stringMatching(/^mean is required/),
      expect.stringMatching(/^std is required/),
    ]);
    const problems = problemsOf(() =>
      modelSpecFromOptions({ path: 'm.onnx', size: '224x', layout: 'CHW', channelOrder: 'RGBA', range: '0-100', mean: '1,2', std: '1,0,1' }),
    );
    expect(problems.join('\n')).toMatch(/size must be "N" or "HxW"/);
    expect(problems.join('\n')).toMatch(/layout must be NCHW or NHWC, got "CHW"/);
    expect(problems.join('\n')).toMatch(/channel order must be RGB or BGR/);
    expect(problems.join('\n')).toMatch(/range must be "0-1" or "0-255"/);
    expect(problems.join('\n')).toMatch(/mean must be 1 or 3 finite numbers/);
    expect(problemsOf(() => modelSpecFromOptions({ path: 'm.onnx', size: '224', mean: '0', std: '1,0,1' }))).toEqual([
      expect.stringMatching(/std values must be > 0/),
    ]);
  });

  it('catches statistics given in the wrong units', () => {
    expect(problemsOf(() => modelSpecFromOptions({ path: 'm.onnx', size: '224', mean: '123.675,116.28,103.53', std: '58.4,57.1,57.4' }))).toEqual([
      expect.stringMatching(/outside the 0-1 value range.*need range "0-255"/),
    ]);
    expect(
      problemsOf(() => modelSpecFromOptions({ path: 'm.onnx', size: '224', range: '0-255', mean: '0.485,0.456,0.406', std: '0.229,0.224,0.225' })),
    ).toEqual([expect.stringMatching(/look like 0-1 statistics/)]);
  });

  it('rejects unknown options and options that would be ignored', () => {
    expect(problemsOf(() => modelSpecFromOptions({ path: 'm.onnx', size: '224', mean: '0', std: '1', sise: '1' } as never))).toEqual([
      expect.stringMatching(/unknown option\(s\): sise/),
    ]);
    expect(problemsOf(() => modelSpecFromOptions({ size: '384' }))).toEqual([expect.stringMatching(/size given without path/)]);
    expect(problemsOf(() => modelSpecFromOptions({ path: 'm.onnx', size: '224', mean: '0', std: '1', resizeShorter: '200' }))).toEqual([
      expect.stringMatching(/resizeShorter 200 is smaller than the crop/),
    ]);
  });

  it('reads EMBEDDING_MODEL_* variables and names them in errors', () => {
    const spec = modelSpecFromEnv(
      { EMBEDDING_MODEL_PATH: '/m/clip.onnx', EMBEDDING_MODEL_SIZE: '224', EMBEDDING_MODEL_MEAN: '0.48145466,0.4578275,0.40821073', EMBEDDING_MODEL_STD: '0.26862954,0.26130258,0.27577711', EMBEDDING_MODEL_RESIZE: '224', EMBEDDING_MODEL_NAME: 'clip-vit-b32' },
      '/unused',
    );
    expect(spec).toMatchObject({ name: 'clip-vit-b32', path: '/m/clip.onnx', resizeShorter: 224, layout: 'NCHW' });
    expect(modelSpecFromEnv({}, '/data/models')).toEqual(defaultModelSpec('/data/models'));
    expect(() => modelSpecFromEnv({ EMBEDDING_MODEL_PATH: '/m/x.onnx', EMBEDDING_MODEL_SIZE: 'big' })).toThrow(
      /size \(EMBEDDING_MODEL_SIZE\) must be "N" or "HxW"/,
    );
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
    const spec = modelSpecFromOptions({
      path: nchwPath,
      name: 'channel-mean',
      size: '32',
      layout: 'NCHW',
      channelOrder: 'BGR',
      range: '0-255',
      mean: '1,2,3',
      std: '2,4,8',
      resizeShorter: '32',
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
    const spec = modelSpecFromOptions({ path: nhwcPath, size: '48x64', layout: 'NHWC', mean: '0.5', std: '0.25', outputName: 'y' });
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
    const spec = modelSpecFromOptions({ path: nchwPath, size: '32', mean: '0.5', std: '0.5' });
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
    const spec = modelSpecFromOptions({ path: nchwPath, size: '32', range: '0-255', mean: '128', std: '1', resizeShorter: '32' });
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
    const base = { path: nchwPath, size: '32', mean: '0', std: '1' };
    await rejectsWith(loadModel(modelSpecFromOptions({ ...base, inputName: 'images' })), /input "images" not found; .* has inputs: pixel_values/);
    await rejectsWith(loadModel(modelSpecFromOptions({ ...base, size: '64' })), /has shape \[N,3,32,32\] but the spec \(NCHW 64x64\) needs \[N,3,64,64\]/);
    await rejectsWith(loadModel(modelSpecFromOptions({ ...base, layout: 'NHWC' })), /needs \[N,32,32,3\]/);
    await rejectsWith(loadModel(modelSpecFromOptions({ ...base, outputDim: '512' })), /3 values per image, spec says outputDim 512/);
    await rejectsWith(loadModel(modelSpecFromOptions({ ...base, sha256: 'a'.repeat(64) })), /has SHA-256 [0-9a-f]{64}, expected a{64}/);
    await rejectsWith(loadModel(modelSpecFromOptions({ ...base, path: path.join(dir, 'missing.onnx') })), /does not exist/);
    await rejectsWith(loadModel(modelSpecFromOptions({ path: nhwcPath, size: '48x64', layout: 'NHWC', mean: '0', std: '1' })), /has 2 outputs \(y, extra\); set outputName/);
    const garbage = path.join(dir, 'garbage.onnx');
    await writeFile(garbage, 'not a model');
    await rejectsWith(loadModel(modelSpecFromOptions({ ...base, path: garbage })), /onnxruntime cannot load/);
  });
});
