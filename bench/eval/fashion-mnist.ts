/**
 * Fashion-MNIST (Xiao et al., 2017) from the Debian package `dataset-fashion-mnist`: IDX files,
 * gzip-compressed, 60,000 training and 10,000 test images of 28×28 8-bit grey, labels 0–9.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';

export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';
export const CLASS_NAMES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];

export interface ImageSet {
  n: number;
  rows: number;
  cols: number;
  /** n × rows × cols bytes, row-major. */
  pixels: Uint8Array;
  labels: Uint8Array;
}

/**
 * Parses an IDX file (big-endian header: 0x00 0x00, type 0x08 = unsigned byte, number of
 * dimensions, then each dimension as uint32). Returns the dimensions and the data bytes.
 */
export function parseIdx(bytes: Uint8Array): { dims: number[]; data: Uint8Array } {
  if (bytes.length < 4 || bytes[0] !== 0 || bytes[1] !== 0) throw new Error('not an IDX file (bad magic)');
  if (bytes[2] !== 0x08) throw new Error(`IDX element type 0x${bytes[2].toString(16)} is not unsigned byte`);
  const rank = bytes[3];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4 + 4 * rank) throw new Error('IDX header truncated');
  const dims = Array.from({ length: rank }, (_, i) => view.getUint32(4 + 4 * i, false));
  const size = dims.reduce((a, b) => a * b, 1);
  const offset = 4 + 4 * rank;
  if (bytes.length !== offset + size) throw new Error(`IDX data has ${bytes.length - offset} bytes, header says ${size}`);
  return { dims, data: bytes.subarray(offset) };
}

async function readIdx(file: string): Promise<{ dims: number[]; data: Uint8Array }> {
  const raw = await readFile(file);
  return parseIdx(file.endsWith('.gz') ? gunzipSync(raw) : raw);
}

export async function loadFashionMnist(split: 'train' | 't10k', dir = FASHION_MNIST_DIR): Promise<ImageSet> {
  const images = path.join(dir, `${split}-images-idx3-ubyte.gz`);
  if (!existsSync(images)) {
    throw new Error(`${images} not found: install the Debian package (apt-get install dataset-fashion-mnist) or pass --data=DIR`);
  }
  const img = await readIdx(images);
  const lab = await readIdx(path.join(dir, `${split}-labels-idx1-ubyte.gz`));
  if (img.dims.length !== 3 || lab.dims.length !== 1 || img.dims[0] !== lab.dims[0]) throw new Error(`unexpected IDX shapes ${img.dims} / ${lab.dims}`);
  return { n: img.dims[0], rows: img.dims[1], cols: img.dims[2], pixels: img.data, labels: lab.data };
}
