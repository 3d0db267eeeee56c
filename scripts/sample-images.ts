/**
 * Writes a folder of generated photos to try protoprune on without data of your own:
 *
 *   npm run sample-images -- [folder=sample-images] [count=300]
 *
 * Six kinds of picture (discs, stripes, checkers, rings, triangles, noise-like scatter), one
 * sub-folder each, every image with its own colours, positions and sizes; 5% are near-duplicates of
 * another image (re-encoded at another quality and size), so SemDeDup has something to find. A
 * fixed seed: the same folder on every machine. Rendered by sharp from SVG, nothing is downloaded.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { Rng } from '../src/core/random.js';

const KINDS = ['discs', 'stripes', 'checkers', 'rings', 'triangles', 'scatter'] as const;
type Kind = (typeof KINDS)[number];
const SIZE = 160;

function svgOf(kind: Kind, random: () => number): string {
  const colour = () => `hsl(${Math.floor(random() * 360)},${40 + Math.floor(random() * 50)}%,${30 + Math.floor(random() * 40)}%)`;
  const at = () => Math.floor(random() * SIZE);
  const shapes: string[] = [];
  switch (kind) {
    case 'discs':
      for (let i = 0; i < 3 + random() * 4; i++) shapes.push(`<circle cx="${at()}" cy="${at()}" r="${12 + random() * 30}" fill="${colour()}"/>`);
      break;
    case 'stripes': {
      const width = 6 + random() * 14;
      const [a, b] = [colour(), colour()];
      for (let x = -SIZE; x < 2 * SIZE; x += 2 * width) shapes.push(`<rect x="${x}" y="-${SIZE}" width="${width}" height="${3 * SIZE}" fill="${a}"/>`);
      shapes.unshift(`<rect width="${SIZE}" height="${SIZE}" fill="${b}"/>`);
      return `<g transform="rotate(${Math.floor(random() * 180)} ${SIZE / 2} ${SIZE / 2})">${shapes.join('')}</g>`;
    }
    case 'checkers': {
      const cell = 10 + Math.floor(random() * 20);
      const [a, b] = [colour(), colour()];
      for (let y = 0; y < SIZE; y += cell) for (let x = 0; x < SIZE; x += cell) shapes.push(`<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${((x + y) / cell) % 2 ? a : b}"/>`);
      break;
    }
    case 'rings': {
      const [cx, cy] = [at(), at()];
      for (let r = 8; r < SIZE; r += 8 + random() * 10) shapes.push(`<circle cx="${cx}" cy="${cy}" r="${r}" fill="none" stroke="${colour()}" stroke-width="${3 + random() * 5}"/>`);
      break;
    }
    case 'triangles':
      for (let i = 0; i < 2 + random() * 4; i++) shapes.push(`<polygon points="${at()},${at()} ${at()},${at()} ${at()},${at()}" fill="${colour()}"/>`);
      break;
    case 'scatter':
      for (let i = 0; i < 150; i++) shapes.push(`<rect x="${at()}" y="${at()}" width="${2 + random() * 6}" height="${2 + random() * 6}" fill="${colour()}"/>`);
      break;
  }
  return shapes.join('');
}

async function main(): Promise<void> {
  const folder = path.resolve(process.argv[2] ?? 'sample-images');
  const count = Number(process.argv[3] ?? 300);
  if (!Number.isInteger(count) || count < KINDS.length) throw new Error(`count must be an integer ≥ ${KINDS.length}, got ${process.argv[3]}`);
  const rng = new Rng(20261207);
  const random = () => rng.next();
  const duplicates = Math.floor(count * 0.05);
  const originals: { file: string; svg: string }[] = [];
  for (let i = 0; i < count - duplicates; i++) {
    const kind = KINDS[i % KINDS.length];
    const background = `<rect width="${SIZE}" height="${SIZE}" fill="hsl(${Math.floor(random() * 360)},20%,${70 + Math.floor(random() * 25)}%)"/>`;
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${SIZE}" height="${SIZE}">${background}${svgOf(kind, random)}</svg>`;
    const file = path.join(kind, `${kind}-${String(i).padStart(4, '0')}.jpg`);
    await mkdir(path.join(folder, kind), { recursive: true });
    await writeFile(path.join(folder, file), await sharp(Buffer.from(svg)).jpeg({ quality: 90 }).toBuffer());
    originals.push({ file, svg });
  }
  for (let d = 0; d < duplicates; d++) {
    const source = originals[Math.floor(random() * originals.length)];
    const copy = source.file.replace(/\.jpg$/, `-copy${d}.jpg`);
    await writeFile(path.join(folder, copy), await sharp(Buffer.from(source.svg)).resize(SIZE + 40).jpeg({ quality: 70 }).toBuffer());
  }
  console.log(`wrote ${count} images (${duplicates} near-duplicate copies) under ${folder}`);
}

await main();
