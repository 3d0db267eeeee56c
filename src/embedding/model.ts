import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import {
  DEFAULT_INPUT_NAME,
  DEFAULT_INPUT_SIZE,
  DEFAULT_MODEL_FILE,
  DEFAULT_OUTPUT_DIM,
  DEFAULT_OUTPUT_NAME,
  ensureDefaultModel,
} from './convert/default-model.js';
import { ModelSpecError } from './errors.js';
import { createInProcessRunner, createWorkerRunner, type OrtRunner, type RunnerSessionOptions } from './ort-runner.js';

export type TensorLayout = 'NCHW' | 'NHWC';
export type ChannelOrder = 'RGB' | 'BGR';
/** Pixel values fed to the model before mean/std: 8-bit values divided by 255 (`0-1`) or as-is (`0-255`). */
export type ValueRange = '0-1' | '0-255';
export type Triple = readonly [number, number, number];

/**
 * Everything needed to run an ONNX image encoder: where it is, how its input must be laid out and
 * normalised, and what it outputs. The preprocessing contract for a 3-channel 8-bit image `p` is
 *
 *   v = p / 255 (valueRange '0-1') or p (valueRange '0-255')
 *   x[c] = (v[c] - mean[c]) / std[c]
 *
 * with channels in `channelOrder` (mean/std are listed in that same order), laid out as `layout`
 * with a leading batch dimension. The image is oriented (EXIF), alpha-flattened, converted to sRGB,
 * resized so it covers `resizeShorter`·(W, H)/min(H, W) and centre-cropped to H×W (see preprocess.ts).
 */
export interface ModelSpec {
  /** Human-readable identifier, part of the encoder identity (e.g. stored next to embeddings). */
  name: string;
  /** Path of the .onnx file. */
  path: string;
  /** Graph input to feed; when omitted the model must have exactly one input. */
  inputName?: string;
  /** Graph output to read; when omitted the model must have exactly one output. */
  outputName?: string;
  inputHeight: number;
  inputWidth: number;
  layout: TensorLayout;
  channelOrder: ChannelOrder;
  valueRange: ValueRange;
  mean: Triple;
  std: Triple;
  /** Expected embedding dimension; when omitted it is read from the model (a probe run). */
  outputDim?: number;
  /**
   * Shorter-side resize target before the centre crop (torchvision's `Resize(S)` + `CenterCrop(H)`).
   * Default: round(min(H, W) · 256 / 224) — 256 for 224-pixel models, the ImageNet evaluation convention.
   */
  resizeShorter?: number;
  /** Expected SHA-256 of the model file; loading fails on mismatch. */
  sha256?: string;
}

/** Identity of a loaded encoder: embeddings are only comparable between equal identities. */
export interface EncoderIdentity {
  name: string;
  sha256: string;
}

export interface ImageEncoder {
  readonly spec: Readonly<ModelSpec>;
  /** Embedding dimension. */
  readonly dim: number;
  readonly identity: EncoderIdentity;
  /** Floats per preprocessed image (3·H·W). */
  readonly inputElements: number;
  /** Input tensor dims for a batch of `n`. */
  inputDims(n: number): number[];
  /**
   * A zeroed buffer for `n` preprocessed images that embed() can take without a copy on the calling
   * thread (SharedArrayBuffer-backed when the model runs on a worker thread).
   */
  createBatchBuffer(n: number): Float32Array;
  /**
   * Runs `n` preprocessed images (`batch.length === n · inputElements`, in the spec's layout) and returns
   * `n × dim` L2-normalised embeddings. A row whose raw output is all zeros or non-finite is returned as
   * all zeros (it cannot be normalised); callers treat a zero row as a failed item.
   */
  embed(batch: Float32Array, n: number): Promise<Float32Array>;
  close(): Promise<void>;
}

export interface LoadModelOptions {
  /** Threads for one ORT run (default: available parallelism). */
  intraOpNumThreads?: number;
  /**
   * Run the ORT session on a worker thread (default true). onnxruntime-node executes `run()`
   * synchronously on the calling thread, so without a worker every batch blocks the event loop.
   */
  worker?: boolean;
  /**
   * Let ORT's intra-op threads busy-wait between parallel sections (ORT's default is true). Off by
   * default here: spinning threads steal the cores that image decoding needs while a batch runs.
   */
  allowSpinning?: boolean;
}

export const DEFAULT_MODEL_NAME = 'mobilenet_v2_140_224/nsfwjs@4.3.0';

/** ImageNet eval convention: resize the shorter side to 256/224 of the crop. */
export function defaultResizeShorter(height: number, width: number): number {
  return Math.round((Math.min(height, width) * 256) / 224);
}

