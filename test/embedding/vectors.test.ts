import { describe, expect, it } from 'vitest';
import {
  decodeBase64Strict,
  decodeVector,
  vectorFromBase64,
  vectorFromBytes,
  vectorFromJson,
  type VectorResult,
} from '../../src/embedding/vectors.js';
import { rng } from './images.js';

const codeOf = (r: VectorResult | { error: { code: string } }): string => ('error' in r ? r.error.code : 'OK');
const vec = (r: VectorResult): Float32Array => {
  if ('error' in r) throw new Error(`${r.error.code}: ${r.error.message}`);
  return r.vector;
};

/** Little-endian float32 bytes written by hand with a DataView (independent of the implementation). */
function leBytes(values: number[]): Buffer {
  const buf = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => buf.writeFloatLE(v, i * 4));
  return buf;
}

describe('precomputed vector decoding', () => {
  it('binary (raw and base64) and JSON of the same values give bit-identical Float32Arrays', () => {
    const r = rng(42);
    const dim = 384;
    for (let trial = 0; trial < 20; trial++) {
      // Doubles as a JSON client would send them (not float32-representable in general).
      const json = Array.from({ length: dim }, () => (r() - 0.5) * 10 ** Math.floor(r() * 8 - 4));
      const fromJson = vec(vectorFromJson(JSON.parse(JSON.stringify(json)), dim));
      // The binary encoding of the same values: each double rounded to float32, little endian.
      const raw = leBytes(json);
      const fromRaw = vec(vectorFromBytes(raw, dim));
      const fromB64 = vec(vectorFromBase64(raw.toString('base64'), dim));
      const fromB64Url = vec(vectorFromBase64(raw.toString('base64url'), dim));
      expect(Buffer.from(fromJson.buffer).equals(Buffer.from(fromRaw.buffer))).toBe(true);
      expect(Buffer.from(fromB64.buffer).equals(raw)).toBe(true);
      expect(Buffer.from(fromB64Url.buffer).equals(raw)).toBe(true);
      expect(fromJson[0]).toBe(Math.fround(json[0]));
    }
  });

  it('handles unaligned buffers', () => {
    const values = [1.5, -2.25, 3e-7, 65504];
    const padded = Buffer.concat([Buffer.from([9]), leBytes(values)]);
    const unaligned = padded.subarray(1); // byteOffset is odd
    expect(Array.from(vec(vectorFromBytes(unaligned, 4)))).toEqual(values.map(Math.fround));
  });

  it('dispatches on the input type', () => {
    const values = [0.25, -1, 2];
    const expected = Float32Array.from(values);
    expect(vec(decodeVector(values, 3))).toEqual(expected);
    expect(vec(decodeVector(leBytes(values), 3))).toEqual(expected);
    expect(vec(decodeVector(leBytes(values).toString('base64'), 3))).toEqual(expected);
    expect(codeOf(decodeVector({ values }, 3))).toBe('INVALID_ENCODING');
    expect(codeOf(decodeVector(42, 3))).toBe('INVALID_ENCODING');
  });

  it('DIMENSION_MISMATCH for the wrong length in every encoding', () => {
    expect(codeOf(vectorFromJson([1, 2], 3))).toBe('DIMENSION_MISMATCH');
    expect(codeOf(vectorFromJson([1, 2, 3, 4], 3))).toBe('DIMENSION_MISMATCH');
    expect(codeOf(vectorFromBytes(leBytes([1, 2]), 3))).toBe('DIMENSION_MISMATCH');
    expect(codeOf(vectorFromBase64(leBytes([1, 2, 3, 4]).toString('base64'), 3))).toBe('DIMENSION_MISMATCH');
    expect(codeOf(vectorFromBase64('', 3))).toBe('DIMENSION_MISMATCH');
  });

  it('NON_FINITE_VALUE for NaN, ±Infinity, float32 overflow and JSON null', () => {
    expect(codeOf(vectorFromJson([1, NaN, 3], 3))).toBe('NON_FINITE_VALUE');
    expect(codeOf(vectorFromJson([1, Infinity, 3], 3))).toBe('NON_FINITE_VALUE');
    expect(codeOf(vectorFromJson([-Infinity, 1, 3], 3))).toBe('NON_FINITE_VALUE');
    expect(codeOf(vectorFromJson([1e39, 1, 3], 3))).toBe('NON_FINITE_VALUE'); // finite double, +Inf as float32
    expect(codeOf(vectorFromJson(JSON.parse(JSON.stringify([1, NaN, 3])), 3))).toBe('NON_FINITE_VALUE'); // [1,null,3]
    expect(codeOf(vectorFromBytes(leBytes([1, NaN, 3]), 3))).toBe('NON_FINITE_VALUE');
    expect(codeOf(vectorFromBytes(leBytes([1, 2, -Infinity]), 3))).toBe('NON_FINITE_VALUE');
    expect(codeOf(vectorFromBase64(leBytes([Infinity, 2, 3]).toString('base64'), 3))).toBe('NON_FINITE_VALUE');
  });

  it('ZERO_VECTOR when every component is zero (including -0 and underflow to zero)', () => {
    expect(codeOf(vectorFromJson([0, 0, 0], 3))).toBe('ZERO_VECTOR');
    expect(codeOf(vectorFromJson([0, -0, 1e-50], 3))).toBe('ZERO_VECTOR'); // 1e-50 is 0 in float32
    expect(codeOf(vectorFromBytes(leBytes([0, -0, 0]), 3))).toBe('ZERO_VECTOR');
    expect(codeOf(vectorFromJson([0, 0, 1e-40], 3))).toBe('OK'); // float32 subnormal, not zero
  });

  it('INVALID_ENCODING for malformed base64, partial floats and non-numbers', () => {
    const good = leBytes([1, 2, 3]).toString('base64');
    expect(codeOf(vectorFromBase64(good, 3))).toBe('OK');
    expect(codeOf(vectorFromBase64(good.replace(/=*$/, ''), 3))).toBe('OK'); // unpadded is fine
    expect(codeOf(vectorFromBase64(`${good.slice(0, 4)}!${good.slice(5)}`, 3))).toBe('INVALID_ENCODING');
    expect(codeOf(vectorFromBase64(`${good.slice(0, 8)} ${good.slice(8)}`, 3))).toBe('INVALID_ENCODING');
    expect(codeOf(vectorFromBase64(`${good}A`, 3))).toBe('INVALID_ENCODING'); // length ≡ 1 (mod 4)
    expect(codeOf(vectorFromBase64('AA=A', 3))).toBe('INVALID_ENCODING'); // padding in the middle
    expect(codeOf(vectorFromBase64('AAB-+A==', 3))).toBe('INVALID_ENCODING'); // mixed alphabets
    expect(codeOf(vectorFromBase64('AAAAAB==', 3))).toBe('INVALID_ENCODING'); // non-zero trailing bits
    // 13 bytes: not a whole number of float32s.
    expect(codeOf(vectorFromBytes(Buffer.concat([leBytes([1, 2, 3]), Buffer.from([1])]), 3))).toBe('INVALID_ENCODING');
    expect(codeOf(vectorFromBase64(Buffer.alloc(13, 1).toString('base64'), 3))).toBe('INVALID_ENCODING');
    expect(codeOf(vectorFromJson([1, '2', 3], 3))).toBe('INVALID_ENCODING');
    expect(codeOf(vectorFromJson([1, [2], 3], 3))).toBe('INVALID_ENCODING');
    expect(codeOf(vectorFromJson('1,2,3', 3))).toBe('INVALID_ENCODING');
    expect(decodeBase64Strict('QUJD')).toEqual(Uint8Array.from([65, 66, 67]));
  });

  it('rejects a nonsensical dataset dimension', () => {
    expect(() => vectorFromJson([1], 0)).toThrow(RangeError);
    expect(() => decodeVector([], 1.5)).toThrow(RangeError);
  });
});
