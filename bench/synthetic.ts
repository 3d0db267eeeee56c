import { Rng } from '../src/core/random.js';

/**
 * Synthetic embeddings on the unit sphere around `planted` random centres (point i in group
 * i % planted), each with Gaussian noise of norm ≈ U(0.6, 1.2): cosine to its centre between about
 * 0.64 and 0.86. Generated in chunks, so a million points never need to be held at once.
 */
export class SyntheticSphere {
  private readonly rng: Rng;
  private readonly centres: Float64Array;
  private spare: number | undefined;
  private produced = 0;

  constructor(
    private readonly planted: number,
    readonly dim: number,
    seed: number,
  ) {
    this.rng = new Rng(seed);
    this.centres = new Float64Array(planted * dim);
    for (let c = 0; c < planted; c++) {
      let squared = 0;
      for (let j = 0; j < dim; j++) squared += (this.centres[c * dim + j] = this.gaussian()) ** 2;
      for (let j = 0; j < dim; j++) this.centres[c * dim + j] /= Math.sqrt(squared);
    }
  }

  private gaussian(): number {
    if (this.spare !== undefined) {
      const value = this.spare;
      this.spare = undefined;
      return value;
    }
    const radius = Math.sqrt(-2 * Math.log(1 - this.rng.next()));
    const angle = 2 * Math.PI * this.rng.next();
    this.spare = radius * Math.sin(angle);
    return radius * Math.cos(angle);
  }

  /** The next `count` points, row-major. */
  take(count: number): Float32Array {
    const { dim } = this;
    const points = new Float32Array(count * dim);
    const row = new Float64Array(dim);
    for (let i = 0; i < count; i++) {
      const c = (this.produced + i) % this.planted;
      const sigma = (0.6 + 0.6 * this.rng.next()) / Math.sqrt(dim);
      let squared = 0;
      for (let j = 0; j < dim; j++) squared += (row[j] = this.centres[c * dim + j] + sigma * this.gaussian()) ** 2;
      const scale = 1 / Math.sqrt(squared);
      for (let j = 0; j < dim; j++) points[i * dim + j] = row[j] * scale;
    }
    this.produced += count;
    return points;
  }
}