export function resizeShorterOf(spec: Pick<ModelSpec, 'inputHeight' | 'inputWidth' | 'resizeShorter'>): number {
  return spec.resizeShorter ?? defaultResizeShorter(spec.inputHeight, spec.inputWidth);
}

/**
 * The converted nsfwjs MobileNetV2-1.4 (see convert/default-model.ts): NHWC float32 RGB in [0, 1]
 * (the graph scales to [-1, 1] itself, so mean 0 / std 1 here), 224×224 crop of a 256 shorter-side
 * resize, 1792-d output.
 */
export function defaultModelSpec(modelsDir: string): ModelSpec {
  return {
    name: DEFAULT_MODEL_NAME,
    path: path.resolve(modelsDir, DEFAULT_MODEL_FILE),
    inputName: DEFAULT_INPUT_NAME,
    outputName: DEFAULT_OUTPUT_NAME,
    inputHeight: DEFAULT_INPUT_SIZE,
    inputWidth: DEFAULT_INPUT_SIZE,
    layout: 'NHWC',
    channelOrder: 'RGB',
    valueRange: '0-1',
    mean: [0, 0, 0],
    std: [1, 1, 1],
    outputDim: DEFAULT_OUTPUT_DIM,
    resizeShorter: 256,
  };
}

// ---------------------------------------------------------------------------------------------------
// Building and validating specs
// ---------------------------------------------------------------------------------------------------

/**
 * The spec of a user-supplied model from settings already parsed one by one (the EMBEDDING_MODEL_*
 * variables, see config/spec.ts): the name defaults to the file name, the path is made absolute,
 * and the whole spec is checked. Throws ModelSpecError listing every problem.
 */
export function customModelSpec(settings: Omit<ModelSpec, 'name'> & { name?: string }): ModelSpec {
  return validateModelSpec({
    ...settings,
    name: settings.name ?? path.basename(settings.path).replace(/\.onnx$/i, ''),
    path: path.resolve(settings.path),
  });
}

/** Checks a spec's internal consistency; returns it unchanged or throws ModelSpecError. */
export function validateModelSpec(spec: ModelSpec): ModelSpec {
  const problems: string[] = [];
  if (!spec.name || typeof spec.name !== 'string') problems.push('name must be a non-empty string');
  if (!spec.path || typeof spec.path !== 'string') problems.push('path must be a non-empty string');
  for (const [k, v] of [
    ['inputHeight', spec.inputHeight],
    ['inputWidth', spec.inputWidth],
  ] as const) {
    if (!Number.isInteger(v) || v < 1 || v > 8192) problems.push(`${k} must be an integer in [1, 8192], got ${v}`);
  }
  if (spec.layout !== 'NCHW' && spec.layout !== 'NHWC') problems.push(`layout must be NCHW or NHWC, got ${String(spec.layout)}`);
  if (spec.channelOrder !== 'RGB' && spec.channelOrder !== 'BGR') {
    problems.push(`channelOrder must be RGB or BGR, got ${String(spec.channelOrder)}`);
  }
  if (spec.valueRange !== '0-1' && spec.valueRange !== '0-255') {
    problems.push(`valueRange must be "0-1" or "0-255", got ${String(spec.valueRange)}`);
  }
  const triple = (t: unknown): t is Triple => Array.isArray(t) && t.length === 3 && t.every((x) => typeof x === 'number' && Number.isFinite(x));
  if (!triple(spec.mean)) problems.push('mean must be three finite numbers');
  if (!triple(spec.std)) problems.push('std must be three finite numbers');
  else if (spec.std.some((s) => s <= 0)) problems.push(`std values must be > 0, got ${spec.std.join(',')}`);
  if (triple(spec.mean) && triple(spec.std)) {
    const max = spec.valueRange === '0-1' ? 1 : 255;
    if (spec.mean.some((m) => m < -max || m > max)) {
      problems.push(
        `mean ${spec.mean.join(',')} is outside the ${spec.valueRange} value range` +
          (spec.valueRange === '0-1' ? ' (statistics in 0-255 units need range "0-255")' : ''),
      );
    }
    if (
      spec.valueRange === '0-255' &&
      spec.mean.every((m) => m > 0 && m <= 1) &&
      spec.std.every((s) => s <= 1)
    ) {
      problems.push(`mean ${spec.mean.join(',')} / std ${spec.std.join(',')} look like 0-1 statistics but range is "0-255"`);
    }
  }
  if (spec.outputDim !== undefined && (!Number.isInteger(spec.outputDim) || spec.outputDim < 1)) {
    problems.push(`outputDim must be a positive integer, got ${spec.outputDim}`);
  }
  if (spec.resizeShorter !== undefined) {
    if (!Number.isInteger(spec.resizeShorter) || spec.resizeShorter < 1) {
      problems.push(`resizeShorter must be a positive integer, got ${spec.resizeShorter}`);
    } else if (Number.isInteger(spec.inputHeight) && Number.isInteger(spec.inputWidth) && spec.resizeShorter < Math.min(spec.inputHeight, spec.inputWidth)) {
      problems.push(
        `resizeShorter ${spec.resizeShorter} is smaller than the crop's shorter side ${Math.min(spec.inputHeight, spec.inputWidth)}`,
      );
    }
  }
  if (spec.sha256 !== undefined && !/^[0-9a-f]{64}$/.test(spec.sha256)) problems.push('sha256 must be 64 lowercase hex digits');
  if (problems.length) throw new ModelSpecError(problems);
  return spec;
}

