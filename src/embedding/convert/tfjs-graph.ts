import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

/**
 * Reading a TF.js graph model that nsfwjs ships inside its npm package.
 *
 * nsfwjs 4.x does not ship `model.json` + `.bin` shards: it ships browserify/UMD bundles
 * (`model.min.js`, `group1-shardXofY.min.js`) whose CommonJS export is the parsed model.json object
 * and each shard as a base64 string. They are loaded here with `require` from the installed package —
 * no network, no TF.js runtime — and the weights are decoded exactly as tfjs-core's
 * `io.decodeWeights` does (`q * scale + min`, evaluated in double precision and stored as float32).
 */

/** nsfwjs version the converter was written and verified against (pinned exactly in package.json). */
export const NSFWJS_VERSION = '4.3.0';
/** The model folder inside the nsfwjs package: ImageNet-pretrained MobileNetV2 1.4/224 + a 5-class head. */
export const NSFWJS_MODEL_DIR = 'dist/models/mobilenet_v2_mid';

export interface TfAttrValue {
  s?: string;
  i?: string | number;
  f?: number;
  b?: boolean;
  type?: string;
  list?: { s?: string[]; i?: (string | number)[]; f?: number[] };
  shape?: unknown;
  tensor?: unknown;
}

export interface TfNode {
  name: string;
  op: string;
  input?: string[];
  attr?: Record<string, TfAttrValue>;
}

export interface TfWeightSpec {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: { dtype: string; scale?: number; min?: number; original_dtype?: string };
}

export interface TfGraphModelJson {
  format: string;
  generatedBy?: string;
  convertedBy?: string;
  modelTopology: { node: TfNode[]; versions?: unknown };
  weightsManifest: { paths: string[]; weights: TfWeightSpec[] }[];
  userDefinedMetadata?: unknown;
}

export interface TfWeight {
  shape: number[];
  values: Float32Array;
}

export interface LoadedTfGraph {
  /** The parsed model.json object (graph topology + weights manifest). */
  json: TfGraphModelJson;
  /** All shards concatenated in manifest order (the `weightData` TF.js expects). */
  weightData: Uint8Array;
  /** Dequantised float32 weights by name. */
  weights: Map<string, TfWeight>;
  /** SHA-256 (hex) over the model.json bundle and the shard bundles, to identify the source. */
  sourceSha256: string;
  /** Absolute path of the model folder inside the nsfwjs package. */
  modelDir: string;
  /** Installed nsfwjs version. */
  packageVersion: string;
}

const require = createRequire(import.meta.url);

/** Absolute path of the installed nsfwjs package (its `exports` map hides package.json, so walk up from main). */
export function nsfwjsPackageDir(): string {
  let dir = path.dirname(require.resolve('nsfwjs'));
  for (;;) {
    const manifest = path.join(dir, 'package.json');
    try {
      const pkg = JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string };
      if (pkg.name === 'nsfwjs') return dir;
    } catch {
      // not here; keep walking
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('cannot locate the nsfwjs package directory (is nsfwjs installed?)');
    dir = parent;
  }
}

function loadBundle(file: string): unknown {
  const resolved = require.resolve(file);
  try {
    return require(resolved) as unknown;
  } finally {
    // The shard bundles are multi-megabyte strings: do not keep them alive in the module cache.
    delete require.cache[resolved];
  }
}

function decodeWeights(specs: TfWeightSpec[], data: Uint8Array): Map<string, TfWeight> {
  const weights = new Map<string, TfWeight>();
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let offset = 0;
  for (const spec of specs) {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(size);
    if (spec.dtype !== 'float32') throw new Error(`weight ${spec.name}: unsupported dtype ${spec.dtype}`);
    const q = spec.quantization;
    if (q) {
      if (q.dtype !== 'uint8' && q.dtype !== 'uint16') {
        throw new Error(`weight ${spec.name}: unsupported quantization dtype ${q.dtype}`);
      }
      if (typeof q.scale !== 'number' || typeof q.min !== 'number') {
        throw new Error(`weight ${spec.name}: ${q.dtype} quantization without scale/min`);
      }
      const bytes = q.dtype === 'uint8' ? 1 : 2;
      if (offset + size * bytes > data.byteLength) throw new Error(`weight ${spec.name}: shards are too short`);
      for (let i = 0; i < size; i++) {
        const v = bytes === 1 ? data[offset + i] : view.getUint16(offset + 2 * i, true);
        values[i] = v * q.scale + q.min;
      }
      offset += size * bytes;
    } else {
      if (offset + size * 4 > data.byteLength) throw new Error(`weight ${spec.name}: shards are too short`);
      for (let i = 0; i < size; i++) values[i] = view.getFloat32(offset + 4 * i, true);
      offset += size * 4;
    }
    weights.set(spec.name, { shape: spec.shape.slice(), values });
  }
  if (offset !== data.byteLength) {
    throw new Error(`weights manifest covers ${offset} bytes but the shards hold ${data.byteLength}`);
  }
  return weights;
}

/** Loads nsfwjs's MobileNetV2 (mid) graph model from node_modules and decodes its weights. */
export function loadNsfwjsGraph(): LoadedTfGraph {
  const pkgDir = nsfwjsPackageDir();
  const pkg = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8')) as { version: string };
  if (pkg.version !== NSFWJS_VERSION) {
    throw new Error(`nsfwjs ${NSFWJS_VERSION} is required for the default model, found ${pkg.version}`);
  }
  const modelDir = path.join(pkgDir, NSFWJS_MODEL_DIR);
  const hash = createHash('sha256');
  const modelFile = path.join(modelDir, 'model.min.js');
  hash.update(readFileSync(modelFile));
  const json = loadBundle(modelFile) as TfGraphModelJson;
  if (json?.format !== 'graph-model' || !Array.isArray(json.modelTopology?.node)) {
    throw new Error(`${modelFile} is not a TF.js graph model`);
  }
  if (json.weightsManifest.length !== 1) throw new Error('expected exactly one weights manifest group');
  const group = json.weightsManifest[0];
  const chunks: Buffer[] = [];
  for (const shard of group.paths) {
    const file = path.join(modelDir, `${shard}.min.js`);
    hash.update(readFileSync(file));
    const b64 = loadBundle(file);
    if (typeof b64 !== 'string') throw new Error(`${file} does not export a base64 string`);
    chunks.push(Buffer.from(b64, 'base64'));
  }
  const joined = Buffer.concat(chunks);
  const weightData = new Uint8Array(joined.buffer, joined.byteOffset, joined.byteLength);
  return {
    json,
    weightData,
    weights: decodeWeights(group.weights, weightData),
    sourceSha256: hash.digest('hex'),
    modelDir,
    packageVersion: pkg.version,
  };
}
