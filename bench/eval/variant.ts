/**
 * `--variant=dup-longtail`: a training set where pruning should pay. Built deterministically from
 * the plain training set (the first `--limit` images) and a seed:
 *
 * 1. Long tail: one head class (`headClass`, drawn from the seed unless given) keeps `ratio · t`
 *    images and every other class `t`, with t = ⌊(head class's images) / ratio⌋ capped by the
 *    smallest class; each class is subsampled with a seeded shuffle.
 * 2. Planted near-duplicates: for each class, d = round(kept · share / (1 − share)) augmented
 *    copies of distinct kept images of that class (so copies are `share` of the final set and the
 *    head stays exactly `ratio` times each tail class). A copy is its source's decoded 28×28 pixels
 *    under one small transform — a shift by 1–2 pixels, a horizontal flip (only where a flip keeps
 *    the label: Fashion-MNIST, not digits) or Gaussian pixel noise — re-encoded as PNG and embedded
 *    by the service like any other image, so its embedding is near its source's but not equal.
 * 3. Originals and copies are put in one seeded order; `items[i]` says what variant item i is.
 *
 * The test set is not touched.
 */
import { createHash } from 'node:crypto';
import type { ImageSet } from './fashion-mnist.js';
import { Prng } from './rng.js';

export type Transform = { kind: 'shift'; dx: number; dy: number } | { kind: 'hflip' } | { kind: 'noise'; sigma: number; seed: number };

export interface CopySpec {
  /** Index in the plain training set of the image this is a copy of. */
  source: number;
  transform: Transform;
}

export interface VariantOptions {
  seed: number;
  /** Head class size over each tail class size (10). */
  ratio: number;
  /** Planted copies as a share of the final training set (0.2). */
  share: number;
  /** The head class; default drawn from the seed. */
  headClass?: number;
  /** Horizontal flips allowed (the label survives a mirror image). */
  flips: boolean;
  /** Noise standard deviation in grey levels (0–255). */
  noiseSigma: number;
  /** Largest shift in pixels. */
  maxShift: number;
}

export interface VariantItem {
  /** Plain training index of the image (a copy's source). */
  source: number;
  /** Index into `copies`, or −1 for an original. */
  copy: number;
}

export interface Variant {
  name: 'dup-longtail';
  options: VariantOptions;
  headClass: number;
  /** Originals kept per tail class (t) and for the head class (ratio · t). */
  tail: number;
  head: number;
  n: number;
  originals: number;
  items: VariantItem[];
  copies: CopySpec[];
  labels: Uint8Array;
  /** 1 where the variant item is a planted copy. */
  planted: Uint8Array;
  /** Variant index of each copy's source original (parallel to `copies`). */
  sourceItem: Int32Array;
  /** Variant index of each copy (parallel to `copies`). */
  copyItem: Int32Array;
  classCounts: number[];
  /** SHA-256 of the copy specifications (the copies' cache key) and of the whole layout. */
  copiesHash: string;
  layoutHash: string;
}

export const describeTransform = (t: Transform): string =>
  t.kind === 'shift' ? `shift(${t.dx},${t.dy})` : t.kind === 'hflip' ? 'hflip' : `noise(${t.sigma},${t.seed})`;

