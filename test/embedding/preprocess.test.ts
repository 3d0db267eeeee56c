import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { ImageError } from '../../src/embedding/errors.js';
import type { ModelSpec } from '../../src/embedding/model.js';
import { decodeImage, planCrop, preprocessImage, sniffFormat, tensorWriter } from '../../src/embedding/preprocess.js';
import { fromRaw, jpeg, rawImage, sceneRaw } from './images.js';

/** A 224×224 model contract in [0,1], NHWC RGB, no mean/std: tensor values are exactly p / 255. */
function spec(overrides: Partial<ModelSpec> = {}): ModelSpec {
  return {
    name: 'test',
    path: '/nonexistent.onnx',
    inputHeight: 224,
    inputWidth: 224,
    layout: 'NHWC',
    channelOrder: 'RGB',
    valueRange: '0-1',
    mean: [0, 0, 0],
    std: [1, 1, 1],
    resizeShorter: 256,
    ...overrides,
  };
}

const f32 = (x: number): number => Math.fround(x);

/** RGB triple at (x, y) of an NHWC [0,1] tensor, scaled back to 0–255 and rounded. */
function px(t: Float32Array, x: number, y: number, width = 224): number[] {
  const o = (y * width + x) * 3;
  return [t[o], t[o + 1], t[o + 2]].map((v) => Math.round(v * 255));
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'OK';
  } catch (err) {
    if (err instanceof ImageError) return err.code;
    throw err;
  }
}

describe('crop plan', () => {
  const g = { width: 224, height: 224, resizeShorter: 256 };
  it('keeps the centred window that Resize(S) + CenterCrop(224) keeps, in source pixels', () => {
    // 500×375 → shorter side 375 → 256 (scale 256/375); the 224 crop is 224·375/256 = 328.1 → 328 source px.
    expect(planCrop(500, 375, g)).toEqual({ left: 86, top: 23, width: 328, height: 328 });
    // Portrait 300×600: scale 256/300, window 224·300/256 = 262.5 → 263.
    expect(planCrop(300, 600, g)).toEqual({ left: 18, top: 168, width: 263, height: 263 });
    // Already at size: the 224 window itself, no resampling.
    expect(planCrop(320, 256, g)).toEqual({ left: 48, top: 16, width: 224, height: 224 });
    // Exactly 2× larger: a 448 window.
    expect(planCrop(512, 640, g)).toEqual({ left: 32, top: 96, width: 448, height: 448 });
    // Tiny images are upscaled: 32×24 → a 21×21 window.
    expect(planCrop(32, 24, g)).toEqual({ left: 5, top: 1, width: 21, height: 21 });
    // S = H (CLIP-style): the whole shorter side is kept.
    expect(planCrop(448, 224, { ...g, resizeShorter: 224 })).toEqual({ left: 112, top: 0, width: 224, height: 224 });
    // Non-square model input 320×160 (W×H) from a square source: a 2:1 window.
    expect(planCrop(100, 100, { width: 320, height: 160, resizeShorter: 160 })).toEqual({ left: 0, top: 25, width: 100, height: 50 });
  });
});

