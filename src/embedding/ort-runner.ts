import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { InferenceSession, Tensor } from 'onnxruntime-node';

/**
 * Where ORT runs. onnxruntime-node's `session.run()` returns a promise but executes synchronously on
 * the calling thread (inside a setImmediate): on the main thread a 300 ms batch would block the event
 * loop — no HTTP handling, and no new image decodes could be started while the model runs. The worker
 * runner owns the session on a worker thread instead, so the main thread stays free to decode and write
 * the next batch while the current one is inferred.
 *
 * Transport: batch buffers created with `createBuffer` are SharedArrayBuffer-backed, so posting a run
 * copies nothing on the main thread; the worker copies the shared view into its own scratch tensor
 * (onnxruntime-node rejects SharedArrayBuffer-backed tensors) and posts the (small) output back.
 * Any other Float32Array is structured-cloned.
 */

export interface ValueInfo {
  name: string;
  isTensor: boolean;
  type?: string;
  shape?: readonly (number | string)[];
}

export interface RunnerInfo {
  inputNames: readonly string[];
  outputNames: readonly string[];
  inputMetadata: readonly ValueInfo[];
  outputMetadata: readonly ValueInfo[];
}

export interface RunOutput {
  type: string;
  data: Float32Array;
  dims: readonly number[];
}

export interface OrtRunner {
  readonly info: RunnerInfo;
  /** Runs one input → one output. Calls are executed one at a time, in order. */
  run(inputName: string, outputName: string, data: Float32Array, dims: readonly number[]): Promise<RunOutput>;
  /** A Float32Array of `length` that can be passed to run() without copying on the caller's thread. */
  createBuffer(length: number): Float32Array;
  close(): Promise<void>;
}

export type RunnerSessionOptions = InferenceSession.SessionOptions;

function outputOf(out: InferenceSession.OnnxValueMapType, outputName: string): RunOutput {
  const tensor = out[outputName];
  const result: RunOutput = {
    type: tensor.type,
    data: tensor.type === 'float32' ? new Float32Array(tensor.data as Float32Array) : new Float32Array(0),
    dims: tensor.dims.slice(),
  };
  for (const t of Object.values(out)) t.dispose();
  return result;
}

/** Session on the calling (main) thread: simplest, but each run blocks the event loop. */
export async function createInProcessRunner(modelPath: string, options: RunnerSessionOptions): Promise<OrtRunner> {
  const session = await InferenceSession.create(modelPath, options);
  let chain: Promise<unknown> = Promise.resolve();
  return {
    info: {
      inputNames: session.inputNames,
      outputNames: session.outputNames,
      inputMetadata: session.inputMetadata,
      outputMetadata: session.outputMetadata,
    },
    run(inputName, outputName, data, dims) {
      const next = chain.then(async () => {
        const out = await session.run({ [inputName]: new Tensor('float32', data, dims) }, [outputName]);
        return outputOf(out, outputName);
      });
      chain = next.catch(() => undefined);
      return next;
    },
    createBuffer: (length) => new Float32Array(length),
    close: () => session.release(),
  };
}