export function buildDupLongtail(train: ImageSet, n: number, classes: number, options: VariantOptions): Variant {
  const rng = new Prng(options.seed * 7919 + 17);
  const byClass: number[][] = Array.from({ length: classes }, () => []);
  for (let i = 0; i < n; i++) byClass[train.labels[i]].push(i);
  const headClass = options.headClass ?? rng.int(classes);
  if (!(headClass >= 0 && headClass < classes)) throw new Error(`head class ${headClass} is not a class`);
  const tail = Math.min(Math.floor(byClass[headClass].length / options.ratio), ...byClass.filter((_, k) => k !== headClass).map((m) => m.length));
  if (tail < 1) throw new Error(`too few images for a ${options.ratio}× long tail`);
  const head = options.ratio * tail;
  const kept: number[][] = byClass.map((members, k) => {
    const order = rng.shuffle(Int32Array.from(members));
    return Array.from(order.subarray(0, k === headClass ? head : tail)).sort((a, b) => a - b);
  });
  const kinds: Transform['kind'][] = options.flips ? ['shift', 'hflip', 'noise'] : ['shift', 'noise'];
  const copies: CopySpec[] = [];
  for (let k = 0; k < classes; k++) {
    const count = Math.round((kept[k].length * options.share) / (1 - options.share));
    if (count > kept[k].length) throw new Error(`share ${options.share} needs more copies than originals`);
    const sources = rng.shuffle(Int32Array.from(kept[k])).subarray(0, count);
    for (const source of sources) {
      const kind = kinds[rng.int(kinds.length)];
      let transform: Transform;
      if (kind === 'shift') {
        let dx = 0;
        let dy = 0;
        while (dx === 0 && dy === 0) {
          dx = rng.int(2 * options.maxShift + 1) - options.maxShift;
          dy = rng.int(2 * options.maxShift + 1) - options.maxShift;
        }
        transform = { kind, dx, dy };
      } else if (kind === 'hflip') {
        transform = { kind };
      } else {
        transform = { kind, sigma: options.noiseSigma, seed: rng.int(2 ** 31) };
      }
      copies.push({ source, transform });
    }
  }
  const originals = kept.flat();
  const items: VariantItem[] = [...originals.map((source) => ({ source, copy: -1 })), ...copies.map((c, j) => ({ source: c.source, copy: j }))];
  const order = rng.shuffle(Int32Array.from({ length: items.length }, (_, i) => i));
  const ordered = Array.from(order, (i) => items[i]);
  const labels = Uint8Array.from(ordered, (it) => train.labels[it.source]);
  const planted = Uint8Array.from(ordered, (it) => (it.copy >= 0 ? 1 : 0));
  const originalAt = new Map<number, number>();
  const copyItem = new Int32Array(copies.length);
  ordered.forEach((it, i) => (it.copy >= 0 ? (copyItem[it.copy] = i) : originalAt.set(it.source, i)));
  const sourceItem = Int32Array.from(copies, (c) => originalAt.get(c.source)!);
  const classCounts = Array.from({ length: classes }, (_, k) => labels.reduce((s, l) => s + (l === k ? 1 : 0), 0));
  const copyText = copies.map((c) => `${c.source}:${describeTransform(c.transform)}`).join('\n');
  const copiesHash = createHash('sha256').update(`${train.rows}x${train.cols}\n${copyText}`).digest('hex');
  const layoutHash = createHash('sha256')
    .update(`${copiesHash}\n${ordered.map((it) => `${it.source}/${it.copy}`).join(',')}`)
    .digest('hex');
  return {
    name: 'dup-longtail',
    options: { ...options, headClass },
    headClass,
    tail,
    head,
    n: ordered.length,
    originals: originals.length,
    items: ordered,
    copies,
    labels,
    planted,
    sourceItem,
    copyItem,
    classCounts,
    copiesHash,
    layoutHash,
  };
}

/** The 8-bit pixels of a copy: its source's pixels under its transform. */
export function copyPixels(train: ImageSet, copy: CopySpec): Uint8Array {
  const { rows, cols } = train;
  const size = rows * cols;
  const src = train.pixels.subarray(copy.source * size, (copy.source + 1) * size);
  const out = new Uint8Array(size);
  const t = copy.transform;
  if (t.kind === 'shift') {
    // Content moves by (dx, dy); uncovered pixels are background (0, as in both datasets).
    for (let y = 0; y < rows; y++) {
      const sy = y - t.dy;
      if (sy < 0 || sy >= rows) continue;
      for (let x = 0; x < cols; x++) {
        const sx = x - t.dx;
        if (sx >= 0 && sx < cols) out[y * cols + x] = src[sy * cols + sx];
      }
    }
  } else if (t.kind === 'hflip') {
    for (let y = 0; y < rows; y++) for (let x = 0; x < cols; x++) out[y * cols + x] = src[y * cols + (cols - 1 - x)];
  } else {
    const rng = new Prng(t.seed);
    for (let i = 0; i < size; i++) out[i] = Math.max(0, Math.min(255, Math.round(src[i] + t.sigma * rng.normal())));
  }
  return out;
}

/** Copy pixels as an ImageSet (copy j = image j), for embedding through the service. */
export function copiesImageSet(train: ImageSet, copies: CopySpec[]): ImageSet {
  const size = train.rows * train.cols;
  const pixels = new Uint8Array(copies.length * size);
  copies.forEach((c, j) => pixels.set(copyPixels(train, c), j * size));
  return { n: copies.length, rows: train.rows, cols: train.cols, pixels, labels: Uint8Array.from(copies, (c) => train.labels[c.source]) };
}
