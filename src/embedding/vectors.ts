import { endianness } from 'node:os';

/**
 * Decoding precomputed embeddings supplied by clients instead of images.
 *
 * Accepted encodings per item:
 * - a JSON array of numbers (already parsed: `number[]`), each rounded to float32;
 * - compact binary: little-endian IEEE-754 float32, either raw bytes (Buffer/Uint8Array) or a base64
 *   string (standard or URL-safe alphabet, padding optional, no whitespace).
 * Binary and JSON encodings of the same float32 values decode to bit-identical Float32Arrays.
 *
 * Per-item failures (never thrown; returned as `{ error }`):
 * - INVALID_ENCODING: not an array/string/bytes, a non-number element, malformed base64, or a byte
 *   length that is not a multiple of 4;
 * - DIMENSION_MISMATCH: the number of values differs from the dataset dimension;
 * - NON_FINITE_VALUE: NaN or ±Infinity — including finite doubles beyond float32 range (|x| > 3.4e38),
 *   which become ±Infinity in float32, and JSON `null` (what JSON.stringify writes for NaN/Infinity);
 * - ZERO_VECTOR: every component is 0 (cannot be L2-normalised / has no direction).
 */

export type VectorErrorCode = 'DIMENSION_MISMATCH' | 'NON_FINITE_VALUE' | 'ZERO_VECTOR' | 'INVALID_ENCODING';

export interface VectorErrorInfo {
  code: VectorErrorCode;
  message: string;
}

export type VectorResult = { vector: Float32Array } | { error: VectorErrorInfo };

const LITTLE_ENDIAN_HOST = endianness() === 'LE';
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const BASE64_URL = /^[A-Za-z0-9_-]*={0,2}$/;

function fail(code: VectorErrorCode, message: string): { error: VectorErrorInfo } {
  return { error: { code, message } };
}

function checkDim(dim: number): void {
  if (!Number.isInteger(dim) || dim < 1) throw new RangeError(`dimension must be a positive integer, got ${dim}`);
}

/** Finite, non-zero checks shared by every encoding. */
function checkValues(vector: Float32Array): { vector: Float32Array } | { error: VectorErrorInfo } {
  let nonZero = false;
  for (let i = 0; i < vector.length; i++) {
    const v = vector[i];
    if (!Number.isFinite(v)) return fail('NON_FINITE_VALUE', `component ${i} is ${v} (as float32)`);
    if (v !== 0) nonZero = true;
  }
  if (!nonZero) return fail('ZERO_VECTOR', 'all components are zero');
  return { vector };
}

/** A parsed JSON array of numbers → float32 vector of length `dim`. */
export function vectorFromJson(values: unknown, dim: number): VectorResult {
  checkDim(dim);
  if (!Array.isArray(values)) return fail('INVALID_ENCODING', `expected an array of numbers, got ${describe(values)}`);
  if (values.length !== dim) return fail('DIMENSION_MISMATCH', `expected ${dim} values, got ${values.length}`);
  const vector = new Float32Array(dim);
  for (let i = 0; i < dim; i++) {
    const v: unknown = values[i];
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) return fail('NON_FINITE_VALUE', `component ${i} is ${v}`);
      vector[i] = v;
    } else if (v === null) {
      return fail('NON_FINITE_VALUE', `component ${i} is null (JSON's encoding of NaN/Infinity)`);
    } else {
      return fail('INVALID_ENCODING', `component ${i} is ${describe(v)}, not a number`);
    }
  }
  return checkValues(vector);
}

/** Little-endian float32 bytes → vector of length `dim`. */
export function vectorFromBytes(bytes: Uint8Array, dim: number): VectorResult {
  checkDim(dim);
  if (!(bytes instanceof Uint8Array)) return fail('INVALID_ENCODING', `expected bytes, got ${describe(bytes)}`);
  if (bytes.byteLength % 4 !== 0) {
    return fail('INVALID_ENCODING', `byte length ${bytes.byteLength} is not a multiple of 4 (float32)`);
  }
  if (bytes.byteLength / 4 !== dim) return fail('DIMENSION_MISMATCH', `expected ${dim} values, got ${bytes.byteLength / 4}`);
  return checkValues(float32FromLittleEndian(bytes));
}

/** Base64 (standard or URL-safe) of little-endian float32 bytes → vector of length `dim`. */
export function vectorFromBase64(text: string, dim: number): VectorResult {
  checkDim(dim);
  if (typeof text !== 'string') return fail('INVALID_ENCODING', `expected a base64 string, got ${describe(text)}`);
  const bytes = decodeBase64Strict(text);
  if (!bytes) return fail('INVALID_ENCODING', 'malformed base64');
  return vectorFromBytes(bytes, dim);
}

/** Dispatches on the input's type: array → JSON numbers, string → base64, bytes → raw float32. */
export function decodeVector(input: unknown, dim: number): VectorResult {
  if (Array.isArray(input)) return vectorFromJson(input, dim);
  if (typeof input === 'string') return vectorFromBase64(input, dim);
  if (input instanceof Uint8Array) return vectorFromBytes(input, dim);
  checkDim(dim);
  return fail('INVALID_ENCODING', `expected a number array, a base64 string or bytes, got ${describe(input)}`);
}

/** Strict base64 decoding (Buffer.from silently skips invalid characters). */
export function decodeBase64Strict(text: string): Uint8Array | undefined {
  if (text.length % 4 === 1) return undefined;
  const url = !BASE64.test(text);
  if (url && !BASE64_URL.test(text)) return undefined;
  const pad = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0;
  if (pad && text.length % 4 !== 0) return undefined;
  const body = text.length - pad;
  const bytes = Buffer.from(text, url ? 'base64url' : 'base64');
  // Every 4 characters carry 3 bytes; check nothing was dropped and unused trailing bits are zero.
  if (bytes.length !== Math.floor((body * 3) / 4)) return undefined;
  const reencoded = bytes.toString(url ? 'base64url' : 'base64').replace(/=+$/, '');
  if (reencoded !== text.slice(0, body)) return undefined;
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Copies little-endian float32 bytes (any alignment) into a new Float32Array. */
export function float32FromLittleEndian(bytes: Uint8Array): Float32Array {
  const n = bytes.byteLength >>> 2;
  const out = new Float32Array(n);
  if (LITTLE_ENDIAN_HOST) {
    new Uint8Array(out.buffer).set(bytes.subarray(0, n * 4));
  } else {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < n; i++) out[i] = view.getFloat32(4 * i, true);
  }
  return out;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Uint8Array) return 'bytes';
  return typeof v === 'string' ? `a string "${v.slice(0, 20)}"` : typeof v;
}