// Plain CommonJS evaluated in the worker (works the same under tsx, vitest and compiled dist/).
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const ort = require(workerData.ortPath);
let session;
let scratch = null;
let chain = Promise.resolve();
const message = (e) => (e && e.message) ? e.message : String(e);
ort.InferenceSession.create(workerData.modelPath, workerData.options).then((s) => {
  session = s;
  const meta = (list) => list.map((m) => ({ name: m.name, isTensor: m.isTensor, type: m.type, shape: m.shape ? Array.from(m.shape) : undefined }));
  parentPort.postMessage({ type: 'ready', inputNames: s.inputNames, outputNames: s.outputNames, inputMetadata: meta(s.inputMetadata), outputMetadata: meta(s.outputMetadata) });
}, (e) => parentPort.postMessage({ type: 'failed', message: message(e) }));
async function run(msg) {
  let input = msg.data;
  if (input.buffer instanceof SharedArrayBuffer) {
    if (!scratch || scratch.length < input.length) scratch = new Float32Array(input.length);
    const local = scratch.subarray(0, input.length);
    local.set(input);
    input = local;
  }
  const out = await session.run({ [msg.inputName]: new ort.Tensor('float32', input, msg.dims) }, [msg.outputName]);
  const t = out[msg.outputName];
  const data = t.type === 'float32' ? new Float32Array(t.data) : new Float32Array(0);
  const dims = Array.from(t.dims);
  for (const v of Object.values(out)) v.dispose();
  return { type: t.type, data, dims };
}
parentPort.on('message', (msg) => {
  if (msg.type === 'run') {
    chain = chain.then(() => run(msg)).then(
      (r) => parentPort.postMessage({ type: 'result', id: msg.id, result: r }, [r.data.buffer]),
      (e) => parentPort.postMessage({ type: 'result', id: msg.id, error: message(e) }),
    );
  } else if (msg.type === 'close') {
    chain = chain.then(async () => {
      try { if (session) await session.release(); } catch {}
      parentPort.postMessage({ type: 'closed' });
      parentPort.close();
    });
  }
});
`;

interface Pending {
  resolve: (out: RunOutput) => void;
  reject: (err: Error) => void;
}

/** Session on a dedicated worker thread (the default for loadModel). */
export async function createWorkerRunner(modelPath: string, options: RunnerSessionOptions): Promise<OrtRunner> {
  const ortPath = createRequire(import.meta.url).resolve('onnxruntime-node');
  const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { ortPath, modelPath, options } });
  const pending = new Map<number, Pending>();
  let nextId = 1;
  let closed = false;
  let fatal: Error | null = null;

  const info = await new Promise<RunnerInfo>((resolve, reject) => {
    const onMessage = (msg: { type: string; message?: string } & RunnerInfo): void => {
      worker.off('error', onError);
      worker.off('message', onMessage);
      if (msg.type === 'ready') resolve(msg);
      else reject(new Error(msg.message ?? 'onnxruntime worker failed to start'));
    };
    const onError = (err: Error): void => {
      worker.off('message', onMessage);
      reject(err);
    };
    worker.on('message', onMessage);
    worker.once('error', onError);
  }).catch(async (err: Error) => {
    await worker.terminate();
    throw err;
  });

  const failAll = (err: Error): void => {
    fatal = err;
    for (const p of pending.values()) p.reject(err);
    pending.clear();
    worker.unref();
  };
  worker.on('message', (msg: { type: string; id?: number; result?: RunOutput; error?: string }) => {
    if (msg.type !== 'result' || msg.id === undefined) return;
    const p = pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    if (pending.size === 0) worker.unref();
    if (msg.error !== undefined) p.reject(new Error(msg.error));
    else p.resolve(msg.result!);
  });
  worker.on('error', (err) => failAll(err));
  worker.on('exit', (code) => {
    if (!closed) failAll(new Error(`onnxruntime worker exited unexpectedly (code ${code})`));
  });
  // An idle worker must not keep the process alive; it is ref'ed while runs are outstanding.
  worker.unref();

  return {
    info,
    run(inputName, outputName, data, dims) {
      if (closed) return Promise.reject(new Error('encoder is closed'));
      if (fatal) return Promise.reject(fatal);
      const id = nextId++;
      return new Promise<RunOutput>((resolve, reject) => {
        pending.set(id, { resolve, reject });
        worker.ref();
        worker.postMessage({ type: 'run', id, inputName, outputName, data, dims: Array.from(dims) });
      });
    },
    createBuffer: (length) => new Float32Array(new SharedArrayBuffer(length * 4)),
    async close() {
      if (closed) return;
      closed = true;
      if (fatal) return;
      worker.ref();
      await new Promise<void>((resolve) => {
        worker.once('exit', () => resolve());
        worker.postMessage({ type: 'close' });
      });
      for (const p of pending.values()) p.reject(new Error('encoder is closed'));
      pending.clear();
    },
  };
}
