import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { loadNsfwjsGraph, NSFWJS_MODEL_DIR, NSFWJS_VERSION, type TfNode } from './tfjs-graph.js';
import { translateTfGraph } from './tfjs-to-onnx.js';

/** File name of the converted default encoder inside a models directory. */
export const DEFAULT_MODEL_FILE = 'mobilenet_v2_140_224.onnx';
/** ONNX input: float32 NHWC [batch, 224, 224, 3], RGB in [0, 1] (the graph itself maps to [-1, 1]). */
export const DEFAULT_INPUT_NAME = 'image';
/** ONNX output: float32 [batch, 1792], the global-average-pooled MobileNetV2 features (not normalised). */
export const DEFAULT_OUTPUT_NAME = 'features';
export const DEFAULT_INPUT_SIZE = 224;
export const DEFAULT_OUTPUT_DIM = 1792;
/** Bumped whenever the converter's output bytes change for the same source model. */
export const CONVERTER_VERSION = '1';

const TF_PREFIX = 'StatefulPartitionedCall/sequential/keras_layer/StatefulPartitionedCall/StatefulPartitionedCall/StatefulPartitionedCall/predict/';

export interface ConvertedModel {
  /** Serialized ONNX ModelProto (deterministic for a given nsfwjs version and converter version). */
  bytes: Uint8Array;
  sha256: string;
  outputDim: number;
  /** The TF.js node whose output is exported (the input of the classifier head's MatMul). */
  featureNode: string;
  nodeCount: number;
  parameterCount: number;
  sourceSha256: string;
}

/**
 * The pooled-feature node: the data input of the dense layer of the classifier head
 * (`_FusedMatMul`/`MatMul` whose output feeds the graph's Softmax).
 */
export function findFeatureNode(nodes: TfNode[]): string {
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const matmuls = nodes.filter((n) => n.op === '_FusedMatMul' || n.op === 'MatMul');
  if (matmuls.length !== 1) throw new Error(`expected exactly one dense layer in the head, found ${matmuls.length}`);
  const input = matmuls[0].input?.[0];
  if (!input) throw new Error('dense layer has no input');
  const name = input.replace(/:0$/, '');
  if (!byName.has(name)) throw new Error(`dense layer input ${name} is not a node`);
  return name;
}

/** Converts nsfwjs@4.3.0's MobileNetV2-1.4 graph model to an ONNX feature extractor, in memory. */
export function convertDefaultModel(): ConvertedModel {
  const source = loadNsfwjsGraph();
  const nodes = source.json.modelTopology.node;
  const featureNode = findFeatureNode(nodes);
  const result = translateTfGraph(nodes, source.weights, {
    outputNode: featureNode,
    inputName: DEFAULT_INPUT_NAME,
    outputName: DEFAULT_OUTPUT_NAME,
    inputShape: [DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE, 3],
    stripPrefix: TF_PREFIX,
    graphName: 'mobilenet_v2_140_224_features',
    producerVersion: CONVERTER_VERSION,
    docString:
      'ImageNet-pretrained MobileNetV2 (depth multiplier 1.4, 224x224) feature extractor converted from the ' +
      `TF.js graph model shipped in nsfwjs@${NSFWJS_VERSION} (${NSFWJS_MODEL_DIR}, MIT). Input: float32 NHWC ` +
      '[batch,224,224,3] RGB in [0,1]; the graph maps it to [-1,1]. Output: [batch,1792] global-average-pooled ' +
      'features (input of the original classifier head), not L2-normalised.',
    metadata: {
      source: `nsfwjs@${NSFWJS_VERSION}/${NSFWJS_MODEL_DIR}`,
      source_sha256: source.sourceSha256,
      source_feature_node: featureNode,
      converter_version: CONVERTER_VERSION,
      input_layout: 'NHWC',
      input_channel_order: 'RGB',
      input_range: '0-1',
    },
  });
  if (result.outputDim !== DEFAULT_OUTPUT_DIM) {
    throw new Error(`converted model has ${result.outputDim}-d features, expected ${DEFAULT_OUTPUT_DIM}`);
  }
  return {
    bytes: result.bytes,
    sha256: sha256Hex(result.bytes),
    outputDim: result.outputDim,
    featureNode,
    nodeCount: result.nodeCount,
    parameterCount: result.parameterCount,
    sourceSha256: source.sourceSha256,
  };
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Writes `bytes` to `file` atomically: a unique temp file in the same folder, fsync, then rename. */
export async function writeFileAtomic(file: string, bytes: Uint8Array): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    const handle = await open(tmp, 'wx', 0o644);
    try {
      await handle.writeFile(bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export interface EnsuredModel {
  path: string;
  sha256: string;
  /** True when this call converted and wrote the file. */
  converted: boolean;
}

const inFlight = new Map<string, Promise<EnsuredModel>>();

/**
 * Makes sure `<modelsDir>/mobilenet_v2_140_224.onnx` exists: if it is missing it is converted from the
 * installed nsfwjs package and written atomically (temp file + rename, so concurrent processes never
 * see a partial file). Returns the path and the SHA-256 of the file's bytes.
 */
export function ensureDefaultModel(modelsDir: string): Promise<EnsuredModel> {
  const file = path.resolve(modelsDir, DEFAULT_MODEL_FILE);
  let pending = inFlight.get(file);
  if (!pending) {
    pending = ensure(file).finally(() => inFlight.delete(file));
    inFlight.set(file, pending);
  }
  return pending;
}

async function ensure(file: string): Promise<EnsuredModel> {
  const existing = await stat(file).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (existing) {
    if (!existing.isFile()) throw new Error(`${file} exists and is not a file`);
    return { path: file, sha256: sha256Hex(await readFile(file)), converted: false };
  }
  const model = convertDefaultModel();
  await writeFileAtomic(file, model.bytes);
  return { path: file, sha256: model.sha256, converted: true };
}
