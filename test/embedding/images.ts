import sharp, { type Sharp } from 'sharp';

/** Deterministic synthetic test images, generated in code (no binary fixtures, no network). */

export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    // xorshift32
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 0x100000000;
  };
}

export type Pixel = readonly number[];

/** Raw interleaved pixels from a per-pixel function. */
export function rawImage(width: number, height: number, channels: 1 | 2 | 3 | 4, f: (x: number, y: number) => Pixel): Buffer {
  const buf = Buffer.alloc(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = f(x, y);
      for (let c = 0; c < channels; c++) buf[(y * width + x) * channels + c] = Math.max(0, Math.min(255, Math.round(p[c])));
    }
  }
  return buf;
}

export function fromRaw(data: Buffer, width: number, height: number, channels: 1 | 2 | 3 | 4): Sharp {
  const img = sharp(data, { raw: { width, height, channels } });
  // Keep 1/2-channel inputs greyscale in the encoded file (sharp would otherwise write sRGB).
  return channels <= 2 ? img.toColourspace('b-w') : img;
}

/** Smooth value noise in [0, 1] on a coarse grid, bilinearly interpolated. */
export function valueNoise(width: number, height: number, cell: number, seed: number): (x: number, y: number) => number {
  const r = rng(seed);
  const gw = Math.ceil(width / cell) + 2;
  const gh = Math.ceil(height / cell) + 2;
  const grid = Float64Array.from({ length: gw * gh }, () => r());
  return (x, y) => {
    const gx = x / cell;
    const gy = y / cell;
    const x0 = Math.floor(gx);
    const y0 = Math.floor(gy);
    const fx = gx - x0;
    const fy = gy - y0;
    const g = (i: number, j: number): number => grid[j * gw + i];
    const top = g(x0, y0) * (1 - fx) + g(x0 + 1, y0) * fx;
    const bottom = g(x0, y0 + 1) * (1 - fx) + g(x0 + 1, y0 + 1) * fx;
    return top * (1 - fy) + bottom * fy;
  };
}

/** A "scene": smooth coloured noise background with a few discs, like a crude photo. */
export function sceneRaw(width: number, height: number, seed: number): Buffer {
  const r = rng(seed);
  const n1 = valueNoise(width, height, Math.max(8, width / 6), seed + 1);
  const n2 = valueNoise(width, height, Math.max(4, width / 20), seed + 2);
  const base = [r() * 255, r() * 255, r() * 255];
  const discs = Array.from({ length: 4 }, () => ({
    cx: r() * width,
    cy: r() * height,
    rad: (0.08 + r() * 0.2) * Math.min(width, height),
    col: [r() * 255, r() * 255, r() * 255],
  }));
  return rawImage(width, height, 3, (x, y) => {
    for (const d of discs) {
      if ((x - d.cx) ** 2 + (y - d.cy) ** 2 < d.rad ** 2) return d.col.map((c) => c * (0.8 + 0.4 * n2(x, y)));
    }
    const a = n1(x, y);
    const b = n2(x, y);
    return [base[0] * a + 60 * b, base[1] * (1 - a) + 80 * b, base[2] * (0.5 + 0.5 * a) - 40 * b];
  });
}

export async function jpeg(width: number, height: number, raw: Buffer, quality = 90): Promise<Buffer> {
  return fromRaw(raw, width, height, 3).jpeg({ quality }).toBuffer();
}

export interface NamedImage {
  name: string;
  bytes: Buffer;
}

