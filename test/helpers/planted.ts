import { Rng } from '../../src/core/random.js';

/** Standard normal deviate (Box–Muller). */
export function gaussian(rng: Rng): number {
  const u = 1 - rng.next();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
}

/** `rows` independent uniformly random unit vectors. */
export function randomUnitRows(rng: Rng, rows: number, dim: number): Float32Array {
  const out = new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) writeUnit(out, r, dim, () => gaussian(rng));
  return out;
}

function writeUnit(out: Float32Array, row: number, dim: number, value: (j: number) => number): void {
  let squared = 0;
  const values = new Float64Array(dim);
  for (let j = 0; j < dim; j++) {
    values[j] = value(j);
    squared += values[j] * values[j];
  }
  const scale = 1 / Math.sqrt(squared);
  for (let j = 0; j < dim; j++) out[row * dim + j] = values[j] * scale;
}

export interface PlantedData {
  points: Float32Array;
  n: number;
  dim: number;
  /** Planted group of each point. */
  labels: Int32Array;
  centres: Float32Array;
}

/**
 * `clusters × perCluster` unit points, point i in group i % clusters: the group's random unit
 * centre plus isotropic Gaussian noise of expected norm ≈ `noise`, re-normalised.
 */
export function plantedClusters(options: { seed: number; clusters: number; perCluster: number; dim: number; noise: number }): PlantedData {
  const { clusters, perCluster, dim, noise } = options;
  const rng = new Rng(options.seed);
  const centres = randomUnitRows(rng, clusters, dim);
  const n = clusters * perCluster;
  const points = new Float32Array(n * dim);
  const labels = new Int32Array(n);
  const sigma = noise / Math.sqrt(dim);
  for (let i = 0; i < n; i++) {
    const c = i % clusters;
    labels[i] = c;
    writeUnit(points, i, dim, (j) => centres[c * dim + j] + sigma * gaussian(rng));
  }
  return { points, n, dim, labels, centres };
}

/** Whether two labelings induce the same partition (equal up to a permutation of labels). */
export function samePartition(a: Int32Array, b: Int32Array): boolean {
  if (a.length !== b.length) return false;
  const aToB = new Map<number, number>();
  const bToA = new Map<number, number>();
  for (let i = 0; i < a.length; i++) {
    if ((aToB.get(a[i]) ?? b[i]) !== b[i] || (bToA.get(b[i]) ?? a[i]) !== a[i]) return false;
    aToB.set(a[i], b[i]);
    bToA.set(b[i], a[i]);
  }
  return true;
}

/** Row-major dot product of row `i` of `a` with row `j` of `b`, in float64. */
export function dot(a: Float32Array, i: number, b: Float32Array, j: number, dim: number): number {
  let sum = 0;
  for (let t = 0; t < dim; t++) sum += a[i * dim + t] * b[j * dim + t];
  return sum;
}