describe('preprocessing golden values', () => {
  it('centre crop picks the centre pixels exactly (no resampling needed)', async () => {
    // 320×256 image where every pixel encodes its own coordinates. Shorter side is already 256, so the
    // crop is the 224×224 window starting at ((320−224)/2, (256−224)/2) = (48, 16).
    const W = 320;
    const H = 256;
    const coord = (x: number, y: number): number[] => [x & 0xff, y & 0xff, (x >> 8) * 100 + (y >> 8) * 10];
    const png = await fromRaw(rawImage(W, H, 3, coord), W, H, 3).png().toBuffer();
    const t = await preprocessImage(png, spec());
    expect(t.length).toBe(224 * 224 * 3);
    for (const [x, y] of [
      [0, 0],
      [223, 0],
      [0, 223],
      [223, 223],
      [112, 112],
      [207, 5],
    ]) {
      expect(px(t, x, y), `(${x},${y})`).toEqual(coord(x + 48, y + 16));
    }
    // Every value is exactly p/255 in float32.
    expect(t[0]).toBe(f32(48 / 255));
    expect(t[1]).toBe(f32(16 / 255));
    expect(t[2]).toBe(0);
  });

  it('downscales by the shorter side and keeps the centred region', async () => {
    // 512×640 (W×H): shorter side 512 → 256 is an exact 2× reduction to 256×320, whose centred 224
    // window (16, 48)+224 is (32, 96)+448 in the original. Paint exactly that window red and the rest
    // blue: every output pixel must be pure red (a misplaced crop would bring in blue along an edge).
    const png = await fromRaw(
      rawImage(512, 640, 3, (x, y) => (x >= 32 && x < 480 && y >= 96 && y < 544 ? [255, 0, 0] : [0, 0, 255])),
      512,
      640,
      3,
    )
      .png()
      .toBuffer();
    const t = await preprocessImage(png, spec());
    for (let y = 0; y < 224; y++) {
      for (let x = 0; x < 224; x++) {
        if (x % 37 === 0 || y % 37 === 0 || x === 223 || y === 223) expect(px(t, x, y), `(${x},${y})`).toEqual([255, 0, 0]);
      }
    }
  });

  it('crops in display orientation for EXIF-rotated images', async () => {
    // Stored 640×512 with orientation 6 → displayed 512×640, then as the previous test. Stored pixel
    // (x, y) is displayed at (511 − y, x), so the displayed red window x∈[32,480), y∈[96,544) is
    // stored x∈[96,544), y∈[32,480).
    const png = await fromRaw(
      rawImage(640, 512, 3, (x, y) => (x >= 96 && x < 544 && y >= 32 && y < 480 ? [255, 0, 0] : [0, 0, 255])),
      640,
      512,
      3,
    )
      .png()
      .withMetadata({ orientation: 6 })
      .toBuffer();
    const t = await preprocessImage(png, spec());
    for (const [x, y] of [
      [0, 0],
      [223, 0],
      [0, 223],
      [223, 223],
      [112, 112],
    ]) {
      expect(px(t, x, y), `(${x},${y})`).toEqual([255, 0, 0]);
    }
  });

  it('applies EXIF orientation', async () => {
    // Stored 224×224: left half red, right half blue. S = 224 so no resampling and no crop.
    const raw = rawImage(224, 224, 3, (x) => (x < 112 ? [255, 0, 0] : [0, 0, 255]));
    const s = spec({ resizeShorter: 224 });
    const at = async (orientation: number): Promise<Float32Array> =>
      preprocessImage(await fromRaw(raw, 224, 224, 3).png().withMetadata({ orientation }).toBuffer(), s);
    // 1: as stored.
    const o1 = await at(1);
    expect(px(o1, 10, 100)).toEqual([255, 0, 0]);
    expect(px(o1, 200, 100)).toEqual([0, 0, 255]);
    // 6: displayed rotated 90° clockwise → the left half becomes the top half.
    const o6 = await at(6);
    for (let y = 0; y < 224; y += 7) {
      for (let x = 0; x < 224; x += 7) expect(px(o6, x, y)).toEqual(y < 112 ? [255, 0, 0] : [0, 0, 255]);
    }
    // 8: rotated 90° counter-clockwise → the left half becomes the bottom half.
    const o8 = await at(8);
    expect(px(o8, 100, 10)).toEqual([0, 0, 255]);
    expect(px(o8, 100, 200)).toEqual([255, 0, 0]);
    // 3: rotated 180° → left/right swap.
    const o3 = await at(3);
    expect(px(o3, 10, 100)).toEqual([0, 0, 255]);
    expect(px(o3, 200, 100)).toEqual([255, 0, 0]);

    // The same in a JPEG (the usual carrier of EXIF), within JPEG's rounding.
    const jpg = await fromRaw(raw, 224, 224, 3).jpeg({ quality: 100, chromaSubsampling: '4:4:4' }).withMetadata({ orientation: 6 }).toBuffer();
    const j = await preprocessImage(jpg, s);
    const [r, g, b] = px(j, 100, 20);
    expect(r).toBeGreaterThan(250);
    expect(g).toBeLessThan(5);
    expect(b).toBeLessThan(5);
    expect(px(j, 100, 200)[2]).toBeGreaterThan(250);
  });

  it('expands greyscale to three equal channels', async () => {
    const png = await fromRaw(rawImage(224, 224, 1, () => [77]), 224, 224, 1).png().toBuffer();
    expect((await sharp(png).metadata()).channels).toBe(1);
    const t = await preprocessImage(png, spec({ resizeShorter: 224 }));
    expect([t[0], t[1], t[2]]).toEqual([f32(77 / 255), f32(77 / 255), f32(77 / 255)]);
    expect(px(t, 111, 111)).toEqual([77, 77, 77]);
  });

  it('flattens alpha onto white (default) or a chosen background', async () => {
    // Columns: [0,75) colour (100,0,200) at alpha 51 (= 0.2); [75,150) alpha 0; [150,224) opaque.
    // On white: 0.2·c + 0.8·255 → (20+204, 0+204, 40+204) = (224, 204, 244); transparent → white.
    const rgba = rawImage(224, 224, 4, (x) => (x < 75 ? [100, 0, 200, 51] : x < 150 ? [10, 20, 30, 0] : [10, 20, 30, 255]));
    const png = await fromRaw(rgba, 224, 224, 4).png().toBuffer();
    const s = spec({ resizeShorter: 224 });
    const white = await preprocessImage(png, s);
    expect(px(white, 30, 30)).toEqual([224, 204, 244]);
    expect(px(white, 110, 30)).toEqual([255, 255, 255]);
    expect(px(white, 200, 30)).toEqual([10, 20, 30]);
    // On black: 0.2·c → (20, 0, 40); transparent → black.
    const black = await preprocessImage(png, s, { background: { r: 0, g: 0, b: 0 } });
    expect(px(black, 30, 30)).toEqual([20, 0, 40]);
    expect(px(black, 110, 30)).toEqual([0, 0, 0]);
    // Greyscale + alpha: grey 100 at alpha 0.2 on white → 20 + 204 = 224 in all channels.
    const ga = await fromRaw(rawImage(224, 224, 2, () => [100, 51]), 224, 224, 2).png().toBuffer();
    expect(px(await preprocessImage(ga, s), 50, 50)).toEqual([224, 224, 224]);
  });

  it('reads the first frame of an animated GIF', async () => {
    // Two 224×224 frames stacked vertically: red then blue.
    const frames = rawImage(224, 448, 3, (_x, y) => (y < 224 ? [255, 0, 0] : [0, 0, 255]));
    const gif = await sharp(frames, { raw: { width: 224, height: 448, channels: 3, pageHeight: 224 } }).gif().toBuffer();
    expect((await sharp(gif).metadata()).pages).toBe(2);
    const t = await preprocessImage(gif, spec({ resizeShorter: 224 }));
    expect(px(t, 100, 100)).toEqual([255, 0, 0]);
  });

  it('writes the normalised tensor in the model layout, channel order and range', () => {
    // A 2×1 image: pixel 0 = (10, 20, 30), pixel 1 = (200, 100, 0).
    const rgb = Uint8Array.from([10, 20, 30, 200, 100, 0]);
    const base = { inputHeight: 1, inputWidth: 2 } as const;
    // NCHW, BGR, 0-255 with caffe-style means in BGR order: x = (p − mean) / std, planes B, G, R.
    const caffe = tensorWriter({ ...base, layout: 'NCHW', channelOrder: 'BGR', valueRange: '0-255', mean: [100, 110, 120], std: [2, 4, 5] });
    const out = new Float32Array(2 * 6).fill(NaN);
    caffe.write(rgb, out, 1); // second image of a batch of two
    expect(Array.from(out.subarray(0, 6)).every(Number.isNaN)).toBe(true);
    expect(Array.from(out.subarray(6))).toEqual(
      [(30 - 100) / 2, (0 - 100) / 2, (20 - 110) / 4, (100 - 110) / 4, (10 - 120) / 5, (200 - 120) / 5].map(f32),
    );
    // NHWC, RGB, 0-1 with ImageNet statistics.
    const mean = [0.485, 0.456, 0.406] as const;
    const std = [0.229, 0.224, 0.225] as const;
    const imagenet = tensorWriter({ ...base, layout: 'NHWC', channelOrder: 'RGB', valueRange: '0-1', mean, std });
    const t = new Float32Array(6);
    imagenet.write(rgb, t, 0);
    const expected = [10, 20, 30, 200, 100, 0].map((p, i) => f32((p / 255 - mean[i % 3]) / std[i % 3]));
    expect(Array.from(t)).toEqual(expected);
  });
});

