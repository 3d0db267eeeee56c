export interface NormalizedRows {
  /** The L2-normalised rows; invalid rows are all zeros. */
  rows: Float32Array;
  /** Ascending indices of rows that could not be normalised (zero norm or a non-finite value). */
  invalidRows: Int32Array;
}

/**
 * L2-normalises each of the `n` rows of `input` (row-major, `dim` columns) into `out`, which may be
 * `input` itself for an in-place update. Norms are computed in float64. A row with zero norm or any
 * NaN/±Infinity is reported in `invalidRows` and written as zeros instead of producing NaN.
 */
export function normalizeRows(
  input: Float32Array,
  n: number,
  dim: number,
  out: Float32Array = new Float32Array(n * dim),
): NormalizedRows {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`n must be a non-negative integer, got ${n}`);
  if (!Number.isInteger(dim) || dim < 1) throw new RangeError(`dim must be a positive integer, got ${dim}`);
  if (input.length < n * dim) throw new RangeError(`input holds ${input.length} values, expected ${n * dim}`);
  if (out.length < n * dim) throw new RangeError(`out holds ${out.length} values, expected ${n * dim}`);
  const invalid: number[] = [];
  for (let i = 0; i < n; i++) {
    const start = i * dim;
    let squared = 0;
    for (let j = 0; j < dim; j++) squared += input[start + j] * input[start + j];
    // NaN or ±Infinity anywhere in the row makes the sum non-finite.
    if (squared > 0 && Number.isFinite(squared)) {
      const scale = 1 / Math.sqrt(squared);
      for (let j = 0; j < dim; j++) out[start + j] = input[start + j] * scale;
    } else {
      invalid.push(i);
      out.fill(0, start, start + dim);
    }
  }
  return { rows: out, invalidRows: Int32Array.from(invalid) };
}
