/**
 * Checks one embedding and writes it L2-normalised into `out` at `at`; returns the problem instead
 * when it has the wrong length, a value that is not a finite float32 (NaN, ±Inf, or beyond
 * ±3.4028235e38, which float32 would turn into ±Inf), or no direction (all zeros).
 */
export function normalizeInto(
  embedding: ArrayLike<number> | undefined,
  dim: number,
  datasetName: string,
  out: Float32Array,
  at: number,
): { code: 'DIMENSION_MISMATCH' | 'NON_FINITE_VALUE' | 'ZERO_VECTOR'; message: string } | null {
  if (!embedding || embedding.length !== dim) {
    return { code: 'DIMENSION_MISMATCH', message: `embedding has ${embedding?.length ?? 0} values, dataset ${datasetName} expects ${dim}` };
  }
  let squared = 0;
  if (embedding instanceof Float32Array) {
    // Binary ingest's vectors: one copy and a loop over one typed array (the generic loop's element
    // reads were most of a binary batch's validation). Squares are summed in doubles, so the sum is
    // non-finite exactly when some value is NaN or ±Infinity.
    out.set(embedding, at);
    for (let j = 0; j < dim; j++) squared += out[at + j] * out[at + j];
    if (!Number.isFinite(squared)) {
      let j = 0;
      while (Number.isFinite(out[at + j])) j++;
      return { code: 'NON_FINITE_VALUE', message: nonFiniteMessage(j) };
    }
  } else {
    for (let j = 0; j < dim; j++) {
      const x = embedding[j];
      if (typeof x !== 'number' || !Number.isFinite(Math.fround(x))) return { code: 'NON_FINITE_VALUE', message: nonFiniteMessage(j) };
      out[at + j] = x;
      squared += x * x;
    }
  }
  if (!(squared > 0)) return { code: 'ZERO_VECTOR', message: 'embedding is all zeros and has no direction' };
  const scale = 1 / Math.sqrt(squared);
  for (let j = 0; j < dim; j++) out[at + j] *= scale;
  return null;
}

function nonFiniteMessage(j: number): string {
  return `embedding value ${j} is not a finite float32 number (NaN, ±Infinity or beyond ±3.4e38)`;
}