// ---------------------------------------------------------------------------------------------------
// Loading and running
// ---------------------------------------------------------------------------------------------------

export async function fileSha256(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function pickName(kind: 'input' | 'output', wanted: string | undefined, available: readonly string[], file: string): string {
  if (wanted !== undefined) {
    if (!available.includes(wanted)) {
      throw new ModelSpecError([`${kind} "${wanted}" not found; ${file} has ${kind}s: ${available.join(', ')}`]);
    }
    return wanted;
  }
  if (available.length !== 1) {
    throw new ModelSpecError([`${file} has ${available.length} ${kind}s (${available.join(', ')}); set ${kind}Name`]);
  }
  return available[0];
}

class OrtImageEncoder implements ImageEncoder {
  private closed = false;

  constructor(
    readonly spec: Readonly<ModelSpec>,
    private readonly runner: OrtRunner,
    private readonly inputName: string,
    private readonly outputName: string,
    readonly dim: number,
    readonly identity: EncoderIdentity,
  ) {}

  get inputElements(): number {
    return 3 * this.spec.inputHeight * this.spec.inputWidth;
  }

  inputDims(n: number): number[] {
    return inputDimsOf(this.spec, n);
  }

  createBatchBuffer(n: number): Float32Array {
    return this.runner.createBuffer(n * this.inputElements);
  }

  async embed(batch: Float32Array, n: number): Promise<Float32Array> {
    if (this.closed) throw new Error('encoder is closed');
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`n must be a positive integer, got ${n}`);
    if (batch.length !== n * this.inputElements) {
      throw new RangeError(`batch has ${batch.length} floats, expected ${n} × ${this.inputElements}`);
    }
    const out = await this.runner.run(this.inputName, this.outputName, batch, this.inputDims(n));
    if (out.type !== 'float32') throw new Error(`model output ${this.outputName} is ${out.type}, expected float32`);
    if (out.dims[0] !== n || out.data.length !== n * this.dim) {
      throw new Error(`model output ${this.outputName} has dims [${out.dims.join(',')}], expected ${n} × ${this.dim}`);
    }
    return l2NormalizeRows(out.data, n, this.dim);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.runner.close();
  }
}

function inputDimsOf(spec: Pick<ModelSpec, 'layout' | 'inputHeight' | 'inputWidth'>, n: number): number[] {
  return spec.layout === 'NHWC' ? [n, spec.inputHeight, spec.inputWidth, 3] : [n, 3, spec.inputHeight, spec.inputWidth];
}

/** L2-normalises each row in place (double-precision accumulation); zero or non-finite rows become zeros. */
export function l2NormalizeRows(data: Float32Array, n: number, dim: number): Float32Array {
  for (let i = 0; i < n; i++) {
    const off = i * dim;
    let sum = 0;
    for (let j = 0; j < dim; j++) sum += data[off + j] * data[off + j];
    const norm = Math.sqrt(sum);
    if (!(norm > 0) || !Number.isFinite(norm)) {
      data.fill(0, off, off + dim);
      continue;
    }
    const inv = 1 / norm;
    for (let j = 0; j < dim; j++) data[off + j] *= inv;
  }
  return data;
}

/**
 * Opens an ONNX image encoder described by `spec`. The model's input/output names, element types and
 * static dims are checked against the spec, one zero image is run to learn (or check) the output
 * dimension, and the file's SHA-256 becomes part of the encoder identity.
 */