/** Ten varied images across every supported container, sizes, aspect ratios, greyscale, alpha and EXIF. */
export async function variedImages(): Promise<NamedImage[]> {
  const out: NamedImage[] = [];
  out.push({ name: 'gradient.jpg', bytes: await jpeg(320, 240, rawImage(320, 240, 3, (x, y) => [(x / 319) * 255, (y / 239) * 255, 128])) });
  out.push({
    name: 'checker.png',
    bytes: await fromRaw(rawImage(200, 200, 3, (x, y) => ((x >> 4) + (y >> 4)) % 2 ? [250, 250, 250] : [10, 10, 10]), 200, 200, 3).png().toBuffer(),
  });
  out.push({ name: 'scene.webp', bytes: await fromRaw(sceneRaw(500, 375, 7), 500, 375, 3).webp({ quality: 90 }).toBuffer() });
  const noise = rng(99);
  out.push({ name: 'noise.jpg', bytes: await jpeg(224, 224, rawImage(224, 224, 3, () => [noise() * 255, noise() * 255, noise() * 255])) });
  out.push({
    name: 'stripes.gif',
    bytes: await fromRaw(rawImage(150, 300, 3, (x, y) => (((x + y) >> 3) % 3 === 0 ? [220, 30, 30] : ((x + y) >> 3) % 3 === 1 ? [30, 200, 40] : [20, 40, 210])), 150, 300, 3)
      .gif()
      .toBuffer(),
  });
  out.push({
    name: 'radial-grey.png',
    bytes: await fromRaw(rawImage(256, 192, 1, (x, y) => [128 + 127 * Math.cos(Math.hypot(x - 128, y - 96) / 9)]), 256, 192, 1).png().toBuffer(),
  });
  out.push({
    name: 'alpha.png',
    bytes: await fromRaw(rawImage(300, 300, 4, (x, y) => [200, 40 + y / 3, 60, x < 150 ? 255 : (x - 150) * 1.7]), 300, 300, 4).png().toBuffer(),
  });
  const plasma = (x: number, y: number): Pixel => [
    128 + 127 * Math.sin(x / 23),
    128 + 127 * Math.sin((x + y) / 31),
    128 + 127 * Math.sin(Math.hypot(x - 320, y - 240) / 17),
  ];
  out.push({ name: 'plasma.tiff', bytes: await fromRaw(rawImage(640, 480, 3, plasma), 640, 480, 3).tiff({ compression: 'lzw' }).toBuffer() });
  out.push({ name: 'tiny.jpg', bytes: await jpeg(32, 24, sceneRaw(32, 24, 3)) });
  out.push({
    name: 'rotated-exif6.jpg',
    bytes: await fromRaw(sceneRaw(400, 300, 11), 400, 300, 3).jpeg({ quality: 90 }).withMetadata({ orientation: 6 }).toBuffer(),
  });
  return out;
}

/**
 * A fast photo-like raw RGB image: smooth colour fields at two scales (random grids upscaled by
 * libvips), a few hard-edged discs and fine sensor-like noise — enough entropy that JPEG decoding
 * costs about what a real photo of the same size does.
 */
export async function photoLikeRaw(width: number, height: number, seed: number): Promise<Buffer> {
  const r = rng(seed);
  const grid = async (gw: number, gh: number): Promise<Buffer> => {
    const cells = Buffer.alloc(gw * gh * 3);
    for (let i = 0; i < cells.length; i++) cells[i] = Math.floor(r() * 256);
    return sharp(cells, { raw: { width: gw, height: gh, channels: 3 } }).resize(width, height, { fit: 'fill', kernel: 'cubic' }).raw().toBuffer();
  };
  const coarse = await grid(6, 5);
  const detail = await grid(Math.max(2, Math.round(width / 12)), Math.max(2, Math.round(height / 12)));
  const out = Buffer.alloc(width * height * 3);
  for (let i = 0; i < out.length; i++) {
    const v = 0.65 * coarse[i] + 0.35 * detail[i] + (r() - 0.5) * 24;
    out[i] = v < 0 ? 0 : v > 255 ? 255 : v;
  }
  for (let d = 0; d < 5; d++) {
    const cx = r() * width;
    const cy = r() * height;
    const rad = (0.05 + r() * 0.15) * Math.min(width, height);
    const col = [r() * 255, r() * 255, r() * 255];
    for (let y = Math.max(0, Math.floor(cy - rad)); y < Math.min(height, Math.ceil(cy + rad)); y++) {
      for (let x = Math.max(0, Math.floor(cx - rad)); x < Math.min(width, Math.ceil(cx + rad)); x++) {
        if ((x - cx) ** 2 + (y - cy) ** 2 > rad * rad) continue;
        const o = (y * width + x) * 3;
        for (let c = 0; c < 3; c++) out[o + c] = Math.max(0, Math.min(255, col[c] + (r() - 0.5) * 24));
      }
    }
  }
  return out;
}
