import sharp from 'sharp';
import { ImageError } from './errors.js';
import { resizeShorterOf, type ModelSpec } from './model.js';

/**
 * Image decoding and preprocessing with sharp (libvips).
 *
 * Contract, in order (the same for every model; the model-specific numbers come from its ModelSpec):
 * 1. Accepted containers: JPEG, PNG, WebP, GIF (first frame) and TIFF (first page), recognised by
 *    their magic bytes. Anything else (BMP, SVG, AVIF/HEIC, PDF, …) is UNSUPPORTED_FORMAT; a zero-byte
 *    input is EMPTY_IMAGE; a recognised container that fails to decode — including truncated files
 *    and, with the default `failOn: 'warning'`, JPEGs whose entropy data is damaged — is CORRUPT_IMAGE;
 *    an image whose header declares more than `limitInputPixels` pixels is IMAGE_TOO_LARGE before
 *    any pixel is decoded (decompression-bomb guard).
 * 2. EXIF orientation is applied (`rotate()`), so a portrait photo stored sideways is seen upright.
 * 3. Alpha is flattened onto an opaque background, WHITE (255,255,255) by default: a pixel with
 *    alpha a ∈ [0,1] and colour c becomes a·c + (1−a)·255. Greyscale (with or without alpha) is
 *    expanded to three equal channels; CMYK, 16-bit and ICC-tagged inputs are converted to 8-bit sRGB.
 * 4–5. Resize + centre crop, like torchvision's `Resize(S)` + `CenterCrop(H, W)`: the image is scaled
 *    (aspect ratio kept) to cover the box ⌈k·W⌉×⌈k·H⌉ with k = S / min(H, W) — for square models
 *    "shorter side → S" — and the centred H×W window is kept. H×W is the model input and
 *    S = spec.resizeShorter (default round(min(H,W)·256/224): 256 for 224). Implemented as crop-then-
 *    resample (see planCrop): the centred source window of ≈ H/scale × W/scale pixels (left/top =
 *    ⌊leftover/2⌋, so an odd leftover pixel is dropped on the right/bottom) is resampled to exactly
 *    H×W. Kernel: bilinear ('linear') by default, close to torchvision/PIL's antialiased bilinear;
 *    libvips uses JPEG shrink-on-load for large downscales. A window already H×W is not resampled.
 * 6. Tensor: v = p/255 (valueRange '0-1') or p ('0-255'); x = (v − mean[c]) / std[c], channels in the
 *    spec's order, written in its layout (NHWC: interleaved; NCHW: planar).
 */

export type ImageFormat = 'jpeg' | 'png' | 'webp' | 'gif' | 'tiff';
export type FailOn = 'none' | 'truncated' | 'error' | 'warning';
export type ResizeKernel = 'nearest' | 'linear' | 'cubic' | 'mitchell' | 'lanczos2' | 'lanczos3';

/** 64 megapixels (e.g. 8000×8000): a 24-bit decode of that size is ~192 MB. */
export const DEFAULT_LIMIT_INPUT_PIXELS = 64_000_000;

export interface PreprocessOptions {
  /** Reject images whose header declares more pixels than this (default 64 Mpx). */
  limitInputPixels?: number;
  /** Colour that transparent pixels are composited onto (default white). */
  background?: { r: number; g: number; b: number };
  /** sharp/libvips strictness for damaged pixel data (default 'warning', sharp's advice for untrusted input). */
  failOn?: FailOn;
  /** Resampling kernel (default 'linear'). */
  kernel?: ResizeKernel;
}

/** The geometric part of the contract (from a ModelSpec). */
export interface CropGeometry {
  height: number;
  width: number;
  /** Shorter-side resize target S (≥ min(height, width)). */
  resizeShorter: number;
}

export interface DecodedImage {
  /** H×W×3 interleaved 8-bit RGB. */
  data: Uint8Array;
  width: number;
  height: number;
  format: ImageFormat;
  /** Oriented size of the source image. */
  sourceWidth: number;
  sourceHeight: number;
}

export function geometryOf(spec: Pick<ModelSpec, 'inputHeight' | 'inputWidth' | 'resizeShorter'>): CropGeometry {
  return { height: spec.inputHeight, width: spec.inputWidth, resizeShorter: resizeShorterOf(spec) };
}

function startsWith(bytes: Uint8Array, sig: readonly number[], offset = 0): boolean {
  if (bytes.length < offset + sig.length) return false;
  for (let i = 0; i < sig.length; i++) if (bytes[offset + i] !== sig[i]) return false;
  return true;
}

const ascii = (s: string): number[] => [...s].map((c) => c.charCodeAt(0));

