import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import onnxProto from 'onnx-proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  convertDefaultModel,
  DEFAULT_MODEL_FILE,
  ensureDefaultModel,
  findFeatureNode,
  sha256Hex,
} from '../../src/embedding/convert/default-model.js';
import { loadNsfwjsGraph } from '../../src/embedding/convert/tfjs-graph.js';
import { defaultModelSpec, loadModel, type ImageEncoder } from '../../src/embedding/model.js';
import { preprocessImage } from '../../src/embedding/preprocess.js';
import { fromRaw, sceneRaw, variedImages, type NamedImage } from './images.js';
import { cosine64 as cosine } from '../helpers/halfvec.js';

const { onnx } = onnxProto;


let dir: string;
let encoder: ImageEncoder;
let images: NamedImage[];

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'protoprune-convert-'));
  const ensured = await ensureDefaultModel(dir);
  encoder = await loadModel({ ...defaultModelSpec(dir), sha256: ensured.sha256 }, { intraOpNumThreads: 2 });
  images = await variedImages();
});

afterAll(async () => {
  await encoder?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('nsfwjs MobileNetV2 → ONNX converter', () => {
  it('converts in a few seconds to identical bytes every time', () => {
    const t0 = performance.now();
    const a = convertDefaultModel();
    const elapsed = performance.now() - t0;
    const b = convertDefaultModel();
    expect(elapsed).toBeLessThan(10_000);
    expect(Buffer.from(a.bytes).equals(Buffer.from(b.bytes))).toBe(true);
    expect(a.sha256).toBe(sha256Hex(b.bytes));
    expect(a.outputDim).toBe(1792);
    // MobileNetV2-1.4 has ~4.3M backbone parameters (6.1M with the ImageNet classifier it no longer has).
    expect(a.parameterCount).toBeGreaterThan(4_200_000);
    expect(a.parameterCount).toBeLessThan(4_400_000);
  });

  it('exports the input of the classifier head (the 1792-d pooled feature)', () => {
    const source = loadNsfwjsGraph();
    const feature = findFeatureNode(source.json.modelTopology.node);
    expect(feature).toMatch(/feature_vector\/SpatialSqueeze$/);
    const head = source.json.modelTopology.node.find((n) => n.op === '_FusedMatMul');
    expect(source.weights.get(head!.input![1])!.shape).toEqual([1792, 5]);
  });

  it('writes a standard IR 8 / opset 17 model with the documented input and output', async () => {
    const bytes = await readFile(path.join(dir, DEFAULT_MODEL_FILE));
    const model = onnx.ModelProto.decode(bytes);
    expect(Number(model.irVersion)).toBe(8);
    expect(model.opsetImport.map((o) => [o.domain, Number(o.version)])).toEqual([['', 17]]);
    const input = model.graph!.input![0];
    expect(input.name).toBe('image');
    const dims = (input.type!.tensorType!.shape!.dim ?? []).map((d) => (d.dimParam ? d.dimParam : Number(d.dimValue)));
    expect(dims).toEqual(['batch', 224, 224, 3]);
    const output = model.graph!.output![0];
    expect(output.name).toBe('features');
    expect((output.type!.tensorType!.shape!.dim ?? []).map((d) => (d.dimParam ? d.dimParam : Number(d.dimValue)))).toEqual(['batch', 1792]);
    const ops = new Set(model.graph!.node!.map((n) => n.opType));
    expect([...ops].sort()).toEqual(['Add', 'Clip', 'Conv', 'GlobalAveragePool', 'Mul', 'Squeeze', 'Sub', 'Transpose']);
  });

  it('ensureDefaultModel converts once, atomically, and then reuses the file', async () => {
    const other = await mkdtemp(path.join(tmpdir(), 'protoprune-ensure-'));
    try {
      const [a, b] = await Promise.all([ensureDefaultModel(other), ensureDefaultModel(other)]);
      expect(a).toEqual(b);
      expect(a.converted).toBe(true);
      expect(a.path).toBe(path.join(other, DEFAULT_MODEL_FILE));
      expect(sha256Hex(await readFile(a.path))).toBe(a.sha256);
      expect(await readdir(other)).toEqual([DEFAULT_MODEL_FILE]); // no temp files left behind
      const again = await ensureDefaultModel(other);
      expect(again).toEqual({ path: a.path, sha256: a.sha256, converted: false });
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });
});

describe('converted model parity with the TF.js original', () => {
  it(
    'matches TF.js on varied preprocessed images (cosine ≥ 0.999 each), 1792-d, unit norm',
    async () => {
      expect(images.length).toBeGreaterThanOrEqual(8);
      const spec = encoder.spec;
      const n = images.length;
      const batch = new Float32Array(n * encoder.inputElements);
      for (let i = 0; i < n; i++) batch.set(await preprocessImage(images[i].bytes, spec), i * encoder.inputElements);

      // TF.js original: the same model.json/weights from the nsfwjs package, pure-JS CPU backend, no network.
      await tf.setBackend('cpu');
      const source = loadNsfwjsGraph();
      const tfModel = await tf.loadGraphModel(
        tf.io.fromMemory({
          modelTopology: source.json.modelTopology as unknown as tf.io.ModelJSON['modelTopology'],
          weightSpecs: source.json.weightsManifest[0].weights as tf.io.WeightsManifestEntry[],
          weightData: source.weightData.slice().buffer,
        }),
      );
      const featureNode = findFeatureNode(source.json.modelTopology.node);
      const input = tf.tensor4d(batch, [n, 224, 224, 3]);
      const tfOut = tfModel.execute(input, featureNode) as tf.Tensor;
      expect(tfOut.shape).toEqual([n, 1792]);
      const reference = (await tfOut.data()) as Float32Array;
      tf.dispose([input, tfOut]);
      tfModel.dispose();

      const embeddings = await encoder.embed(batch, n);
      expect(encoder.dim).toBe(1792);
      expect(embeddings.length).toBe(n * 1792);
      for (let i = 0; i < n; i++) {
        const ours = embeddings.subarray(i * 1792, (i + 1) * 1792);
        const theirs = reference.subarray(i * 1792, (i + 1) * 1792);
        const cos = cosine(ours, theirs);
        expect(cos, images[i].name).toBeGreaterThanOrEqual(0.999);
        let norm = 0;
        for (const v of ours) norm += v * v;
        expect(Math.sqrt(norm), images[i].name).toBeCloseTo(1, 5);
      }
      // The images really differ: no two embeddings are near-identical.
      for (let i = 0; i < n; i++) {
        for (let j = i + 1; j < n; j++) {
          const c = cosine(embeddings.subarray(i * 1792, (i + 1) * 1792), embeddings.subarray(j * 1792, (j + 1) * 1792));
          expect(c, `${images[i].name} vs ${images[j].name}`).toBeLessThan(0.98);
        }
      }
    },
    300_000,
  );

  it('embeds a re-encoded, resized copy of a scene closer than any other image', async () => {
    const spec = encoder.spec;
    const original = await fromRaw(sceneRaw(500, 375, 7), 500, 375, 3).jpeg({ quality: 95 }).toBuffer();
    const copy = await fromRaw(sceneRaw(500, 375, 7), 500, 375, 3).resize(380, 285).jpeg({ quality: 60 }).toBuffer();
    const others = images.filter((img) => img.name !== 'scene.webp').map((img) => img.bytes);
    const all = [original, copy, ...others];
    const batch = new Float32Array(all.length * encoder.inputElements);
    for (let i = 0; i < all.length; i++) batch.set(await preprocessImage(all[i], spec), i * encoder.inputElements);
    const emb = await encoder.embed(batch, all.length);
    const row = (i: number): Float32Array => emb.subarray(i * 1792, (i + 1) * 1792);
    const toCopy = cosine(row(0), row(1));
    expect(toCopy).toBeGreaterThan(0.9);
    for (let i = 2; i < all.length; i++) expect(cosine(row(0), row(i))).toBeLessThan(toCopy);
  });
});