export async function loadModel(spec: ModelSpec, options: LoadModelOptions = {}): Promise<ImageEncoder> {
  validateModelSpec(spec);
  const threads = options.intraOpNumThreads ?? availableParallelism();
  if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`intraOpNumThreads must be a positive integer, got ${threads}`);
  const sha256 = await fileSha256(spec.path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') throw new ModelSpecError([`model file ${spec.path} does not exist`]);
    throw err;
  });
  if (spec.sha256 && spec.sha256 !== sha256) {
    throw new ModelSpecError([`model file ${spec.path} has SHA-256 ${sha256}, expected ${spec.sha256}`]);
  }
  const sessionOptions: RunnerSessionOptions = {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    extra: { session: { intra_op: { allow_spinning: options.allowSpinning ? '1' : '0' } } },
  };
  let runner: OrtRunner;
  try {
    runner = await (options.worker === false ? createInProcessRunner : createWorkerRunner)(spec.path, sessionOptions);
  } catch (err) {
    throw new ModelSpecError([`onnxruntime cannot load ${spec.path}: ${(err as Error).message}`]);
  }
  try {
    const { info } = runner;
    const inputName = pickName('input', spec.inputName, info.inputNames, spec.path);
    const outputName = pickName('output', spec.outputName, info.outputNames, spec.path);
    const problems: string[] = [];
    const meta = info.inputMetadata.find((m) => m.name === inputName);
    if (meta?.isTensor) {
      if (meta.type !== 'float32') problems.push(`input ${inputName} is ${meta.type}, only float32 inputs are supported`);
      const expected = spec.layout === 'NHWC' ? [null, spec.inputHeight, spec.inputWidth, 3] : [null, 3, spec.inputHeight, spec.inputWidth];
      const shape = meta.shape ?? [];
      if (shape.length !== 0) {
        const mismatch = shape.length !== 4 || expected.some((e, i) => e !== null && typeof shape[i] === 'number' && shape[i] !== e);
        if (mismatch) {
          problems.push(
            `input ${inputName} has shape [${shape.join(',')}] but the spec (${spec.layout} ${spec.inputHeight}x${spec.inputWidth}) ` +
              `needs [N,${expected.slice(1).join(',')}]`,
          );
        }
        if (typeof shape[0] === 'number' && shape[0] !== 1) {
          problems.push(`input ${inputName} has a fixed batch size ${shape[0]}; export it with a dynamic batch axis`);
        }
      }
    }
    const outMeta = info.outputMetadata.find((m) => m.name === outputName);
    if (outMeta?.isTensor && outMeta.type !== 'float32') problems.push(`output ${outputName} is ${outMeta.type}, expected float32`);
    if (problems.length) throw new ModelSpecError(problems, `model ${spec.path} does not match its spec`);

    // Probe: one zero image tells the real output size (works for [N,D], [N,D,1,1] and similar shapes).
    const elements = 3 * spec.inputHeight * spec.inputWidth;
    let probe;
    try {
      probe = await runner.run(inputName, outputName, new Float32Array(elements), inputDimsOf(spec, 1));
    } catch (err) {
      throw new ModelSpecError([`probe run failed: ${(err as Error).message}`], `model ${spec.path} does not match its spec`);
    }
    if (probe.type !== 'float32') throw new ModelSpecError([`output ${outputName} is ${probe.type}, expected float32`]);
    const dim = probe.data.length;
    if (probe.dims[0] !== 1) throw new ModelSpecError([`output ${outputName} has no leading batch dimension (dims [${probe.dims.join(',')}])`]);
    if (probe.dims.length > 2 && probe.dims.slice(1).filter((d) => d > 1).length > 1) {
      throw new ModelSpecError([
        `output ${outputName} has dims [${probe.dims.join(',')}]: export a pooled [N, D] feature (e.g. the CLS token), not a token/feature map`,
      ]);
    }
    if (spec.outputDim !== undefined && spec.outputDim !== dim) {
      throw new ModelSpecError([`output ${outputName} has ${dim} values per image, spec says outputDim ${spec.outputDim}`]);
    }
    return new OrtImageEncoder(Object.freeze({ ...spec, inputName, outputName, outputDim: dim }), runner, inputName, outputName, dim, {
      name: spec.name,
      sha256,
    });
  } catch (err) {
    await runner.close();
    throw err;
  }
}

/** Converts the default model into `modelsDir` if needed and loads it. */
export async function loadDefaultEncoder(modelsDir: string, options: LoadModelOptions = {}): Promise<ImageEncoder> {
  const ensured = await ensureDefaultModel(modelsDir);
  return loadModel({ ...defaultModelSpec(modelsDir), path: ensured.path, sha256: ensured.sha256 }, options);
}