/** Recognises the supported containers by magic bytes. */
export function sniffFormat(bytes: Uint8Array): ImageFormat | undefined {
  if (startsWith(bytes, [0xff, 0xd8, 0xff])) return 'jpeg';
  if (startsWith(bytes, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'png';
  if (startsWith(bytes, ascii('GIF87a')) || startsWith(bytes, ascii('GIF89a'))) return 'gif';
  if (startsWith(bytes, ascii('RIFF')) && startsWith(bytes, ascii('WEBP'), 8)) return 'webp';
  if (
    startsWith(bytes, [0x49, 0x49, 0x2a, 0x00]) ||
    startsWith(bytes, [0x4d, 0x4d, 0x00, 0x2a]) ||
    startsWith(bytes, [0x49, 0x49, 0x2b, 0x00]) ||
    startsWith(bytes, [0x4d, 0x4d, 0x00, 0x2b])
  ) {
    return 'tiff';
  }
  return undefined;
}

/** Best-effort name of a recognised but unsupported container, for the error message. */
function describeUnsupported(bytes: Uint8Array): string {
  if (startsWith(bytes, ascii('BM'))) return 'BMP';
  if (startsWith(bytes, ascii('ftyp'), 4)) return 'HEIF/AVIF';
  if (startsWith(bytes, ascii('%PDF'))) return 'PDF';
  if (startsWith(bytes, [0xff, 0x0a]) || startsWith(bytes, [0, 0, 0, 0x0c, 0x4a, 0x58, 0x4c, 0x20])) return 'JPEG XL';
  if (startsWith(bytes, [0, 0, 0, 0x0c, 0x6a, 0x50])) return 'JPEG 2000';
  const head = Buffer.from(bytes.subarray(0, 256)).toString('latin1').trimStart().toLowerCase();
  if (head.startsWith('<?xml') || head.startsWith('<svg')) return 'SVG';
  return 'unknown';
}

const PIXEL_LIMIT_MESSAGE = /exceeds pixel limit/i;

/** Fills in defaults and validates (RangeError on bad values). */
export function resolvePreprocessOptions(options: PreprocessOptions): Required<PreprocessOptions> {
  const limit = options.limitInputPixels ?? DEFAULT_LIMIT_INPUT_PIXELS;
  if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`limitInputPixels must be a positive integer, got ${limit}`);
  const background = options.background ?? { r: 255, g: 255, b: 255 };
  for (const c of [background.r, background.g, background.b]) {
    if (!Number.isInteger(c) || c < 0 || c > 255) throw new RangeError('background channels must be integers in [0, 255]');
  }
  return { limitInputPixels: limit, background, failOn: options.failOn ?? 'warning', kernel: options.kernel ?? 'linear' };
}

/**
 * The region of an (oriented) w×h source that becomes the model input: the centred H×W window of the
 * image resized to cover k·W × k·H (k = S / min(H, W)), mapped back to source pixels and rounded.
 * Cropping before resampling gives the same picture as resize-then-crop (up to < 0.5 source pixel of
 * rounding) while resampling only the pixels that are kept. Exported for tests and docs.
 */
export function planCrop(
  sourceWidth: number,
  sourceHeight: number,
  geometry: CropGeometry,
): { left: number; top: number; width: number; height: number } {
  const { width: W, height: H, resizeShorter: S } = geometry;
  const k = S / Math.min(H, W);
  // Source → resized scale so that the resized image covers the ⌈k·W⌉ × ⌈k·H⌉ box.
  const scale = Math.max(Math.ceil(W * k) / sourceWidth, Math.ceil(H * k) / sourceHeight);
  const width = Math.min(sourceWidth, Math.max(1, Math.round(W / scale)));
  const height = Math.min(sourceHeight, Math.max(1, Math.round(H / scale)));
  return { left: Math.floor((sourceWidth - width) / 2), top: Math.floor((sourceHeight - height) / 2), width, height };
}

/**
 * Decodes one image and returns the H×W×3 RGB crop the model sees (steps 1–5 of the contract).
 * Throws ImageError for anything wrong with the image itself.
 */
export async function decodeImage(bytes: Uint8Array, geometry: CropGeometry, options: PreprocessOptions = {}): Promise<DecodedImage> {
  const opts = resolvePreprocessOptions(options);
  if (!(bytes instanceof Uint8Array)) throw new TypeError('image must be a Buffer or Uint8Array');
  if (bytes.length === 0) throw new ImageError('EMPTY_IMAGE', 'image is empty (0 bytes)');
  const format = sniffFormat(bytes);
  if (!format) {
    throw new ImageError('UNSUPPORTED_FORMAT', `unsupported image format (${describeUnsupported(bytes)}); accepted: JPEG, PNG, WebP, GIF, TIFF`);
  }
  const input = { limitInputPixels: opts.limitInputPixels, failOn: opts.failOn, pages: 1, page: 0 } as const;

  let sourceWidth: number;
  let sourceHeight: number;
  try {
    const meta = await sharp(bytes, input).metadata();
    if (!meta.width || !meta.height) throw new ImageError('CORRUPT_IMAGE', `${format} image has no dimensions`);
    if (meta.width * meta.height > opts.limitInputPixels) {
      throw new ImageError('IMAGE_TOO_LARGE', `image is ${meta.width}×${meta.height} pixels, limit is ${opts.limitInputPixels}`);
    }
    sourceWidth = meta.autoOrient?.width ?? meta.width;
    sourceHeight = meta.autoOrient?.height ?? meta.height;
  } catch (err) {
    throw toImageError(err, format, opts.limitInputPixels);
  }

  const crop = planCrop(sourceWidth, sourceHeight, geometry);
  try {
    // rotate() before extract(): the crop is in oriented coordinates.
    let pipeline = sharp(bytes, input).rotate().flatten({ background: opts.background }).toColourspace('srgb');
    if (crop.width !== sourceWidth || crop.height !== sourceHeight) pipeline = pipeline.extract(crop);
    if (crop.width !== geometry.width || crop.height !== geometry.height) {
      pipeline = pipeline.resize(geometry.width, geometry.height, { fit: 'fill', kernel: opts.kernel });
    }
    const { data, info } = await pipeline.removeAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    if (info.channels !== 3 || info.width !== geometry.width || info.height !== geometry.height) {
      throw new ImageError(
        'CORRUPT_IMAGE',
        `decoder produced ${info.width}×${info.height}×${info.channels}, expected ${geometry.width}×${geometry.height}×3`,
      );
    }
    return {
      data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      width: info.width,
      height: info.height,
      format,
      sourceWidth,
      sourceHeight,
    };
  } catch (err) {
    throw toImageError(err, format, opts.limitInputPixels);
  }
}

function toImageError(err: unknown, format: ImageFormat, limit: number): ImageError {
  if (err instanceof ImageError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (PIXEL_LIMIT_MESSAGE.test(message)) return new ImageError('IMAGE_TOO_LARGE', `image exceeds the ${limit}-pixel limit`);
  return new ImageError('CORRUPT_IMAGE', `cannot decode ${format} image: ${message}`);
}

/** Step 6 of the contract, as a lookup table per tensor channel c and 8-bit value p. */
export interface TensorWriter {
  readonly layout: ModelSpec['layout'];
  readonly height: number;
  readonly width: number;
  /** Floats per image. */
  readonly elements: number;
  /** Writes one decoded H×W×3 RGB image as image `index` of `out`. */
  write(rgb: Uint8Array, out: Float32Array, index: number): void;
}

export function tensorWriter(
  spec: Pick<ModelSpec, 'inputHeight' | 'inputWidth' | 'layout' | 'channelOrder' | 'valueRange' | 'mean' | 'std'>,
): TensorWriter {
  const H = spec.inputHeight;
  const W = spec.inputWidth;
  const plane = H * W;
  const elements = 3 * plane;
  const scale = spec.valueRange === '0-1' ? 255 : 1;
  // Tensor channel c reads RGB source channel src[c].
  const src = spec.channelOrder === 'RGB' ? [0, 1, 2] : [2, 1, 0];
  // One 768-entry table: lut[c·256 + p] = (p/scale − mean[c]) / std[c] for tensor channel c.
  const lut = new Float32Array(768);
  for (let c = 0; c < 3; c++) {
    for (let p = 0; p < 256; p++) lut[c * 256 + p] = (p / scale - spec.mean[c]) / spec.std[c];
  }
  const [s0, s1, s2] = src;
  return {
    layout: spec.layout,
    height: H,
    width: W,
    elements,
    write(rgb: Uint8Array, out: Float32Array, index: number): void {
      if (rgb.length !== elements) throw new RangeError(`image has ${rgb.length} bytes, expected ${elements}`);
      const base = index * elements;
      if (base + elements > out.length) throw new RangeError(`image ${index} does not fit the output tensor`);
      if (spec.layout === 'NHWC') {
        for (let i = 0, o = base; i < elements; i += 3, o += 3) {
          out[o] = lut[rgb[i + s0]];
          out[o + 1] = lut[256 + rgb[i + s1]];
          out[o + 2] = lut[512 + rgb[i + s2]];
        }
      } else {
        for (let p = 0, i = 0; p < plane; p++, i += 3) {
          out[base + p] = lut[rgb[i + s0]];
          out[base + plane + p] = lut[256 + rgb[i + s1]];
          out[base + 2 * plane + p] = lut[512 + rgb[i + s2]];
        }
      }
    },
  };
}

/** Decodes and preprocesses one image into a Float32Array in the spec's layout (one image, no batch copy). */
export async function preprocessImage(bytes: Uint8Array, spec: ModelSpec, options: PreprocessOptions = {}): Promise<Float32Array> {
  const decoded = await decodeImage(bytes, geometryOf(spec), options);
  const writer = tensorWriter(spec);
  const out = new Float32Array(writer.elements);
  writer.write(decoded.data, out, 0);
  return out;
}
