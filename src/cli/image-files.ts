import { isUtf8 } from 'node:buffer';
import { open, opendir } from 'node:fs/promises';
import path from 'node:path';
import { codePointLength, EXTERNAL_ID_MAX_LENGTH } from '../service/limits.js';
import { forEachConcurrently } from './concurrency.js';
import { byExternalId, type Failure } from './ingest-common.js';

/** An image found under the ingest root. */
export interface ImageFile {
  /** Its path relative to the root with `/` separators: the item's external id. */
  externalId: string;
  absolutePath: string;
  bytes: number;
}

export interface FolderScan {
  images: ImageFile[];
  /** Relative paths of the files that are not images the server decodes. */
  notImages: string[];
  /**
   * Files and folders (a relative path ending in `/`) not sent, each with its reason: unreadable
   * (READ_FAILED), a name that is not UTF-8 (INVALID_FILE_NAME), a path longer than an external id
   * may be (ID_TOO_LONG), a file too large to send (FILE_TOO_LARGE).
   */
  refused: Failure[];
}

/**
 * The largest image file sent: its base64 must stay a string V8 can build (at most 2^29 − 24
 * characters), and no server accepts more in one body by default (BODY_LIMIT_BYTES is 64 MiB).
 */
export const MAX_IMAGE_BYTES = 256 * 1024 * 1024;

const startsWith = (bytes: Uint8Array, prefix: readonly number[], at = 0) => prefix.every((b, i) => bytes[at + i] === b);
const ascii = (text: string) => [...text].map((c) => c.charCodeAt(0));

/** The formats the server decodes, by their magic bytes (as src/embedding/preprocess.ts recognises them). */
const FORMATS: { name: string; matches: (head: Uint8Array) => boolean }[] = [
  { name: 'jpeg', matches: (h) => startsWith(h, [0xff, 0xd8, 0xff]) },
  { name: 'png', matches: (h) => startsWith(h, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]) },
  { name: 'gif', matches: (h) => startsWith(h, ascii('GIF87a')) || startsWith(h, ascii('GIF89a')) },
  { name: 'webp', matches: (h) => startsWith(h, ascii('RIFF')) && startsWith(h, ascii('WEBP'), 8) },
  {
    name: 'tiff',
    matches: (h) => [[0x49, 0x49, 0x2a, 0x00], [0x4d, 0x4d, 0x00, 0x2a], [0x49, 0x49, 0x2b, 0x00], [0x4d, 0x4d, 0x00, 0x2b]].some((magic) => startsWith(h, magic)),
  },
];

/** The image format of a file's first bytes, or undefined. */
export function imageFormat(head: Uint8Array): string | undefined {
  return FORMATS.find((format) => format.matches(head))?.name;
}

const HEAD_BYTES = 12;
/** Files opened at once while looking for images. */
const SNIFF_CONCURRENCY = 16;

/** The first bytes and the size of a file. */
export async function readHead(file: string): Promise<{ head: Uint8Array; bytes: number }> {
  const handle = await open(file, 'r');
  try {
    const { size } = await handle.stat();
    const head = new Uint8Array(HEAD_BYTES);
    const { bytesRead } = await handle.read(head, 0, HEAD_BYTES, 0);
    return { head: head.subarray(0, bytesRead), bytes: size };
  } finally {
    await handle.close();
  }
}

/**
 * The regular files under `root`, recursively, as relative paths with `/` separators (symbolic
 * links are not followed). A folder that cannot be read is recorded and skipped, not fatal — only
 * `root` itself must be readable.
 */
async function listFiles(root: string, refused: Failure[]): Promise<{ absolutePath: string; externalId: string }[]> {
  const files: { absolutePath: string; externalId: string }[] = [];
  const folders = [root];
  for (let folder = folders.pop(); folder !== undefined; folder = folders.pop()) {
    const relative = path.relative(root, folder).split(path.sep).join('/');
    try {
      // Names as bytes: one that is not UTF-8 would otherwise be decoded lossily into a path that does not exist.
      for await (const entry of await opendir(folder, { encoding: 'buffer' as BufferEncoding })) {
        const bytes = entry.name as unknown as Buffer;
        const name = bytes.toString('utf8');
        const externalId = relative === '' ? name : `${relative}/${name}`;
        if (!entry.isDirectory() && !entry.isFile()) continue;
        if (!isUtf8(bytes)) {
          refused.push({ externalId: `${externalId}${entry.isDirectory() ? '/' : ''}`, code: 'INVALID_FILE_NAME', message: `the name is not UTF-8 (bytes ${bytes.toString('hex')})` });
        } else if (entry.isDirectory()) folders.push(path.join(folder, name));
        else files.push({ absolutePath: path.join(folder, name), externalId });
      }
    } catch (error) {
      if (folder === root) throw error;
      refused.push({ externalId: `${relative}/`, code: 'READ_FAILED', message: (error as Error).message });
    }
  }
  return files.sort(byExternalId);
}

/**
 * Every regular file under `root`, recursively, sorted by external id, split into images —
 * recognised by their magic bytes, not their names — and the rest.
 */
export async function scanFolder(root: string): Promise<FolderScan> {
  const scan: FolderScan = { images: [], notImages: [], refused: [] };
  const files = await listFiles(root, scan.refused);
  const kinds = new Array<{ image: ImageFile } | { notImage: true } | { unreadable: string }>(files.length);
  await forEachConcurrently(files.keys(), SNIFF_CONCURRENCY, async (i) => {
    const file = files[i];
    try {
      const { head, bytes } = await readHead(file.absolutePath);
      kinds[i] = imageFormat(head) ? { image: { ...file, bytes } } : { notImage: true };
    } catch (error) {
      kinds[i] = { unreadable: (error as Error).message };
    }
  });
  kinds.forEach((kind, i) => {
    const { externalId } = files[i];
    if ('notImage' in kind) scan.notImages.push(externalId);
    else if ('unreadable' in kind) scan.refused.push({ externalId, code: 'READ_FAILED', message: kind.unreadable });
    else if (codePointLength(externalId) > EXTERNAL_ID_MAX_LENGTH) {
      scan.refused.push({ externalId, code: 'ID_TOO_LONG', message: `the relative path is longer than an external id may be (${EXTERNAL_ID_MAX_LENGTH} characters)` });
    } else if (kind.image.bytes > MAX_IMAGE_BYTES) {
      scan.refused.push({ externalId, code: 'FILE_TOO_LARGE', message: `the file is ${kind.image.bytes} bytes; at most ${MAX_IMAGE_BYTES} are sent` });
    } else scan.images.push(kind.image);
  });
  scan.refused.sort(byExternalId);
  return scan;
}