describe('preprocessing errors', () => {
  const geometry = { width: 224, height: 224, resizeShorter: 256 };

  it('recognises the supported containers by magic bytes', async () => {
    const raw = sceneRaw(40, 30, 1);
    const img = fromRaw(raw, 40, 30, 3);
    expect(sniffFormat(await img.clone().jpeg().toBuffer())).toBe('jpeg');
    expect(sniffFormat(await img.clone().png().toBuffer())).toBe('png');
    expect(sniffFormat(await img.clone().webp().toBuffer())).toBe('webp');
    expect(sniffFormat(await img.clone().gif().toBuffer())).toBe('gif');
    expect(sniffFormat(await img.clone().tiff().toBuffer())).toBe('tiff');
    expect(sniffFormat(await img.clone().avif().toBuffer())).toBeUndefined();
  });

  it('EMPTY_IMAGE for zero bytes', async () => {
    expect(await codeOf(decodeImage(Buffer.alloc(0), geometry))).toBe('EMPTY_IMAGE');
  });

  it('UNSUPPORTED_FORMAT for other containers and random bytes', async () => {
    const raw = sceneRaw(40, 30, 1);
    const avif = await fromRaw(raw, 40, 30, 3).avif().toBuffer();
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>');
    const bmp = Buffer.concat([Buffer.from('BM'), Buffer.alloc(60)]);
    for (const bytes of [avif, svg, bmp, Buffer.from('definitely not an image')]) {
      expect(await codeOf(decodeImage(bytes, geometry))).toBe('UNSUPPORTED_FORMAT');
    }
  });

  it('CORRUPT_IMAGE for truncated files of every format and for damaged data', async () => {
    const raw = sceneRaw(300, 200, 5);
    const img = fromRaw(raw, 300, 200, 3);
    const encoded = [
      await img.clone().jpeg().toBuffer(),
      await img.clone().png().toBuffer(),
      await img.clone().webp().toBuffer(),
      await img.clone().gif().toBuffer(),
      await img.clone().tiff({ compression: 'lzw' }).toBuffer(),
    ];
    for (const bytes of encoded) {
      expect(await codeOf(decodeImage(bytes, geometry)), sniffFormat(bytes)).toBe('OK');
      const truncated = bytes.subarray(0, Math.floor(bytes.length / 2));
      expect(await codeOf(decodeImage(truncated, geometry)), `truncated ${sniffFormat(bytes)}`).toBe('CORRUPT_IMAGE');
    }
    // A JPEG signature followed by garbage.
    expect(await codeOf(decodeImage(Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(500, 0x55)]), geometry))).toBe(
      'CORRUPT_IMAGE',
    );
    // A valid JPEG header whose entropy-coded data was overwritten.
    const damaged = Buffer.from(encoded[0]);
    for (let i = 700; i < damaged.length - 2; i++) damaged[i] = (i * 31) & 0xff;
    expect(await codeOf(decodeImage(damaged, geometry))).toBe('CORRUPT_IMAGE');
  });

  it('IMAGE_TOO_LARGE past the pixel limit, from the header alone (decompression bomb)', async () => {
    const png = await fromRaw(sceneRaw(200, 100, 2), 200, 100, 3).png().toBuffer();
    expect(await codeOf(decodeImage(png, geometry, { limitInputPixels: 20_000 }))).toBe('OK');
    expect(await codeOf(decodeImage(png, geometry, { limitInputPixels: 19_999 }))).toBe('IMAGE_TOO_LARGE');
    // A PNG whose IHDR claims 100000×100000 (10 Gpx) but holds a few bytes of data.
    const bomb = Buffer.from(png);
    bomb.writeUInt32BE(100_000, 16);
    bomb.writeUInt32BE(100_000, 20);
    bomb.writeUInt32BE(crc32(bomb.subarray(12, 29)), 29);
    const t0 = performance.now();
    expect(await codeOf(decodeImage(bomb, geometry))).toBe('IMAGE_TOO_LARGE');
    expect(performance.now() - t0).toBeLessThan(2000);
    // Same for a JPEG under a small limit.
    const jpg = await jpeg(400, 300, sceneRaw(400, 300, 4));
    expect(await codeOf(decodeImage(jpg, geometry, { limitInputPixels: 100_000 }))).toBe('IMAGE_TOO_LARGE');
  });

  it('errors carry a machine-readable code and a message', async () => {
    try {
      await decodeImage(Buffer.from('GIF89a-nope'), geometry);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ImageError);
      expect((err as ImageError).toJSON()).toEqual({ code: 'CORRUPT_IMAGE', message: expect.stringContaining('gif') });
    }
  });
});
